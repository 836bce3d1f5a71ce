"""CPU model, cores and the ISA features llama.cpp's CPU backend picks kernels by, from /proc/cpuinfo."""

from __future__ import annotations

import re
from typing import Optional

from profiles.hardware import CPU
from profiles.sources import ParseError, SourceUnavailable, read_file

# Our flag name -> the /proc/cpuinfo names that mean it (x86 "flags", Arm "Features").
ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "avx": ("avx",),
    "avx2": ("avx2",),
    "fma": ("fma",),
    "f16c": ("f16c",),
    "avx512f": ("avx512f",),
    "avx512bw": ("avx512bw",),
    "avx512vl": ("avx512vl",),
    "avx512_vnni": ("avx512_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "avx_vnni": ("avx_vnni",),
    "amx": ("amx_tile", "amx_int8", "amx_bf16"),
    "neon": ("asimd", "neon"),
    "dotprod": ("asimddp",),
    "i8mm": ("i8mm",),
    "fp16": ("asimdhp",),
    "bf16": ("bf16",),
    "sve": ("sve",),
    "sve2": ("sve2",),
    "sme": ("sme",),
}

# Arm "CPU part" ids for cores people run models on (the kernel prints no model name for them).
ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse N1", ("0x41", "0xd40"): "Neoverse V1", ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd49"): "Neoverse N2", ("0x41", "0xd4f"): "Neoverse V2", ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd44"): "Cortex-X1", ("0x41", "0xd4b"): "Cortex-A78C", ("0x41", "0xd87"): "Cortex-A725",
    ("0x41", "0xd85"): "Cortex-X925", ("0x61", "0x022"): "Apple M1", ("0x61", "0x023"): "Apple M1",
}


def read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    text = read_file(path)
    if text is None:
        raise SourceUnavailable(f"{path} not readable")
    return text


def normalize_flags(raw: set[str]) -> list[str]:
    return [flag for flag, names in ISA_FLAGS.items() if any(n in raw for n in names)]


def parse_cpuinfo(text: str, arch: str = "") -> CPU:
    """Model, physical/logical cores and ISA flags. Physical cores are None when cpuinfo cannot tell."""
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    processors: list[dict[str, str]] = []
    header: dict[str, str] = {}
    for block in blocks:
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise ParseError(f"expected 'key : value', got {line[:60]!r}")
            fields[key.strip().lower()] = value.strip()
        if fields.get("processor", "").isdigit():
            processors.append(fields)
        else:
            header.update(fields)  # Arm prints Hardware/Model in a block of its own
    if not processors:
        raise ParseError("no 'processor' entries")
    first = processors[0]
    raw_flags = set((first.get("flags") or first.get("features") or header.get("features") or "").split())
    name = (first.get("model name") or header.get("model name") or _arm_names(processors)
            or header.get("hardware") or header.get("model") or "unknown CPU")
    cores = {(p.get("physical id"), p.get("core id")) for p in processors if "core id" in p}
    physical: Optional[int] = len(cores) if cores else None
    if physical is None and "features" in first:
        physical = len(processors)  # Arm cores run one thread each
    if not arch:
        arch = "x86_64" if "flags" in first else ("aarch64" if "features" in first else "")
    return CPU(name=name, cores_physical=physical, cores_logical=len(processors),
               flags=normalize_flags(raw_flags), arch=arch)


def _arm_names(processors: list[dict[str, str]]) -> Optional[str]:
    """"4x Cortex-A76" or "2x Cortex-X925, 8x Cortex-A725" from the Arm part ids."""
    counts: dict[str, int] = {}
    for p in processors:
        part = ARM_PARTS.get((p.get("cpu implementer", "").lower(), p.get("cpu part", "").lower()))
        if part is None:
            return None
        counts[part] = counts.get(part, 0) + 1
    return ", ".join(f"{n}x {part}" for part, n in counts.items()) or None
