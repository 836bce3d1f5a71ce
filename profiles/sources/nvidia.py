"""NVIDIA GPUs: NVML through ``nvidia-ml-py`` first, ``nvidia-smi --query-gpu`` when NVML fails.

NVML is an API, not a tool, so ``read_nvml`` dumps what it answered as JSON; ``parse_nvml`` reads
that JSON. Both paths yield ``Device`` objects with total and free memory now.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from profiles.hardware import Device
from profiles.sources import ParseError, SourceUnavailable, first_line, run_tool
from profiles.units import MiB

# WSL ships nvidia-smi outside PATH (llmfit #52: "WSL2 RTX 5080 not detected").
WSL_LIB_DIR = "/usr/lib/wsl/lib"

_ADDRESSING = {0: "NONE", 1: "HMM", 2: "ATS"}


# --------------------------------------------------------------------------- NVML


def read_nvml() -> str:
    """Query NVML for every GPU and MIG instance; raises ``SourceUnavailable`` without a driver."""
    try:
        import pynvml
    except ImportError:
        raise SourceUnavailable("nvidia-ml-py is not installed") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:  # NVMLError_LibraryNotFound without a driver
        raise SourceUnavailable(str(e)) from None

    def safe(fn, *args):
        try:
            return fn(*args)
        except (pynvml.NVMLError, AttributeError, NotImplementedError):
            return None

    try:
        out: dict[str, Any] = {"driver": _text(safe(pynvml.nvmlSystemGetDriverVersion)), "devices": []}
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            rec: dict[str, Any] = {"index": i, "name": _text(safe(pynvml.nvmlDeviceGetName, h))}
            rec["uuid"] = _text(safe(pynvml.nvmlDeviceGetUUID, h))
            pci = safe(pynvml.nvmlDeviceGetPciInfo, h)
            rec["pci_bus_id"] = _text(getattr(pci, "busId", None)) if pci is not None else None
            _memory(pynvml, h, rec)
            cc = safe(pynvml.nvmlDeviceGetCudaComputeCapability, h)
            rec["compute_capability"] = f"{cc[0]}.{cc[1]}" if cc else None
            rec["pcie_gen"] = safe(pynvml.nvmlDeviceGetCurrPcieLinkGeneration, h)
            rec["pcie_width"] = safe(pynvml.nvmlDeviceGetCurrPcieLinkWidth, h)
            mode = safe(pynvml.nvmlDeviceGetAddressingMode, h)
            rec["addressing_mode"] = _ADDRESSING.get(mode) if mode is not None else None
            mig = safe(pynvml.nvmlDeviceGetMigMode, h)
            rec["mig_enabled"] = bool(mig[0]) if mig else False
            rec["mig"] = []
            if rec["mig_enabled"]:
                for j in range(safe(pynvml.nvmlDeviceGetMaxMigDeviceCount, h) or 0):
                    mh = safe(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, h, j)
                    if mh is None:
                        continue
                    m: dict[str, Any] = {"index": j, "name": _text(safe(pynvml.nvmlDeviceGetName, mh)),
                                         "uuid": _text(safe(pynvml.nvmlDeviceGetUUID, mh))}
                    _memory(pynvml, mh, m)
                    rec["mig"].append(m)
            out["devices"].append(rec)
        return json.dumps(out, indent=1)
    except pynvml.NVMLError as e:
        raise SourceUnavailable(str(e)) from None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _memory(pynvml, handle, rec: dict) -> None:
    try:
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        rec.update(memory_total=int(mem.total), memory_free=int(mem.free), memory_used=int(mem.used))
    except pynvml.NVMLError as e:  # "Not Supported" on GB10, whose GPU shares system RAM
        rec.update(memory_total=None, memory_free=None, memory_used=None, memory_error=str(e))
        return
    try:
        # nvmlMemory_v2_t adds the memory the driver reserves; CUDA's total (cudaMemGetInfo, what vLLM
        # sizes gpu_memory_utilization by) is the rest
        v2 = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
        if 0 <= int(v2.reserved) < int(v2.total):
            rec["memory_reserved"] = int(v2.reserved)
    except (pynvml.NVMLError, AttributeError, TypeError):
        pass


def _text(value) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def parse_nvml(text: str, host_ram_bytes: Optional[int] = None,
               host_available_bytes: Optional[int] = None) -> list[Device]:
    """Devices from ``read_nvml``'s JSON. MIG-enabled GPUs yield one device per visible instance."""
    try:
        data = json.loads(text)
        records = data["devices"]
        if not isinstance(records, list):
            raise TypeError("devices is not a list")
    except (ValueError, KeyError, TypeError) as e:
        raise ParseError(f"NVML dump is not valid: {e}") from None
    devices = []
    for rec in records:
        try:
            devices.extend(_nvml_devices(rec, host_ram_bytes, host_available_bytes))
        except (KeyError, TypeError, ValueError) as e:
            raise ParseError(f"NVML device record is not valid: {e}") from None
    return devices


