"""The Gemma architecture rules, each written once, and the two readers that apply them.

* ``FAMILIES``: one row per family with the rules that differ between Gemma 2, 3, 3n and 4 (sliding
  pattern, forced last full layer, full-layer head size, KV sharing, per-layer embeddings, MoE), each
  citing its source. ``CONFIG_DEFAULTS``: the transformers config-class defaults a config.json may omit.
* ``spec_from_hf_config``: an HF-style config dict (config.json, or a catalog entry, which uses the
  same key names) -> frozen ``ModelSpec`` with per-layer facts and the GGUF tensor inventory.
* ``spec_from_gguf``: GGUF metadata and tensor infos -> the same ``ModelSpec``.

The catalog (planner/catalog.py), model files (planner/sources.py), the GGUF converter
(quantize/convert.py) and the llama.cpp KV reader (quantize/llamacpp.py) all build from here.
Pure: stdlib and our own types only, no I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from planner.errors import UnsupportedArchitectureError
from planner.types import LayerSpec, ModelSpec, MoESpec, TensorSpec
from profiles import bounds as B

# ---------------------------------------------------------------- the family table


@dataclass(frozen=True)
class Family:
    """The architecture rules of one Gemma generation, each as the config or llama.cpp states it."""

    name: str  # gemma2, gemma3, gemma3n, gemma4: also the GGUF general.architecture
    swa_period: int  # without layer_types, layer i is full attention when (i + 1) % period == 0
    force_last_full: bool = False  # the last layer is full attention whatever the period
    full_head_dim: Optional[int] = None  # full-attention layers' head size when the config omits it (None: head_dim)
    kv_from_start: Optional[int] = None  # with KV sharing, layers from here on reuse earlier KV (None: L - shared)
    ple: bool = False  # per-layer embeddings (hidden_size_per_layer_input)
    moe: bool = False  # mixture-of-experts blocks are possible
    altup: bool = False  # AltUp / LAuReL tensors (Gemma 3n)
    qk_norm: bool = True  # attn_q_norm / attn_k_norm tensors
    norm_shift: float = 1.0  # RMSNorm is x * (shift + w): Gemma 2/3 fold +1 into the weight, Gemma 3n and 4 do not
    source: str = ""


FAMILIES: dict[str, Family] = {
    "gemma2": Family("gemma2", swa_period=2, qk_norm=False,
                     source="transformers Gemma2Config.layer_types ('sliding' if (i+1) % 2); llama.cpp gemma2.cpp set_swa_pattern(2)"),
    "gemma3": Family("gemma3", swa_period=6,
                     source="transformers Gemma3TextConfig sliding_window_pattern=6; llama.cpp gemma3.cpp set_swa_pattern(6)"),
    # llama.cpp hard-codes the first 20 layers as KV-storing for Gemma 3n (src/models/gemma3n.cpp n_layer_kv_from_start)
    # Gemma 3n's RMSNorm is x * w (Gemma3nRMSNorm, like Gemma 4): llama.cpp's converter adds nothing
    # (conversion/gemma.py Gemma3NModel.norm_shift = 0.0); tests/test_convert_llamacpp.py holds it
    "gemma3n": Family("gemma3n", swa_period=5, kv_from_start=20, ple=True, altup=True, norm_shift=0.0,
                      source="transformers Gemma3nTextConfig layer_types (4 sliding : 1 full); llama.cpp gemma3n.cpp"),
    # Gemma4TextConfig.__post_init__ forces the last layer to full attention; full layers default to head_dim 512
    "gemma4": Family("gemma4", swa_period=6, force_last_full=True, full_head_dim=512, ple=True, moe=True, norm_shift=0.0,
                     source="transformers configuration_gemma4.py (Gemma4TextConfig); llama.cpp src/models/gemma4.cpp"),
}

# HF model_type (outer or text_config) -> family
MODEL_TYPES: dict[str, str] = {
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

# Defaults of the transformers 5.24 text config classes, for keys a config.json may omit (real Gemma 3
# multimodal configs leave several text_config fields at their defaults; Gemma 4 configs are written as a
# diff against Gemma4TextConfig). Gemma 3n configs are complete in practice: no defaults are assumed.
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=8192,
                   rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=256, sliding_window=4096,
                   final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    "gemma3": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                   max_position_embeddings=131072, rms_norm_eps=1e-6, query_pre_attn_scalar=256,
                   sliding_window=4096, sliding_window_pattern=6, rope_theta=1000000.0,
                   rope_local_base_freq=10000.0),
    "gemma3n": {},
    "gemma4": dict(vocab_size=262144, hidden_size=2304, intermediate_size=9216, num_hidden_layers=30,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                   max_position_embeddings=131072, rms_norm_eps=1e-6, sliding_window=512,
                   hidden_size_per_layer_input=256, vocab_size_per_layer_input=262144, num_kv_shared_layers=0,
                   attention_k_eq_v=False, enable_moe_block=False),
}
# Text config classes whose defaults differ from their family's (applied over CONFIG_DEFAULTS): Gemma 4
# unified (12B) has no per-layer embeddings and its own window and context (Gemma4UnifiedTextConfig).
TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma4_unified_text": dict(hidden_size_per_layer_input=0, sliding_window=1024, max_position_embeddings=262144,
                                use_bidirectional_attention="vision"),
}
# What a config.json must state itself: without them it names no particular model.
STATED_KEYS = ("hidden_size", "num_hidden_layers")
# What every reader needs once the defaults are in.
REQUIRED_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


# ---------------------------------------------------------------- config -> text config


@dataclass(frozen=True)
class TextConfig:
    """A Hugging Face config reduced to its text model: both model types, the family, the text config."""

    outer_type: str  # model_type of the file (gemma3 for a multimodal wrapper)
    text_type: str  # model_type of the text model (gemma3_text)
    family: Family
    cfg: dict = field(hash=False)  # the text config, defaults filled in when asked for


def text_config(config: dict, *, fill_defaults: bool, origin: str = "config.json") -> TextConfig:
    """The text part of a (possibly multimodal) config, with the family's defaults for omitted keys when
    ``fill_defaults`` (config.json files; catalog entries and GGUF-derived dicts are complete)."""
    outer = config.get("model_type")
    inner = config.get("text_config")
    if isinstance(inner, dict) and inner:
        text = dict(inner)
        text_type = inner.get("model_type") or {"gemma3": "gemma3_text", "gemma4": "gemma4_text",
                                                 "gemma4_unified": "gemma4_unified_text"}.get(outer, outer)
    else:
        text, text_type = dict(config), outer
    family = MODEL_TYPES.get(text_type) if isinstance(text_type, str) else None
    if family is None:
        raise UnsupportedArchitectureError(f"{origin}: model_type '{outer}' is not a Gemma 2/3/3n/4 architecture")
    if "tie_word_embeddings" not in text and "tie_word_embeddings" in config:
        text["tie_word_embeddings"] = config["tie_word_embeddings"]
    if fill_defaults:
        missing = [k for k in STATED_KEYS if text.get(k) in (None, "")]
        if missing:
            raise UnsupportedArchitectureError(f"{origin}: config is missing {', '.join(missing)}",
                                               hint="check config.json is a complete Gemma config")
        merged = dict(CONFIG_DEFAULTS[family])
        merged.update(TYPE_DEFAULTS.get(text_type, {}))
        # explicit nulls keep the default, except soft-capping where null means "none"
        merged.update({k: v for k, v in text.items() if v is not None or k.endswith("softcapping")})
        text = merged
    text.setdefault("tie_word_embeddings", True)
    return TextConfig(outer if isinstance(outer, str) else "", text_type, FAMILIES[family], text)


# ---------------------------------------------------------------- per-layer rules


def layer_types(cfg: dict, n_layers: int, family: Family, origin: str = "config.json") -> tuple[bool, ...]:
    """Sliding (True) or full attention (False) per layer: the config's layer_types ("S"/"F" string or
    transformers' "sliding_attention"/"full_attention" list), else the family's period."""
    lt = cfg.get("layer_types")
    if lt:
        if len(lt) != n_layers:
            raise B.BoundsError(origin, "layer_types", f"{len(lt)} entries", f"needs one per layer ({n_layers})",
                                "correct config.json (it should match the model's published config)")
        if isinstance(lt, str):
            return tuple(c != "F" for c in lt)
        return tuple(not str(x).startswith("full") for x in lt)
    if not cfg.get("sliding_window", 1):  # sliding_window 0 / null: no sliding layers at all
        return (False,) * n_layers
    period = int(cfg.get("sliding_window_pattern") or family.swa_period)
    swa = [(i + 1) % period != 0 for i in range(n_layers)]
    if family.force_last_full and swa:
        swa[-1] = False
    return tuple(swa)


def full_layer_override(cfg: dict, key: str, is_swa: Sequence[bool]) -> Any:
    """Gemma 4: a full-attention layer's value from ``per_layer_config`` (transformers >= 5.2x writes it there)."""
    plc = cfg.get("per_layer_config") or {}
    for idx, entry in plc.items():
        if str(idx).isdigit() and int(idx) < len(is_swa) and not is_swa[int(idx)] and isinstance(entry, dict) and key in entry:
            return entry[key]
    return None


