"""This machine's measured llama.cpp CPU rates (``quantize.llama_bench``), kept for ``--target auto``.

Stored in the user cache per machine (CPU name, core counts, architecture), so another machine never reuses
them; read back with every number checked. Imports nothing of ours: planning applies them without the
measuring code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

CACHE_NAME = "speed_basis.json"
MAX_BYTES = 1 << 20  # a kept measurement is a few KiB; anything larger is not ours


def cache_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("gemma-plan")) / CACHE_NAME


def machine_key(hw) -> str:
    """What a measurement belongs to: the CPU and its core counts (another machine never reuses it)."""
    return f"{hw.cpu.name}|{hw.cpu.cores_physical}|{hw.cpu.cores_logical}|{hw.cpu.arch}"


def save_measured(hw, path: Optional[Path] = None) -> Path:
    """Keep this machine's measured rates (and measured RAM bandwidth) for ``--target auto``."""
    import json

    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine_key(hw), "speed_basis": list(hw.speed_basis),
            "ram_bandwidth_bytes_per_s": hw.ram_bandwidth_bytes_per_s if hw.ram_bandwidth_source == "measured" else None}
    fd, tmp = tempfile.mkstemp(prefix=".speed_basis.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    return path


def apply_measured(hw, path: Optional[Path] = None) -> bool:
    """Give a detected ``hw`` the rates ``detect --bench`` measured on this same machine; False if none."""
    import json

    path = path or cache_path()
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return False
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(data, dict) or data.get("machine") != machine_key(hw):
        return False
    basis = [b for b in data.get("speed_basis") or [] if isinstance(b, dict) and _valid_basis(b)]
    if not basis:
        return False
    hw.speed_basis = basis
    bw = data.get("ram_bandwidth_bytes_per_s")
    if isinstance(bw, (int, float)) and 1e6 < bw < 1e14 and hw.ram_bandwidth_source != "measured":
        hw.ram_bandwidth_bytes_per_s, hw.ram_bandwidth_source = int(bw), "measured"
    return True


def _valid_basis(b: dict) -> bool:
    import math

    try:
        return (isinstance(b.get("ftype"), str) and isinstance(b.get("threads"), int) and b["threads"] > 0
                and all(isinstance(b.get(k), (int, float)) and math.isfinite(b[k]) and 0 < b[k] < 1e16
                        for k in ("layer_decode_bytes_per_s", "output_decode_bytes_per_s", "prefill_flops_per_s")))
    except (TypeError, KeyError):
        return False
