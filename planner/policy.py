"""Planning policy in one place: context defaults and limits, KV cache type rules, hardware overrides.

The CLI, the quantize pipelines, search and plot call these; none of them restates a rule. Pure, no I/O.
"""

from __future__ import annotations

import copy
import re
from typing import Optional, Union

from planner.errors import InvalidSettingsError
from profiles import bounds as B
from profiles.units import GiB

# ---------------------------------------------------------------- context

DEFAULT_CTX = 32768  # what a plan aims for when no context is given (or the trained maximum if smaller)
CTX_K = 1024  # '32k' is 32768 tokens: context sizes are powers of two, as llama.cpp and vLLM users write them

_CTX = re.compile(r"^\s*(\d{1,9})\s*(k?)\s*$", re.I)


def parse_ctx(value: Union[str, int, None], flag: str = "--ctx") -> tuple[Optional[int], bool]:
    """'32768', '32k' (k = 1024: 32768 tokens) or 'max' -> (tokens, is_max); None -> (None, False)."""
    if value is None:
        return None, False
    if str(value).strip().lower() == "max":
        return None, True
    m = _CTX.match(str(value))
    if not m:
        raise InvalidSettingsError(f"{flag} '{value}' is not a number of tokens",
                                   hint=f"use {flag} 32768, {flag} 32k (= 32,768) or {flag} max")
    n = int(m.group(1)) * (CTX_K if m.group(2) else 1)
    if not 1 <= n <= B.MAX_CTX:
        raise InvalidSettingsError(f"{flag} {value} must be a positive number of tokens, at most {B.MAX_CTX:,}",
                                   hint=f"use {flag} 32768 or {flag} max")
    return n, False


def planned_ctx(n_ctx: Optional[int], is_max: bool, ctx_train: int) -> int:
    """The context a plan is made for: as given, the trained maximum for 'max', else the default
    (or the trained maximum if smaller)."""
    return ctx_train if is_max else (n_ctx or min(DEFAULT_CTX, ctx_train))


def check_trained_max(n_ctx: Optional[int], name: str, ctx_train: int) -> None:
    """A context above the model's trained maximum is refused (no rope scaling is planned)."""
    if n_ctx and n_ctx > ctx_train:
        raise InvalidSettingsError(f"context {n_ctx} is above {name}'s trained maximum of {ctx_train}",
                                   hint=f"use --ctx {ctx_train} or less, or --ctx max")


def check_slots(n_ctx: int, parallel: int, *, given: Optional[int] = None, is_max: bool = False, ceiling: int = 0) -> None:
    """Each of the ``parallel`` slots gets n_ctx / parallel tokens (llama.cpp's n_ctx_seq); refuse slots too small to use.
    ``given``/``is_max`` say how the context was asked for (a number, 'max', or nothing: the default); ``ceiling``
    is the model's trained maximum, above which raising --ctx is no fix."""
    if n_ctx // max(1, parallel) < B.MIN_CTX_PER_SLOT:
        what = f"--ctx {given}" if given else f"--ctx {'max' if is_max else 'default'} ({n_ctx:,} tokens)"
        need = parallel * B.MIN_CTX_PER_SLOT
        lower = f"lower --parallel to {max(1, n_ctx // B.MIN_CTX_PER_SLOT)} or less"
        raise InvalidSettingsError(
            f"{what} over --parallel {parallel} leaves {n_ctx / parallel:.1f} tokens per slot (at least {B.MIN_CTX_PER_SLOT})",
            hint=lower if ceiling and need > ceiling else f"raise --ctx to {need} or more, or {lower}")


# ---------------------------------------------------------------- KV cache types

FLOAT_KV_TYPES = ("f32", "f16", "bf16")
# llama.cpp's cache types (common/arg.cpp kv_cache_types)
KV_TYPES = FLOAT_KV_TYPES + ("q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


def kv_type_is_quantized(t: str) -> bool:
    return t.lower() not in FLOAT_KV_TYPES


def v_cache_allowed(engine: str, type_v: str, flash_attn: bool) -> bool:
    """llama.cpp stores V transposed without flash attention, which a quantized V cannot be
    (llama_init_from_model refuses it: "V cache quantization requires flash_attn")."""
    return engine != "llama.cpp" or flash_attn or not kv_type_is_quantized(type_v)


def check_kv_types(type_k: str, type_v: str, flash_attn: bool) -> None:
    """llama.cpp KV cache types: known names, and a quantized V only with flash attention."""
    for t in (type_k, type_v):
        if t not in KV_TYPES:
            raise InvalidSettingsError(f"unknown KV cache type '{t}' (known: {', '.join(KV_TYPES)})")
    if not v_cache_allowed("llama.cpp", type_v, flash_attn):
        raise InvalidSettingsError(
            f"quantized V cache ({type_v}) requires flash attention",
            hint="drop --no-flash-attn, or use --kv-type f16 (or q8_0/f16: quantized K alone works without it)",
        )


# ---------------------------------------------------------------- sizes and hardware overrides

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)
_UNITS = {"": GiB, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1 << 10, "m": 1e6, "mb": 1e6, "mib": 1 << 20,
          "g": 1e9, "gb": 1e9, "gib": GiB, "t": 1e12, "tb": 1e12, "tib": 1 << 40}


def parse_size(text: Union[str, int], what: str) -> int:
    """'24GiB', '24GB', '24' (GiB), '25769803776b' -> bytes; an int is bytes already."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        m = _SIZE.match(str(text))
        if not m or float(m.group(1)) <= 0:
            raise InvalidSettingsError(f"{what} '{text}' is not a positive size", hint="write it like 24GiB, 24GB or 512MiB")
        size = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if not 1 <= size <= B.MAX_MEMORY:
        raise InvalidSettingsError(f"{what} '{text}' is outside 1 byte..1 PiB", hint="write it like 24GiB, 24GB or 512MiB")
    return size


def parse_margin(margin: Union[str, int, None], default: int) -> int:
    """--margin: a size, 0 for none, None for ``default``."""
    if margin is None:
        return default
    if isinstance(margin, int) and not isinstance(margin, bool):
        if margin < 0:
            raise InvalidSettingsError(f"margin {margin} is negative", hint="pass 0 or a size like 1GiB")
        return margin
    if re.fullmatch(r"\s*0+(\.0*)?\s*([kmgt]i?b?|b)?\s*", str(margin), re.I):
        return 0
    return parse_size(margin, "--margin")


def with_overrides(hw, vram: Union[str, int, None] = None, ram: Union[str, int, None] = None):
    """A copy of ``hw`` with memory per accelerator (``vram``) and system RAM (``ram``) replaced; sizes as
    bytes or text ('24GiB'). Returns (Hardware, note). A machine without accelerators gets one of ``vram``."""
    from profiles.hardware import Device

    note = []
    if vram is None and ram is None:
        return hw, ""
    hw = copy.deepcopy(hw)
    if vram is not None:
        size = parse_size(vram, "--vram")
        if not hw.devices:
            hw.devices = [Device("GPU (--vram)", "unknown", "CUDA", size)]
        for d in hw.devices:
            d.memory_bytes, d.free_bytes = size, None
        note.append(f"VRAM overridden to {size / GiB:.1f} GiB per device")
    if ram is not None:
        size = parse_size(ram, "--ram")
        hw.ram_bytes, hw.ram_free_bytes, hw.memory_limit_bytes = size, None, None
        note.append(f"RAM overridden to {size / GiB:.1f} GiB")
    return hw, "; ".join(note)