def head_dim(cfg: dict) -> int:
    """Sliding-layer (and, outside Gemma 4, every layer's) head size."""
    return int(cfg.get("head_dim") or int(cfg["hidden_size"]) // int(cfg["num_attention_heads"]))


def full_head_dim(cfg: dict, family: Family, is_swa: Sequence[bool]) -> int:
    """Head size of full-attention layers: Gemma 4's global_head_dim (or per_layer_config, default 512)."""
    if family.full_head_dim is None:
        return head_dim(cfg)
    return int(cfg.get("global_head_dim") or full_layer_override(cfg, "head_dim", is_swa) or family.full_head_dim)


def kv_heads(cfg: dict) -> int:
    return int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])


def full_kv_heads(cfg: dict, family: Family, is_swa: Sequence[bool]) -> int:
    """KV heads of full-attention layers: Gemma4TextConfig uses num_global_key_value_heads only with
    attention_k_eq_v; per_layer_config states a layer's own value."""
    if family.full_head_dim is None:
        return kv_heads(cfg)
    glob = cfg.get("num_global_key_value_heads") if cfg.get("attention_k_eq_v") else None
    return int(glob or full_layer_override(cfg, "num_key_value_heads", is_swa) or kv_heads(cfg))


def k_eq_v(cfg: dict, family: Family) -> bool:
    """Gemma 4 full layers with attention_k_eq_v store no V projection (V = K)."""
    return family.name == "gemma4" and bool(cfg.get("attention_k_eq_v"))


