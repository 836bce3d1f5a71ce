"""Published artifacts: the files people download instead of quantizing (planner/data/artifacts.json).

Each entry names a model of the catalog, a kind (gguf, ollama, lmstudio, mlx, litert, gptq, awq,
compressed-tensors), where it lives (Hugging Face repo and file, Ollama tag, ``lms get`` key), the quant it
holds, and its size as the source gives it: exact ``bytes`` only where a source states them, else the
published text (``size_published``) with ``size_exact`` false. ``choose`` picks the artifact a plan names.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Callable, Optional

from planner.errors import PlanError

KINDS = ("gguf", "ollama", "lmstudio", "mlx", "litert", "gptq", "awq", "compressed-tensors")
# Which kinds a plan for an engine can load, best first (a GGUF file from the hub, then the tags of tools that pull one).
FOR_ENGINE = {"llama.cpp": ("gguf", "ollama", "lmstudio"), "vllm": ("gptq", "awq", "compressed-tensors"),
              "transformers": ("gptq", "awq"), "mlx": ("mlx",), "litert-lm": ("litert",)}
# Engines that load a bundle as published (its own quant recipe), whatever weight format the plan sized it with.
BUNDLE_ENGINES = ("litert-lm",)
# Among GGUF publishers of the same file type: llama.cpp's own conversions first, then the most used requantizers.
PUBLISHER_ORDER = ("google", "ggml-org", "unsloth", "bartowski", "lmstudio-community")
REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,120}$")


class ArtifactCatalogError(PlanError):
    hint = "planner/data/artifacts.json is damaged: reinstall gemma-plan"


_FIELDS = {"model": str, "kind": str, "source": str, "repo": str, "file": str, "tag": str, "publisher": str, "quant": str,
           "bytes": int, "size_published": str, "size_exact": bool, "sha256": str, "qat": bool, "dynamic": bool,
           "imatrix": bool, "bits": int, "group_size": int, "vision": bool, "devices": list, "digest": str, "note": str}


def check_entry(e: dict, models: set[str]) -> None:
    """One entry of artifacts.json: known keys with their types, a catalog model, a kind, and a place to fetch it from."""
    where = f"artifact {e.get('model')}/{e.get('repo') or e.get('tag')}"
    for k, v in e.items():
        if k not in _FIELDS:
            raise ArtifactCatalogError(f"{where}: unknown key {k!r}")
        if v is not None and not isinstance(v, _FIELDS[k]) or (isinstance(v, bool) and _FIELDS[k] is int):
            raise ArtifactCatalogError(f"{where}: {k} is {type(v).__name__}, not {_FIELDS[k].__name__}")
    if e.get("model") not in models:
        raise ArtifactCatalogError(f"{where}: model is not in the catalog")
    if e.get("kind") not in KINDS:
        raise ArtifactCatalogError(f"{where}: kind {e.get('kind')!r} is not one of {', '.join(KINDS)}")
    if not str(e.get("source", "")).startswith(("https://", "http://")):
        raise ArtifactCatalogError(f"{where}: source must be a URL")
    if e["kind"] in ("ollama", "lmstudio"):
        if not TAG.match(e.get("tag") or ""):
            raise ArtifactCatalogError(f"{where}: an {e['kind']} entry needs a tag")
    elif not REPO.match(e.get("repo") or ""):
        raise ArtifactCatalogError(f"{where}: needs a Hugging Face repo (owner/name)")
    if e.get("file") is not None and not FILE.match(e["file"]):
        raise ArtifactCatalogError(f"{where}: file {e['file']!r} is not a plain file name")
    if e.get("bytes") is not None and not 0 < e["bytes"] < 1 << 44:
        raise ArtifactCatalogError(f"{where}: bytes out of range")
    if bool(e.get("size_exact")) != (e.get("bytes") is not None):
        raise ArtifactCatalogError(f"{where}: size_exact must be true exactly when bytes is given")
    if e.get("sha256") is not None and not re.fullmatch(r"[0-9a-f]{64}", e["sha256"]):
        raise ArtifactCatalogError(f"{where}: sha256 is not 64 hex digits")


@lru_cache(maxsize=1)
def load_artifacts() -> tuple[dict, ...]:
    from planner.catalog import catalog_entries

    raw = resources.files("planner").joinpath("data/artifacts.json").read_text(encoding="utf-8")
    doc = json.loads(raw)
    models = {m["name"] for m in catalog_entries()}
    entries = doc.get("artifacts") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ArtifactCatalogError("artifacts.json has no list of artifacts")
    for e in entries:
        if not isinstance(e, dict):
            raise ArtifactCatalogError("artifacts.json: an entry is not an object")
        check_entry(e, models)
    return tuple(entries)


def for_model(name: str) -> list[dict]:
    return [e for e in load_artifacts() if e["model"] == name]


def _norm(q: Optional[str]) -> str:
    return (q or "").upper().replace("-", "_")


def fetch_argv(e: dict, local_dir: str = ".") -> list[str]:
    """The command that downloads an artifact: ``hf download`` for Hugging Face files and repos, ``ollama pull``,
    ``lms get``."""
    if e["kind"] == "ollama":
        return ["ollama", "pull", e["tag"]]
    if e["kind"] == "lmstudio":
        return ["lms", "get", e["tag"], "-y"]
    argv = ["hf", "download", e["repo"]]
    if e.get("file"):
        argv.append(e["file"])
    elif e["kind"] == "gguf" and e.get("quant"):
        argv += ["--include", f"*{e['quant']}*.gguf"]
    return argv + ["--local-dir", local_dir if e.get("file") else f"{local_dir.rstrip('/')}/{e['repo'].split('/')[1]}"]


def size_text(e: dict) -> str:
    if e.get("bytes") and e.get("size_source") == "hub":
        return f"{e['bytes']:,} bytes (exact, from the hub)"
    if e.get("bytes"):
        return f"{e['bytes']:,} bytes"
    if e.get("size_published"):
        return f"{e['size_published']} as published (not exact)"
    return "size not published"


def size_source(e: dict) -> Optional[str]:
    """Where ``bytes`` (or the size text) came from: the hub, the catalogue's source, its published text, or nothing."""
    if e.get("size_source"):
        return e["size_source"]
    return "catalogue" if e.get("bytes") else "published text" if e.get("size_published") else None


