"""Unit constants. Bytes are int everywhere; these appear only at the edges (files, display)."""

from __future__ import annotations

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
GB = 10**9  # decimal, as bandwidths are quoted (GB/s)
TFLOPS = 10**12


def fmt_gib(n: int | float | None, digits: int = 1, unit: bool = True) -> str:
    """Bytes as GiB (2^30) for display: '23.5 GiB'; '-' for None. The one formatter of sizes."""
    if n is None:
        return "-"
    return f"{n / GiB:.{digits}f} GiB" if unit else f"{n / GiB:.{digits}f}"


def fmt_gb_s(n: int | float | None) -> str:
    return "-" if n is None else f"{n / GB:.1f} GB/s"