def _nvml_devices(rec: dict, host_ram: Optional[int], host_free: Optional[int]) -> list[Device]:
    name = str(rec["name"] or "NVIDIA GPU")
    total = _opt_int(rec.get("memory_total"))
    base = dict(
        vendor="nvidia", backend="CUDA", compute_capability=rec.get("compute_capability"),
        pcie_gen=_opt_int(rec.get("pcie_gen")), pcie_width=_opt_int(rec.get("pcie_width")),
        pci_bus_id=rec.get("pci_bus_id"),
    )
    if rec.get("mig_enabled"):
        # CUDA sees MIG instances, not the parent; a slice gets its share of the memory system.
        out = []
        for m in rec.get("mig", []):
            m_total = int(m["memory_total"])
            out.append(Device(
                name=name, memory_bytes=m_total, free_bytes=_opt_int(m.get("memory_free")),
                total_bytes=total, index=_opt_int(rec.get("index")), uuid=m.get("uuid"),
                partition=_mig_profile(m.get("name") or ""), device_class="datacenter_gpu", **base,
            ))
        return out
    unified = rec.get("addressing_mode") == "ATS"
    if total is None:
        if not (unified or _is_integrated_name(name)):
            raise ValueError(f"{name}: memory not reported ({rec.get('memory_error', 'no reason given')})")
        if host_ram is None:
            raise ValueError(f"{name}: shares system RAM, but host RAM is unknown")
        # GB10-class SoC: NVML reports no memory; the GPU allocates from system RAM.
        return [Device(
            name=name, memory_bytes=host_ram, free_bytes=host_free, total_bytes=host_ram,
            unified=True, integrated=True, device_class="apu", index=_opt_int(rec.get("index")),
            uuid=rec.get("uuid"), notes="memory shared with the CPU (NVML reports none of its own)", **base,
        )]
    reserved = _opt_int(rec.get("memory_reserved"))
    return [Device(
        name=name, memory_bytes=total, free_bytes=_opt_int(rec.get("memory_free")),
        cuda_total_bytes=total - reserved if reserved is not None and 0 <= reserved < total else None,
        index=_opt_int(rec.get("index")), uuid=rec.get("uuid"),
        notes="ATS: can also address host memory" if unified else "", **base,
    )]


def _is_integrated_name(name: str) -> bool:
    return bool(re.search(r"\bGB10\b|\bJetson\b|\bTegra\b|\bOrin\b", name, re.I))


def _mig_profile(name: str) -> str:
    m = re.search(r"MIG\s+(\S+)", name)
    return f"MIG {m.group(1)}" if m else "MIG"


def _opt_int(value) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- nvidia-smi

# Tried in order: drivers before 510 reject compute_cap, and only recent ones know addressing_mode.
NVIDIA_SMI_FIELD_SETS: tuple[tuple[str, ...], ...] = (
    ("index", "name", "uuid", "pci.bus_id", "memory.total", "memory.used", "memory.free", "compute_cap",
     "pcie.link.gen.current", "pcie.link.width.current", "mig.mode.current", "addressing_mode"),
    ("index", "name", "uuid", "pci.bus_id", "memory.total", "memory.used", "memory.free", "compute_cap",
     "pcie.link.gen.current", "pcie.link.width.current", "mig.mode.current"),
    ("index", "name", "memory.total", "memory.free"),
)

_NOT_A_VALUE = {"", "[n/a]", "n/a", "[not supported]", "not supported", "[unknown error]", "[insufficient permissions]"}