def with_hub_size(e: dict, meta: dict) -> dict:
    """A catalogue entry with the exact size and sha256 the hub reported for its file (planner.hub.cached_file_meta)."""
    return {**e, "bytes": meta["size"], "size_exact": True, "sha256": meta.get("sha256") or None, "size_source": "hub",
            "size_checked": meta.get("checked"), "revision": meta.get("commit")}


def describe(e: dict) -> str:
    where = e.get("tag") or (f"{e['repo']}/{e['file']}" if e.get("file") else e["repo"])
    flags = [f for f, on in (("QAT", e.get("qat")), ("dynamic mix", e.get("dynamic")), ("imatrix", e.get("imatrix"))) if on]
    return f"{where} ({e['kind']}{', ' + ', '.join(flags) if flags else ''}; {size_text(e)}; source {e['source']})"


def to_plan_artifact(e: dict, basis: str) -> dict:
    """The ``plan.artifact`` object (docs/json.md)."""
    return {"source": "ollama" if e["kind"] == "ollama" else "lmstudio" if e["kind"] == "lmstudio" else "huggingface",
            "kind": e["kind"], "repo": e.get("repo"), "tag": e.get("tag"), "file": e.get("file"), "quant": e.get("quant"),
            "publisher": e.get("publisher"), "bytes": e.get("bytes"), "size_published": e.get("size_published"),
            "size_exact": bool(e.get("size_exact")), "sha256": e.get("sha256"), "size_source": size_source(e),
            "size_checked": e.get("size_checked"), "revision": e.get("revision"), "qat": bool(e.get("qat")),
            "dynamic": bool(e.get("dynamic")), "url": e["source"], "fetch": fetch_argv(e), "weights_basis": basis}


def _rank(e: dict) -> tuple:
    pub = e.get("publisher") or ""
    return (0 if e.get("file") else 1, 0 if e.get("bytes") else 1 if e.get("size_published") else 2,
            PUBLISHER_ORDER.index(pub) if pub in PUBLISHER_ORDER else len(PUBLISHER_ORDER))


def matches(model: str, weight_format: str, engine: str) -> list[dict]:
    """Published artifacts of ``model`` holding ``weight_format`` that ``engine`` loads, best first."""
    kinds = FOR_ENGINE.get(engine, ())
    want = _norm(weight_format)
    hits = [e for e in for_model(model) if e["kind"] in kinds and (_norm(e.get("quant")) == want or engine in BUNDLE_ENGINES)]
    return sorted(hits, key=lambda e: (kinds.index(e["kind"]), _rank(e)))


