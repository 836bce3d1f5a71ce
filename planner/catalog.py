"""The Gemma catalog: entries, name resolution, and their specs (built by planner/arch.py).

Catalog entries (``planner/data/models.json``) use Hugging Face config key names on purpose:
the same builder serves catalog entries and a local ``config.json``.
Tensor names and shapes follow llama.cpp's GGUF layout (``src/models/gemma*.cpp``
``load_arch_tensors``), because the GGUF quant mix and the placement rules key on them.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
import weakref
from typing import Optional

from planner import arch
from planner.errors import UnknownModelError
from planner.types import ModelSpec

SUPPORTED_MODEL_TYPES = arch.MODEL_TYPES


@lru_cache(maxsize=1)
def catalog_entries() -> tuple[dict, ...]:
    text = resources.files("planner").joinpath("data/models.json").read_text()
    return tuple(json.loads(text)["models"])


_ACTIVE_CACHE: "weakref.WeakKeyDictionary[ModelSpec, int]" = weakref.WeakKeyDictionary()

def _norm(s: str) -> str:
    s = s.strip().lower()
    s = s.removeprefix("hf.co/").removeprefix("huggingface.co/")
    return s


def _size_key(s: str) -> Optional[str]:
    """The size part users type: '27b', 'e2b', '26b-a4b', '270m'."""
    m = re.search(r"(e\d+b|\d+b-a\d+b|\d+(?:\.\d+)?[bm])(?:-it|-pt)?$", s)
    return m.group(1) if m else None


def resolve_entry(query: str) -> tuple[dict, str]:
    """Find a catalog entry by name, alias or HF repo id. Returns (entry, note).

    A bare size that several generations share ('27b', '12b') picks the newest and says so.
    """
    q = _norm(query)
    entries = catalog_entries()
    for e in entries:
        keys = {e["name"], *e["aliases"], *(r.lower() for r in e["hf_repos"])}
        keys |= {r.lower().split("/", 1)[1] for r in e["hf_repos"]}
        if q in keys or q.removesuffix("-it").removesuffix("-pt") in keys:
            return e, ""
    # "gemma-4-31b-it-gguf", "google/gemma-3-27b-it-qat" ...: strip decorations and retry on the stem
    stem = re.sub(r"^(google/|unsloth/|ggml-org/|lmstudio-community/|bartowski/)", "", q)
    stem = re.sub(r"(-it|-pt)?(-qat)?(-gguf|-q\d.*|-bf16|-f16)?$", "", stem)
    if stem != q:
        for e in entries:
            if stem == e["name"] or stem in e["aliases"]:
                return e, ""
    size = _size_key(stem)
    if size and re.fullmatch(r"[\w.\-]*", stem) and len(stem) <= len(size) + 1:
        matches = [e for e in entries if _size_key(e["name"]) == size]
        if len(matches) == 1:
            return matches[0], ""
        if matches:
            newest = max(matches, key=lambda e: e["released"])
            others = ", ".join(e["name"] for e in matches if e is not newest)
            return newest, f"'{query}' matches several generations; using the newest, {newest['name']} (also: {others})"
    names = [e["name"] for e in entries] + [a for e in entries for a in e["aliases"]]
    import difflib  # only for a name that is not in the catalog

    close = difflib.get_close_matches(q, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}" if close else ""
    raise UnknownModelError(f"unknown model '{query}'; {hint}".rstrip("; ").rstrip())


def spec_from_config(cfg: dict, *, name: str, source: str, src_dtype: str = "BF16", extra: Optional[dict] = None,
                     fill_defaults: bool = False) -> ModelSpec:
    """An HF-style config dict -> ModelSpec (planner.arch.spec_from_hf_config, where the Gemma rules live)."""
    return arch.spec_from_hf_config(cfg, name=name, source=source, origin=_origin(name, source), src_dtype=src_dtype,
                                    fill_defaults=fill_defaults, extra=extra)


def _origin(name: str, source: str) -> str:
    if source.startswith("hf-dir:"):
        return f"{source[7:]}/config.json"
    return f"{name} ({source})" if source else name


def catalog_spec(entry: dict) -> ModelSpec:
    extra = {
        "vision_params": int(entry.get("vision_params") or 0),
        "audio_params": int(entry.get("audio_params") or 0),
        "params_total": entry.get("params_published"),
        "hf_repo": entry["hf_repo"],
        "display": entry["display"],
        "sources": tuple(entry["sources"]),
        "notes": entry.get("notes", ""),
    }
    return spec_from_config(entry, name=entry["name"], source="catalog", extra=extra)


@lru_cache(maxsize=64)
def spec_by_name(name: str) -> ModelSpec:
    """The catalog's spec for its canonical name (shared: specs are frozen)."""
    entry = next((e for e in catalog_entries() if e["name"] == name), None)
    if entry is None:
        raise UnknownModelError(f"unknown model '{name}'")
    return catalog_spec(entry)


def get_model(query: str) -> tuple[ModelSpec, str]:
    """Resolve a catalog name/alias/HF id to a ModelSpec; the note says how an ambiguous name was read."""
    entry, note = resolve_entry(query)
    return spec_by_name(entry["name"]), note


def all_models() -> list[ModelSpec]:
    return [spec_by_name(e["name"]) for e in catalog_entries()]


def active_params(spec: ModelSpec) -> int:
    """Parameters touched per token: everything but unused experts and the (CPU-side) PLE table. Cached per spec."""
    hit = _ACTIVE_CACHE.get(spec)
    if hit is not None:
        return hit
    total = 0
    for t in spec.tensors:
        n = t.n_elements
        if "_exps." in t.name and spec.moe:
            n = n * spec.moe.n_expert_used // spec.moe.n_expert
        if t.name == "per_layer_token_embd.weight":
            n = 0
        total += n
    _ACTIVE_CACHE[spec] = total
    return total
