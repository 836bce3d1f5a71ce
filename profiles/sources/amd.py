"""AMD GPUs (and the other cards the kernel's DRM lists) from sysfs; ``amd-smi``/``rocm-smi`` when
sysfs has nothing to say (no amdgpu sysfs, e.g. some containers).

amdgpu exposes memory per card: ``mem_info_vram_total``/``_used`` (dedicated memory, or the BIOS
carve-out on an APU) and ``mem_info_gtt_total``/``_used`` (system RAM the GPU may map). An APU
(Strix Halo, Phoenix...) has no memory of its own: its budget is carve-out + GTT, all of it system
RAM, so it is reported as unified and never added to RAM (llmfit #91/#194, LM Studio #935).
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from profiles.hardware import Device
from profiles.sources import (ParseError, SourceUnavailable, dump_sections, first_line, parse_sections,
                              read_file, run_tool)
from profiles.units import GiB, MiB

VENDOR_AMD = "0x1002"
VENDOR_NVIDIA = "0x10de"
VENDOR_INTEL = "0x8086"

# PCI device id -> (marketing name, gfx target, integrated). Names match the target catalog's.
# 0x744c is Navi 31 for both the 7900 XT (20 GB) and XTX (24 GB): told apart by VRAM below.
AMD_PCI_IDS: dict[str, tuple[str, str, bool]] = {
    "0x744c": ("Radeon RX 7900 XTX", "gfx1100", False),
    "0x7448": ("Radeon PRO W7900", "gfx1100", False),
    "0x7551": ("Radeon AI PRO R9700", "gfx1201", False),
    "0x7550": ("Radeon RX 9070 XT", "gfx1201", False),
    "0x74a1": ("Instinct MI300X", "gfx942", False),
    "0x74a5": ("Instinct MI325X", "gfx942", False),
    "0x740f": ("Instinct MI210", "gfx90a", False),
    "0x1586": ("Radeon 8060S", "gfx1151", True),  # Strix Halo (Ryzen AI Max)
    "0x150e": ("Radeon 890M", "gfx1150", True),  # Strix Point
    "0x15bf": ("Radeon 780M", "gfx1103", True),  # Phoenix / Hawk Point
    "0x15c8": ("Radeon 740M", "gfx1103", True),
    "0x1681": ("Radeon 680M", "gfx1035", True),  # Rembrandt
    "0x164e": ("Radeon Graphics (Raphael)", "gfx1036", True),
    "0x13c0": ("Radeon Graphics (Granite Ridge)", "gfx1036", True),
    "0x1638": ("Radeon Vega (Cezanne)", "gfx90c", True),
    "0x1636": ("Radeon Vega (Renoir)", "gfx90c", True),
    "0x163f": ("Radeon (Van Gogh)", "gfx1033", True),
}
# iGPUs of desktop CPUs (2 CUs): a display output, useless for inference whatever memory they map.
DISPLAY_ONLY_IDS = {"0x164e", "0x13c0"}
# Card files read from /sys/class/drm/cardN/device/.
SYSFS_FILES = ("vendor", "device", "uevent", "product_name", "mem_info_vram_total", "mem_info_vram_used",
               "mem_info_vis_vram_total", "mem_info_gtt_total", "mem_info_gtt_used",
               "current_link_speed", "current_link_width")
# An amdgpu card with no more dedicated memory than this is an APU's carve-out, not a graphics card.
APU_MAX_CARVEOUT = 2 * GiB
_PCIE_GEN_BY_GTS = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}


@dataclass
class DrmCards:
    """What sysfs shows: usable AMD devices, and cards seen but not planned for (with the reason)."""

    devices: list[Device] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    nvidia_seen: list[str] = field(default_factory=list)  # NVIDIA cards on the bus (for "driver missing" hints)


# --------------------------------------------------------------------------- sysfs


def read_drm_sysfs(root: str = "/sys/class/drm") -> str:
    cards = sorted(p for p in glob.glob(os.path.join(root, "card*")) if re.fullmatch(r"card\d+", os.path.basename(p)))
    if not cards:
        raise SourceUnavailable(f"no GPU listed in {root}")
    sections = []
    for card in cards:
        lines = []
        for name in SYSFS_FILES:
            value = read_file(os.path.join(card, "device", name))
            if value is None:
                continue
            if name == "uevent":
                for item in value.splitlines():
                    key, _, v = item.partition("=")
                    if key in ("DRIVER", "PCI_SLOT_NAME"):
                        lines.append(f"{key.lower()} = {v.strip()}")
            else:
                lines.append(f"{name} = {value.strip()}")
        sections.append((os.path.basename(card), "\n".join(lines)))
    return dump_sections(sections)


def parse_drm_sysfs(text: str, host_ram_bytes: Optional[int] = None,
                    host_available_bytes: Optional[int] = None) -> DrmCards:
    result = DrmCards()
    for card, body in parse_sections(text):
        values: dict[str, str] = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise ParseError(f"{card}: expected 'key = value', got {line[:60]!r}")
            values[key.strip()] = value.strip()
        vendor = values.get("vendor", "").lower()
        slot = values.get("pci_slot_name", "")
        where = f"{card}{' at ' + slot if slot else ''}"
        if vendor == VENDOR_NVIDIA:
            result.nvidia_seen.append(f"NVIDIA GPU {values.get('device', '?')} {where}")
            continue
        if vendor == VENDOR_INTEL:
            result.ignored.append(f"Intel GPU {values.get('device', '?')} {where}: integrated or Arc, "
                                  "shares or lacks readable memory; not planned for")
            continue
        if vendor != VENDOR_AMD:
            result.ignored.append(f"GPU vendor {vendor or '?'} {where}: not supported")
            continue
        if values.get("driver") not in (None, "amdgpu"):
            result.ignored.append(f"AMD GPU {where}: driver {values['driver']}, not amdgpu")
            continue
        if values.get("device", "").lower() in DISPLAY_ONLY_IDS:
            name = AMD_PCI_IDS[values["device"].lower()][0]
            result.ignored.append(f"{name} {where}: display-only integrated GPU, shares system RAM")
            continue
        if "mem_info_vram_total" not in values:
            result.ignored.append(f"AMD GPU {where}: no mem_info_vram_total (old kernel or radeon driver)")
            continue
        result.devices.append(_amd_device(card, values, host_ram_bytes, host_available_bytes))
    return result


def _amd_device(card: str, v: dict[str, str], host_ram: Optional[int], host_free: Optional[int]) -> Device:
    vram = _int(v, "mem_info_vram_total", card)
    vram_used = _int(v, "mem_info_vram_used", card, default=0)
    gtt = _int(v, "mem_info_gtt_total", card, default=0)
    gtt_used = _int(v, "mem_info_gtt_used", card, default=0)
    pci_id = v.get("device", "").lower()
    name, gfx, integrated = amd_identity(pci_id, vram)
    name = v.get("product_name") or name
    gen, width = _pcie(v)
    common = dict(vendor="amd", backend="ROCm", compute_capability=gfx, pci_bus_id=v.get("pci_slot_name"),
                  index=int(card[4:]) if card[4:].isdigit() else None)
    if not integrated:
        return Device(name=name, memory_bytes=vram, free_bytes=max(vram - vram_used, 0),
                      pcie_gen=gen, pcie_width=width, device_class="consumer_gpu", **common)
    # APU: the carve-out is hidden from the OS, GTT is ordinary RAM the GPU may map.
    physical = (host_ram or 0) + vram
    budget = vram + gtt
    if host_ram is not None:
        budget = min(budget, physical)
    free = max(vram - vram_used, 0) + max(gtt - gtt_used, 0)
    if host_free is not None:
        free = min(free, max(vram - vram_used, 0) + host_free)
    notes = (f"carve-out {vram / GiB:.1f} GiB + GTT {gtt / GiB:.1f} GiB of system RAM"
             + ("" if gtt >= 8 * GiB else "; raise GTT (amdgpu.gttsize) or the BIOS carve-out for larger models"))
    return Device(name=name, memory_bytes=budget, free_bytes=min(free, budget),
                  total_bytes=physical if host_ram is not None else None, unified=True, integrated=True,
                  device_class="apu", notes=notes, **common)


def amd_identity(pci_id: str, vram_bytes: int) -> tuple[str, Optional[str], bool]:
    """(name, gfx target, integrated) for a PCI device id and its dedicated memory."""
    name, gfx, integrated = AMD_PCI_IDS.get(pci_id, ("", None, False))
    if pci_id == "0x744c" and vram_bytes < 22 * GiB:
        name = "Radeon RX 7900 XT"
    return name or f"AMD GPU {pci_id or '?'}", gfx, integrated or vram_bytes <= APU_MAX_CARVEOUT


def _int(values: dict[str, str], key: str, card: str, default: Optional[int] = None) -> int:
    if key not in values:
        if default is None:
            raise ParseError(f"{card}: {key} missing")
        return default
    try:
        return int(values[key])
    except ValueError:
        raise ParseError(f"{card}: {key}: expected bytes, got {values[key][:40]!r}") from None


def _pcie(v: dict[str, str]) -> tuple[Optional[int], Optional[int]]:
    gen = width = None
    m = re.match(r"([\d.]+)\s*GT/s", v.get("current_link_speed", ""))
    if m:
        gen = _PCIE_GEN_BY_GTS.get(float(m.group(1)))
    if v.get("current_link_width", "").isdigit():
        width = int(v["current_link_width"])
    return gen, width


# --------------------------------------------------------------------------- amd-smi / rocm-smi


def read_amd_smi() -> str:
    rc, out, err = run_tool(["amd-smi", "static", "--asic", "--vram", "--json"])
    if rc != 0:
        return out + err
    rc2, usage, _ = run_tool(["amd-smi", "metric", "--mem-usage", "--json"])
    return json.dumps({"static": _loads_or_text(out), "metric": _loads_or_text(usage) if rc2 == 0 else None})


def _loads_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_amd_smi(text: str) -> list[Device]:
    """Devices from ``read_amd_smi``: ``{"static": <static --json>, "metric": <metric --mem-usage --json>}``."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ParseError(first_line(text) or "amd-smi printed nothing") from None
    if not isinstance(data, dict) or not isinstance(data.get("static"), (list, dict)):
        raise ParseError("amd-smi static output is not JSON")
    static = _gpu_list(data["static"])
    metric = {g.get("gpu"): g for g in _gpu_list(data.get("metric") or [])}
    devices = []
    for gpu in static:
        try:
            asic = gpu.get("asic") or {}
            vram = gpu.get("vram") or {}
            total = _mib_value(vram.get("size"))
            if total is None:
                raise ValueError("vram size missing")
            usage = (metric.get(gpu.get("gpu")) or {}).get("mem_usage") or {}
            free = _mib_value(usage.get("free_vram"))
            pci_id = _hex(asic.get("device_id"))
            name, gfx, integrated = amd_identity(pci_id, total)
            devices.append(_tool_device(
                str(asic.get("market_name") or name), total, free, asic.get("target_graphics_version") or gfx,
                integrated, gpu.get("gpu") if isinstance(gpu.get("gpu"), int) else None, "amd-smi"))
        except (AttributeError, TypeError, ValueError) as e:
            raise ParseError(f"amd-smi GPU entry is not valid: {e}") from None
    return devices