RULE_BASIS = "the model's per-tensor rule (llama.cpp's llama_tensor_get_type); the published size is not exact"
RULE_EXACT_SIZE = ("the model's per-tensor rule (llama.cpp's llama_tensor_get_type); the file's exact size is known, its tensor "
                   "mix is not: --model hf.co/REPO:QUANT plans from its header")


_SIZE = re.compile(r"([\d.]+)\s*(bytes|B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\b")
_UNIT = {"bytes": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def published_bytes(e: dict) -> Optional[int]:
    """The entry's size in bytes: exact, or read from the published text ("18.3 GB" is taken as 18.3e9, as the hub
    and Ollama write decimal units); None when no size is given."""
    if e.get("bytes"):
        return int(e["bytes"])
    m = _SIZE.search(e.get("size_published") or "")
    return int(float(m.group(1)) * _UNIT[m.group(2)]) if m else None


def hub_file(e: dict) -> bool:
    """Whether the entry is one file on the Hugging Face hub (one size and sha256 to ask the hub for)."""
    return e["kind"] not in ("ollama", "lmstudio") and bool(e.get("repo")) and bool(e.get("file"))


def choose(model: str, weight_format: str, engine: str, rule_bytes: int = 0,
           exact: Optional[Callable[[str, str], Optional[dict]]] = None, hint: bool = True) -> tuple[Optional[dict], list[str]]:
    """The artifact a plan names (as ``plan.artifact``) and notes: other places to get the same weights, a published
    QAT file of this model when the plan is not already one, and a published file much larger than the rule
    (``rule_bytes``, the plan's weight bytes) that the plan would then under-count. ``exact(repo, file)`` gives what
    the hub reported for the chosen file (planner.hub.cached_file_meta), which then replaces the published size;
    ``hint`` adds how to read the exact size when it is not known."""
    found = matches(model, weight_format, engine)
    notes = []
    art = None
    if found:
        best = found[0]
        meta = exact(best["repo"], best["file"]) if exact and hub_file(best) else None
        if meta:
            if best.get("bytes") and best["bytes"] != meta["size"]:
                notes.append(f"the hub's {best['file']} is {meta['size']:,} bytes, the catalogue records {best['bytes']:,}: "
                             "the plan names the hub's file")
            best = with_hub_size(best, meta)
        basis = RULE_EXACT_SIZE if best.get("bytes") else RULE_BASIS
        if best["kind"] not in ("gguf", "ollama", "lmstudio"):
            basis = f"the planner's per-tensor rule for {weight_format}; the published {best['kind']} artifact's own mix is not read"
        art = to_plan_artifact(best, basis)
        where = best.get("tag") or (f"{best['repo']}/{best['file']}" if best.get("file") else best["repo"])
        resolve = "; recommend --resolve reads its exact size from the hub" if hint and hub_file(best) and not best.get("bytes") else ""
        notes.append(f"published file: {where}, {size_text(best)}{resolve}; --json plan.artifact has its source and fetch command")
        pub = published_bytes(best)
        if rule_bytes and pub and pub > rule_bytes * 1.02 + (64 << 20):
            notes.append(f"the published file is {pub / 1e9:.2f} GB, {pub / rule_bytes - 1:.0%} more than the {weight_format} rule's "
                         f"{rule_bytes / 1e9:.2f} GB of weights (its tensor mix differs{': ' + best['note'] if best.get('note') else ''}); "
                         f"plan it exactly with --model hf.co/{best['repo']}:{best.get('file') or weight_format}")
        art["also"] = [describe(e) for e in found[1:4]]
        # the same weights through the tools that pull their own copy (Ollama, LM Studio), for their recipes
        art["pull"] = {e["kind"]: fetch_argv(e) for e in reversed(found) if e["kind"] in ("ollama", "lmstudio") and e is not best}
    if engine == "llama.cpp" and not any(e.get("qat") for e in found):
        qat = [e for e in for_model(model) if e.get("qat") and e["kind"] in ("gguf", "ollama", "lmstudio") and e.get("quant")]
        if qat:
            e = sorted(qat, key=_rank)[0]
            notes.append(f"a quantization-aware-trained {e['quant']} is published: {describe(e)}; QAT weights were trained for "
                         f"that format, which Google's QAT cards describe as keeping quality similar to bfloat16; plan it with --quant {e['quant']}")
    return art, notes
