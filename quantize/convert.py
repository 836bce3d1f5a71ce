"""Hugging Face safetensors -> GGUF for the text models of Gemma 2, Gemma 3 and Gemma 4.

Our own converter on `gguf.GGUFWriter`, so that the planner knows exactly what a file holds:
  * hyperparameters llama.cpp's loaders read (src/models/gemma{2,3,4}.cpp, llama_model_base::load_hparams),
    the sliding-window layout always written as an explicit per-layer bool array;
  * the tokenizer (SentencePiece tokenizer.model, or tokenizer.json BPE) with scores, token types,
    special ids, add_bos and the chat template;
  * Gemma's conventions: RMSNorm is x*(1+w) in Gemma 2/3, so `+1` is folded into every norm weight
    there (Gemma 4's norm is x*w, nothing added); tied embeddings (no output.weight); 1-D tensors,
    norms, router weights and non-`.weight` tensors in F32, as llama.cpp's own converter does.

Tensors are streamed: the GGUF header is planned from safetensors headers alone (validated by
`safetensors.safe_open`), then every tensor is read in row chunks with positioned reads at the
offsets the header gives, converted with numpy and written straight to a temporary file, so peak
memory is one chunk (<= CHUNK_BYTES), not the model, and torch is not needed. The temporary file is
renamed at the end.
Pickle checkpoints (`*.bin`) are refused and no code from the checkpoint is ever run (only JSON is read).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import gguf
import numpy as np

from planner import arch as a
from planner.arch import FAMILIES, layer_types
from planner.errors import PlanError

from .errors import (
    ConversionError,
    InsufficientDiskError,
    OutputExistsError,
    UnsafeCheckpointError,
    UnsupportedArchitectureError,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 2**20  # rows are read and written in pieces of at most this many bytes (as f32)

# outtype -> (general.file_type, ggml type of quantizable tensors)
OUTTYPES: dict[str, tuple[gguf.LlamaFileType, gguf.GGMLQuantizationType]] = {
    "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
}

# HF model_type (top level or text_config) -> GGUF architecture
ARCHS: dict[str, gguf.MODEL_ARCH] = {
    "gemma2": gguf.MODEL_ARCH.GEMMA2,
    "gemma3": gguf.MODEL_ARCH.GEMMA3,
    "gemma3_text": gguf.MODEL_ARCH.GEMMA3,
    "gemma4": gguf.MODEL_ARCH.GEMMA4,
    "gemma4_text": gguf.MODEL_ARCH.GEMMA4,
    "gemma3n": gguf.MODEL_ARCH.GEMMA3N,
    "gemma3n_text": gguf.MODEL_ARCH.GEMMA3N,
    # Gemma 4 12B: llama.cpp's converter writes its text model as plain gemma4 (conversion/gemma.py,
    # Gemma4UnifiedModel), adding only the generation config's suppress_tokens
    "gemma4_unified": gguf.MODEL_ARCH.GEMMA4,
    "gemma4_unified_text": gguf.MODEL_ARCH.GEMMA4,
}
NOT_YET: dict[str, str] = {
    "gemma": "Gemma 1",
}

# Names (GGUF side) kept in F32 whatever the outtype; mirrors the rule in llama.cpp's converter
# (conversion/base.py): 1-D tensors, *_norm.weight, MoE router, anything not ending in ".weight".
_F32_NAMES = re.compile(r"^blk\.\d+\.(ffn_gate_inp|altup_correct_coef|altup_predict_coef)\.weight$")

# Prefixes of multimodal wrappers: text weights are renamed to the plain causal-LM names,
# towers and projectors are skipped (they belong in a separate mmproj file).
_TEXT_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.")
_SKIP_PREFIXES = (
    "vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.",
    "model.embed_vision.", "model.audio_tower.", "model.embed_audio.", "audio_tower.", "embed_vision.",
    "embed_audio.", "model.vision_embedder.", "model.audio_embedder.",
)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# ---------------------------------------------------------------------------------------------
# hyperparameters


@dataclass(frozen=True)
class GemmaHParams:
    """What the GGUF needs from config.json, per layer where it varies."""

    model_type: str
    text_type: str
    arch: gguf.MODEL_ARCH
    n_layer: int
    n_embd: int
    n_ff: tuple[int, ...]
    n_head: int
    n_head_kv: tuple[int, ...]
    head_dim: int  # full-attention layers
    head_dim_swa: int
    n_ctx_train: int
    rms_eps: float
    is_swa: tuple[bool, ...]
    sliding_window: int | None
    rope_base: float
    rope_base_swa: float
    rope_scaling: tuple[str, float] | None  # ("linear", factor) on full layers
    n_rot: int
    n_rot_swa: int
    rope_freqs: tuple[float, ...] | None  # Gemma 4 proportional rope factors, full layers
    attn_softcap: float | None
    final_softcap: float | None
    query_pre_attn_scalar: float | None
    n_kv_shared: int
    n_embd_per_layer: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    tied: bool
    vocab_size: int
    norm_shift: float  # added to every norm weight (Gemma 2/3: 1.0)
    # Gemma 3n only
    altup_active_idx: int = 0
    altup_num_inputs: int = 0
    activation_sparsity_scale: tuple[float, ...] | None = None  # per layer: Phi^-1(p), 0 where p = 0

    @property
    def swa_layers(self) -> int:
        return sum(self.is_swa)


def _rope(cfg: dict[str, Any], kind: str) -> dict[str, Any]:
    """rope parameters of one layer kind, from `rope_parameters` (transformers 5) or legacy keys."""
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict) and kind in rp and isinstance(rp[kind], dict):
        return rp[kind]
    if isinstance(rp, dict) and "rope_type" in rp:
        return rp
    out: dict[str, Any] = {"rope_type": "default"}
    if kind == "sliding_attention" and "rope_local_base_freq" in cfg:
        out["rope_theta"] = cfg["rope_local_base_freq"]
    elif "rope_theta" in cfg:
        out["rope_theta"] = cfg["rope_theta"]
    if kind == "full_attention" and isinstance(cfg.get("rope_scaling"), dict):
        out.update(cfg["rope_scaling"])
        out["rope_type"] = out.get("rope_type") or out.get("type", "default")
    return out


def text_config(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(top-level model_type, text config dict with defaults filled in); raises for non-Gemma archs."""
    model_type = config.get("model_type", "")
    if model_type in NOT_YET:
        raise UnsupportedArchitectureError(f"{NOT_YET[model_type]} ({model_type}) is not supported yet by the GGUF converter")
    if model_type not in ARCHS:
        raise UnsupportedArchitectureError(f"model_type {model_type!r} is not a Gemma architecture the converter knows")
    text = dict(config.get("text_config") or config)
    text_type = text.get("model_type") or {"gemma3": "gemma3_text", "gemma4": "gemma4_text", "gemma3n": "gemma3n_text",
                                           "gemma4_unified": "gemma4_unified_text"}.get(model_type, model_type)
    if text_type in NOT_YET:
        raise UnsupportedArchitectureError(f"{NOT_YET[text_type]} ({text_type}) is not supported yet by the GGUF converter")
    if a.MODEL_TYPES.get(text_type) != a.MODEL_TYPES[model_type]:
        raise UnsupportedArchitectureError(f"text model_type {text_type!r} is not supported by the GGUF converter")
    try:  # the transformers defaults for omitted keys: planner/arch.py CONFIG_DEFAULTS
        return model_type, a.text_config(config, fill_defaults=True).cfg
    except PlanError as exc:
        raise ConversionError(str(exc)) from None


