"""Weight formats and exact bytes per tensor.

GGUF file types mirror llama.cpp's ``llama_tensor_get_type`` (src/llama-quant.cpp, as vendored in
llama-cpp-python 0.3.36); block sizes come from planner/ggml.py (checked against ``gguf.GGML_QUANT_SIZES``). Dense (bf16/f16/fp8) and
GPTQ formats follow what transformers and vLLM allocate.
"""

from __future__ import annotations

import json
import re
import weakref
from functools import lru_cache
from importlib import resources

from planner.errors import UnknownFormatError
from planner.ggml import quant_size
from planner.types import ModelSpec, TensorSpec, WeightFormat  # noqa: F401 (WeightFormat: re-exported)


@lru_cache(maxsize=4096)
def row_bytes(type_name: str, n: int) -> int:
    """ggml_row_size: bytes of a row of n elements (n must be a multiple of the block size)."""
    block, size = quant_size(type_name)
    return n // block * size


def tensor_bytes(type_name: str, shape: tuple[int, ...]) -> int:
    rows = 1
    for d in shape[:-1]:
        rows *= d
    return rows * row_bytes(type_name, shape[-1])


@lru_cache(maxsize=256)
def block_size(type_name: str) -> int:
    return quant_size(type_name)[0]


# File type -> default tensor type (llama_ftype_get_default_type).
GGUF_FTYPES: dict[str, str] = {
    "F32": "F32", "F16": "F16", "BF16": "BF16",
    "Q8_0": "Q8_0", "Q6_K": "Q6_K",
    "Q5_K_M": "Q5_K", "Q5_K_S": "Q5_K", "Q5_1": "Q5_1", "Q5_0": "Q5_0",
    "Q4_K_M": "Q4_K", "Q4_K_S": "Q4_K", "Q4_1": "Q4_1", "Q4_0": "Q4_0",
    "IQ4_XS": "IQ4_XS", "IQ4_NL": "IQ4_NL",
    "Q3_K_L": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_S": "Q3_K",
    "Q2_K": "Q2_K", "Q2_K_S": "Q2_K",
}
# llama.cpp's ftype ids (enum llama_ftype in include/llama.h), for the quantize binding.
LLAMA_FTYPE_IDS = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "Q2_K_S": 21, "IQ4_NL": 25, "IQ4_XS": 30, "BF16": 32,
}
DENSE_FORMATS = {"bf16": 2, "f16": 2, "fp8": 1, "f32": 4}
GPTQ_FORMATS = {"gptq-int4": 4, "gptq-int8": 8}
GPTQ_GROUP_SIZE = 128

_QUANTIZED = {n for n in GGUF_FTYPES if n not in ("F32", "F16", "BF16")}
# derived tables per spec (frozen, so the object is the key; entries go with the spec), then per format
_SIZES_CACHE: "weakref.WeakKeyDictionary[ModelSpec, dict]" = weakref.WeakKeyDictionary()


def parse_format(name: str, engine: str | None = None) -> WeightFormat:
    """'Q4_K_M' -> GGUF; 'bf16'/'f16' -> a GGUF for llama.cpp, dense weights for vLLM/transformers.

    Without an engine, upper case F16/BF16/F32 name the GGUF file types and lower case the dense formats.
    """
    raw = name.strip()
    up = raw.upper().replace("-", "_")
    low = raw.lower()
    dense_name = low in DENSE_FORMATS and (engine in ("vllm", "transformers") or (engine is None and raw == low))
    if up in GGUF_FTYPES and not dense_name:
        block, size = quant_size(GGUF_FTYPES[up])
        return WeightFormat(up, "gguf", 8 * size / block)
    if low in ("gptq", "gptq-4bit", "int4", "gptq-int4"):
        return WeightFormat("gptq-int4", "gptq", 4, GPTQ_GROUP_SIZE)
    m = re.fullmatch(r"gptq-int([48])(?:-g(\d+))?", low)
    if m:
        return WeightFormat(f"gptq-int{m.group(1)}", "gptq", int(m.group(1)), int(m.group(2) or GPTQ_GROUP_SIZE))
    if low in DENSE_FORMATS:
        return WeightFormat(low, "dense", 8 * DENSE_FORMATS[low])
    known = ", ".join(list(GGUF_FTYPES) + list(DENSE_FORMATS) + list(GPTQ_FORMATS))
    raise UnknownFormatError(f"unknown weight format '{name}' (known: {known})")