def n_kv_shared(cfg: dict) -> int:
    return int(cfg.get("num_kv_shared_layers") or 0)


def kv_shared_from(family: Family, n_layers: int, n_shared: int, is_swa: Sequence[bool]) -> tuple[Optional[int], ...]:
    """The layer whose KV each layer reuses (None: stores its own). Mirrors the reuse callback in
    llama_model::create_memory (llama-model.cpp): the last KV-storing layer of the same kind."""
    if not n_shared:
        return (None,) * n_layers
    start = family.kv_from_start if family.kv_from_start is not None else n_layers - n_shared
    return tuple(None if i < start else start - (2 if is_swa[i] else 1) for i in range(n_layers))


def ff_per_layer(cfg: dict, family: Family, n_layers: int) -> tuple[int, ...]:
    """MLP width per layer; Gemma 4's use_double_wide_mlp doubles it on the KV-shared layers."""
    ff = cfg["intermediate_size"]
    if isinstance(ff, list):
        return tuple(int(x) for x in ff)
    shared = n_kv_shared(cfg)
    double = family.name == "gemma4" and cfg.get("use_double_wide_mlp") and shared
    return tuple(int(ff) * (2 if double and i >= n_layers - shared else 1) for i in range(n_layers))


def moe_facts(cfg: dict, family: Family) -> Optional[tuple[int, int, int]]:
    """(experts, experts used per token, expert MLP width) of a MoE model, else None. Gemma 4 MoE is on
    when enable_moe_block is set (or the catalog's ``moe`` object is given)."""
    moe = cfg.get("moe") or {}
    n = int(cfg.get("num_experts") or moe.get("num_experts") or 0)
    if not family.moe or not n or not (cfg.get("enable_moe_block", True) or moe):
        return None
    used = int(cfg.get("top_k_experts") or cfg.get("num_experts_per_tok") or moe.get("top_k_experts") or 0)
    width = int(cfg.get("moe_intermediate_size") or cfg.get("expert_intermediate_size") or moe.get("moe_intermediate_size") or 0)
    return n, used, width


