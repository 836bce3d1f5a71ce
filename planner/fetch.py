"""``gemma-plan fetch``: download the artifact a plan or recipe names.

Hugging Face files are read with range requests through ``huggingface_hub``'s session into a partial file
beside the destination (``.gemma-plan-fetch-<file>.part``), so a stopped download resumes where it stopped.
Free disk is checked before the first byte; the finished file is checked against the sha256 the hub reports
(the LFS ETag) or the one the plan carries, then moved into place with ``planner.outputs.place`` (atomic, never
through a symbolic link, never over an existing file without ``force``). Ollama and LM Studio artifacts are
pulled by their own tools, and a whole repository (MLX, GPTQ) by ``hf download``: fetch prints the exact command. What the hub reports (exact size, sha256) is kept
in ``planner.hub``'s cache, so a later ``recommend`` names the file with its exact bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Optional

from planner.artifacts import FILE, REPO, TAG
from planner.errors import PlanError
from profiles import bounds as B

SLACK = 64 << 20  # free space kept beyond the file itself
CHUNK = 1 << 20


class FetchError(PlanError):
    hint = "check the plan or recipe file, or download the model by hand"


class FetchInterrupted(FetchError):
    hint = "run the same gemma-plan fetch command again: it resumes from the partial file"


class ChecksumError(FetchError):
    hint = "the download was removed; run gemma-plan fetch again, and report the repository if it repeats"


def read_artifact(path: str | Path) -> tuple[dict, Path]:
    """The artifact named in a recipe.json (model.ref.artifact, else plan.artifact) or a ``recommend --json`` output,
    checked field by field; and the directory the file belongs in (the recipe's own, or the current one)."""
    p = Path(path)
    try:
        if p.stat().st_size > B.MAX_JSON_BYTES:
            raise FetchError(f"{p}: {p.stat().st_size:,} bytes is too large for a plan")
        doc = json.loads(p.read_bytes())
    except OSError as exc:
        raise FetchError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError):
        raise FetchError(f"{p} is not JSON", hint="pass a recipe.json (recommend --emit) or the output of recommend --json") from None
    if not isinstance(doc, dict):
        raise FetchError(f"{p} is not a JSON object")
    art = None
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    ref = model.get("ref") if isinstance(model.get("ref"), dict) else {}
    if isinstance(ref.get("artifact"), dict):
        art = ref["artifact"]
    elif isinstance(doc.get("plan"), dict) and isinstance(doc["plan"].get("artifact"), dict):
        art = doc["plan"]["artifact"]
    if not art:
        raise FetchError(f"{p} names no published artifact (plan.artifact is empty)",
                         hint="make the file with gemma-plan quantize, or plan a catalog model whose format is published")
    return check_artifact(art, str(p)), (p.parent if "schema" in doc else Path.cwd())


def check_artifact(art: dict, where: str) -> dict:
    kind = art.get("kind")
    fix = "regenerate the plan with gemma-plan recommend"
    if kind in ("ollama", "lmstudio"):
        if not isinstance(art.get("tag"), str) or not TAG.match(art["tag"]):
            raise B.BoundsError(where, "artifact.tag", art.get("tag"), "is not an Ollama/LM Studio tag", fix)
        return art
    if art.get("source") == "local":
        raise FetchError(f"{where}: the plan was made from a local file ({art.get('file')}); there is nothing to fetch")
    if not isinstance(art.get("repo"), str) or not REPO.match(art["repo"]):
        raise B.BoundsError(where, "artifact.repo", art.get("repo"), "is not a Hugging Face repo (owner/name)", fix)
    if art.get("file") is not None and (not isinstance(art["file"], str) or not FILE.match(art["file"])):
        raise B.BoundsError(where, "artifact.file", art.get("file"), "is not a plain file name", fix)
    if art.get("sha256") is not None and not (isinstance(art["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", art["sha256"])):
        raise B.BoundsError(where, "artifact.sha256", art.get("sha256"), "is not 64 hex digits", fix)
    if art.get("bytes") is not None:
        B.check_int(where, "artifact.bytes", art["bytes"], 1, B.MAX_MEMORY, fix)
    rev = art.get("revision")
    if rev is not None and not (isinstance(rev, str) and re.fullmatch(r"[A-Za-z0-9._/-]{1,128}", rev)):
        raise B.BoundsError(where, "artifact.revision", rev, "is not a revision", fix)
    return art


def command_for(art: dict) -> Optional[list[str]]:
    """The command that gets an artifact fetch does not download itself: the pull of a tool-managed one (Ollama,
    LM Studio), ``hf download`` of a whole repository (an MLX conversion, a GPTQ checkpoint, a LiteRT-LM
    repository without a recorded file); None for one Hugging Face file (a GGUF is picked by its quant)."""
    if art.get("kind") == "ollama":
        return ["ollama", "pull", art["tag"]]
    if art.get("kind") == "lmstudio":
        return ["lms", "get", art["tag"], "-y"]
    if not art.get("file") and art.get("kind") != "gguf":
        rev = ["--revision", art["revision"]] if art.get("revision") else []
        return ["hf", "download", art["repo"], *rev, "--local-dir", f"./{art['repo'].split('/')[1]}"]
    return None


def _sha256(path: Path, progress: Optional[Callable[[str, float], None]] = None) -> str:
    h = hashlib.sha256()
    size = max(1, path.stat().st_size)
    done = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK * 8), b""):
            h.update(block)
            done += len(block)
            if progress:
                progress("sha256", done / size)
    return h.hexdigest()


