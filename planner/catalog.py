"""The Gemma catalog and the builder that turns an HF-style config into a ``ModelSpec``.

Catalog entries (``planner/data/models.json``) use Hugging Face config key names on purpose:
the same builder serves catalog entries and a local ``config.json``.
Tensor names and shapes follow llama.cpp's GGUF layout (``src/models/gemma*.cpp``
``load_arch_tensors``), because the GGUF quant mix and the placement rules key on them.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Optional

from planner.errors import UnknownModelError, UnsupportedArchitectureError
from planner.types import LayerSpec, ModelSpec, MoESpec, TensorSpec
from profiles import bounds as B

SUPPORTED_MODEL_TYPES = {
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "gemma3n": "gemma3n",
    "gemma3n_text": "gemma3n",
    "gemma4": "gemma4",
    "gemma4_text": "gemma4",
    "gemma4_unified": "gemma4",
    "gemma4_unified_text": "gemma4",
}

# llama.cpp hard-codes the first 20 layers as KV-storing for Gemma 3n (src/models/gemma3n.cpp).
GEMMA3N_KV_FROM_START = 20


@lru_cache(maxsize=1)
def catalog_entries() -> tuple[dict, ...]:
    text = resources.files("planner").joinpath("data/models.json").read_text()
    return tuple(json.loads(text)["models"])


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
    close = difflib.get_close_matches(q, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}" if close else ""
    raise UnknownModelError(f"unknown model '{query}'; {hint}".rstrip("; ").rstrip())


def _layer_types(cfg: dict, n_layers: int, family: str) -> str:
    """'S'/'F' per layer, from the config or the family's default pattern."""
    lt = cfg.get("layer_types")
    if isinstance(lt, str) and len(lt) == n_layers:
        return lt
    if isinstance(lt, list) and len(lt) == n_layers:
        return "".join("F" if str(x).startswith("full") else "S" for x in lt)
    if family == "gemma2":
        return "".join("S" if (i + 1) % 2 else "F" for i in range(n_layers))
    pattern = cfg.get("sliding_window_pattern") or {"gemma3": 6, "gemma3n": 5, "gemma4": 6}[family]
    types = "".join("F" if (i + 1) % pattern == 0 else "S" for i in range(n_layers))
    if family == "gemma4":  # Gemma4TextConfig forces the last layer to full attention
        types = types[:-1] + "F"
    return types


def _text_config(cfg: dict) -> dict:
    """The text part of a multimodal config, with the outer model_type kept for reference."""
    text = cfg.get("text_config")
    if isinstance(text, dict) and "hidden_size" in text:
        merged = dict(text)
        merged.setdefault("model_type", cfg.get("model_type"))
        merged["_outer_model_type"] = cfg.get("model_type")
        return merged
    return cfg