@lru_cache(maxsize=1)
def _quality() -> dict:
    return json.loads(resources.files("planner").joinpath("data/quality.json").read_text())["formats"]


def quality_loss(fmt: str) -> float:
    """Published perplexity increase of a weight format (planner/data/quality.json). A format without an
    entry is an error, not a guess: every format parse_format returns has one (tests/test_policy.py)."""
    q = _quality()
    row = q.get(fmt, q.get(fmt.upper()))
    if row is None:
        raise UnknownFormatError(f"no published quality figure for weight format '{fmt}' in planner/data/quality.json",
                                 hint="add the format's measured perplexity increase to quality.json with its source")
    return row["loss"]


# ---------------------------------------------------------------- GGUF quant mix


def _allows_quantization(t: TensorSpec) -> bool:
    """Mirrors tensor_allows_quantization (llama-quant.cpp) for the names Gemma files contain."""
    name = t.name
    if len(t.shape) < 2 or not name.endswith("weight"):
        return False
    if "_norm.weight" in name or "ffn_gate_inp.weight" in name:
        return False
    if "altup" in name or "laurel" in name or "per_layer_model_proj" in name:
        return False
    return True


@lru_cache(maxsize=8192)
def _category(name: str) -> str:
    """tensor_get_category: order matters (substring tests)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@lru_cache(maxsize=1024)
def _fallback_row(ncols: int, typ: str) -> str:
    """tensor_type_fallback: rows that are not a multiple of the block size."""
    if ncols % block_size(typ) == 0:
        return typ
    alt = {"IQ4_XS": "IQ4_NL", "Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}.get(typ, typ)
    if ncols % block_size(alt) != 0:
        return "F16"
    return alt


def gguf_tensor_types(spec: ModelSpec, ftype: str, *, imatrix: bool = False) -> list[tuple[TensorSpec, str]]:
    """The type llama-quantize gives each tensor for file type ``ftype`` (llama_tensor_get_type).

    Tensors that are not quantized keep the type they have in the source file. Cached per (spec, ftype).
    """
    per_spec = _SIZES_CACHE.get(spec) or _SIZES_CACHE.setdefault(spec, {})
    key = ("types", ftype.upper(), imatrix)
    out = per_spec.get(key)
    if out is None:
        out = per_spec[key] = _gguf_tensor_types(spec, ftype, imatrix=imatrix)
    return list(out)


def _gguf_tensor_types(spec: ModelSpec, ftype: str, *, imatrix: bool = False) -> list[tuple[TensorSpec, str]]:
    ftype = ftype.upper()
    if ftype not in GGUF_FTYPES:
        raise UnknownFormatError(f"unknown GGUF file type '{ftype}'")
    default = GGUF_FTYPES[ftype]
    quantized = ftype in _QUANTIZED
    first = spec.layers[0] if spec.layers else None
    n_gqa = (first.n_head // first.n_head_kv) if first else 1
    n_expert = spec.moe.n_expert if spec.moe else 0
    static = _static(spec)
    tied, n_attn_v = _static_counts(spec)
    n_layer = spec.n_layers
    i_attn_v = 0
    i_ffn_down = 0
    out = []
    for t, cat, allowed, source_type, keep_f32 in static:
        if not quantized:
            # a float file is what the converter writes: 1-D tensors and the router in F32, the rest in that type
            out.append((t, "F32" if keep_f32 else default))
            continue
        if not allowed:
            out.append((t, source_type))
            continue
        new = default
        if cat == "output" or (tied and cat == "token_embd"):
            if t.row % block_size(new) != 0:
                new = "Q8_0"
            elif new != "Q8_0":
                new = "Q6_K"
        elif cat == "token_embd":
            pass
        elif cat == "attn_v":
            if ftype == "Q2_K":
                new = "Q4_K" if n_gqa >= 4 else "Q3_K"
            elif ftype == "Q2_K_S" and n_gqa >= 4:
                new = "Q4_K"
            elif ftype == "Q3_K_M":
                new = "Q5_K" if i_attn_v < 2 else "Q4_K"
            elif ftype == "Q3_K_L":
                new = "Q5_K"
            elif ftype in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
                new = "Q5_K"
            elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i_attn_v, n_attn_v):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and i_attn_v < 4:
                new = "Q5_K"
            if n_expert == 8:
                new = "Q8_0"
            i_attn_v += 1
        elif cat == "attn_k":
            if n_expert == 8:
                new = "Q8_0"
        elif cat == "ffn_down":
            if n_expert > 1:  # layer parsed from the name for MoE models
                i_layer = t.layer if t.layer is not None else i_ffn_down
            else:
                i_layer = i_ffn_down
            if ftype == "Q2_K":
                new = "Q3_K"
            elif ftype == "Q2_K_S":
                if i_layer < n_layer // 8:
                    new = "Q4_K"
            elif ftype == "Q3_K_M":
                new = "Q5_K" if i_layer < n_layer // 16 else "Q4_K"
            elif ftype == "Q3_K_L":
                new = "Q5_K"
            elif ftype == "Q4_K_M":
                if _use_more_bits(i_layer, n_layer):
                    new = "Q6_K"
            elif i_layer < n_layer // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not imatrix:
                new = "Q5_K"
            elif ftype == "Q5_K_M" and _use_more_bits(i_layer, n_layer):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and i_layer < n_layer // 8:
                new = "Q5_K"
            elif ftype in ("Q4_0", "Q5_0") and imatrix and i_layer < n_layer // 8:
                new = "Q4_1" if ftype == "Q4_0" else "Q5_1"
            i_ffn_down += 1
        elif cat == "attn_output":
            if n_expert == 8:
                if ftype in ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ4_XS"):
                    new = "Q5_K"
            elif ftype == "Q2_K":
                new = "Q3_K"
            elif ftype == "Q3_K_M":
                new = "Q4_K"
            elif ftype == "Q3_K_L":
                new = "Q5_K"
        out.append((t, _fallback_row(t.row, new)))
    return out


def _static(spec: ModelSpec) -> tuple:
    """Per tensor, what no file type changes: (tensor, category, quantizable, source type, kept F32 in a float file)."""
    per_spec = _SIZES_CACHE.get(spec) or _SIZES_CACHE.setdefault(spec, {})
    out = per_spec.get("static")
    if out is None:
        out = per_spec["static"] = tuple(
            (t, _category(t.name), _allows_quantization(t), _source_type(t), len(t.shape) < 2 or t.name.endswith("ffn_gate_inp.weight"))
            for t in spec.tensors)
    return out


def _static_counts(spec: ModelSpec) -> tuple[bool, int]:
    """Whether the output matrix is the token embedding (no output.weight), and how many attn_v tensors there are."""
    per_spec = _SIZES_CACHE.get(spec) or _SIZES_CACHE.setdefault(spec, {})
    out = per_spec.get("static counts")
    if out is None:
        out = per_spec["static counts"] = (not any(t.name == "output.weight" for t in spec.tensors),
                                           sum(1 for x in _static(spec) if x[1] == "attn_v"))
    return out


def _source_type(t: TensorSpec) -> str:
    if t.dtype in ("F32", "F16", "BF16") or t.dtype.upper() in GGUF_FTYPES.values():
        return t.dtype.upper()
    return "F32" if len(t.shape) == 1 else "F16"


def type_histogram(assigned: list[tuple[TensorSpec, str]]) -> dict[str, int]:
    hist: dict[str, int] = {}
    for _, typ in assigned:
        hist[typ] = hist.get(typ, 0) + 1
    return dict(sorted(hist.items()))


# ---------------------------------------------------------------- bytes per tensor, any format


def tensor_sizes(spec: ModelSpec, fmt: WeightFormat) -> list[tuple[TensorSpec, int]]:
    """Bytes of every text-model tensor in ``fmt``. A GGUF source keeps its own tensor sizes."""
    per_spec = _SIZES_CACHE.get(spec) or _SIZES_CACHE.setdefault(spec, {})
    out = per_spec.get(fmt)
    if out is None:
        out = per_spec[fmt] = _tensor_sizes(spec, fmt)
    return out


def _tensor_sizes(spec: ModelSpec, fmt: WeightFormat) -> list[tuple[TensorSpec, int]]:
    if fmt.kind == "gguf":
        if spec.gguf_file_type and spec.gguf_file_type.upper() == fmt.name and all(t.nbytes is not None for t in spec.tensors):
            return [(t, int(t.nbytes)) for t in spec.tensors]
        seen: dict = {}  # a model repeats a few dozen (type, shape) pairs over hundreds of tensors
        out = []
        for t, typ in gguf_tensor_types(spec, fmt.name):
            nbytes = seen.get((typ, t.shape))
            if nbytes is None:
                nbytes = seen[(typ, t.shape)] = tensor_bytes(typ, t.shape)
            out.append((t, nbytes))
        return out
    if fmt.kind == "dense":
        width = DENSE_FORMATS[fmt.name]
        out = []
        for t in spec.tensors:
            w = width
            if fmt.name == "fp8" and not _is_linear(t):
                w = 2  # vLLM's fp8 keeps embeddings, norms and the router in the model dtype
            out.append((t, t.n_elements * w))
        return out
    return [(t, gptq_tensor_bytes(t, fmt.bits, fmt.group_size)) for t in spec.tensors]


def _is_linear(t: TensorSpec) -> bool:
    """Attention and MLP projections (incl. expert stacks): what fp8 and GPTQ quantize."""
    if t.name.endswith(("ffn_gate_inp.weight", "ffn_gate_inp.scale")):
        return False  # the MoE router stays in the model dtype
    return len(t.shape) >= 2 and _category(t.name) in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_gate", "ffn_down")


# GGUF names of the Linear modules GPTQModel 7.6 quantizes besides attention and MLP projections:
# Gemma 3n/4 per-layer-embedding gate and projection ("per_layer_input_gate:0",
# "per_layer_projection:1" in gptqmodel/models/definitions/gemma3n.py and gemma4.py module_tree).
_GPTQ_EXTRA_LINEARS = ("inp_gate.weight", "proj.weight")


def gptq_quantized(t: TensorSpec) -> bool:
    """The tensors GPTQModel 7.6 replaces by a QuantLinear for Gemma 2/3/3n/4 (its module_tree).

    MoE expert stacks are not among them: transformers 5 stores Gemma 4 experts as fused 3-D
    parameters (experts.gate_up_proj, experts.down_proj), which gemma4.py's module_tree does not list,
    so they stay 16-bit in the checkpoint. The router, embeddings and the tied lm_head stay too.
    """
    if len(t.shape) != 2 or "ffn_gate_inp" in t.name:  # the router's category reads as ffn_gate
        return False
    if _is_linear(t):
        return True
    return t.layer is not None and ".".join(t.name.split(".")[-2:]) in _GPTQ_EXTRA_LINEARS


def gptq_tensor_bytes(t: TensorSpec, bits: int, group: int) -> int:
    """GPTQ QuantLinear buffers (qweight, qzeros, scales, g_idx) as GPTQModel saves them and
    transformers/vLLM load them; every other tensor is 2 bytes per element.

    Layout (gptqmodel/nn_modules/qlinear/__init__.py pack_block; vLLM gptq.py create_weights):
    qweight int32 [in*bits/32, out], qzeros int32 [groups, out*bits/32], scales fp16 [groups, out],
    g_idx int32 [in] (written even without act-order). No bias: Gemma's projections have none.
    Unquantized tensors, norms included, load in the model's 16-bit dtype: GPTQ kernels run in
    fp16/bf16 only, so a checkpoint's F32 norms are cast too (measured on tiny Gemma 3/4 models).
    """
    if not gptq_quantized(t):
        return t.n_elements * 2
    out_f, in_f = t.shape
    g = group if group > 0 else in_f
    n_groups = -(-in_f // g)
    qweight = in_f * out_f * bits // 8
    qzeros = n_groups * out_f * bits // 8
    scales = n_groups * out_f * 2
    g_idx = in_f * 4
    return qweight + qzeros + scales + g_idx


def weight_bytes(spec: ModelSpec, fmt: WeightFormat) -> int:
    per_spec = _SIZES_CACHE.get(spec) or _SIZES_CACHE.setdefault(spec, {})
    key = (fmt, "total")
    total = per_spec.get(key)
    if total is None:
        total = per_spec[key] = sum(b for _, b in tensor_sizes(spec, fmt))
    return total
