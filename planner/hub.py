"""Models on the Hugging Face hub, read without downloading weights.

``hf.co/USER/REPO:QUANT`` and ``USER/REPO:FILE.gguf`` (the spellings of llama.cpp ``-hf`` and Ollama) read a
GGUF header with HTTP range requests through ``huggingface_hub``'s session, a prefix that grows only as far as
the header needs (bounded by MAX_HEADER_BYTES); ``USER/REPO`` reads ``config.json`` and the safetensors headers
(``huggingface_hub.get_safetensors_metadata``). What was read is kept under ``$HF_HOME/gemma-plan`` so that
``HF_HUB_OFFLINE=1`` plans from it; offline without it, a repo the artifact catalogue knows is planned from the
catalog model, and the note says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from planner.artifacts import FILE as SELECTOR  # a file name or quant selector: the catalogue's own patterns
from planner.artifacts import REPO  # a hub repo id
from planner.errors import PlanError, UnknownModelError
from profiles import bounds as B

PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")
DEFAULT_QUANT = "Q4_K_M"  # what llama.cpp -hf and Ollama pick when the tag is left out
FIRST_READ = 256 << 10  # the first range request; a Gemma header with its 262k-token vocabulary is ~6 MB
MAX_HEADER_BYTES = 256 << 20  # a header needing more than this is refused (hostile or not a model)


# spec.source -> the published file a remote GGUF spec was read from (plan.artifact); ModelSpec is frozen
REMOTE_ARTIFACTS: dict[str, dict] = {}


def artifact_for(spec) -> Optional[dict]:
    """The artifact of a spec read from the hub by load_remote_gguf (exact bytes, sha256, fetch argv), else None."""
    art = REMOTE_ARTIFACTS.get(getattr(spec, "source", ""))
    return dict(art) if art else None


class HubError(PlanError):
    hint = "check the repository name, or pass a local file"


class GatedRepoAccessError(HubError):
    hint = "Gemma repositories are gated: accept the licence on the model page, then run `hf auth login` (or set HF_TOKEN)"


@dataclass(frozen=True)
class HubRef:
    repo: str
    selector: Optional[str]  # a quant (Q4_K_M) or a file name (x.gguf); None: the safetensors checkpoint
    kind: str  # "gguf" | "safetensors"


def parse_ref(query: str) -> Optional[HubRef]:
    """hf.co/USER/REPO[:QUANT], USER/REPO:QUANT, USER/REPO:FILE.gguf, USER/REPO; None for anything else."""
    q = str(query).strip()
    prefixed = q.startswith(PREFIXES)
    for p in PREFIXES:
        if q.startswith(p):
            q = q[len(p):]
            break
    repo, colon, sel = q.partition(":")
    if not REPO.match(repo) or repo.split("/")[1] in (".", ".."):
        return None
    if colon:
        if not SELECTOR.match(sel):
            return None
        return HubRef(repo, sel, "gguf")
    if prefixed:
        return HubRef(repo, DEFAULT_QUANT, "gguf")
    if Path(repo).suffix.lower() in (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".json", ".toml"):
        return None
    return HubRef(repo, None, "safetensors")


def _catalog_repo(repo: str) -> bool:
    from planner.catalog import catalog_entries

    low = repo.lower()
    return any(low == r.lower() for e in catalog_entries() for r in [e.get("hf_repo", "")] + list(e.get("hf_repos", [])))


def load_remote(ref: HubRef):
    """(ModelSpec, note) for a hub reference, or None when the catalog already knows it (a Gemma checkpoint id)."""
    if ref.kind == "safetensors" and _catalog_repo(ref.repo):
        return None
    if ref.kind == "gguf":
        return load_remote_gguf(ref.repo, ref.selector or DEFAULT_QUANT)
    return load_remote_safetensors(ref.repo)


# ---------------------------------------------------------------- cache under HF_HOME


def _constants():
    from huggingface_hub import constants

    return constants


def _offline() -> bool:
    c = _constants()
    return bool(c.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _hf_home() -> Path:
    """HF_HOME as huggingface_hub resolves it, without importing huggingface_hub when nothing has yet: a plain
    ``recommend`` reads the size cache and must start lean (tests/test_lean_start.py)."""
    c = sys.modules.get("huggingface_hub.constants")
    if c is not None:
        return Path(c.HF_HOME)
    default = os.path.join(os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(os.getenv("HF_HOME", default))))


def cache_dir() -> Path:
    return _hf_home() / "gemma-plan"


def _key(*parts: str) -> str:
    import hashlib  # here: a plan that finds no cache directory never hashes, and hashlib's OpenSSL start-up is not free

    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


_CACHE_HINT = "delete that file (or the whole $HF_HOME/gemma-plan) and run once with network"


def _read_cached(path: Path, limit: int) -> bytes:
    """A file this module cached, read back with a bound: the cache is a directory anyone with the account can edit."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise HubError(f"{path}: cannot read the cached entry ({exc.strerror or exc})", hint=_CACHE_HINT) from None
    if len(raw) > limit:
        raise HubError(f"{path}: the cached entry is over {limit:,} bytes", hint=_CACHE_HINT)
    return raw