def _remember(write: Callable[[], object]) -> None:
    """Keep what the hub reported in the size cache (planner.hub); a cache that cannot be written never stops a download."""
    try:
        write()
    except (PlanError, OSError):
        pass


def fetch(art: dict, dest_dir: Path, *, force: bool = False,
          progress: Optional[Callable[[str, float], None]] = None) -> dict:
    """Download a Hugging Face artifact into ``dest_dir``; returns {path, bytes, sha256, resumed_from, status}."""
    from huggingface_hub import HfApi, get_hf_file_metadata, get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    from planner import hub
    from planner.outputs import OutputError, OutputExistsError, place

    repo = art["repo"]
    dest_dir = Path(dest_dir)
    if dest_dir.is_symlink():
        raise OutputError(f"{dest_dir} is a symbolic link; gemma-plan does not write through links")
    try:
        fname = art.get("file")
        if not fname:
            info = HfApi().model_info(repo, revision=art.get("revision"))
            fname = hub._pick_file(repo, [s.rfilename for s in (info.siblings or [])], art.get("quant") or hub.DEFAULT_QUANT)
            if not FILE.match(fname):
                raise FetchError(f"{repo}: {fname!r} is in a subfolder or has an unusual name", hint="download it by hand")
        url = hf_hub_url(repo, fname, revision=art.get("revision"))
        meta = get_hf_file_metadata(url)
    except PlanError:
        raise
    except Exception as exc:
        raise hub._hub_error(exc, repo) from None
    size = B.check_int(f"{repo}/{fname}", "size", meta.size, 1, B.MAX_MEMORY, "the hub reported no size")
    _remember(lambda: hub.record_file_meta(repo, fname, meta, "file metadata"))  # a later recommend shows these bytes
    if art.get("bytes") and art.get("size_exact") and art["bytes"] != size:
        raise FetchError(f"{repo}/{fname} is {size:,} bytes on the hub, the plan says {art['bytes']:,}: the file changed",
                         hint="plan again (gemma-plan recommend) before fetching")
    etag = (meta.etag or "").strip('"')
    want = art.get("sha256") or (etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None)
    dest = dest_dir / fname
    if dest.is_symlink():
        raise OutputError(f"{dest} is a symbolic link; gemma-plan does not write through links")
    if dest.exists() and not force:
        if dest.stat().st_size == size and (want is None or _sha256(dest, progress) == want):
            return {"path": str(dest), "bytes": size, "sha256": want, "resumed_from": 0, "status": "already here"}
        raise OutputExistsError(f"{dest} exists and is not this file", hint="pass --force to replace it, or --dir another directory")
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest_dir / f".gemma-plan-fetch-{fname}.part"
    if part.is_symlink():
        raise OutputError(f"{part} is a symbolic link; gemma-plan does not write through links")
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    free = shutil.disk_usage(dest_dir).free
    if free < size - have + SLACK:
        raise FetchError(f"{fname} needs {(size - have + SLACK) / (1 << 30):.2f} GiB free in {dest_dir}, "
                         f"{free / (1 << 30):.2f} GiB are free", hint="free space or pass --dir on a larger disk")
    start = have
    if have < size:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            with os.fdopen(fd, "ab") as out:
                with get_session().stream("GET", url, headers={**build_hf_headers(), "Range": f"bytes={have}-"},
                                          follow_redirects=True) as r:
                    hf_raise_for_status(r)
                    if r.status_code != 206 and have:
                        out.truncate(0)
                        have = start = 0
                    for chunk in r.iter_bytes(CHUNK):
                        if have + len(chunk) > size:
                            raise FetchError(f"{repo}/{fname}: the server sent more than the {size:,} bytes it announced")
                        out.write(chunk)
                        have += len(chunk)
                        if progress:
                            progress("download", have / size)
        except PlanError:
            raise
        except Exception as exc:
            raise FetchInterrupted(f"download of {fname} stopped at {have:,} of {size:,} bytes ({type(exc).__name__})") from None
    if have != size:
        raise FetchInterrupted(f"download of {fname} stopped at {have:,} of {size:,} bytes")
    got = _sha256(part, progress)
    if want and got != want:
        part.unlink()
        raise ChecksumError(f"{fname}: sha256 {got[:16]}... differs from the hub's {want[:16]}...; the download was removed")
    place(part, dest, overwrite=force)
    commit = meta.commit_hash if isinstance(meta.commit_hash, str) and re.fullmatch(r"[0-9a-f]{40}", meta.commit_hash) else None
    _remember(lambda: hub.store_file_meta(repo, fname, size, got, commit, "download"))
    return {"path": str(dest), "bytes": size, "sha256": got, "resumed_from": start, "status": "downloaded"}
