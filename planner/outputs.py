"""All-or-nothing outputs: every file gemma-plan writes goes through here.

- ``write_file``: one file, written to a unique temporary name in the destination's directory (created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` by ``tempfile.mkstemp``), then linked into place (refusing an existing
  name, a symlink included) or, with ``overwrite``, renamed over it (``rename`` replaces a symlink, it never
  writes through one).
- ``Staged``: a set of files (``--emit``, quantize's GGUF + manifest + recipe) built in a private directory
  next to the destination and moved into place at the end, under a lock that a second run cannot take.
  SIGINT and SIGTERM raise inside the build (so the private directory is removed) and are held off while the
  finished files are moved, so an interrupted run leaves the previous state or the complete new one.

Leftovers of a run that was killed outright (SIGKILL, power loss) carry its pid in their name; the next run
into the same place removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Optional

from planner.errors import PlanError

PREFIX = ".gemma-plan-"
_LEFTOVER = re.compile(r"^\.gemma-plan-(\d+)-.*\.(partial|lock|tmp)$")


class OutputError(PlanError):
    hint = "choose another output path that you can write to"


class OutputExistsError(PlanError):
    hint = "pass --force to overwrite it, or choose another output path"


class OutputBusyError(PlanError):
    hint = "wait for the other gemma-plan run to finish, or write somewhere else"


def _os_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write to {path}: {exc.strerror or exc}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def clean_leftovers(directory: Path) -> list[Path]:
    """Remove temporary files, private directories and locks that runs now dead left in ``directory``."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for e in entries:
        m = _LEFTOVER.match(e.name)
        if not m or _alive(int(m.group(1))):
            continue
        p = Path(e.path)
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def temp_name(directory: Path, what: str, suffix: str = ".tmp", *, is_dir: bool = False) -> Path:
    """A new, unique, private name in ``directory`` (a file opened O_EXCL|O_NOFOLLOW, or a 0700 directory)."""
    prefix = f"{PREFIX}{os.getpid()}-{_safe(what)}."
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=directory))
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    os.close(fd)
    return Path(name)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:40]


def _mode(executable: bool) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return (0o755 if executable else 0o644) & ~umask


