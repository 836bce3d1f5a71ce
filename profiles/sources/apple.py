"""Apple silicon: RAM, chip, cores, ISA features and the GPU wired limit, all from one ``sysctl`` call.

The GPU may wire only part of unified memory: ``iogpu.wired_limit_mb`` when the user raised it
(non-zero), else macOS's default share (``profiles.unified``). RAM is never added on top of it
(llmfit #570, Unsloth PR #6622: unified memory double counted).
"""

from __future__ import annotations

import re
from typing import Optional

from profiles.hardware import CPU, Device
from profiles.sources import ParseError, SourceUnavailable, first_line, run_tool
from profiles.unified import apple_gpu_limit_bytes

SYSCTL_KEYS = (
    "hw.memsize", "hw.physicalcpu", "hw.logicalcpu", "hw.perflevel0.physicalcpu", "hw.perflevel1.physicalcpu",
    "machdep.cpu.brand_string", "iogpu.wired_limit_mb", "kern.osproductversion", "hw.optional.arm64",
    "hw.optional.arm.FEAT_DotProd", "hw.optional.arm.FEAT_I8MM", "hw.optional.arm.FEAT_FP16",
    "hw.optional.arm.FEAT_BF16", "hw.optional.arm.FEAT_SME",
    "hw.optional.avx1_0", "hw.optional.avx2_0", "hw.optional.fma", "hw.optional.f16c", "hw.optional.avx512f",
)
# sysctl feature -> our ISA flag name
_FEATURES = {
    "hw.optional.arm64": "neon", "hw.optional.arm.FEAT_DotProd": "dotprod", "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_FP16": "fp16", "hw.optional.arm.FEAT_BF16": "bf16", "hw.optional.arm.FEAT_SME": "sme",
    "hw.optional.avx1_0": "avx", "hw.optional.avx2_0": "avx2", "hw.optional.fma": "fma",
    "hw.optional.f16c": "f16c", "hw.optional.avx512f": "avx512f",
}


def read_sysctl() -> str:
    # Unknown names (older macOS) go to stderr and the rest still print; keep stdout only.
    rc, out, err = run_tool(["sysctl", *SYSCTL_KEYS])
    if not out.strip():
        raise SourceUnavailable(f"sysctl printed nothing: {first_line(err)}")
    return out


def parse_sysctl(text: str) -> dict[str, str]:
    """``name: value`` lines into a dict; anything else is a parse error."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^([A-Za-z0-9_.]+)\s*[:=]\s*(.*)$", line)
        if not m:
            raise ParseError(f"expected 'name: value', got {line[:60]!r}")
        values[m.group(1)] = m.group(2).strip()
    if "hw.memsize" not in values:
        raise ParseError("hw.memsize missing from sysctl output")
    return values


def apple_cpu(values: dict[str, str]) -> CPU:
    flags = [flag for key, flag in _FEATURES.items() if values.get(key) == "1"]
    arch = "arm64" if values.get("hw.optional.arm64") == "1" else "x86_64"
    return CPU(
        name=values.get("machdep.cpu.brand_string", "unknown CPU"),
        cores_physical=_int(values, "hw.physicalcpu"),
        cores_logical=_int(values, "hw.logicalcpu"),
        flags=flags,
        arch=arch,
    )


def apple_gpu(values: dict[str, str], available_bytes: Optional[int] = None) -> Optional[Device]:
    """The Metal GPU of an Apple-silicon Mac, or None on an Intel Mac."""
    brand = values.get("machdep.cpu.brand_string", "")
    if values.get("hw.optional.arm64") != "1" and not brand.startswith("Apple"):
        return None
    ram = _int(values, "hw.memsize")
    if ram is None:
        raise ParseError("hw.memsize is not a number")
    wired_mb = _int(values, "iogpu.wired_limit_mb")
    major = _macos_major(values.get("kern.osproductversion"))
    limit = apple_gpu_limit_bytes(ram, wired_mb, major)
    how = (f"iogpu.wired_limit_mb = {wired_mb}" if wired_mb else
           "macOS default working-set share (raise with sudo sysctl iogpu.wired_limit_mb=<MiB>)")
    return Device(
        name=brand if brand.startswith("Apple") else "Apple GPU",
        vendor="apple", backend="Metal", memory_bytes=limit,
        free_bytes=min(available_bytes, limit) if available_bytes is not None else None,
        total_bytes=ram, unified=True, integrated=True, device_class="apple", notes=f"GPU budget: {how}",
    )


def macos_version(values: dict[str, str]) -> str:
    return values.get("kern.osproductversion", "")


def _macos_major(version: Optional[str]) -> Optional[int]:
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else None


def _int(values: dict[str, str], key: str) -> Optional[int]:
    value = values.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ParseError(f"{key}: expected an integer, got {value[:40]!r}") from None
