"""Detect this machine: accelerators, RAM, cgroup limit, CPU, OS, disk, optionally RAM bandwidth.

Two steps: ``collect()`` runs every source's ``read_*`` (I/O, never raises for a missing or broken
tool) into ``Readings``; ``build_report(readings)`` is pure and turns them into a ``DetectReport``,
so whole machines can be tested from captured outputs. Nothing heavy is imported (numpy only for
``--bench``).
"""

from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

from profiles.hardware import CPU, Device, Hardware
from profiles.sources import ParseError, SourceUnavailable
from profiles.sources import amd, apple, cpu as cpu_source, nvidia, system
from profiles.sources.system import CgroupLimit, DiskInfo, SystemInfo

SCHEMA = "gemma-plan.detect/1"

# Sources in the order they are tried; "skipped" ones did not apply (another source answered, or other OS).
SOURCES = ("nvml", "nvidia-smi", "drm-sysfs", "amd-smi", "rocm-smi", "sysctl", "cpuinfo", "cgroup", "os",
           "disk", "bench")


@dataclass
class SourceNote:
    source: str
    status: str  # "ok", "unavailable" (tool/file absent), "error" (answered, but unreadable), "skipped"
    detail: str = ""


@dataclass
class Readings:
    """Everything ``collect`` read, as raw text; the input of the pure ``build_report``."""

    system: str  # platform.system()
    release: str = ""
    machine: str = ""
    ram_total: int = 0
    ram_available: int = 0
    cpu_count: Optional[int] = None  # os.cpu_count()
    cpu_count_physical: Optional[int] = None  # psutil, used when cpuinfo cannot tell
    texts: dict[str, str] = field(default_factory=dict)  # source -> raw text
    notes: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (status, detail)
    nvidia_smi_fields: tuple[str, ...] = nvidia.NVIDIA_SMI_FIELD_SETS[0]
    cuda_visible_devices: Optional[str] = None
    disk: Optional[DiskInfo] = None
    bench: Optional[object] = None  # profiles.bench.BenchResult
    battery: bool = False
    timestamp: str = ""


@dataclass
class DetectReport:
    hardware: Hardware
    system: SystemInfo
    memory_limit: CgroupLimit
    disk: Optional[DiskInfo]
    sources: list[SourceNote]
    ignored_devices: list[str] = field(default_factory=list)
    bench: Optional[object] = None
    elapsed_s: float = 0.0

    @property
    def could_not_read(self) -> list[str]:
        return [f"{n.source}: {n.detail}" for n in self.sources if n.status in ("unavailable", "error")]

    def to_dict(self) -> dict:
        """The ``detect --json`` document (schema in docs/detect.md)."""
        return {
            "schema": SCHEMA,
            "hardware": self.hardware.to_dict(),
            "system": self.system.to_dict(),
            "memory_limit": {"bytes": self.memory_limit.limit_bytes, "file": self.memory_limit.file,
                             "cgroup_version": self.memory_limit.version},
            "disk": self.disk.to_dict() if self.disk else None,
            "bench": self.bench.to_dict() if self.bench is not None else None,
            "ignored_devices": list(self.ignored_devices),
            "sources": [asdict(n) for n in self.sources],
            "could_not_read": self.could_not_read,
            "elapsed_s": round(self.elapsed_s, 3),
        }


# --------------------------------------------------------------------------- public API


def detect(bench: bool = False, model_dir: Optional[str] = None,
           progress: Optional[Callable[[float], None]] = None) -> DetectReport:
    """Detect this machine. ``bench`` adds a few-second RAM bandwidth measurement (``progress`` 0..1)."""
    start = time.perf_counter()
    readings = collect(model_dir=model_dir, bench=bench, progress=progress)
    report = build_report(readings)
    report.elapsed_s = time.perf_counter() - start
    return report


def detect_hardware(bench: bool = False) -> Hardware:
    """This machine as a ``Hardware`` for the planner (``--target auto``)."""
    return detect(bench=bench).hardware


