"""The operating system around the hardware: OS and version, WSL, containers, the cgroup memory
limit of this process, the board (Jetson, Raspberry Pi) and free disk space.

psutil reports the host's RAM and ignores cgroup limits, so a container with an 8 GiB limit on a
64 GiB host would be planned for 64 GiB; the limit is read from the cgroup files instead.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from profiles.sources import ParseError, SourceUnavailable, dump_sections, parse_sections, read_file

# cgroup v1 writes "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages);
# anything this large is no limit at all.
CGROUP_UNLIMITED_AT = 1 << 60
CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass
class SystemInfo:
    os: str = ""  # Linux, Darwin, Windows
    os_version: str = ""  # distribution or product version, e.g. "Debian GNU/Linux 12 (bookworm)", "15.3"
    kernel: str = ""
    arch: str = ""
    wsl: bool = False
    wsl_version: Optional[int] = None
    container: Optional[str] = None  # docker, podman, kubernetes, lxc, containerd, or None
    board: Optional[str] = None  # device-tree model of an SBC / Jetson, when there is one

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- OS, WSL, containers


def read_system(root: str = "/") -> str:
    """Files and markers that tell the OS flavour: /proc/version, os-release, PID 1's cgroup."""
    def at(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    sections = []
    for name, path in (("proc_version", "/proc/version"), ("os_release", "/etc/os-release"),
                       ("pid1_cgroup", "/proc/1/cgroup"), ("board", "/proc/device-tree/model")):
        text = read_file(at(path))
        if text is not None:
            sections.append((name, text.replace("\x00", "")))
    markers = [f"{m} = {'yes' if os.path.exists(at(m)) else 'no'}" for m in ("/.dockerenv", "/run/.containerenv")]
    for var in ("container", "KUBERNETES_SERVICE_HOST", "WSL_DISTRO_NAME", "WSL_INTEROP"):
        if os.environ.get(var):
            markers.append(f"env.{var} = {os.environ[var]}")
    sections.append(("markers", "\n".join(markers)))
    return dump_sections(sections)


def parse_system(text: str, system: str = "Linux", release: str = "", machine: str = "") -> SystemInfo:
    sections = dict(parse_sections(text))
    info = SystemInfo(os=system, kernel=release, arch=machine)
    proc_version = sections.get("proc_version", "")
    markers: dict[str, str] = {}
    for line in sections.get("markers", "").splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            raise ParseError(f"markers: expected 'key = value', got {line[:60]!r}")
        markers[key.strip()] = value.strip()

    # WSL kernels say "microsoft" in /proc/version ("-microsoft-standard-WSL2"; WSL1: "Microsoft").
    if re.search(r"microsoft", proc_version, re.I) or markers.get("env.WSL_DISTRO_NAME"):
        info.wsl = True
        info.wsl_version = 2 if re.search(r"WSL2|microsoft-standard", proc_version, re.I) else 1
    if not info.kernel:
        m = re.match(r"Linux version (\S+)", proc_version)
        info.kernel = m.group(1) if m else ""

    for line in sections.get("os_release", "").splitlines():
        if line.startswith("PRETTY_NAME="):
            info.os_version = line.split("=", 1)[1].strip().strip('"')

    pid1 = sections.get("pid1_cgroup", "")
    if markers.get("/.dockerenv") == "yes":
        info.container = "docker"
    elif markers.get("/run/.containerenv") == "yes" or markers.get("env.container") == "podman":
        info.container = "podman"
    elif markers.get("env.KUBERNETES_SERVICE_HOST") or "kubepods" in pid1:
        info.container = "kubernetes"
    elif re.search(r"/docker[/-]", pid1):
        info.container = "docker"
    elif "containerd" in pid1:
        info.container = "containerd"
    elif re.search(r"/lxc[/.]", pid1) or markers.get("env.container") == "lxc":
        info.container = "lxc"
    elif markers.get("env.container"):
        info.container = markers["env.container"]

    board = sections.get("board", "").strip()
    info.board = board or None
    return info


# --------------------------------------------------------------------------- cgroup memory limit


def read_cgroup(root: str = CGROUP_ROOT, proc_self_cgroup: str = "/proc/self/cgroup") -> str:
    """This process's cgroup membership and every memory limit file on its path to the root."""
    membership = read_file(proc_self_cgroup)
    if membership is None:
        raise SourceUnavailable(f"{proc_self_cgroup} not readable (not Linux?)")
    sections = [("/proc/self/cgroup", membership)]
    seen: set[str] = set()
    for line in membership.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2 unified hierarchy
            bases, filename = [root, os.path.join(root, "unified")], "memory.max"
        elif "memory" in controllers.split(","):
            bases, filename = [os.path.join(root, "memory")], "memory.limit_in_bytes"
        else:
            continue
        for base in bases:
            for candidate in _ancestors(base, path):
                f = os.path.join(candidate, filename)
                if f in seen:
                    continue
                seen.add(f)
                value = read_file(f)
                if value is not None:
                    sections.append((f, value))
    return dump_sections(sections)


def _ancestors(base: str, path: str) -> list[str]:
    # Inside a cgroup namespace the listed path may not exist under the mount; the mount root is ours.
    parts = [p for p in path.strip("/").split("/") if p]
    if ".." in parts:  # a path outside our namespace view: only the mount root is readable
        parts = []
    out = [os.path.join(base, *parts[:i]) for i in range(len(parts), 0, -1)]
    out.append(base)
    return out


@dataclass
class CgroupLimit:
    limit_bytes: Optional[int]  # None = unlimited
    file: Optional[str]  # the file that set it
    version: Optional[int]  # 1 or 2 when a limit file was read


def parse_cgroup(text: str) -> CgroupLimit:
    """The tightest memory limit among the files ``read_cgroup`` found; "max"/huge means unlimited."""
    best: Optional[int] = None
    best_file: Optional[str] = None
    version: Optional[int] = None
    for name, body in parse_sections(text):
        if not name.endswith(("memory.max", "memory.limit_in_bytes")):
            continue
        value = body.strip()
        file_version = 2 if name.endswith("memory.max") else 1
        version = version or file_version
        if value == "max":
            continue
        if not value.isdigit():
            raise ParseError(f"{name}: expected bytes or 'max', got {value[:40]!r}")
        limit = int(value)
        if limit >= CGROUP_UNLIMITED_AT:
            continue
        if best is None or limit < best:
            best, best_file, version = limit, name, file_version
    return CgroupLimit(best, best_file, version)


# --------------------------------------------------------------------------- disk


@dataclass
class DiskInfo:
    path: str  # the model directory asked about
    checked: str  # the existing directory measured (the path itself or its nearest parent)
    free_bytes: int
    total_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def default_model_dir() -> str:
    """The Hugging Face hub cache, where downloads land by default."""
    try:
        from huggingface_hub import constants  # light: constants only, no network stack

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # same rule as huggingface_hub: HF_HUB_CACHE, else $HF_HOME/hub
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
        return os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")


def disk_free(path: str) -> DiskInfo:
    """Free space where models would be written; a directory not created yet counts its parent's disk."""
    p = Path(path).expanduser()
    checked = p
    while not checked.exists():
        if checked.parent == checked:
            raise SourceUnavailable(f"no existing parent for {path}")
        checked = checked.parent
    usage = shutil.disk_usage(checked)
    return DiskInfo(path=str(p), checked=str(checked), free_bytes=usage.free, total_bytes=usage.total)


# --------------------------------------------------------------------------- boards


# Device-tree model substrings -> the packaged target that describes the board's memory system.
BOARD_TARGETS = (
    (re.compile(r"Raspberry Pi 5"), "raspberry-pi-5-8gb"),
    (re.compile(r"Jetson\s+AGX\s+Orin", re.I), "jetson-agx-orin-64gb"),
    (re.compile(r"Jetson\s+Orin\s+Nano", re.I), "jetson-orin-nano"),
)


def board_target(model: Optional[str]) -> Optional[str]:
    if not model:
        return None
    for pattern, target in BOARD_TARGETS:
        if pattern.search(model):
            return target
    return None


def jetson_gpu_name(model: Optional[str]) -> Optional[str]:
    """"Jetson Orin Nano" from a device-tree model such as "NVIDIA Jetson Orin Nano ... Super"."""
    m = re.search(r"Jetson\s+(AGX\s+Orin|Orin\s+Nano|Orin\s+NX|AGX\s+Xavier|Xavier\s+NX|Nano)", model or "", re.I)
    return f"Jetson {' '.join(m.group(1).split())}" if m else None