def write_file(path: Path, data: bytes | str, *, overwrite: bool = False, executable: bool = False) -> Path:
    """One file, all or nothing, never through a symlink; refuses an existing ``path`` unless ``overwrite``."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-{_safe(path.name)}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(executable))
        place(Path(tmp), path, overwrite=overwrite)
    except OSError as exc:
        raise _os_error(path, exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def place(src: Path, dst: Path, *, overwrite: bool) -> None:
    """Move the finished ``src`` to ``dst``: a hard link when nothing may be replaced (atomic, fails on any
    existing name, a dangling symlink included), else a rename (replaces a symlink itself)."""
    if overwrite:
        if dst.is_dir() and not dst.is_symlink():
            raise OutputExistsError(f"{dst} is a directory")
        os.replace(src, dst)
        return
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise OutputExistsError(f"{dst} already exists") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # filesystems without hard links: check, then rename (a race here can only replace, never follow a link)
        if os.path.lexists(dst):
            raise OutputExistsError(f"{dst} already exists") from None
        os.rename(src, dst)
        return
    os.unlink(src)


class _Interrupted(BaseException):
    """SIGTERM while building: unwinds like Ctrl-C so every ``finally`` runs."""


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM into an exception for the duration (main thread only), so clean-up code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise _Interrupted(f"terminated by signal {signum}")

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except _Interrupted:
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while a handful of renames run, so they finish together."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Staged:
    """Build the files of one output in a private directory, then move them into ``dest`` at the end.

    ``dest`` is the output directory. If it does not exist, the private directory is created beside it and
    renamed to ``dest`` (so a failed run leaves no directory at all); if it exists, the private directory is
    made inside it and each file is moved in. A lock beside ``dest`` stops a second run into the same place.
    Use as a context manager; ``commit(names)`` moves the files; leaving without commit removes everything.
    """

    def __init__(self, dest: Path, *, force: bool = False, flag: str = ""):
        self.dest = Path(dest)
        self.force = force
        self.flag = flag  # the option that named dest (--out, --emit): errors tell the user to change it
        self.lock: Optional[Path] = None
        self.work: Optional[Path] = None
        self.fresh = False
        self.committed: list[Path] = []

    # -- lifecycle
    def __enter__(self) -> "Staged":
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(interruptible())
        try:
            self._open()
        except BaseException as exc:
            self._cleanup()
            self._stack.close()
            if isinstance(exc, OutputError) and self.flag:
                exc.hint = f"choose another {self.flag} directory that you can write to"
            raise
        return self

    def __exit__(self, *exc):
        try:
            self._cleanup()
        finally:
            return self._stack.__exit__(*exc)  # SIGTERM's exception becomes SystemExit(143) there

    def _open(self) -> None:
        dest = self.dest
        if dest.is_symlink():
            raise OutputError(f"{dest} is a symbolic link; gemma-plan does not write through links")
        if dest.exists() and not dest.is_dir():
            raise OutputExistsError(f"{dest} exists and is not a directory")
        parent = dest.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(parent, exc) from None
        if not os.access(parent, os.W_OK | os.X_OK) and not dest.is_dir():
            raise OutputError(f"cannot write in {parent}: permission denied")
        clean_leftovers(parent)
        self.lock = parent / f".{_safe(dest.name)}.gemma-plan.lock"
        self._take_lock()
        self.fresh = not dest.exists()
        where = parent if self.fresh else dest
        if not self.fresh:
            clean_leftovers(dest)
        try:
            self.work = temp_name(where, dest.name, ".partial", is_dir=True)
        except OSError as exc:
            raise _os_error(where, exc) from None
        os.chmod(self.work, 0o755 & ~_umask())

    def _take_lock(self) -> None:
        assert self.lock is not None
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileExistsError:
                try:
                    pid = int(self.lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and not _alive(pid):
                    with contextlib.suppress(FileNotFoundError):
                        self.lock.unlink()
                    continue
                lock, self.lock = self.lock, None
                raise OutputBusyError(f"another gemma-plan run (pid {pid or '?'}) is writing {self.dest} (lock {lock.name})") from None
            except OSError as exc:
                self.lock = None
                raise _os_error(self.dest, exc) from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return
        self.lock = None
        raise OutputBusyError(f"cannot take the lock for {self.dest}")

    def _cleanup(self) -> None:
        if self.work is not None and self.work.exists():
            shutil.rmtree(self.work, ignore_errors=True)
        self.work = None
        if self.lock is not None:
            with contextlib.suppress(FileNotFoundError):
                self.lock.unlink()
            self.lock = None

    # -- building
    def path(self, name: str) -> Path:
        """Where to build ``name`` (inside the private directory)."""
        assert self.work is not None, "use Staged as a context manager"
        return self.work / name

    def write(self, name: str, data: bytes | str, *, executable: bool = False) -> Path:
        p = self.path(name)
        raw = data.encode("utf-8") if isinstance(data, str) else data
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(p, _mode(executable))
        return p

    def existing(self, names: list[str]) -> list[str]:
        """Which of ``names`` already exist in ``dest`` (links included)."""
        return [n for n in names if os.path.lexists(self.dest / n)]

    def commit(self, names: list[str]) -> list[Path]:
        """Move the built ``names`` into ``dest``: all of them or, on failure, none."""
        assert self.work is not None
        if not self.force:
            taken = self.existing(names)
            if taken:
                raise OutputExistsError(f"{self.dest} already has {', '.join(taken[:4])}" + (" ..." if len(taken) > 4 else ""))
        with _signals_held():
            for n in names:  # files built under private temp names (mkstemp: 0600) get the usual umask mode
                st = os.lstat(self.work / n)
                if stat.S_ISREG(st.st_mode):
                    os.chmod(self.work / n, _mode(bool(st.st_mode & 0o100)))
            if self.fresh:
                keep = set(names)
                for extra in os.listdir(self.work):
                    if extra not in keep:
                        p = self.work / extra
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                os.chmod(self.work, _mode(True))
                try:
                    os.mkdir(self.dest)  # claims the name: fails if another run (or anyone) made it meanwhile
                except FileExistsError:
                    raise OutputBusyError(f"{self.dest} appeared while this run was writing it") from None
                try:
                    os.rename(self.work, self.dest)  # replaces the empty directory just made
                except OSError:
                    with contextlib.suppress(OSError):
                        os.rmdir(self.dest)
                    raise
                self.work = None
                self.committed = [self.dest / n for n in names]
                return self.committed
            backups = self.work / ".previous"
            backups.mkdir()
            done: list[tuple[str, bool]] = []
            try:
                for n in names:
                    dst = self.dest / n
                    had = os.path.lexists(dst)
                    if had and not (dst.is_dir() and not dst.is_symlink()):
                        os.link(dst, backups / n, follow_symlinks=False)  # kept until every file is in place
                    place(self.work / n, dst, overwrite=self.force)
                    done.append((n, had))
            except BaseException:
                for n, had in reversed(done):  # undo: restore what was there, remove what was not
                    with contextlib.suppress(OSError):
                        if had and os.path.lexists(backups / n):
                            os.replace(backups / n, self.dest / n)
                        else:
                            os.unlink(self.dest / n)
                raise
        self.committed = [self.dest / n for n in names]
        return self.committed


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


__all__ = ["Staged", "write_file", "place", "clean_leftovers", "interruptible", "OutputError", "OutputExistsError",
           "OutputBusyError", "temp_name"]