def ple_dims(cfg: dict, family: Family) -> tuple[int, int]:
    """(per-layer embedding width, its vocabulary): Gemma 3n / 4 E-models; (0, vocab) otherwise."""
    vocab = int(cfg["vocab_size"])
    if not family.ple:
        return 0, vocab
    return int(cfg.get("hidden_size_per_layer_input") or 0), int(cfg.get("vocab_size_per_layer_input") or vocab)


# ---------------------------------------------------------------- HF-style config -> ModelSpec

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
    lt = text.get("layer_types")
    if lt is not None and (not isinstance(lt, (str, list)) or len(lt) != L):
        raise B.BoundsError(origin, "layer_types", f"{type(lt).__name__} of {len(lt) if hasattr(lt, '__len__') else '?'}",
                            f"needs one entry per layer ({L})", fix)
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


def spec_from_hf_config(cfg: dict, *, name: str, source: str, origin: str = "", src_dtype: str = "BF16",
                        fill_defaults: bool = False, extra: Optional[dict] = None) -> ModelSpec:
    """Build a ModelSpec (layers + GGUF tensor inventory) from an HF-style config dict."""
    origin = origin or name
    if not isinstance(cfg, dict):
        raise B.BoundsError(origin, "config", type(cfg).__name__, "is not a JSON object",
                            "config.json must be an object like {\"model_type\": \"gemma3\", ...}")
    tc = text_config(cfg, fill_defaults=fill_defaults, origin=name)
    text, fam = tc.cfg, tc.family
    missing = [k for k in REQUIRED_KEYS if text.get(k) in (None, "")]
    if missing:
        raise UnsupportedArchitectureError(f"{name}: config is missing {', '.join(missing)}", hint="check config.json is a complete Gemma config")
    check_config(text, origin)

    H = int(text["hidden_size"])
    L = int(text["num_hidden_layers"])
    n_head = int(text["num_attention_heads"])
    is_swa = layer_types(text, L, fam, origin)
    hd, n_kv = head_dim(text), kv_heads(text)
    fhd = B.check_int(origin, "global_head_dim", full_head_dim(text, fam, is_swa), 1, B.MAX_HEAD_DIM)
    fkv = B.check_int(origin, "num_global_key_value_heads", full_kv_heads(text, fam, is_swa), 1, B.MAX_HEADS)
    shared_from = kv_shared_from(fam, L, n_kv_shared(text), is_swa)
    ff = ff_per_layer(text, fam, L)
    layers = tuple(LayerSpec(i, is_swa[i], n_head, n_kv if is_swa[i] else fkv, hd if is_swa[i] else fhd,
                             hd if is_swa[i] else fhd, shared_from[i], ff[i]) for i in range(L))
    m = moe_facts(text, fam)
    moe = MoESpec(n_expert=m[0], n_expert_used=m[1], expert_ff=m[2], shared_ff=ff[0]) if m else None
    ple, ple_vocab = ple_dims(text, fam)
    vocab = int(text["vocab_size"])
    tensors = gguf_tensors(fam, H, vocab, layers, moe, ple, ple_vocab, k_eq_v(text, fam), text, src_dtype)
    return ModelSpec(
        name=name,
        family=fam.name,
        arch=fam.name,
        hidden=H,
        vocab=vocab,
        n_layers=L,
        layers=layers,
        sliding_window=int(text.get("sliding_window") or 4096),
        ctx_train=int(text.get("max_position_embeddings") or 8192),
        tensors=tuple(tensors),
        tied_embeddings=bool(text.get("tie_word_embeddings", True)),
        moe=moe,
        ple_dim=ple,
        source=source,
        **(extra or {}),
    )