def _cached_json(path: Path, limit: int = B.MAX_JSON_BYTES) -> dict:
    try:
        d = json.loads(_read_cached(path, limit))
    except (ValueError, RecursionError):
        raise HubError(f"{path}: the cached entry is not valid JSON", hint=_CACHE_HINT) from None
    if not isinstance(d, dict):
        raise HubError(f"{path}: the cached entry is not a JSON object", hint=_CACHE_HINT)
    return d


def _write_cached(path: Path, data: bytes | str) -> None:
    from planner.outputs import write_file

    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, data, overwrite=True)


def _hub_error(exc: Exception, repo: str) -> PlanError:
    from huggingface_hub import errors

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.GatedRepoError) or status in (401, 403):
        return GatedRepoAccessError(f"{repo} is gated or private (HTTP {status or 401}): the hub refused the request")
    if isinstance(exc, errors.RepositoryNotFoundError) or status == 404:
        return UnknownModelError(f"{repo} is not a repository on the hub (or it is private)",
                                 hint="check the name; private and gated repos need `hf auth login`")
    if isinstance(exc, errors.EntryNotFoundError):
        return HubError(f"{repo}: the file is not in the repository")
    first = str(exc).splitlines()[0] if str(exc) else ""
    return HubError(f"cannot read {repo} from the hub: {type(exc).__name__}: {first[:160]}",
                    hint="check the network (or set HF_HUB_OFFLINE=1 to plan from the cache)")


# ---------------------------------------------------------------- exact size and sha256 of a published file

FILE_META_BYTES = 4096  # a cached size entry is a few hundred bytes; anything larger is not one of ours
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_CHECKED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_META_KEYS = {"repo", "file", "size", "sha256", "commit", "checked", "via"}
VIA = ("file metadata", "header read", "download")  # how the hub was asked: HEAD on the resolve URL, a header read, fetch


def _file_meta_dir(repo: str) -> Path:
    return cache_dir() / "files" / repo.replace("/", "--")


def file_meta_path(repo: str, file: str) -> Path:
    return _file_meta_dir(repo) / f"{_key(repo, file)}.json"


def cached_file_meta(repo: str, file: str) -> Optional[dict]:
    """The exact size and sha256 of ``repo``/``file`` as the hub last reported them (``resolve_file_meta``, a header
    read, ``gemma-plan fetch``), or None when never asked. No network and no huggingface_hub import: one bounded
    read of a small JSON file. A cached entry that is not one this module wrote (other keys or types, another
    file's name) is refused in one line."""
    d = _file_meta_dir(repo)
    if not d.exists() and not d.is_symlink():
        return None  # nothing was ever kept for this repository
    path = file_meta_path(repo, file)
    if not path.is_file() and not path.is_symlink():
        return None
    if path.is_symlink():
        raise HubError(f"{path}: the cached entry is a symbolic link", hint=_CACHE_HINT)
    meta = _cached_json(path, FILE_META_BYTES)
    size, sha, commit, checked = meta.get("size"), meta.get("sha256"), meta.get("commit"), meta.get("checked")
    if not (set(meta) == _META_KEYS and meta.get("repo") == repo and meta.get("file") == file
            and type(size) is int and 0 < size <= B.MAX_MEMORY
            and (sha is None or (isinstance(sha, str) and _SHA256.match(sha)))
            and (commit is None or (isinstance(commit, str) and _COMMIT.match(commit)))
            and isinstance(checked, str) and _CHECKED.match(checked) and meta.get("via") in VIA):
        raise HubError(f"{path}: malformed cached entry (repo, file, size, sha256, commit, checked or via)", hint=_CACHE_HINT)
    return meta


