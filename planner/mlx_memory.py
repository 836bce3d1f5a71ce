"""MLX (mlx-lm) memory: the weights ``mlx_lm.convert`` writes and the KV caches mlx-lm allocates, in bytes.

Mirrors mlx-lm 0.32 (``MLX_LM_VERSION``):
- ``utils.quantize_model``: every module with ``to_quantized`` (Linear, Embedding, SwitchLinear) whose
  rows divide by the group size is quantized (affine: packed ``uint32`` words plus one scale and one
  bias per group, in the model's dtype); Gemma 4's ``router.proj`` gets 8 bits, group 64 (its
  ``quant_predicate``). Everything else (norms, scalars) stays in the conversion dtype.
- ``models/cache.py``: ``KVCache`` grows in steps of 256 tokens; ``RotatingKVCache`` (Gemma's
  sliding-window layers) holds ``sliding_window`` tokens once a sequence is longer than that; layers
  that share another layer's KV (Gemma 3n/4) hold none.
The spec's tensors are the text model's (mlx-lm drops vision and audio towers when it converts), less
the ones only a GGUF has (``rope_freqs``).
Pure arithmetic: no MLX import.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.types import ModelSpec

MLX_LM_VERSION = "0.32.2"
GROUP_SIZE = 64  # mlx_lm.convert --q-group-size default
KV_STEP = 256  # KVCache.step / RotatingKVCache.step
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# Tensors quantized with fixed parameters whatever --q-bits says (Gemma 4 quant_predicate).
FIXED_QUANT = {"ffn_gate_inp": (8, 64)}  # GGUF name of router.proj
# Tensors only a GGUF carries: llama.cpp's proportional-RoPE frequencies (Gemma 4), which MLX computes.
GGUF_ONLY = {"rope_freqs"}


def _pad(x: int, n: int) -> int:
    return -(-x // n) * n


def quantized_tensor_bytes(n_elements: int, bits: int, group: int, dtype_bytes: int = 2) -> int:
    """mx.quantize's output: n*bits/8 bytes of packed words, a scale and a bias per group."""
    return n_elements * bits // 8 + 2 * (n_elements // group) * dtype_bytes


@dataclass(frozen=True)
class MLXWeights:
    total_bytes: int
    quantized_bytes: int  # packed words + scales + biases of the quantized tensors
    plain_bytes: int  # tensors kept in the conversion dtype
    n_quantized: int
    n_plain: int


def mlx_weight_bytes(spec: ModelSpec, bits: int | None, group: int = GROUP_SIZE, dtype: str = "bfloat16") -> MLXWeights:
    """Bytes of the converted model's parameters (what ``mlx_lm.load`` holds), for ``bits=None`` unquantized."""
    db = DTYPE_BYTES[dtype]
    q = plain = nq = npl = 0
    for t in spec.tensors:
        n = t.n_elements
        kind = t.name.split(".")[-2] if t.name.count(".") >= 2 else t.name.split(".")[0]
        if kind in GGUF_ONLY:
            continue
        b, g = FIXED_QUANT.get(kind, (bits, group))
        if bits and len(t.shape) >= 2 and t.row % g == 0:
            q += quantized_tensor_bytes(n, b, g, db)
            nq += 1
        else:
            plain += n * db
            npl += 1
    return MLXWeights(q + plain, q, plain, nq, npl)


def mlx_kv_bytes(spec: ModelSpec, tokens: int, n_seq: int = 1, dtype: str = "bfloat16") -> int:
    """KV bytes of ``n_seq`` sequences that each reached ``tokens`` tokens (prompt, then decoding).

    Full-attention layers: ``pad(tokens, 256)`` cells; sliding-window layers: the window once the
    sequence is past it, else at most ``tokens + 255`` (growth in 256-token steps, capped by the window).
    """
    db = DTYPE_BYTES[dtype]
    per_seq = 0
    for lay in spec.kv_layers:
        if lay.sliding and spec.sliding_window:
            w = spec.sliding_window
            cells = w if tokens >= w else min(w, tokens + KV_STEP - 1)
        else:
            cells = _pad(tokens, KV_STEP)
        per_seq += cells * lay.n_head_kv * (lay.head_dim_k + lay.head_dim_v) * db
    return per_seq * n_seq