def gguf_tensors(fam: Family, H, vocab, layers, moe, ple, ple_vocab, kv_same, cfg, dt) -> list[TensorSpec]:
    """GGUF tensor inventory in file order (mirrors load_arch_tensors in src/models/gemma*.cpp)."""
    L = len(layers)
    out: list[TensorSpec] = []

    def add(name, shape, layer=None, dtype=None):
        # 1-D tensors are written as F32 by the converters; the router stays F32 too.
        if dtype is None:
            dtype = "F32" if len(shape) == 1 or name.endswith("ffn_gate_inp.weight") else dt
        out.append(TensorSpec(name, tuple(int(s) for s in shape), layer, dtype))

    gemma4 = fam.name == "gemma4"
    add("token_embd.weight", (vocab, H))
    if gemma4:
        gl = next((lay for lay in layers if not lay.sliding), None)
        if gl is not None:
            add("rope_freqs.weight", (gl.head_dim_k // 2,))
    if ple:
        add("per_layer_token_embd.weight", (ple_vocab, ple * L))
        add("per_layer_model_proj.weight", (ple * L, H))
        add("per_layer_proj_norm.weight", (ple,))
    n_alt = int(cfg.get("altup_num_inputs") or 4)
    if fam.altup:
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
        own_kv = lay.has_kv or not gemma4
        add(p + "attn_q.weight", (qd, H), i)
        if own_kv:
            add(p + "attn_k.weight", (kd, H), i)
        if own_kv and not (kv_same and not lay.sliding):
            add(p + "attn_v.weight", (vd, H), i)
        add(p + "attn_output.weight", (H, qd), i)
        if fam.qk_norm:
            add(p + "attn_q_norm.weight", (lay.head_dim_k,), i)
            if own_kv:
                add(p + "attn_k_norm.weight", (lay.head_dim_k,), i)
        add(p + "post_attention_norm.weight", (H,), i)
        if gemma4:
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
        if fam.altup:
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


# ---------------------------------------------------------------- GGUF metadata -> ModelSpec

# general.file_type -> name (enum llama_ftype, include/llama.h)
GGUF_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
                   12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
                   21: "Q2_K_S", 25: "IQ4_NL", 30: "IQ4_XS", 32: "BF16"}


def _first(v):
    return v[0] if isinstance(v, list) else v


def _layer_from_name(name: str, n_layers: int) -> Optional[int]:
    """The block of a ``blk.N.*`` tensor the spec did not predict; None outside 0..n_layers-1."""
    if name.startswith("blk."):
        part = name.split(".")[1]
        if part.isdigit() and len(part) < 6 and int(part) < n_layers:
            return int(part)
    return None


def spec_from_gguf(fields: dict, tensors: Sequence, *, name: str, source: str, origin: str,
                   file_bytes: Optional[int] = None) -> ModelSpec:
    """GGUF metadata (``{key: value}``) and tensor infos (objects with name, shape, type_name, n_bytes) ->
    ModelSpec. The keys are those llama.cpp's loaders read (llama_model_base::load_hparams and
    load_arch_hparams in src/models/gemma*.cpp); the file's own tensors become the inventory."""
    arch = fields.get("general.architecture")
    if not isinstance(arch, str) or arch not in FAMILIES:
        raise UnsupportedArchitectureError(f"{name}: GGUF architecture '{arch}' is not a supported Gemma")
    fix = "the GGUF metadata is damaged: download or convert the model again"

    def k(key, default=None):
        return fields.get(f"{arch}.{key}", default)

    def num(key, lo, hi, default=None, required=False):
        """One GGUF integer (or per-layer list of integers) checked against profiles.bounds."""
        v = k(key)
        if v is None:
            if required:
                raise B.BoundsError(origin, f"{arch}.{key}", None, "is missing", fix)
            return default
        if isinstance(v, list):
            if len(v) != n_layers:
                raise B.BoundsError(origin, f"{arch}.{key}", f"list of {len(v)}", f"needs one entry per layer ({n_layers})", fix)
            return [B.check_int(origin, f"{arch}.{key}[{i}]", x, lo, hi, fix) for i, x in enumerate(v)]
        return B.check_int(origin, f"{arch}.{key}", v, lo, hi, fix)

    n_layers = B.check_int(origin, f"{arch}.block_count", k("block_count"), 1, B.MAX_LAYERS, fix)
    cfg: dict[str, Any] = {
        "model_type": arch,
        "hidden_size": num("embedding_length", 1, B.MAX_HIDDEN, required=True),
        "num_hidden_layers": n_layers,
        "intermediate_size": num("feed_forward_length", 1, B.MAX_FF, required=True),
        "num_attention_heads": _first(num("attention.head_count", 1, B.MAX_HEADS, required=True)),
        "max_position_embeddings": _first(num("context_length", 1, B.MAX_CTX, required=True)),
        "sliding_window": _first(num("attention.sliding_window", 0, B.MAX_CTX, 4096)),
        "num_kv_shared_layers": _first(num("attention.shared_kv_layers", 0, n_layers - 1, 0)),
        "hidden_size_per_layer_input": _first(num("embedding_length_per_layer_input", 0, B.MAX_PLE_DIM, 0)),
    }
    kv = num("attention.head_count_kv", 0, B.MAX_HEADS)
    pattern = k("attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) == n_layers:
        cfg["layer_types"] = "".join("S" if b else "F" for b in pattern)
    elif isinstance(pattern, int) and not isinstance(pattern, bool) and 0 < pattern <= B.MAX_LAYERS:
        cfg["sliding_window_pattern"] = pattern
    elif pattern is not None:
        raise B.BoundsError(origin, f"{arch}.attention.sliding_window_pattern", pattern,
                            f"is neither a period (1..{B.MAX_LAYERS}) nor one flag per layer ({n_layers})", fix)
    key_len = _first(num("attention.key_length", 1, B.MAX_HEAD_DIM))
    key_swa = _first(num("attention.key_length_swa", 1, B.MAX_HEAD_DIM))
    if FAMILIES[arch].full_head_dim is not None:  # full and sliding layers differ (Gemma 4)
        cfg["head_dim"] = key_swa or key_len
        cfg["global_head_dim"] = key_len
        types = cfg.get("layer_types") or ""
        if isinstance(kv, list):
            cfg["num_key_value_heads"] = next((h for h, t in zip(kv, types) if t == "S"), kv[0])
            cfg["num_global_key_value_heads"] = next((h for h, t in zip(kv, types) if t == "F"), kv[0])
        else:
            cfg["num_key_value_heads"] = kv
        names = {t.name for t in tensors}
        cfg["attention_k_eq_v"] = any(
            f"blk.{i}.attn_q.weight" in names and f"blk.{i}.attn_v.weight" not in names for i in range(n_layers))
    else:
        cfg["num_key_value_heads"] = _first(kv)
        cfg["head_dim"] = key_len
    for key in ("num_key_value_heads", "num_global_key_value_heads"):
        if cfg.get(key) == 0:
            raise B.BoundsError(origin, f"{arch}.attention.head_count_kv", kv, "gives a layer 0 KV heads", fix)
    experts = _first(num("expert_count", 0, B.MAX_EXPERTS, 0))
    if experts:
        cfg["num_experts"] = experts
        cfg["enable_moe_block"] = True
        cfg["top_k_experts"] = _first(num("expert_used_count", 1, experts, required=True))
        cfg["moe_intermediate_size"] = _first(num("expert_feed_forward_length", 1, B.MAX_FF, required=True))
    emb = next((t for t in tensors if t.name == "token_embd.weight"), None)
    if emb is None:
        raise UnsupportedArchitectureError(f"{name}: no token_embd.weight tensor", hint="the GGUF file is incomplete")
    if len(emb.shape) != 2:
        raise B.BoundsError(origin, "token_embd.weight shape", list(emb.shape), "is not [vocab, hidden]", fix)
    cfg["vocab_size"] = B.check_int(origin, "token_embd.weight rows (vocabulary)", int(emb.shape[0]), 1, B.MAX_VOCAB, fix)
    spec = spec_from_hf_config(cfg, name=name, source=source, origin=origin)
    layer_of = {t.name: t.layer for t in spec.tensors}
    ftype = fields.get("general.file_type")
    return dataclasses.replace(
        spec,
        tensors=tuple(TensorSpec(t.name, tuple(t.shape), layer_of.get(t.name, _layer_from_name(t.name, n_layers)), t.type_name,
                                 t.n_bytes) for t in tensors),
        gguf_file_bytes=file_bytes,
        gguf_file_type=GGUF_FILE_TYPES.get(ftype, "GGUF") if isinstance(ftype, int) and not isinstance(ftype, bool) else "GGUF",
    )