def record_file_meta(repo: str, file: str, fmeta, via: str, sha256: Optional[str] = None) -> dict:
    """Keep what the hub reported for ``repo``/``file`` (a ``huggingface_hub.HfFileMetadata``: size from
    X-Linked-Size, sha256 from X-Linked-Etag when it is an LFS sha256) in the checked cache; returns the entry."""
    size = B.check_int(f"{repo}/{file}", "size", fmeta.size, 1, B.MAX_MEMORY, "the hub reported no size")
    etag = (fmeta.etag or "").strip('"')
    sha = sha256 or (etag if _SHA256.match(etag) else None)
    commit = fmeta.commit_hash if isinstance(fmeta.commit_hash, str) and _COMMIT.match(fmeta.commit_hash) else None
    return store_file_meta(repo, file, size, sha, commit, via)


def store_file_meta(repo: str, file: str, size: int, sha256: Optional[str], commit: Optional[str], via: str) -> dict:
    import time

    meta = {"repo": repo, "file": file, "size": size, "sha256": sha256, "commit": commit,
            "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "via": via}
    _write_cached(file_meta_path(repo, file), json.dumps(meta))
    return meta


def resolve_file_meta(repo: str, file: str) -> dict:
    """Ask the hub for the exact size and sha256 of ``repo``/``file`` (a HEAD request on its resolve URL through
    huggingface_hub, no bytes of the file) and keep them; offline (HF_HUB_OFFLINE=1), the cached entry or a
    one-line HubError."""
    if _offline():
        meta = cached_file_meta(repo, file)
        if meta is None:
            raise HubError(f"offline (HF_HUB_OFFLINE=1) and the exact size of {repo}/{file} is not cached in {cache_dir()}",
                           hint="run once with network: gemma-plan recommend --resolve")
        return meta
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        fmeta = get_hf_file_metadata(hf_hub_url(repo, file))
    except Exception as exc:
        raise _hub_error(exc, repo) from None
    return record_file_meta(repo, file, fmeta, "file metadata")


# ---------------------------------------------------------------- GGUF


def _pick_file(repo: str, files: list[str], selector: str) -> str:
    ggufs = [f for f in files if f.lower().endswith(".gguf") and not Path(f).name.lower().startswith("mmproj")]
    if selector.lower().endswith(".gguf"):
        if selector not in files:
            raise HubError(f"{repo} has no file {selector}", hint=f"files there: {', '.join(ggufs[:6]) or 'no .gguf files'}")
        return selector
    want = selector.upper().replace("-", "_")
    hits = [f for f in ggufs if re.search(rf"(^|[-_.]){re.escape(want)}([-_.]|$)", Path(f).name.upper().replace("-", "_"))]
    whole = [f for f in hits if not re.search(r"-\d{5}-of-\d{5}\.gguf$", f)]
    if not hits:
        raise HubError(f"{repo} has no {selector} GGUF", hint=f"GGUF files there: {', '.join(ggufs[:8]) or 'none'}")
    if not whole:
        raise HubError(f"{repo}: the {selector} GGUF is split into parts ({hits[0]} ...), which gemma-plan does not read yet",
                       hint="plan a single-file quant of the same repository")
    return sorted(whole, key=len)[0]


def read_remote_header(url: str, size: int, headers: dict, stats: Optional[dict] = None):
    """The GGUF header of the file at ``url`` (``size`` bytes), read with range requests: FIRST_READ bytes, then as
    far as the parser asks, never past MAX_HEADER_BYTES. Returns (header, the bytes read)."""
    from huggingface_hub import get_session
    from huggingface_hub.utils import hf_raise_for_status

    from planner.gguf_header import GGUFHeaderError, NeedMoreBytes, parse_header

    buf = bytearray()
    want = min(FIRST_READ, size)
    while True:
        if want > MAX_HEADER_BYTES:
            raise GGUFHeaderError(f"the GGUF header needs more than {MAX_HEADER_BYTES >> 20} MiB; refused")
        if want > len(buf):
            r = get_session().get(url, headers={**headers, "Range": f"bytes={len(buf)}-{want - 1}"}, follow_redirects=True)
            hf_raise_for_status(r)
            if r.status_code != 206:
                raise HubError(f"{url}: the server ignored the byte range (HTTP {r.status_code})",
                               hint="download the file and pass its path instead")
            chunk = r.content[: want - len(buf)]
            if not chunk:
                raise GGUFHeaderError("the server returned no bytes for the header")
            buf += chunk
            if stats is not None:
                stats["bytes"] = stats.get("bytes", 0) + len(chunk)
                stats["requests"] = stats.get("requests", 0) + 1
        try:
            return parse_header(bytes(buf), size), bytes(buf)
        except NeedMoreBytes as more:
            want = min(size, max(more.upto, 2 * len(buf)))


def load_remote_gguf(repo: str, selector: str, stats: Optional[dict] = None):
    """(ModelSpec, note) from the header of a published GGUF; the spec's ``artifact`` is the file with its exact size."""
    from planner.gguf_header import GGUFHeaderError, parse_header
    from planner.sources import InvalidModelFileError, spec_from_gguf_header

    cdir = cache_dir() / "gguf" / repo.replace("/", "--")
    index_path = cdir / f"{_key(selector)}.json"
    note = ""
    if _offline():
        if not index_path.is_file():
            return _offline_fallback(repo, selector)
        meta = _cached_json(index_path)
        size, blob = meta.get("size"), meta.get("blob")
        if not (isinstance(blob, str) and re.fullmatch(r"[0-9a-f]{32}\.bin", blob) and isinstance(meta.get("file"), str)
                and type(size) is int and 0 < size <= B.MAX_MEMORY
                and (meta.get("sha256") is None or re.fullmatch(r"[0-9a-f]{64}", str(meta.get("sha256"))))
                and isinstance(meta.get("commit"), (str, type(None)))):
            raise HubError(f"{index_path}: malformed cached entry (file, size, blob, sha256 or commit)", hint=_CACHE_HINT)
        try:
            header = parse_header(_read_cached(cdir / blob, MAX_HEADER_BYTES), size)
        except (GGUFHeaderError, ValueError) as exc:
            raise InvalidModelFileError(f"{cdir / blob}: not a readable cached GGUF header ({exc})") from None
        note = f"offline (HF_HUB_OFFLINE=1): planned from the header of {repo}/{meta['file']} cached in {cdir}"
    else:
        from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        try:
            info = HfApi().model_info(repo)
            files = [s.rfilename for s in (info.siblings or [])]
            fname = _pick_file(repo, files, selector)
            url = hf_hub_url(repo, fname, revision=info.sha)
            fmeta = get_hf_file_metadata(url)
            size = B.check_int(f"{repo}/{fname}", "size", fmeta.size, 1, B.MAX_MEMORY, "the hub reported no size")
            header, raw = read_remote_header(url, size, build_hf_headers(), stats)
        except PlanError:
            raise
        except (GGUFHeaderError, ValueError) as exc:
            raise InvalidModelFileError(f"{repo}: not a readable GGUF header ({exc})") from None
        except Exception as exc:
            raise _hub_error(exc, repo) from None
        etag = (fmeta.etag or "").strip('"')
        meta = {"repo": repo, "file": fname, "size": size, "commit": fmeta.commit_hash or info.sha, "etag": etag,
                "sha256": etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None, "blob": f"{_key(selector, fname)}.bin",
                "bytes_read": len(raw)}
        _write_cached(cdir / meta["blob"], raw)
        _write_cached(index_path, json.dumps(meta))
        record_file_meta(repo, fname, fmeta, "header read")
    fname = meta["file"]
    spec = spec_from_gguf_header(header, name=Path(fname).stem, origin=f"hf.co/{repo}/{fname}", source=f"hf-gguf:{repo}/{fname}")
    REMOTE_ARTIFACTS[spec.source] = {"source": "huggingface", "kind": "gguf", "repo": repo, "tag": None, "file": fname,
                     "quant": spec.gguf_file_type, "revision": meta.get("commit"), "bytes": meta["size"], "size_exact": True,
                     "sha256": meta.get("sha256"), "size_source": "hub", "size_checked": None,
                     "fetch": ["hf", "download", repo, fname, "--local-dir", "."],
                     "weights_basis": "header", "header_bytes_read": meta.get("bytes_read")}
    return spec, note


def _offline_fallback(repo: str, selector: str):
    from planner.artifacts import load_artifacts
    from planner.catalog import get_model

    want = selector.upper().replace("-", "_")
    for e in load_artifacts():
        if (e.get("repo") or "").lower() == repo.lower() and (e.get("file") == selector or (e.get("quant") or "").upper() == want):
            spec, _ = get_model(e["model"])
            return spec, (f"offline (HF_HUB_OFFLINE=1) and the header of {repo} is not cached: planned from the catalog model "
                          f"{e['model']} with its per-tensor rule (the artifact catalogue lists {repo} for it)")
    raise HubError(f"offline (HF_HUB_OFFLINE=1) and the header of {repo}:{selector} is not cached in {cache_dir()}",
                   hint=f"run once with network: gemma-plan recommend --model hf.co/{repo}:{selector}")


# ---------------------------------------------------------------- safetensors checkpoint


def load_remote_safetensors(repo: str):
    """(ModelSpec, note) from a hub checkpoint's config.json and safetensors headers (no weights)."""
    from planner.sources import check_safetensors_entry, parse_config, spec_from_config_and_header

    cpath = cache_dir() / "safetensors" / f"{repo.replace('/', '--')}.json"
    note = ""
    if _offline():
        if not cpath.is_file():
            raise HubError(f"offline (HF_HUB_OFFLINE=1) and the headers of {repo} are not cached in {cache_dir()}",
                           hint=f"run once with network: gemma-plan recommend --model {repo}")
        cached = _cached_json(cpath)
        cfg, header = cached.get("config"), cached.get("header")
        if not isinstance(cfg, dict) or not isinstance(header, dict) or len(header) > B.MAX_TENSORS:
            raise HubError(f"{cpath}: malformed cached entry (config, header)", hint=_CACHE_HINT)
        note = f"offline (HF_HUB_OFFLINE=1): planned from the config and safetensors headers of {repo} cached in {cpath.parent}"
    else:
        from huggingface_hub import HfApi

        api = HfApi()  # reads HF_ENDPOINT now (the module-level helpers keep the endpoint of import time)
        try:
            with open(api.hf_hub_download(repo, "config.json"), "rb") as f:
                raw = f.read(B.MAX_JSON_BYTES + 1)
            meta = api.get_safetensors_metadata(repo)
        except PlanError:
            raise
        except Exception as exc:
            raise _hub_error(exc, repo) from None
        cfg = parse_config(raw, f"{repo}: config.json")
        header = {}
        for fmeta in meta.files_metadata.values():
            for name, t in fmeta.tensors.items():
                header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(t.data_offsets)}
                if len(header) > B.MAX_TENSORS:
                    raise B.BoundsError(repo, "tensor count", len(header), f"is above {B.MAX_TENSORS:,}")
        _write_cached(cpath, json.dumps({"config": cfg, "header": header}))
    for name, info in header.items():
        check_safetensors_entry(Path(f"hf.co/{repo}"), name, info, B.MAX_TENSOR_ELEMENTS * 8)
    spec = spec_from_config_and_header(cfg, header, name=repo.split("/")[1], source=f"hub:{repo}")
    return dataclasses.replace(spec, hf_repo=repo), note