def _gpu_list(data: Any) -> list[dict]:
    # amd-smi prints a list of per-GPU objects; some versions wrap it as {"gpu_data": [...]}.
    if isinstance(data, dict):
        data = data.get("gpu_data", [data])
    if not isinstance(data, list) or not all(isinstance(g, dict) for g in data):
        raise ParseError("amd-smi JSON is not a list of GPUs")
    return data


def _mib_value(value: Any) -> Optional[int]:
    # amd-smi writes sizes as {"value": 24560, "unit": "MB"} (newer) or "24560 MB" (older); MB means MiB.
    if value is None or value == "N/A":
        return None
    if isinstance(value, dict):
        number, unit = value.get("value"), str(value.get("unit", "MB"))
    elif isinstance(value, (int, float)):
        number, unit = value, "MB"
    else:
        m = re.fullmatch(r"\s*([\d.]+)\s*([KMG]i?B)?\s*", str(value))
        if not m:
            raise ValueError(f"size {value!r}")
        number, unit = m.group(1), m.group(2) or "MB"
    scale = {"KB": 1024, "KIB": 1024, "MB": MiB, "MIB": MiB, "GB": GiB, "GIB": GiB}.get(unit.upper())
    if scale is None:
        raise ValueError(f"unit {unit!r}")
    return int(float(number) * scale)