def read_nvidia_smi() -> tuple[tuple[str, ...], str]:
    """(fields, output) of the richest query this driver accepts; output includes stderr on failure."""
    last = ""
    for fields in NVIDIA_SMI_FIELD_SETS:
        rc, out, err = run_tool(["nvidia-smi", f"--query-gpu={','.join(fields)}",
                                 "--format=csv,noheader,nounits"], extra_paths=[WSL_LIB_DIR])
        last = out + err
        if rc == 0 or "not a valid field" not in last.lower():
            return fields, (out if rc == 0 else last)
    return NVIDIA_SMI_FIELD_SETS[-1], last


def parse_nvidia_smi(text: str, fields: tuple[str, ...] = NVIDIA_SMI_FIELD_SETS[0],
                     host_ram_bytes: Optional[int] = None,
                     host_available_bytes: Optional[int] = None) -> list[Device]:
    """Devices from ``nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`` (MiB)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    if lines[0].startswith(("NVIDIA-SMI has failed", "No devices were found", "Failed to initialize NVML")) \
            or "," not in lines[0]:
        if lines[0].startswith("No devices were found"):
            return []
        raise ParseError(first_line(text))
    devices = []
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(fields):
            raise ParseError(f"expected {len(fields)} columns, got {len(cells)}: {line[:80]!r}")
        row = {f: (None if c.lower() in _NOT_A_VALUE else c) for f, c in zip(fields, cells)}
        rec: dict[str, Any] = {
            "index": _int_cell(row, "index"),
            "name": row.get("name"),
            "uuid": row.get("uuid"),
            "pci_bus_id": row.get("pci.bus_id"),
            "memory_total": _mib_cell(row, "memory.total"),
            "memory_free": _mib_cell(row, "memory.free"),
            "compute_capability": row.get("compute_cap"),
            "pcie_gen": _int_cell(row, "pcie.link.gen.current"),
            "pcie_width": _int_cell(row, "pcie.link.width.current"),
            "addressing_mode": (row.get("addressing_mode") or "").upper() or None,
            "mig_enabled": False,  # nvidia-smi --query-gpu lists no MIG instances: plan on the whole GPU
        }
        if rec["name"] is None:
            raise ParseError(f"no GPU name in {line[:80]!r}")
        try:
            found = _nvml_devices(rec, host_ram_bytes, host_available_bytes)
        except ValueError as e:
            raise ParseError(str(e)) from None
        if (row.get("mig.mode.current") or "").lower() == "enabled":
            for d in found:
                d.notes = (d.notes + "; " if d.notes else "") + "MIG enabled: instance sizes need NVML"
        devices.extend(found)
    return devices


def _int_cell(row: dict, key: str) -> Optional[int]:
    value = row.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ParseError(f"{key}: expected an integer, got {value!r}") from None


def _mib_cell(row: dict, key: str) -> Optional[int]:
    value = row.get(key)
    if value is None:
        return None
    try:
        return int(float(value) * MiB)
    except ValueError:
        raise ParseError(f"{key}: expected MiB, got {value!r}") from None


# --------------------------------------------------------------------------- CUDA_VISIBLE_DEVICES


def apply_cuda_visible_devices(devices: list[Device], value: Optional[str]) -> tuple[list[Device], str]:
    """The devices CUDA will use under ``CUDA_VISIBLE_DEVICES``, and a note when it filtered.

    Entries are indices (taken as NVML's PCI order, i.e. ``CUDA_DEVICE_ORDER=PCI_BUS_ID``), or
    ``GPU-``/``MIG-`` UUID prefixes. CUDA stops at the first entry it cannot resolve.
    """
    if value is None:
        return devices, ""
    chosen: list[Device] = []
    for token in [t.strip() for t in value.split(",")]:
        match = None
        if re.fullmatch(r"\d+", token):
            match = next((d for d in devices if d.index == int(token) and d not in chosen), None)
        elif token:
            match = next((d for d in devices if d.uuid and d.uuid.startswith(token) and d not in chosen), None)
        if match is None:
            break
        chosen.append(match)
    note = f"CUDA_VISIBLE_DEVICES={value!r} leaves {len(chosen)} of {len(devices)} NVIDIA device(s)"
    return chosen, note