# --------------------------------------------------------------------------- collect (I/O)


def collect(model_dir: Optional[str] = None, bench: bool = False,
            progress: Optional[Callable[[float], None]] = None) -> Readings:
    import psutil

    vm = psutil.virtual_memory()
    r = Readings(system=platform.system(), release=platform.release(), machine=platform.machine(),
                 ram_total=int(vm.total), ram_available=int(vm.available), cpu_count=os.cpu_count(),
                 cpu_count_physical=psutil.cpu_count(logical=False),
                 cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                 timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    try:
        r.battery = psutil.sensors_battery() is not None
    except (AttributeError, NotImplementedError, OSError, RuntimeError):
        r.battery = False
    linux = r.system == "Linux"
    darwin = r.system == "Darwin"

    def read(source: str, fn: Callable[[], str]) -> bool:
        try:
            r.texts[source] = fn()
            return True
        except SourceUnavailable as e:
            r.notes[source] = ("unavailable", str(e))
        except OSError as e:
            r.notes[source] = ("error", f"{type(e).__name__}: {e}")
        return False

    def skip(source: str, why: str) -> None:
        r.notes[source] = ("skipped", why)

    if darwin:
        skip("nvml", "macOS")
        skip("nvidia-smi", "macOS")
    elif read("nvml", nvidia.read_nvml):
        skip("nvidia-smi", "NVML answered")
    else:
        def smi() -> str:
            fields, text = nvidia.read_nvidia_smi()
            r.nvidia_smi_fields = fields
            return text
        read("nvidia-smi", smi)

    if linux and read("drm-sysfs", amd.read_drm_sysfs):
        has_amd = f"vendor = {amd.VENDOR_AMD}" in r.texts["drm-sysfs"]
        for tool in ("amd-smi", "rocm-smi"):
            skip(tool, "sysfs read" + ("" if has_amd else "; it lists no AMD GPU"))
    elif linux or r.system == "Windows":
        if not linux:
            skip("drm-sysfs", f"not on {r.system}")
        if read("amd-smi", amd.read_amd_smi):
            skip("rocm-smi", "amd-smi answered")
        else:
            read("rocm-smi", amd.read_rocm_smi)
    else:
        for source in ("drm-sysfs", "amd-smi", "rocm-smi"):
            skip(source, f"not on {r.system}")

    if darwin:
        read("sysctl", apple.read_sysctl)
        skip("cpuinfo", "macOS: sysctl")
    else:
        skip("sysctl", f"not on {r.system}")
        if linux:
            read("cpuinfo", cpu_source.read_cpuinfo)
        else:
            skip("cpuinfo", f"not on {r.system}: CPU flags unknown")

    if linux:
        read("cgroup", system.read_cgroup)
        read("os", system.read_system)
    else:
        skip("cgroup", f"no cgroups on {r.system}")
        skip("os", f"{r.system}: platform module only")

    try:
        r.disk = system.disk_free(model_dir or system.default_model_dir())
    except (SourceUnavailable, OSError) as e:
        r.notes["disk"] = ("unavailable", str(e))

    if bench:
        from profiles.bench import measure_ram_bandwidth

        budget = r.ram_available
        limit = _cgroup_limit(r.texts.get("cgroup"))
        if limit is not None:
            budget = min(budget, limit)
        try:
            r.bench = measure_ram_bandwidth(budget_bytes=budget // 4, progress=progress)
        except (MemoryError, ImportError, RuntimeError) as e:
            r.notes["bench"] = ("error", f"{type(e).__name__}: {e}")
    else:
        skip("bench", "not asked (detect --bench)")
    return r


def _cgroup_limit(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    try:
        return system.parse_cgroup(text).limit_bytes
    except ParseError:
        return None


# --------------------------------------------------------------------------- build (pure)


def build_report(r: Readings) -> DetectReport:
    notes: dict[str, SourceNote] = {s: SourceNote(s, st, d) for s, (st, d) in r.notes.items()}
    ignored: list[str] = []

    def parsed(source: str, fn):
        if source not in r.texts:
            return None
        try:
            value = fn(r.texts[source])
            notes[source] = SourceNote(source, "ok", notes.get(source, SourceNote(source, "ok")).detail)
            return value
        except ParseError as e:
            notes[source] = SourceNote(source, "error", str(e))
            return None

    host_ram, host_free = r.ram_total, r.ram_available
    devices: list[Device] = []
    info = parsed("os", lambda t: system.parse_system(t, r.system, r.release, r.machine))
    if info is None:
        info = SystemInfo(os=r.system, kernel=r.release, arch=r.machine)

    nv = parsed("nvml", lambda t: nvidia.parse_nvml(t, host_ram, host_free))
    if nv is None:
        nv = parsed("nvidia-smi", lambda t: nvidia.parse_nvidia_smi(t, r.nvidia_smi_fields, host_ram, host_free))
    if nv:
        nv, note = nvidia.apply_cuda_visible_devices(nv, r.cuda_visible_devices)
        if note:
            src = "nvml" if "nvml" in r.texts else "nvidia-smi"
            notes[src].detail = note
    devices += nv or []

    drm = parsed("drm-sysfs", lambda t: amd.parse_drm_sysfs(t, host_ram, host_free))
    if drm is not None:
        devices += drm.devices
        ignored += drm.ignored
        if not nv and drm.nvidia_seen:
            ignored += [f"{s}: no NVIDIA driver answered (NVML, nvidia-smi)" for s in drm.nvidia_seen]
    else:
        devices += parsed("amd-smi", amd.parse_amd_smi) or parsed("rocm-smi", amd.parse_rocm_smi) or []

    jetson = system.jetson_gpu_name(info.board)
    if jetson and not any(d.vendor == "nvidia" for d in devices):
        # Jetson has no NVML; its GPU allocates from the same LPDDR as the CPU.
        devices.append(Device(name=jetson, vendor="nvidia", backend="CUDA", memory_bytes=host_ram,
                              free_bytes=host_free, total_bytes=host_ram, unified=True, integrated=True,
                              device_class="sbc", notes="from the device-tree model; shares system RAM"))

    # An integrated GPU beside a discrete one only shares system RAM: never plan on it (llmfit #25).
    if any(not d.integrated for d in devices):
        for d in [d for d in devices if d.integrated]:
            devices.remove(d)
            ignored.append(f"{d.name}: integrated GPU beside a discrete one, shares system RAM; not used")

    sysctl = parsed("sysctl", apple.parse_sysctl)
    cpu = CPU(arch=r.machine)
    if sysctl is not None:
        cpu = apple.apple_cpu(sysctl)
        gpu = apple.apple_gpu(sysctl, host_free)
        if gpu is not None:
            devices.append(gpu)
    else:
        parsed_cpu = parsed("cpuinfo", lambda t: cpu_source.parse_cpuinfo(t, r.machine))
        if parsed_cpu is not None:
            cpu = parsed_cpu
        elif r.system == "Windows":
            cpu.name = platform.processor() or cpu.name
    cpu.cores_logical = r.cpu_count or cpu.cores_logical
    if cpu.cores_physical is None:
        cpu.cores_physical = r.cpu_count_physical

    limit = parsed("cgroup", system.parse_cgroup) or CgroupLimit(None, None, None)
    if notes.get("cgroup") and notes["cgroup"].status == "ok":
        notes["cgroup"].detail = (f"{limit.limit_bytes} bytes from {limit.file}" if limit.limit_bytes is not None
                                  else "no memory limit")
    if r.system == "Darwin" and sysctl is not None:
        info.os_version = apple.macos_version(sysctl)
    if r.disk is not None:
        notes["disk"] = SourceNote("disk", "ok", r.disk.checked)
    if r.bench is not None:
        notes["bench"] = SourceNote("bench", "ok", f"{r.bench.rounds} rounds, {r.bench.threads} threads")

    hw = _hardware(r, devices, cpu, limit, info)
    ordered = [notes[s] for s in SOURCES if s in notes] + [n for s, n in notes.items() if s not in SOURCES]
    return DetectReport(hardware=hw, system=info, memory_limit=limit, disk=r.disk, sources=ordered,
                        ignored_devices=ignored, bench=r.bench)


def _hardware(r: Readings, devices: list[Device], cpu: CPU, limit: CgroupLimit, info: SystemInfo) -> Hardware:
    from profiles.targets import load_target, match_catalog_device

    hardware_ids: list[str] = []
    ram_bw: Optional[int] = None
    ram_bw_source = ""
    for d in devices:
        matched = _enrich(d, r.ram_total, match_catalog_device)
        if matched is None:
            continue
        for hid in matched.hardware_ids:
            if hid not in hardware_ids:
                hardware_ids.append(hid)
        if d.unified and ram_bw is None and d.bandwidth_bytes_per_s:
            ram_bw, ram_bw_source = d.bandwidth_bytes_per_s, "catalog"  # one pool for CPU and GPU

    board = system.board_target(info.board)
    kind = "desktop"
    if board is not None:
        kind = "sbc"
        target = load_target(board)
        hardware_ids += [h for h in target.hardware_ids if h not in hardware_ids]
        if ram_bw is None and target.ram_bandwidth_bytes_per_s:
            ram_bw, ram_bw_source = target.ram_bandwidth_bytes_per_s, "catalog"
    elif r.system == "Darwin" and any(d.vendor == "apple" for d in devices):
        kind = "apple"
    elif any(d.device_class == "datacenter_gpu" for d in devices):
        kind = "server"
    elif r.battery:
        kind = "laptop"

    if r.bench is not None:
        ram_bw, ram_bw_source = r.bench.bytes_per_s, "measured"

    return Hardware(
        name="this-machine",
        devices=devices,
        ram_bytes=r.ram_total,
        cpu=cpu,
        ram_bandwidth_bytes_per_s=ram_bw,
        ram_free_bytes=r.ram_available,
        memory_limit_bytes=limit.limit_bytes,
        kind=kind,
        source=f"detected by gemma-plan detect{' at ' + r.timestamp if r.timestamp else ''}",
        detected=True,
        hardware_ids=hardware_ids,
        ram_bandwidth_source=ram_bw_source,
    )


def _enrich(d: Device, ram_total: int, match):
    """Fill bandwidth/compute from the target catalog when the device is known; returns the match."""
    physical = d.total_bytes if d.partition else d.memory_bytes
    matched = match(d.name, memory_bytes=None if d.unified else physical,
                    ram_bytes=d.total_bytes or ram_total)
    if matched is None:
        d.notes = _join(d.notes, "not in the target catalog: bandwidth and compute unknown")
        return None
    cat = matched.device
    share = 1.0
    if d.partition and d.total_bytes:
        share = d.memory_bytes / d.total_bytes  # a MIG slice owns its memory controllers' share
    if d.bandwidth_bytes_per_s is None and cat.bandwidth_bytes_per_s:
        d.bandwidth_bytes_per_s = int(cat.bandwidth_bytes_per_s * share)
    if d.fp16_flops is None and cat.fp16_flops:
        d.fp16_flops = cat.fp16_flops * _mig_compute_share(d.partition)
    d.compute_capability = d.compute_capability or cat.compute_capability
    if not d.partition and not d.integrated:
        d.device_class = cat.device_class
    d.notes = _join(d.notes, f"bandwidth/compute from target {matched.target}"
                    + (" scaled to the MIG slice" if d.partition else ""))
    return matched


def _mig_compute_share(partition: Optional[str]) -> float:
    # A100/H100 have 7 GPU slices; "3g.40gb" holds 3 of them.
    m = re.match(r"MIG (\d+)g\.", partition or "")
    return int(m.group(1)) / 7 if m else 1.0


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b