REQUIRED_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def spec_from_config(cfg: dict, *, name: str, source: str, src_dtype: str = "BF16", extra: Optional[dict] = None) -> ModelSpec:
    """Build a ModelSpec (layers + GGUF tensor inventory) from an HF-style config dict."""
    if not isinstance(cfg, dict):
        raise B.BoundsError(_origin(name, source), "config", type(cfg).__name__, "is not a JSON object",
                            "config.json must be an object like {\"model_type\": \"gemma3\", ...}")
    text = _text_config(cfg)
    model_type = text.get("model_type") or cfg.get("model_type")
    family = SUPPORTED_MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise UnsupportedArchitectureError(f"{name}: model_type '{model_type}' is not a Gemma 2/3/3n/4 architecture")
    missing = [k for k in REQUIRED_KEYS if text.get(k) in (None, "")]
    if missing:
        raise UnsupportedArchitectureError(f"{name}: config is missing {', '.join(missing)}", hint="check config.json is a complete Gemma config")
    check_config(text, _origin(name, source))

    H = int(text["hidden_size"])
    L = int(text["num_hidden_layers"])
    n_head = int(text["num_attention_heads"])
    n_kv = int(text.get("num_key_value_heads") or n_head)
    hd = int(text.get("head_dim") or H // n_head)
    vocab = int(text["vocab_size"])
    types = _layer_types(text, L, family)
    ff = text["intermediate_size"]
    ff_per_layer = list(ff) if isinstance(ff, list) else [int(ff)] * L
    if family == "gemma4" and text.get("use_double_wide_mlp") and not isinstance(ff, list):
        shared = int(text.get("num_kv_shared_layers") or 0)
        ff_per_layer = [int(ff) * (2 if i >= L - shared and shared else 1) for i in range(L)]
    k_eq_v = bool(text.get("attention_k_eq_v")) if family == "gemma4" else False
    global_hd, global_kv = hd, n_kv
    if family == "gemma4":
        # transformers >= 5.2x writes full-layer values into per_layer_config {"layer": {...}}
        full_override = next((v for k, v in (text.get("per_layer_config") or {}).items()
                              if str(k).isdigit() and int(k) < L and types[int(k)] == "F" and isinstance(v, dict)), {})
        origin = _origin(name, source)
        global_hd = B.check_int(origin, "global_head_dim", text.get("global_head_dim") or full_override.get("head_dim") or 512,
                                1, B.MAX_HEAD_DIM)
        if k_eq_v:  # Gemma4TextConfig uses num_global_key_value_heads only with attention_k_eq_v
            global_kv = B.check_int(origin, "num_global_key_value_heads",
                                    text.get("num_global_key_value_heads") or full_override.get("num_key_value_heads") or n_kv,
                                    1, B.MAX_HEADS)

    n_shared = int(text.get("num_kv_shared_layers") or 0)
    if family == "gemma3n":
        kv_from_start = GEMMA3N_KV_FROM_START if n_shared else L
    else:
        kv_from_start = L - n_shared

    layers: list[LayerSpec] = []
    for i in range(L):
        sliding = types[i] == "S"
        if family == "gemma4" and not sliding:
            lhd, lkv = global_hd, global_kv
        else:
            lhd, lkv = hd, n_kv
        shared_from = None
        if i >= kv_from_start:
            # mirrors the reuse callback in llama_model::create_memory (llama-model.cpp)
            shared_from = kv_from_start - (2 if sliding else 1)
        layers.append(LayerSpec(i, sliding, n_head, lkv, lhd, lhd, shared_from, ff_per_layer[i]))

    moe = None
    moe_cfg = text.get("moe") or {}
    n_expert = int(text.get("num_experts") or moe_cfg.get("num_experts") or 0)
    if n_expert and (text.get("enable_moe_block", True) or moe_cfg):
        moe = MoESpec(
            n_expert=n_expert,
            n_expert_used=int(text.get("top_k_experts") or text.get("num_experts_per_tok") or moe_cfg.get("top_k_experts")),
            expert_ff=int(text.get("moe_intermediate_size") or moe_cfg.get("moe_intermediate_size")),
            shared_ff=ff_per_layer[0],
        )
    ple = int(text.get("hidden_size_per_layer_input") or 0)
    ple_vocab = int(text.get("vocab_size_per_layer_input") or vocab)

    tensors = _tensors(family, H, vocab, layers, moe, ple, ple_vocab, k_eq_v, text, src_dtype)
    extra = extra or {}
    return ModelSpec(
        name=name,
        family=family,
        arch=family,
        hidden=H,
        vocab=vocab,
        n_layers=L,
        layers=layers,
        sliding_window=int(text.get("sliding_window") or 4096),
        ctx_train=int(text.get("max_position_embeddings") or 8192),
        tensors=tensors,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", True))),
        moe=moe,
        ple_dim=ple,
        source=source,
        **extra,
    )


def _origin(name: str, source: str) -> str:
    if source.startswith("hf-dir:"):
        return f"{source[7:]}/config.json"
    return f"{name} ({source})" if source else name


# key -> (lowest, highest) for the numbers of an HF-style config; None or absent means "use the default"
CONFIG_BOUNDS = {
    "hidden_size": (1, B.MAX_HIDDEN), "num_hidden_layers": (1, B.MAX_LAYERS), "num_attention_heads": (1, B.MAX_HEADS),
    "num_key_value_heads": (1, B.MAX_HEADS), "head_dim": (1, B.MAX_HEAD_DIM), "global_head_dim": (1, B.MAX_HEAD_DIM),
    "num_global_key_value_heads": (1, B.MAX_HEADS), "vocab_size": (1, B.MAX_VOCAB),
    "vocab_size_per_layer_input": (1, B.MAX_VOCAB), "sliding_window": (0, B.MAX_CTX),
    "max_position_embeddings": (1, B.MAX_CTX), "num_kv_shared_layers": (0, B.MAX_LAYERS),
    "sliding_window_pattern": (1, B.MAX_LAYERS), "num_experts": (0, B.MAX_EXPERTS), "top_k_experts": (1, B.MAX_EXPERTS),
    "num_experts_per_tok": (1, B.MAX_EXPERTS), "moe_intermediate_size": (1, B.MAX_FF),
    "hidden_size_per_layer_input": (0, B.MAX_PLE_DIM), "altup_num_inputs": (2, B.MAX_ALTUP), "laurel_rank": (1, B.MAX_HIDDEN),
}


def check_config(text: dict, origin: str) -> None:
    """Every number of a (text) config against profiles.bounds, before any of it is used."""
    fix = "correct config.json (it should match the model's published config)"
    for key, (lo, hi) in CONFIG_BOUNDS.items():
        B.opt_int(origin, key, text.get(key), lo, hi, fix)
    L = text["num_hidden_layers"]
    ff = text["intermediate_size"]
    if isinstance(ff, list):
        if len(ff) != L:
            raise B.BoundsError(origin, "intermediate_size", f"list of {len(ff)}", f"needs one entry per layer ({L})", fix)
        for i, v in enumerate(ff):
            B.check_int(origin, f"intermediate_size[{i}]", v, 1, B.MAX_FF, fix)
    else:
        B.check_int(origin, "intermediate_size", ff, 1, B.MAX_FF, fix)
    if text.get("num_kv_shared_layers") and text["num_kv_shared_layers"] >= L:
        raise B.BoundsError(origin, "num_kv_shared_layers", text["num_kv_shared_layers"], f"must be below num_hidden_layers ({L})", fix)
    if not text.get("head_dim") and text["hidden_size"] < text["num_attention_heads"]:
        raise B.BoundsError(origin, "hidden_size", text["hidden_size"], "is smaller than num_attention_heads and no head_dim is given", fix)
    moe = text.get("moe")
    if moe is not None:
        if not isinstance(moe, dict):
            raise B.BoundsError(origin, "moe", moe, "is not an object", fix)
        for key in ("num_experts", "top_k_experts", "moe_intermediate_size"):
            lo, hi = CONFIG_BOUNDS[key]
            B.opt_int(origin, f"moe.{key}", moe.get(key), lo, hi, fix)
    plc = text.get("per_layer_config")
    if plc is not None and not isinstance(plc, dict):
        raise B.BoundsError(origin, "per_layer_config", plc, "is not an object", fix)
    experts = text.get("num_experts") or (moe or {}).get("num_experts") or 0
    used = text.get("top_k_experts") or text.get("num_experts_per_tok") or (moe or {}).get("top_k_experts")
    if experts and (text.get("enable_moe_block", True) or moe):
        if not used or used > experts:
            raise B.BoundsError(origin, "top_k_experts", used, f"must be 1..num_experts ({experts})", fix)
        if not (text.get("moe_intermediate_size") or (moe or {}).get("moe_intermediate_size")):
            raise B.BoundsError(origin, "moe_intermediate_size", None, "is missing for a mixture-of-experts model", fix)


def _tensors(family, H, vocab, layers, moe, ple, ple_vocab, k_eq_v, cfg, dt) -> list[TensorSpec]:
    """GGUF tensor inventory in file order (mirrors load_arch_tensors in src/models/gemma*.cpp)."""
    L = len(layers)
    out: list[TensorSpec] = []

    def add(name, shape, layer=None, dtype=None):
        # 1-D tensors are written as F32 by the converters; the router stays F32 too.
        if dtype is None:
            dtype = "F32" if len(shape) == 1 or name.endswith("ffn_gate_inp.weight") else dt
        out.append(TensorSpec(name, tuple(int(s) for s in shape), layer, dtype))

    add("token_embd.weight", (vocab, H))
    if family == "gemma4":
        gl = next((lay for lay in layers if not lay.sliding), None)
        if gl is not None:
            add("rope_freqs.weight", (gl.head_dim_k // 2,))
    if ple:
        add("per_layer_token_embd.weight", (ple_vocab, ple * L))
        add("per_layer_model_proj.weight", (ple * L, H))
        add("per_layer_proj_norm.weight", (ple,))
    if family == "gemma3n":
        n_alt = int(cfg.get("altup_num_inputs") or 4)
        add("altup_proj.weight", (n_alt - 1, H, H))
        add("altup_unembd_proj.weight", (n_alt - 1, H, H))
    add("output_norm.weight", (H,))
    for lay in layers:
        i = lay.index
        p = f"blk.{i}."
        qd = lay.n_head * lay.head_dim_k
        kd = lay.n_head_kv * lay.head_dim_k
        vd = lay.n_head_kv * lay.head_dim_v
        add(p + "attn_norm.weight", (H,), i)
        # Gemma 4 KV-shared layers have no K/V projections (llama.cpp creates them TENSOR_NOT_REQUIRED)
        own_kv = lay.has_kv or family != "gemma4"
        add(p + "attn_q.weight", (qd, H), i)
        if own_kv:
            add(p + "attn_k.weight", (kd, H), i)
        if own_kv and not (k_eq_v and not lay.sliding):
            add(p + "attn_v.weight", (vd, H), i)
        add(p + "attn_output.weight", (H, qd), i)
        if family != "gemma2":
            add(p + "attn_q_norm.weight", (lay.head_dim_k,), i)
            if own_kv:
                add(p + "attn_k_norm.weight", (lay.head_dim_k,), i)
        add(p + "post_attention_norm.weight", (H,), i)
        if family == "gemma4":
            add(p + "layer_output_scale.weight", (1,), i)
        add(p + "ffn_norm.weight", (H,), i)
        add(p + "ffn_gate.weight", (lay.n_ff, H), i)
        add(p + "ffn_up.weight", (lay.n_ff, H), i)
        add(p + "ffn_down.weight", (H, lay.n_ff), i)
        add(p + "post_ffw_norm.weight", (H,), i)
        if moe is not None:
            E, eff = moe.n_expert, moe.expert_ff
            add(p + "ffn_gate_inp.weight", (E, H), i)
            add(p + "ffn_gate_inp.scale", (H,), i)
            add(p + "pre_ffw_norm_2.weight", (H,), i)
            add(p + "post_ffw_norm_1.weight", (H,), i)
            add(p + "post_ffw_norm_2.weight", (H,), i)
            add(p + "ffn_gate_up_exps.weight", (E, 2 * eff, H), i)
            add(p + "ffn_down_exps.weight", (E, H, eff), i)
            add(p + "ffn_down_exps.scale", (E,), i)
        if ple:
            add(p + "inp_gate.weight", (ple, H), i)
            add(p + "proj.weight", (H, ple), i)
            add(p + "post_norm.weight", (H,), i)
        if family == "gemma3n":
            n_alt = int(cfg.get("altup_num_inputs") or 4)
            rank = int(cfg.get("laurel_rank") or 64)
            add(p + "altup_correct_coef.weight", (n_alt, n_alt), i)
            add(p + "altup_correct_scale.weight", (H,), i)
            add(p + "altup_predict_coef.weight", (n_alt * n_alt, n_alt), i)
            add(p + "altup_router.weight", (n_alt, H), i)
            add(p + "altup_router_norm.weight", (H,), i)
            add(p + "laurel_l.weight", (rank, H), i)
            add(p + "laurel_r.weight", (H, rank), i)
            add(p + "laurel_post_norm.weight", (H,), i)
    return out


def catalog_spec(entry: dict) -> ModelSpec:
    extra = {
        "vision_params": int(entry.get("vision_params") or 0),
        "audio_params": int(entry.get("audio_params") or 0),
        "params_total": entry.get("params_published"),
        "hf_repo": entry["hf_repo"],
        "display": entry["display"],
        "sources": list(entry["sources"]),
        "notes": entry.get("notes", ""),
    }
    return spec_from_config(entry, name=entry["name"], source="catalog", extra=extra)


@lru_cache(maxsize=64)
def _cached_spec(name: str) -> ModelSpec:
    entry = next(e for e in catalog_entries() if e["name"] == name)
    return catalog_spec(entry)


def get_model(query: str) -> tuple[ModelSpec, str]:
    """Resolve a catalog name/alias/HF id to a ModelSpec; the note says how an ambiguous name was read."""
    entry, note = resolve_entry(query)
    return _cached_spec(entry["name"]), note


def all_models() -> list[ModelSpec]:
    return [_cached_spec(e["name"]) for e in catalog_entries()]


def active_params(spec: ModelSpec) -> int:
    """Parameters touched per token: everything but unused experts and the (CPU-side) PLE table."""
    total = 0
    for t in spec.tensors:
        n = t.n_elements
        if "_exps." in t.name and spec.moe:
            n = n * spec.moe.n_expert_used // spec.moe.n_expert
        if t.name == "per_layer_token_embd.weight":
            n = 0
        total += n
    return total