def read_hparams(config: dict[str, Any]) -> GemmaHParams:
    """Pure: config.json dict -> GemmaHParams."""
    model_type, c = text_config(config)
    text_type = c.get("model_type") or model_type
    arch = ARCHS[model_type]
    n = int(c["num_hidden_layers"])
    n_embd = int(c["hidden_size"])
    head_dim = a.head_dim(c)
    n_head = int(c["num_attention_heads"])
    n_kv = a.kv_heads(c)
    ff = c["intermediate_size"]
    ff = int(ff[0] if isinstance(ff, (list, tuple)) and ff else ff)  # Gemma 3n writes one per layer
    common = dict(model_type=model_type, text_type=text_type, arch=arch, n_layer=n, n_embd=n_embd,
                  n_head=n_head, n_ctx_train=int(c["max_position_embeddings"]), rms_eps=float(c["rms_norm_eps"]),
                  tied=bool(c.get("tie_word_embeddings", True)), vocab_size=int(c["vocab_size"]))

    fam = FAMILIES[arch.name.lower()]
    if arch == gguf.MODEL_ARCH.GEMMA2:
        is_swa = layer_types(c, n, fam)
        theta = float(_rope(c, "full_attention").get("rope_theta", 10000.0))
        return GemmaHParams(
            **common, n_ff=(ff,) * n, n_head_kv=(n_kv,) * n, head_dim=head_dim, head_dim_swa=head_dim,
            is_swa=tuple(is_swa), sliding_window=int(c.get("sliding_window") or 4096),
            rope_base=theta, rope_base_swa=theta, rope_scaling=None, n_rot=head_dim, n_rot_swa=head_dim,
            rope_freqs=None, attn_softcap=c.get("attn_logit_softcapping"),
            final_softcap=c.get("final_logit_softcapping"), query_pre_attn_scalar=c.get("query_pre_attn_scalar"),
            n_kv_shared=0, n_embd_per_layer=0, n_expert=0, n_expert_used=0, n_ff_exp=0, norm_shift=fam.norm_shift,
        )

    if arch == gguf.MODEL_ARCH.GEMMA3:
        sw = c.get("sliding_window")
        is_swa = layer_types(c, n, fam)
        full, local = _rope(c, "full_attention"), _rope(c, "sliding_attention")
        scaling = None
        rtype = full.get("rope_type", full.get("type", "default"))
        if rtype == "linear":
            scaling = ("linear", float(full.get("factor", 1.0)))
        elif rtype not in ("default", None):
            raise ConversionError(f"Gemma 3 rope type {rtype!r} on full-attention layers is not supported")
        return GemmaHParams(
            **common, n_ff=(ff,) * n, n_head_kv=(n_kv,) * n, head_dim=head_dim, head_dim_swa=head_dim,
            is_swa=tuple(is_swa), sliding_window=int(sw) if sw else None,
            rope_base=float(full.get("rope_theta", 1000000.0)), rope_base_swa=float(local.get("rope_theta", 10000.0)),
            rope_scaling=scaling, n_rot=head_dim, n_rot_swa=head_dim, rope_freqs=None, attn_softcap=None,
            final_softcap=c.get("final_logit_softcapping"), query_pre_attn_scalar=c.get("query_pre_attn_scalar"),
            n_kv_shared=0, n_embd_per_layer=0, n_expert=0, n_expert_used=0, n_ff_exp=0, norm_shift=fam.norm_shift,
        )

    if arch == gguf.MODEL_ARCH.GEMMA3N:
        return _gemma3n_hparams(common, c)

    if c.get("use_bidirectional_attention") == "all":
        raise ConversionError("use_bidirectional_attention='all' (text attends both ways) is not what llama.cpp's "
                              "gemma4 graph computes (causal text, bidirectional only within an image)")
    # Gemma 4: full-layer head size and KV heads, KV sharing, MLP widths, PLE and MoE by planner/arch.py's rules
    is_swa = layer_types(c, n, fam)
    head_dim_full = a.full_head_dim(c, fam, is_swa)
    kv_full = a.full_kv_heads(c, fam, is_swa)
    n_shared = a.n_kv_shared(c)
    n_ff = a.ff_per_layer(c, fam, n)
    full, local = _rope(c, "full_attention"), _rope(c, "sliding_attention")
    prf_full = float(full.get("partial_rotary_factor", 1.0)) if full.get("rope_type") == "proportional" else 1.0
    prf_swa = float(local.get("partial_rotary_factor", 1.0))
    # Proportional rope rotates the first prf*head_dim/2 frequency pairs; ggml's neox rope rotates
    # them all, so the rest get a huge frequency divisor (freq factor 1e30 -> angle ~0).
    n_rotated = int(prf_full * head_dim_full // 2)
    freqs = (1.0,) * n_rotated + (1e30,) * (head_dim_full // 2 - n_rotated)
    moe = a.moe_facts(c, fam)
    ple, ple_vocab = a.ple_dims(c, fam)
    if ple and ple_vocab != int(c["vocab_size"]):
        raise ConversionError("per-layer embedding vocabulary differs from the main vocabulary; llama.cpp needs them equal")
    return GemmaHParams(
        **common, n_ff=tuple(n_ff), n_head_kv=tuple(n_kv if s else kv_full for s in is_swa),
        head_dim=head_dim_full, head_dim_swa=head_dim, is_swa=tuple(is_swa),
        sliding_window=int(c["sliding_window"]), rope_base=float(full.get("rope_theta", 1000000.0)),
        rope_base_swa=float(local.get("rope_theta", 10000.0)), rope_scaling=None, n_rot=head_dim_full,
        n_rot_swa=int(head_dim * prf_swa), rope_freqs=freqs, attn_softcap=None,
        final_softcap=c.get("final_logit_softcapping"), query_pre_attn_scalar=None, n_kv_shared=n_shared,
        n_embd_per_layer=ple, n_expert=moe[0] if moe else 0, n_expert_used=moe[1] if moe else 0,
        n_ff_exp=moe[2] if moe else 0, norm_shift=fam.norm_shift,
    )


# What llama.cpp (as vendored in llama-cpp-python 0.3.36) fixes for gemma3n instead of reading it from the
# GGUF: src/models/gemma3n.cpp sets n_layer_kv_from_start = 20 (the first 20 layers store KV, later ones
# reuse layer 18 (sliding) or 19 (full)); models.h: activation sparsity on the first 10 layers at
# Phi^-1(0.95) = 1.6448533535003662; llama-hparams.h: laurel_rank 64, n_embd_altup 256, n_altup 4 and
# i_altup_act 0 (the GGUF keys altup_* are written but not read). A checkpoint that differs would load
# and compute something else, so the converter refuses it.
GEMMA3N_ENGINE = dict(kv_from_start=20, sparse_layers=10, sparsity=0.95, laurel_rank=64, per_layer=256,
                      altup_num_inputs=4, altup_active_idx=0)


def _normal_icdf(p: float) -> float:
    """Phi^-1(p) (the standard normal quantile), as llama.cpp's converter computes the sparsity scale."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p) if p > 0 else 0.0


def _gemma3n_hparams(common: dict[str, Any], c: dict[str, Any]) -> GemmaHParams:
    n = common["n_layer"]
    E = GEMMA3N_ENGINE
    is_swa = layer_types(c, n, FAMILIES["gemma3n"])
    n_shared = int(c.get("num_kv_shared_layers") or 0)
    problems = []
    if (n_shared and n - n_shared != E["kv_from_start"]) or (not n_shared and n > E["kv_from_start"]):
        problems.append(f"{n} layers with {n_shared} KV-shared (llama.cpp stores KV in exactly the first "
                        f"{E['kv_from_start']} layers)")
    if n > E["kv_from_start"] and not (is_swa[E["kv_from_start"] - 2] and not is_swa[E["kv_from_start"] - 1]):
        problems.append(f"layers {E['kv_from_start'] - 2}/{E['kv_from_start'] - 1} are not sliding/full "
                        "(llama.cpp's KV reuse assumes that)")
    pattern = c.get("activation_sparsity_pattern")
    if pattern is None:
        pattern = [0.0] * n
    elif isinstance(pattern, (int, float)):
        pattern = [float(pattern)] * n
    if len(pattern) != n:
        raise ConversionError(f"config.json: activation_sparsity_pattern has {len(pattern)} entries for {n} layers")
    expect = [E["sparsity"] if i < E["sparse_layers"] else 0.0 for i in range(n)]
    if any(abs(float(a) - b) > 1e-6 for a, b in zip(pattern, expect)):
        problems.append(f"activation_sparsity_pattern {pattern[:12]}... (llama.cpp applies {E['sparsity']} to the "
                        f"first {E['sparse_layers']} layers and none after)")
    for key, want in (("laurel_rank", "laurel_rank"), ("hidden_size_per_layer_input", "per_layer"),
                      ("altup_num_inputs", "altup_num_inputs"), ("altup_active_idx", "altup_active_idx")):
        if int(c.get(key) if c.get(key) is not None else -1) != E[want]:
            problems.append(f"{key}={c.get(key)} (llama.cpp fixes {E[want]})")
    if problems:
        raise ConversionError("this Gemma 3n differs from what llama.cpp's gemma3n graph hard-codes, so its GGUF "
                              "would compute something else: " + "; ".join(problems))
    ff = c["intermediate_size"]
    n_ff = tuple(int(x) for x in ff) if isinstance(ff, (list, tuple)) else (int(ff),) * n
    if len(n_ff) != n:
        raise ConversionError(f"config.json: intermediate_size has {len(n_ff)} entries for {n} layers")
    head_dim = int(c.get("head_dim") or common["n_embd"] // common["n_head"])
    n_kv = int(c.get("num_key_value_heads") or common["n_head"])
    full, local = _rope(c, "full_attention"), _rope(c, "sliding_attention")
    for kind, rp in (("full", full), ("sliding", local)):
        if rp.get("rope_type", "default") not in ("default", None):
            raise ConversionError(f"Gemma 3n rope type {rp.get('rope_type')!r} on {kind} layers is not supported")
    return GemmaHParams(
        **common, n_ff=n_ff, n_head_kv=(n_kv,) * n, head_dim=head_dim, head_dim_swa=head_dim, is_swa=tuple(is_swa),
        sliding_window=int(c["sliding_window"]), rope_base=float(full.get("rope_theta", 1000000.0)),
        rope_base_swa=float(local.get("rope_theta", 10000.0)), rope_scaling=None, n_rot=head_dim,
        n_rot_swa=head_dim, rope_freqs=None, attn_softcap=None, final_softcap=c.get("final_logit_softcapping"),
        query_pre_attn_scalar=None, n_kv_shared=n_shared, n_embd_per_layer=int(c["hidden_size_per_layer_input"]),
        n_expert=0, n_expert_used=0, n_ff_exp=0, norm_shift=0.0,
        altup_active_idx=int(c["altup_active_idx"]), altup_num_inputs=int(c["altup_num_inputs"]),
        activation_sparsity_scale=tuple(_normal_icdf(float(x)) for x in pattern),
    )


# llama.cpp's attention scale for Gemma 2/3: 1/sqrt(n_embd/n_head) when it recognises the 27B by its
# layer count (gemma2.cpp / gemma3.cpp load_arch_hparams), else 1/sqrt(head_dim). It reads no GGUF key.
_LLAMA_27B_LAYERS = {gguf.MODEL_ARCH.GEMMA2: 46, gguf.MODEL_ARCH.GEMMA3: 62}


def attention_scale_warning(hp: GemmaHParams) -> str | None:
    if hp.query_pre_attn_scalar is None or hp.arch not in _LLAMA_27B_LAYERS:
        return None
    denom = hp.n_embd / hp.n_head if hp.n_layer == _LLAMA_27B_LAYERS[hp.arch] else hp.head_dim
    if math.isclose(float(denom), float(hp.query_pre_attn_scalar), rel_tol=1e-6):
        return None
    return (f"llama.cpp scales attention by 1/sqrt({denom:g}) for a {hp.n_layer}-layer {hp.arch.name.lower()} "
            f"but the checkpoint uses query_pre_attn_scalar={hp.query_pre_attn_scalar}: "
            f"llama.cpp's outputs will differ from transformers'")


def write_hparams(w: gguf.GGUFWriter, hp: GemmaHParams) -> None:
    """Every hyperparameter llama.cpp's loader reads for the arch (llama_model_base::load_hparams
    plus load_arch_hparams in src/models/gemma{2,3,4}.cpp)."""
    w.add_context_length(hp.n_ctx_train)
    w.add_embedding_length(hp.n_embd)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(hp.n_ff[0] if len(set(hp.n_ff)) == 1 else list(hp.n_ff))
    w.add_head_count(hp.n_head)
    if hp.arch == gguf.MODEL_ARCH.GEMMA4:
        w.add_head_count_kv(list(hp.n_head_kv))  # sliding and full layers differ
    else:
        w.add_head_count_kv(hp.n_head_kv[0])
    w.add_key_length(hp.head_dim)
    w.add_value_length(hp.head_dim)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_rope_freq_base(hp.rope_base)
    if hp.sliding_window:
        w.add_sliding_window(hp.sliding_window)
        w.add_rope_freq_base_swa(hp.rope_base_swa)
        # Always the explicit per-layer array: the Gemma 3 loader otherwise assumes a 5:1 pattern.
        w.add_sliding_window_pattern(list(hp.is_swa))
    if hp.rope_scaling:
        w.add_rope_scaling_type(gguf.RopeScalingType(hp.rope_scaling[0]))
        w.add_rope_scaling_factor(hp.rope_scaling[1])
    if hp.attn_softcap:
        w.add_attn_logit_softcapping(float(hp.attn_softcap))
    # Always explicit: llama_hparams defaults f_final_logit_softcapping to 30 and only the Gemma 3
    # loader resets it, so an absent key would soft-cap a Gemma 4 that has none. 0 disables it.
    w.add_final_logit_softcapping(float(hp.final_softcap or 0.0))
    if hp.arch == gguf.MODEL_ARCH.GEMMA4:
        w.add_key_length_swa(hp.head_dim_swa)
        w.add_value_length_swa(hp.head_dim_swa)
        w.add_rope_dimension_count(hp.n_rot)
        w.add_rope_dimension_count_swa(hp.n_rot_swa)
        w.add_shared_kv_layers(hp.n_kv_shared)
        w.add_embedding_length_per_layer_input(hp.n_embd_per_layer)
        if hp.n_expert:
            w.add_expert_count(hp.n_expert)
            w.add_expert_used_count(hp.n_expert_used)
            w.add_expert_feed_forward_length(hp.n_ff_exp)
    if hp.arch == gguf.MODEL_ARCH.GEMMA3N:
        # what llama.cpp's converter writes (conversion/gemma.py Gemma3NModel); its loader reads the
        # sliding pattern, window, bases and eps and fixes the rest (GEMMA3N_ENGINE), checked in read_hparams
        w.add_altup_active_idx(hp.altup_active_idx)
        w.add_altup_num_inputs(hp.altup_num_inputs)
        w.add_embedding_length_per_layer_input(hp.n_embd_per_layer)
        w.add_shared_kv_layers(hp.n_kv_shared)
        w.add_activation_sparsity_scale(list(hp.activation_sparsity_scale or ()))


# ---------------------------------------------------------------------------------------------
# vocabulary


@dataclass
class GemmaVocab:
    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gemma4" (tokenizer.json BPE)
    tokens: list[bytes]
    scores: list[float]
    types: list[int]
    merges: list[str] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)  # bos/eos/unk/pad -> id
    add_bos: bool = True
    add_eos: bool = False
    chat_template: str | None = None
    source: str = ""
    suppress_tokens: list[int] = field(default_factory=list)  # tokenizer.ggml.suppress_tokens (Gemma 4 unified)


def _token_content(tok: Any) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None


def _added_tokens(model_dir: Path) -> dict[int, tuple[str, bool]]:
    """id -> (content, special) from tokenizer.json and tokenizer_config.json."""
    out: dict[int, tuple[str, bool]] = {}
    tj = model_dir / "tokenizer.json"
    if tj.is_file():
        for t in json.loads(tj.read_text(encoding="utf-8")).get("added_tokens", []):
            out[int(t["id"])] = (t["content"], bool(t.get("special")))
    tc = model_dir / "tokenizer_config.json"
    if tc.is_file():
        for k, t in (json.loads(tc.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}).items():
            out[int(k)] = (t["content"], bool(t.get("special")))
    return out


def _spm_vocab(path: Path, added: dict[int, tuple[str, bool]]) -> GemmaVocab:
    try:
        from sentencepiece import sentencepiece_model_pb2 as sp_pb2
    except ImportError as e:  # protobuf missing surfaces here too
        raise ConversionError(f"reading {path.name} needs sentencepiece and protobuf: {e}") from e
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    tokens, scores, types = [], [], []
    for p in proto.pieces:
        tokens.append(p.piece.encode("utf-8"))
        scores.append(float(p.score))
        types.append(int(p.type))  # SentencePiece piece types number like gguf.TokenType
    for i in sorted(added):
        text, special = added[i]
        if i < len(tokens):
            if tokens[i].decode("utf-8") == text and types[i] == gguf.TokenType.NORMAL:
                types[i] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        elif i == len(tokens):
            tokens.append(text.encode("utf-8"))
            scores.append(-1000.0)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    return GemmaVocab(model="llama", tokens=tokens, scores=scores, types=types, source=path.name)


def _json_vocab(path: Path) -> GemmaVocab:
    tj = json.loads(path.read_text(encoding="utf-8"))
    m = tj.get("model") or {}
    if m.get("type") != "BPE" or not m.get("byte_fallback"):
        raise ConversionError(f"{path.name}: expected a SentencePiece-style BPE with byte fallback, got {m.get('type')}")
    by_id: dict[int, str] = {int(i): t for t, i in m["vocab"].items()}
    added = {int(t["id"]): t for t in tj.get("added_tokens", [])}
    n = max(list(by_id) + list(added)) + 1
    tokens, scores, types = [], [], []
    unk = m.get("unk_token")
    for i in range(n):
        if i in added:
            text = added[i]["content"]
            typ = gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
        elif i in by_id:
            text = by_id[i]
            typ = gguf.TokenType.NORMAL
            if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
                typ = gguf.TokenType.BYTE
            elif text == unk:
                typ = gguf.TokenType.UNKNOWN
        else:
            text, typ = f"[PAD{i}]", gguf.TokenType.UNUSED
        if text == unk:
            typ = gguf.TokenType.UNKNOWN
        tokens.append(text.encode("utf-8"))
        scores.append(0.0)  # BPE: llama.cpp ranks by merges, not scores
        types.append(int(typ))
    merges = [m_ if isinstance(m_, str) else " ".join(m_) for m_ in m.get("merges", [])]
    return GemmaVocab(model="gemma4", tokens=tokens, scores=scores, types=types, merges=merges, source=path.name)


def read_vocab(model_dir: Path, arch: gguf.MODEL_ARCH) -> GemmaVocab:
    """tokenizer.model (SentencePiece) or tokenizer.json (BPE) -> GemmaVocab.

    Gemma 4 prefers tokenizer.json (what its releases ship and llama.cpp's converter reads, giving the
    'gemma4' BPE tokenizer); Gemma 2/3 prefer the SentencePiece model (llama.cpp's SPM tokenizer)."""
    spm_path, json_path = model_dir / "tokenizer.model", model_dir / "tokenizer.json"
    order = [json_path, spm_path] if arch == gguf.MODEL_ARCH.GEMMA4 else [spm_path, json_path]
    src = next((p for p in order if p.is_file()), None)
    if src is None:
        raise ConversionError(f"no tokenizer in {model_dir}: expected tokenizer.model or tokenizer.json")
    vocab = _spm_vocab(src, _added_tokens(model_dir)) if src == spm_path else _json_vocab(src)

    cfg: dict[str, Any] = {}
    if (model_dir / "tokenizer_config.json").is_file():
        cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    index = {t.decode("utf-8", "replace"): i for i, t in enumerate(vocab.tokens)}
    fallback = {"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"}
    for kind, default in fallback.items():
        text = _token_content(cfg.get(f"{kind}_token")) or default
        if text in index:
            vocab.special[kind] = index[text]
    vocab.add_bos = bool(cfg.get("add_bos_token", True))
    vocab.add_eos = bool(cfg.get("add_eos_token", False))
    tpl = model_dir / "chat_template.jinja"
    if tpl.is_file():
        vocab.chat_template = tpl.read_text(encoding="utf-8")
    elif (model_dir / "chat_template.json").is_file():
        vocab.chat_template = json.loads((model_dir / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    elif isinstance(cfg.get("chat_template"), str):
        vocab.chat_template = cfg["chat_template"]
    return vocab


def write_vocab(w: gguf.GGUFWriter, v: GemmaVocab) -> None:
    w.add_tokenizer_model(v.model)
    if v.model == "gemma4":
        w.add_tokenizer_pre("gemma4")
    w.add_token_list(v.tokens)
    w.add_token_scores(v.scores)
    w.add_token_types(v.types)
    if v.merges:
        w.add_token_merges(v.merges)
    for kind, tid in v.special.items():
        getattr(w, f"add_{kind}_token_id")(tid)
    w.add_add_bos_token(v.add_bos)
    w.add_add_eos_token(v.add_eos)
    w.add_add_space_prefix(False)  # Gemma's SentencePiece model has no dummy prefix
    if v.chat_template:
        w.add_chat_template(v.chat_template)
    if v.suppress_tokens:
        # llama-vocab.cpp reads it as an INT32 array and never samples these ids
        w.add_array("tokenizer.ggml.suppress_tokens", [int(t) for t in v.suppress_tokens])


# ---------------------------------------------------------------------------------------------
# tensors


@dataclass
class TensorPlan:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order (rows first), after trimming
    qtype: gguf.GGMLQuantizationType
    src: str | None = None  # HF name
    file: Path | None = None
    src_dtype: str = ""  # safetensors dtype: F32, F16 or BF16
    offset: int = 0  # absolute byte offset of the tensor's data in `file`
    add: float = 0.0  # added to every element (Gemma 2/3 norms: +1)
    data: np.ndarray | None = None  # generated tensors (rope_freqs)
    # several checkpoint tensors written back to back as one (Gemma 3n's AltUp projections, stacked on
    # the first axis), or one followed by zero rows (a per-layer embedding shorter than the vocabulary)
    parts: list["TensorPlan"] = field(default_factory=list)
    pad_rows: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * (4 if self.qtype == gguf.GGMLQuantizationType.F32 else 2)


@dataclass
class ConversionPlan:
    """What convert_hf_to_gguf will write, computed from JSON and safetensors headers only."""

    model_dir: Path
    outtype: str
    hparams: GemmaHParams
    vocab: GemmaVocab
    tensors: list[TensorPlan]
    skipped: list[str]
    warnings: list[str]

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def describe(self) -> str:
        hp = self.hparams
        return (f"{self.model_dir.name}: {hp.arch.name.lower()} ({hp.model_type}), {hp.n_layer} layers "
                f"({hp.swa_layers} sliding), {len(self.tensors)} tensors, {self.tensor_bytes / 2**20:.1f} MiB as "
                f"{self.outtype}, vocab {len(self.vocab.tokens)} from {self.vocab.source}"
                + (f", {len(self.skipped)} non-text tensors skipped" if self.skipped else ""))


def checkpoint_files(model_dir: Path) -> dict[str, Path]:
    """HF tensor name -> safetensors file; refuses pickle-only checkpoints."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        wm = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        missing = sorted({f for f in wm.values() if not (model_dir / f).is_file()})
        if missing:
            raise ConversionError(f"shards listed in {index.name} are missing: {', '.join(missing[:3])}")
        return {k: model_dir / f for k, f in wm.items()}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in model_dir.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        if pickles:
            raise UnsafeCheckpointError(
                f"{model_dir} holds only pickle checkpoints ({', '.join(pickles[:3])}); refusing to load them")
        raise ConversionError(f"no *.safetensors files in {model_dir}")
    out: dict[str, Path] = {}
    for f in files:
        for k in safetensors_header(f):
            out[k] = f
    return out


def _open_safetensors(path: Path) -> Any:
    from safetensors import safe_open

    try:
        return safe_open(path, framework="numpy")
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ConversionError(f"cannot read {path.name}: {e}") from e


# safetensors dtype -> numpy dtype of the stored elements (BF16 kept as its raw 16-bit pattern)
_ST_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """name -> (dtype, shape, absolute start, absolute end), from the file's JSON header.

    The header is validated by safetensors.safe_open first; data is then read with positioned reads
    instead of safe_open's memory map, because every mapped page touched would count in the process's
    RSS until the whole file had been mapped in."""
    with _open_safetensors(path):
        pass
    size = path.stat().st_size
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = (base + int(x) for x in info["data_offsets"])
        if end > size:
            raise ConversionError(f"{path.name} is truncated: {name} ends at byte {end}, file has {size}")
        out[name] = (info["dtype"], tuple(int(x) for x in info["shape"]), start, end)
    return out


def _text_name(hf: str) -> str | None:
    """Strip multimodal wrapper prefixes; None for tensors of other towers."""
    if hf.startswith(_SKIP_PREFIXES):
        return None
    for p in _TEXT_PREFIXES:
        if hf.startswith(p):
            rest = hf[len(p):]
            return rest if rest.startswith("lm_head") else "model." + rest
    return hf


def gguf_name(hf: str, tmap: gguf.TensorNameMap) -> str | None:
    """HF tensor name (after _text_name) -> GGUF name, covering Gemma 4's suffix-less parameters."""
    m = re.match(r"model\.layers\.(\d+)\.(.+)$", hf)
    if m:
        bid, rest = m.group(1), m.group(2)
        special = {
            "router.scale": f"blk.{bid}.ffn_gate_inp.scale",
            "router.per_expert_scale": f"blk.{bid}.ffn_down_exps.scale",
            "layer_scalar": f"blk.{bid}.layer_output_scale.weight",
            "altup.correct_output_scale": f"blk.{bid}.altup_correct_scale.weight",  # Gemma 3n
        }
        if rest in special:
            return special[rest]
        if rest in ("experts.gate_up_proj", "experts.down_proj"):
            base = tmap.get_name(hf)
            return base + ".weight" if base else None
    return tmap.get_name(hf, try_suffixes=(".weight", ".bias"))


def _out_type(name: str, ndim: int, outq: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    if ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") or _F32_NAMES.match(name):
        return gguf.GGMLQuantizationType.F32
    return outq


def read_config(model_dir: Path) -> dict[str, Any]:
    """model_dir's config.json; a missing or malformed one is a ConversionError naming the file."""
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{model_dir} has no config.json")
    try:
        return json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConversionError(f"{cfg_path} is not valid JSON: {e}") from e


def plan_conversion(model_dir: str | Path, outtype: str = "f16") -> ConversionPlan:
    """Read config.json, tokenizer and safetensors headers; decide every GGUF tensor. No tensor data is read."""
    model_dir = Path(model_dir)
    if outtype not in OUTTYPES:
        raise ConversionError(f"outtype must be one of {', '.join(OUTTYPES)}, got {outtype!r}")
    config = read_config(model_dir)
    hp = read_hparams(config)
    vocab = read_vocab(model_dir, hp.arch)
    n_vocab = len(vocab.tokens)
    files = checkpoint_files(model_dir)
    tmap = gguf.get_tensor_name_map(hp.arch, hp.n_layer)
    outq = OUTTYPES[outtype][1]
    warnings = [w for w in [attention_scale_warning(hp)] if w]
    if hp.arch == gguf.MODEL_ARCH.GEMMA2 and not hp.attn_softcap:
        warnings.append("attn_logit_softcapping is off in config.json, but llama.cpp's gemma2 always soft-caps "
                        "attention (50.0 when the key is absent): outputs will differ from transformers'")

    if hp.model_type == "gemma4_unified":
        gen = model_dir / "generation_config.json"
        if gen.is_file():
            sup = json.loads(gen.read_text(encoding="utf-8")).get("suppress_tokens") or []
            if not (isinstance(sup, list) and all(isinstance(t, int) and 0 <= t < n_vocab for t in sup)):
                raise ConversionError(f"{gen.name}: suppress_tokens must be a list of token ids below {n_vocab}")
            vocab.suppress_tokens = list(sup)

    tensors: list[TensorPlan] = []
    stacks: dict[str, dict[int, TensorPlan]] = {}
    skipped: list[str] = []
    unknown: list[str] = []
    by_file: dict[Path, list[str]] = {}
    for k, f in files.items():
        by_file.setdefault(f, []).append(k)
    for f, keys in by_file.items():
        header = safetensors_header(f)
        for hf in sorted(keys):
            text = _text_name(hf)
            if text is None:
                skipped.append(hf)
                continue
            stacked = _STACKED.match(text) if hp.arch == gguf.MODEL_ARCH.GEMMA3N else None
            if stacked:
                dtype, shape, start, _end = header[hf]
                if dtype not in _ST_DTYPES:
                    raise ConversionError(f"{hf} is stored as {dtype}; only F32, F16 and BF16 checkpoints convert")
                gname = "altup_proj.weight" if stacked.group(1) == "altup_projections" else "altup_unembd_proj.weight"
                stacks.setdefault(gname, {})[int(stacked.group(2))] = TensorPlan(
                    name=gname, shape=shape, qtype=_out_type(gname, 3, outq), src=hf, file=f, src_dtype=dtype,
                    offset=start)
                continue
            if text.startswith("lm_head"):
                if hp.tied:
                    skipped.append(hf)
                    continue
                name = "output.weight"
            else:
                name = gguf_name(text, tmap)
            if name is None:
                unknown.append(hf)
                continue
            if hf not in header:
                raise ConversionError(f"{hf} is listed in the index but missing from {f.name}")
            dtype, shape, start, _end = header[hf]
            if dtype not in _ST_DTYPES:
                raise ConversionError(f"{hf} is stored as {dtype}; only F32, F16 and BF16 checkpoints convert "
                                      "(quantized checkpoints are not supported)")
            if name == "per_layer_token_embd.weight" and hp.arch == gguf.MODEL_ARCH.GEMMA3N and shape[0] < n_vocab:
                # Gemma 3n's per-layer table covers the text vocabulary only (vocab_size_per_layer_input);
                # llama.cpp needs one row per token, so the image/audio token rows are zeros, as its converter pads
                real = TensorPlan(name=name, shape=shape, qtype=_out_type(name, len(shape), outq), src=hf, file=f,
                                  src_dtype=dtype, offset=start)
                tensors.append(TensorPlan(name=name, shape=(n_vocab,) + shape[1:], qtype=real.qtype, src=hf,
                                          parts=[real], pad_rows=n_vocab - shape[0]))
                continue
            if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
                if shape[0] < n_vocab:
                    raise ConversionError(f"{hf} has {shape[0]} rows but the tokenizer has {n_vocab} tokens")
                shape = (n_vocab,) + shape[1:]  # drop rows no token maps to (e.g. Gemma 3 image slots)
            add = hp.norm_shift if text.endswith("norm.weight") else 0.0
            tensors.append(TensorPlan(name=name, shape=shape, qtype=_out_type(name, len(shape), outq),
                                      src=hf, file=f, src_dtype=dtype, offset=start, add=add))
    if stacks or hp.arch == gguf.MODEL_ARCH.GEMMA3N:
        tensors.extend(_stack_parts(stacks, hp.altup_num_inputs))
        tensors.extend(_gemma3n_unused_kv(hp, {t.name for t in tensors}, outq))
    if unknown:
        raise ConversionError(f"{len(unknown)} tensors have no GGUF name for {hp.arch.name.lower()}: "
                              + ", ".join(unknown[:5]))
    if hp.rope_freqs is not None:
        arr = np.asarray(hp.rope_freqs, dtype=np.float32)
        tensors.append(TensorPlan(name="rope_freqs.weight", shape=arr.shape, qtype=gguf.GGMLQuantizationType.F32,
                                  data=arr))
    names = [t.name for t in tensors]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConversionError(f"two checkpoint tensors map to the same GGUF name: {sorted(dup)[:3]}")
    if "token_embd.weight" not in names:
        raise ConversionError("the checkpoint has no token embedding (model.embed_tokens.weight)")
    tensors.sort(key=_tensor_order)
    return ConversionPlan(model_dir=model_dir, outtype=outtype, hparams=hp, vocab=vocab, tensors=tensors,
                          skipped=skipped, warnings=warnings)


def _tensor_order(t: TensorPlan) -> tuple[int, int, str]:
    m = re.match(r"blk\.(\d+)\.", t.name)
    return (1, int(m.group(1)), t.name) if m else (0 if t.name != "output_norm.weight" else 2, 0, t.name)


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, NaN kept NaN (what torch's and ggml's conversions do)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def _read_at(fd: int, n: int, offset: int) -> bytes:
    """n bytes at offset (fewer only at end of file); os.pread where it exists (not on Windows)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        if hasattr(os, "pread"):
            b = os.pread(fd, n - got, offset + got)
        else:
            os.lseek(fd, offset + got, os.SEEK_SET)
            b = os.read(fd, n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def to_f32(raw: np.ndarray, src_dtype: str, add: float = 0.0) -> np.ndarray:
    """Checkpoint values as stored (F32, F16 or BF16 bits) as float32, plus add (a folded ``1 + w`` norm)."""
    x = _bf16_to_f32(raw) if src_dtype == "BF16" else raw.astype(np.float32)
    return x + np.float32(add) if add else x


def from_f32(x: np.ndarray, qtype: gguf.GGMLQuantizationType, src: str, instead: str) -> np.ndarray:
    """float32 values as F32, F16 or BF16 (any other qtype); an F16 overflow is an error naming src and
    what to do instead."""
    if qtype == gguf.GGMLQuantizationType.F32:
        return x
    if qtype == gguf.GGMLQuantizationType.F16:
        out = x.astype(np.float16)
        if np.isinf(out).any() and not np.isinf(x).any():
            raise ConversionError(f"{src} overflows float16; {instead}")
        return out
    return _f32_to_bf16(x)


def _chunks(t: TensorPlan, fd: int | None) -> Iterator[np.ndarray]:
    """Row chunks of one tensor, converted to its output type; never the whole of a big tensor."""
    if t.data is not None:
        yield t.data
        return
    assert fd is not None
    src = _ST_DTYPES[t.src_dtype]
    rows = t.shape[0] if len(t.shape) > 1 else 1
    per_row = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else int(np.prod(t.shape))
    step = max(1, CHUNK_BYTES // (4 * per_row))
    Q = gguf.GGMLQuantizationType
    for r0 in range(0, rows, step):
        n = min(rows, r0 + step) - r0
        nbytes = n * per_row * src.itemsize
        buf = _read_at(fd, nbytes, t.offset + r0 * per_row * src.itemsize)
        if len(buf) != nbytes:
            raise ConversionError(f"{t.src}: short read from {t.file.name if t.file else '?'} (file truncated?)")
        raw = np.frombuffer(buf, dtype=src)
        # fast paths: same type out as in, nothing added
        if not t.add and ((t.qtype == Q.F16 and t.src_dtype == "F16") or (t.qtype == Q.BF16 and t.src_dtype == "BF16")
                          or (t.qtype == Q.F32 and t.src_dtype == "F32")):
            yield raw
            continue
        yield from_f32(to_f32(raw, t.src_dtype, t.add), t.qtype, t.src, "convert with outtype='bf16' or 'f32'")


def _tensor_chunks(t: TensorPlan, fds: dict[Path, int]) -> Iterator[np.ndarray]:
    """_chunks for a plain, stacked or zero-padded tensor."""
    if not t.parts:
        yield from _chunks(t, fds.get(t.file) if t.file else None)
    for part in t.parts:
        yield from _chunks(part, fds.get(part.file) if part.file else None)
    if t.pad_rows:
        np_dtype = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16,
                    gguf.GGMLQuantizationType.BF16: np.uint16}[t.qtype]
        per_row = int(np.prod(t.shape[1:]))
        step = max(1, CHUNK_BYTES // (4 * per_row))
        for r0 in range(0, t.pad_rows, step):
            yield np.zeros(min(step, t.pad_rows - r0) * per_row, dtype=np_dtype)


_STACKED = re.compile(r"model\.(altup_projections|altup_unembed_projections)\.(\d+)\.weight$")


def _stack_parts(stacks: dict[str, dict[int, TensorPlan]], n_altup: int) -> list[TensorPlan]:
    """Gemma 3n: altup_(unembed_)projections.{0..n-2} -> one [n-1, H, H] tensor, in index order."""
    out = []
    for name, parts in sorted(stacks.items()):
        if sorted(parts) != list(range(n_altup - 1)):
            raise ConversionError(f"{name}: the checkpoint has projections {sorted(parts)}, expected 0..{n_altup - 2}")
        shapes = {p.shape for p in parts.values()}
        if len(shapes) != 1:
            raise ConversionError(f"{name}: the stacked projections differ in shape: {sorted(shapes)}")
        first = parts[0]
        out.append(TensorPlan(name=name, shape=(n_altup - 1,) + first.shape, qtype=first.qtype,
                              src=first.src, parts=[parts[i] for i in range(n_altup - 1)]))
    return out


def _gemma3n_unused_kv(hp: GemmaHParams, have: set[str], outq: gguf.GGMLQuantizationType) -> list[TensorPlan]:
    """Zero K/V projections and K norms for Gemma 3n's KV-sharing layers when the checkpoint has none.

    transformers >= 5 builds no k_proj/v_proj/k_norm on layers that reuse an earlier layer's cache (the
    original checkpoints still carry them), but llama.cpp's gemma3n loader requires them on every layer
    (create_tensor_qkv with flag 0) and never reads them past layer n_layer_kv_from_start. Zeros keep the
    file loadable without inventing weights that could be used."""
    out = []
    for il in range(GEMMA3N_ENGINE["kv_from_start"], hp.n_layer):
        kv = hp.n_head_kv[il] * hp.head_dim
        for name, shape in ((f"blk.{il}.attn_k.weight", (kv, hp.n_embd)), (f"blk.{il}.attn_v.weight", (kv, hp.n_embd)),
                            (f"blk.{il}.attn_k_norm.weight", (hp.head_dim,))):
            if name in have:
                continue
            qtype = _out_type(name, len(shape), outq)
            np_dtype = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16,
                        gguf.GGMLQuantizationType.BF16: np.uint16}[qtype]
            out.append(TensorPlan(name=name, shape=shape, qtype=qtype, data=np.zeros(shape, dtype=np_dtype)))
    return out


def _check_output(out_path: Path, force: bool, need: int) -> None:
    if out_path.exists() and not force:
        raise OutputExistsError(f"{out_path} already exists")
    if out_path.is_dir():
        raise OutputExistsError(f"{out_path} is a directory")
    parent = out_path.parent
    if not parent.is_dir():
        raise ConversionError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConversionError(f"output directory {parent} is not writable")
    free = shutil.disk_usage(parent).free
    if free < need:
        raise InsufficientDiskError(f"writing {out_path.name} needs {need / 2**30:.2f} GiB, "
                                    f"{free / 2**30:.2f} GiB free in {parent}")


@contextmanager
def staged_gguf(out_path: Path, arch: str, force: bool) -> Iterator[gguf.GGUFWriter]:
    """A GGUFWriter on a unique temporary file beside out_path (created O_EXCL: never a planted link); when
    the block ends it is closed and moved onto out_path (replacing a file only with force), and when the
    block raises it is closed and removed, so no partial file is ever left behind."""
    from planner.outputs import place, temp_name

    tmp = temp_name(out_path.parent, out_path.name, ".partial")
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        yield writer
        writer.close()
        place(tmp, out_path, overwrite=force)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def source_fds() -> Iterator[dict[Path, int]]:
    """Read-only descriptors of the checkpoint files a writer reads from (see open_source), closed at the end."""
    fds: dict[Path, int] = {}
    try:
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def open_source(fds: dict[Path, int], path: Path) -> int:
    """path's descriptor in fds, opened read-only the first time it is asked for."""
    if path not in fds:
        fds[path] = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    return fds[path]


def convert_hf_to_gguf(
    model_dir: str | Path,
    out_path: str | Path,
    outtype: str = "f16",
    force: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Convert a local Gemma 2/3/4 Hugging Face checkpoint to a GGUF file; returns out_path.

    outtype: "f32", "f16" or "bf16" for 2-D and larger weights (1-D tensors, norms and routers are F32).
    progress: called as progress(bytes_written, total_bytes, gguf_tensor_name) after each chunk.
    Raises OutputExistsError (exists, no force), UnsafeCheckpointError (.bin only),
    UnsupportedArchitectureError, ConversionError, InsufficientDiskError. Leaves no partial file behind.
    """
    out_path = Path(out_path)
    if out_path.exists() and not force:  # before any work
        raise OutputExistsError(f"{out_path} already exists")
    plan = plan_conversion(model_dir, outtype)
    hp = plan.hparams
    _check_output(out_path, force, plan.tensor_bytes + 64 * 2**20)
    log.info("writing %s: %s", out_path, plan.describe())
    for w in plan.warnings:
        log.warning(w)

    with staged_gguf(out_path, gguf.MODEL_ARCH_NAMES[hp.arch], force) as writer:
        writer.add_name(plan.model_dir.name)
        writer.add_file_type(int(OUTTYPES[outtype][0]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        write_hparams(writer, hp)
        write_vocab(writer, plan.vocab)
        for t in plan.tensors:
            np_dtype = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16,
                        gguf.GGMLQuantizationType.BF16: np.uint16}[t.qtype]
            raw = gguf.GGMLQuantizationType.BF16 if t.qtype == gguf.GGMLQuantizationType.BF16 else None
            writer.add_tensor_info(t.name, t.shape, np.dtype(np_dtype), t.nbytes, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        fout = writer.fout[0]  # type: ignore[index]
        done, total = 0, plan.tensor_bytes
        with source_fds() as fds:
            for t in plan.tensors:
                for src_file in [t.file] + [p.file for p in t.parts]:
                    if src_file is not None:
                        open_source(fds, src_file)
                # Same layout as GGUFWriter.write_tensor_data, but in chunks: align, data, pad.
                writer.write_padding(fout, fout.tell())
                written = 0
                chunks = _tensor_chunks(t, fds)
                while True:
                    try:
                        chunk = next(chunks)
                    except StopIteration:
                        break
                    except ConversionError:
                        raise
                    except Exception as e:  # truncated or corrupt data surfaces only when read
                        raise ConversionError(f"reading {t.src} from {t.file.name if t.file else '?'} failed: {e}") from e
                    chunk.tofile(fout)
                    written += chunk.nbytes
                    done += chunk.nbytes
                    if progress:
                        progress(done, total, t.name)
                if written != t.nbytes:
                    raise ConversionError(f"{t.name}: wrote {written} bytes, planned {t.nbytes}")
                writer.write_padding(fout, written)
    return out_path
