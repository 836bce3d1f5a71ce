"""Unit constants. Bytes are int everywhere; these appear only at the edges (files, display)."""

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
GB = 10**9  # decimal, as bandwidths are quoted (GB/s)
TFLOPS = 10**12


def fmt_gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GiB:.1f} GiB"


def fmt_gb_s(n: int | float | None) -> str:
    return "-" if n is None else f"{n / GB:.1f} GB/s"
