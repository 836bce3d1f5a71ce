"""Bounds on every number that enters gemma-plan: flags, target files, config.json, safetensors and GGUF
headers, recipe.json and bench rows. Each number is checked once, where it enters, against these.

The limits are physical or format maxima with room to spare, not Gemma's own sizes (the largest Gemma has
62 layers, a 262,144-token vocabulary and 128k-256k context). They also bound the work any input can
cause: loops over layers, tensors, devices and slots are at most these long.

This module lives in ``profiles`` because ``profiles`` imports nothing of ours and both packages use it.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from profiles.errors import ProfileError

from profiles.units import GiB, KiB, MiB, TiB

PiB = 1 << 50

# model shape
MAX_LAYERS = 4096  # 65x the deepest Gemma; every per-layer loop is bounded by it
MAX_VOCAB = 1 << 24  # 16.8M tokens, 64x Gemma's 262,144
MAX_HIDDEN = 1 << 17  # embedding width; the widest published dense models are ~25k
MAX_FF = 1 << 20  # MLP width
MAX_HEADS = 1024  # attention (and KV) heads per layer
MAX_HEAD_DIM = 4096  # per-head K/V size; Gemma uses 128-512
MAX_EXPERTS = 4096
MAX_PLE_DIM = 1 << 14  # per-layer embedding width (Gemma 3n / 4 E-models use 256)
MAX_CTX = 1 << 24  # 16.8M tokens of context; Gemma is trained to 128k-256k
MIN_CTX_PER_SLOT = 256  # below this a slot cannot hold a prompt and an answer
MAX_PARALLEL = 4096  # parallel sequences / slots (llama.cpp LLAMA_MAX_SEQ is 256, vLLM's max_num_seqs default 256)
MAX_UBATCH = 1 << 16
MAX_ALTUP = 64  # Gemma 3n altup inputs (4) and laurel rank (64) are small matrices

# files
MAX_TENSORS = 1 << 18  # tensors in one model (4,096 layers x ~60 tensors); Gemma 4 31B has ~900
MAX_DIMS = 4  # ggml's GGML_MAX_DIMS
MAX_TENSOR_ELEMENTS = 1 << 46  # 64 Ti elements in one tensor
MAX_GGUF_KV = 1 << 16  # metadata keys in a GGUF header
MAX_GGUF_ARRAY_DEPTH = 2  # gguf.cpp reads no nested arrays; gguf-py writes one level
MAX_GGUF_ALIGNMENT = 1 << 16  # general.alignment: a power of two, gguf.cpp's default is 32
MAX_JSON_BYTES = 100_000_000  # a safetensors / config / recipe JSON document

# hardware
MAX_MEMORY = PiB  # bytes of memory on one device or host, or in a whole target
MAX_DEVICES = 1024  # accelerators in one target (all hosts together)
MAX_HOSTS = 1024
MAX_BANDWIDTH = 10 ** 15  # bytes/s: 1 PB/s, 100x an HBM3e GPU
MAX_FLOPS = 10 ** 18  # FLOP/s on one device: 1 EFLOP/s
MAX_NETWORK = 10 ** 13  # bytes/s between hosts
MAX_CORES = 1 << 16
MAX_DEVICE_COUNT = MAX_DEVICES  # `count` of one [[devices]] entry

# a bench row
MAX_TOKENS_PER_S = 1e7


class BoundsError(ProfileError):
    """A number outside its stated bound (or of the wrong kind). The message names source, field and value."""

    def __init__(self, source: str, field: str, value: Any, problem: str, fix: str = ""):
        self.source, self.field, self.value = source, field, value
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        super().__init__(f"{source}: {field} = {shown} {problem}", hint=fix or "correct that value")


def check_int(source: str, field: str, value: Any, lo: int, hi: int, fix: str = "") -> int:
    """``value`` as an int in [lo, hi]; refuses bools, floats with a fraction, strings and lists."""
    if value is None:
        raise BoundsError(source, field, value, "is missing", fix)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BoundsError(source, field, value, "is not an integer", fix)
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise BoundsError(source, field, value, "is not an integer", fix)
    if value < lo or value > hi:
        raise BoundsError(source, field, value, f"is outside {lo:,}..{hi:,}", fix)
    return int(value)


def check_number(source: str, field: str, value: Any, lo: float, hi: float, fix: str = "",
                 lo_open: bool = False) -> float:
    """A finite real in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BoundsError(source, field, value, "is not a number", fix)
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        where = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise BoundsError(source, field, value, f"is outside {where}", fix)
    return float(value)


def opt_int(source: str, field: str, value: Any, lo: int, hi: int, fix: str = "") -> Optional[int]:
    """``check_int`` that lets None (and an empty string) through as None."""
    if value is None or value == "":
        return None
    return check_int(source, field, value, lo, hi, fix)