def _hex(value: Any) -> str:
    if isinstance(value, int):
        return f"0x{value:04x}"
    return str(value or "").lower()


def read_rocm_smi() -> str:
    rc, out, err = run_tool(["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"])
    return out if rc == 0 else out + err


def parse_rocm_smi(text: str) -> list[Device]:
    """Devices from ``rocm-smi --showproductname --showmeminfo vram --json``."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ParseError(first_line(text) or "rocm-smi printed nothing") from None
    if not isinstance(data, dict):
        raise ParseError("rocm-smi JSON is not an object")
    devices = []
    for card, info in data.items():
        if not re.fullmatch(r"card\d+", card):
            continue  # "system" and other non-GPU keys
        if not isinstance(info, dict):
            raise ParseError(f"{card}: not an object")
        fields = {k.lower(): v for k, v in info.items()}
        try:
            total = int(fields["vram total memory (b)"])
            used = int(fields.get("vram total used memory (b)", 0))
        except (KeyError, ValueError) as e:
            raise ParseError(f"{card}: VRAM Total Memory (B) missing or not a number ({e})") from None
        pci_id = str(fields.get("card model", fields.get("device id", ""))).lower()
        name, gfx, integrated = amd_identity(pci_id, total)
        if pci_id not in AMD_PCI_IDS and fields.get("card series"):
            name = str(fields["card series"]).strip()
        devices.append(_tool_device(name, total, max(total - used, 0), fields.get("gfx version") or gfx,
                                    integrated, int(card[4:]), "rocm-smi"))
    return devices


def _tool_device(name: str, total: int, free: Optional[int], gfx: Optional[str], integrated: bool,
                 index: Optional[int], tool: str) -> Device:
    if integrated:
        # The tools report only the APU's carve-out; GTT (system RAM) is invisible to them.
        return Device(name=name, vendor="amd", backend="ROCm", memory_bytes=total, free_bytes=free,
                      compute_capability=gfx, index=index, unified=True, integrated=True, device_class="apu",
                      notes=f"{tool} shows only the carve-out; sysfs GTT was not readable")
    return Device(name=name, vendor="amd", backend="ROCm", memory_bytes=total, free_bytes=free,
                  compute_capability=gfx, index=index, device_class="consumer_gpu")
