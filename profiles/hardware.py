"""Hardware description shared by target profiles, detection and the planner.

Bytes are ``int`` everywhere; bandwidth is bytes per second, compute is FLOP/s.
Units (GiB, GB/s) appear only where things are shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional


@dataclass
class Device:
    """One accelerator (or the CPU when a target has none)."""

    name: str
    vendor: str  # "nvidia", "amd", "apple", "intel", "qualcomm", "google", "arm", "cpu"
    backend: str  # "CUDA", "ROCm", "Metal", "Vulkan", "OpenCL", "CPU"
    memory_bytes: int  # what a model may use: VRAM, or the GPU working-set limit on unified memory
    bandwidth_bytes_per_s: Optional[int] = None
    fp16_flops: Optional[float] = None  # dense FP16 tensor throughput, FLOP/s
    free_bytes: Optional[int] = None  # measured free memory now (detection only)
    total_bytes: Optional[int] = None  # physical memory when it differs from memory_bytes
    unified: bool = False  # shares memory with the host (Apple, APUs, Jetson, phones)
    compute_capability: Optional[str] = None
    device_class: str = "consumer_gpu"  # consumer_gpu, datacenter_gpu, apple, apu, cpu, phone, sbc
    notes: str = ""
    integrated: bool = False  # part of the CPU package (APU, SoC), not a card of its own
    index: Optional[int] = None  # the driver's device index (detection only)
    uuid: Optional[str] = None
    pci_bus_id: Optional[str] = None
    pcie_gen: Optional[int] = None  # current PCIe link generation (detection only)
    pcie_width: Optional[int] = None  # current PCIe link width, lanes
    partition: Optional[str] = None  # a slice of a larger GPU, e.g. "MIG 3g.40gb"
    cuda_total_bytes: Optional[int] = None  # what CUDA reports as total (NVML total - reserved; detection only)

    def usable_bytes(self) -> int:
        """Memory the planner may fill: free now when measured, else the device budget."""
        if self.free_bytes is not None:
            return min(self.free_bytes, self.memory_bytes)
        return self.memory_bytes

    @classmethod
    def from_dict(cls, data: dict) -> "Device":
        return cls(**_known(cls, data))


@dataclass
class CPU:
    """The host CPU: name, cores and the ISA flags the CPU backend picks kernels by."""

    name: str = "unknown CPU"
    cores_physical: Optional[int] = None
    cores_logical: Optional[int] = None
    flags: list[str] = field(default_factory=list)  # avx2, avx512f, avx_vnni, amx, neon, sve ...
    arch: str = ""  # x86_64, aarch64, arm64

    @classmethod
    def from_dict(cls, data: dict) -> "CPU":
        return cls(**_known(cls, data))


@dataclass
class Host:
    """One machine of a cluster target: its accelerators and RAM."""

    name: str
    devices: list[Device]
    ram_bytes: int

    @classmethod
    def from_dict(cls, data: dict) -> "Host":
        kw = _known(cls, data)
        kw["devices"] = [Device.from_dict(d) for d in data.get("devices", [])]
        return cls(**kw)


@dataclass
class Hardware:
    """A machine (or a cluster of machines) the planner plans for."""

    name: str
    devices: list[Device]  # accelerators; empty for CPU-only machines
    ram_bytes: int  # system RAM total (phones: what an app can really use)
    cpu: CPU = field(default_factory=CPU)
    ram_bandwidth_bytes_per_s: Optional[int] = None  # host memory bandwidth (measured or catalog)
    ram_free_bytes: Optional[int] = None  # available now (detection only)
    memory_limit_bytes: Optional[int] = None  # cgroup limit of this process; None = unlimited
    kind: str = "desktop"  # desktop, server, laptop, apple, phone, sbc, cluster
    source: str = ""  # where these facts came from (file path, "detected", reference)
    notes: str = ""
    hosts: list[Host] = field(default_factory=list)  # cluster targets: several machines
    network_bytes_per_s: Optional[int] = None  # cluster interconnect between hosts
    detected: bool = False
    hardware_ids: list[str] = field(default_factory=list)  # ids in hardware_specs.json this target stands for
    ram_bandwidth_source: str = ""  # "measured" (detect --bench), "catalog", or "" when unknown
    # this machine's llama.cpp CPU rates per file type (quantize.llama_bench.SpeedBasis dicts), from detect --bench
    speed_basis: list[dict] = field(default_factory=list)

    def host_budget_bytes(self) -> int:
        """RAM a process may use: the smaller of available RAM and the cgroup limit."""
        budget = self.ram_free_bytes if self.ram_free_bytes is not None else self.ram_bytes
        if self.memory_limit_bytes is not None:
            budget = min(budget, self.memory_limit_bytes)
        return budget

    @property
    def unified(self) -> bool:
        return any(d.unified for d in self.devices)

    @property
    def is_cluster(self) -> bool:
        """Several machines: ``hosts`` holds the split, ``devices``/``ram_bytes`` the totals."""
        return len(self.hosts) > 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Hardware":
        """Inverse of ``to_dict``; keys this version does not know are ignored."""
        kw = _known(cls, data)
        kw["devices"] = [Device.from_dict(d) for d in data.get("devices", [])]
        kw["hosts"] = [Host.from_dict(h) for h in data.get("hosts", [])]
        if isinstance(data.get("cpu"), dict):
            kw["cpu"] = CPU.from_dict(data["cpu"])
        return cls(**kw)


def _known(cls, data: dict) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
