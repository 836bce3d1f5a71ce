"""How much of a unified memory pool the GPU may use, by platform.

Apple: macOS lets Metal wire only part of RAM (``MTLDevice.recommendedMaxWorkingSetSize``) unless
``sysctl iogpu.wired_limit_mb`` raises it. The default fractions below are the planner rule of
hardware_specs.json ``apple_gpu_wired_memory`` (measured: 16 GB M4 0.667, 16 GB M3 0.74, 32 GB
M1 Max 0.70, 128 GB M4/M5 Max 0.84 on macOS 26; older macOS about 0.75 on large machines).
"""

from __future__ import annotations

from typing import Optional

from profiles.units import GiB, MiB

# (largest RAM this row covers, fraction of RAM Metal may wire by default); the last row is open-ended.
APPLE_DEFAULT_WIRED_FRACTION: tuple[tuple[Optional[int], float], ...] = (
    (24 * GiB, 2 / 3),
    (127 * GiB, 0.75),
    (None, 0.84),
)
# The 0.84 row was measured on macOS 26; before that, large Macs wired about 0.75.
APPLE_LARGE_RAM_FRACTION_BEFORE_MACOS_26 = 0.75
APPLE_WIRED_RULE_SOURCE = "hardware_specs.json apple_gpu_wired_memory.planner_rule (tag: wired)"


def apple_default_wired_fraction(ram_bytes: int, macos_major: Optional[int] = None) -> float:
    for upper, fraction in APPLE_DEFAULT_WIRED_FRACTION:
        if upper is None or ram_bytes <= upper:
            if upper is None and macos_major is not None and macos_major < 26:
                return APPLE_LARGE_RAM_FRACTION_BEFORE_MACOS_26
            return fraction
    raise AssertionError("unreachable: the last row is open-ended")


def apple_gpu_limit_bytes(
    ram_bytes: int, wired_limit_mb: Optional[int] = None, macos_major: Optional[int] = None
) -> int:
    """GPU working-set limit: ``iogpu.wired_limit_mb`` when the user set it (non-zero), else the default."""
    if wired_limit_mb:
        return min(wired_limit_mb * MiB, ram_bytes)
    return int(ram_bytes * apple_default_wired_fraction(ram_bytes, macos_major))
