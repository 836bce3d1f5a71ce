"""detect() on this machine, and whole machines assembled from captured outputs (build_report)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from profiles.detect import DetectReport, Readings, build_report, detect, detect_hardware
from profiles.units import GB, GiB, MiB

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr("profiles.targets.user_targets_dir", lambda: tmp_path / "config" / "targets")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def real_cgroup_limit() -> int | None:
    """The limit as the kernel states it, read here without the detector's code."""
    candidates = [Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")]
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max")
        elif "memory" in controllers.split(","):
            candidates.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes")
    limits = []
    for p in candidates:
        if p.is_file():
            value = p.read_text().strip()
            if value != "max" and int(value) < 1 << 60:
                limits.append(int(value))
    return min(limits) if limits else None


# --------------------------------------------------------------------------- this machine


@pytest.mark.skipif(sys.platform != "linux", reason="this machine is the Linux CI box")
def test_detect_this_machine():
    report = detect()
    hw = report.hardware
    assert hw.ram_bytes == psutil.virtual_memory().total
    assert hw.cpu.cores_logical == os.cpu_count()
    if not Path("/dev/nvidia0").exists() and not Path("/dev/kfd").exists():
        assert hw.devices == [], "no accelerator on this machine"
    assert hw.memory_limit_bytes == real_cgroup_limit()
    assert hw.detected and hw.source.startswith("detected")
    assert 0 < hw.ram_free_bytes <= hw.ram_bytes
    assert report.disk is not None and report.disk.free_bytes > 0
    assert report.system.os == "Linux" and report.system.wsl is False
    assert all(n.status in ("ok", "unavailable", "skipped") for n in report.sources), report.sources


def test_detect_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t = time.perf_counter(); from profiles.detect import detect; r = detect(); "
            "print(time.perf_counter() - t); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'torch', 'transformers', 'llama_cpp'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    elapsed, heavy = out.splitlines()
    assert float(elapsed) < 1.0, "detect without --bench must take well under a second"
    assert heavy == "[]"


def test_detect_hardware_is_the_report_hardware():
    hw = detect_hardware()
    assert hw.detected and hw.ram_bytes == psutil.virtual_memory().total


def test_bench_stores_measured_bandwidth(monkeypatch):
    calls = []
    report = detect(bench=True, progress=calls.append)
    hw = report.hardware
    assert hw.ram_bandwidth_source == "measured"
    assert hw.ram_bandwidth_bytes_per_s == report.bench.bytes_per_s > 1 * GB
    assert calls and calls[-1] == 1.0 and calls == sorted(calls)


def test_report_json_has_the_documented_keys():
    data = detect().to_dict()
    assert set(data) == {"schema", "hardware", "system", "memory_limit", "disk", "bench", "ignored_devices",
                         "sources", "could_not_read", "elapsed_s"}
    assert data["schema"] == "gemma-plan.detect/1"
    assert {"name", "devices", "ram_bytes", "ram_free_bytes", "memory_limit_bytes", "cpu", "detected"} <= set(
        data["hardware"])


# --------------------------------------------------------------------------- machines from captured outputs


def machine(system="Linux", ram=64 * GiB, available=60 * GiB, cuda_visible=None, notes=None, **texts) -> Readings:
    """Readings as collect() would make them, with each source's text taken from a fixture file."""
    r = Readings(system=system, machine="arm64" if system == "Darwin" else "x86_64", ram_total=ram,
                 ram_available=available, cpu_count=16, cpu_count_physical=8, cuda_visible_devices=cuda_visible,
                 timestamp="2026-11-28 04:00 UTC")
    for source, name in texts.items():
        r.texts[source.replace("_", "-")] = fixture(name)
    for source, note in (notes or {}).items():
        r.notes[source] = note
    return r


NO_NVML = {"nvml": ("unavailable", "NVML Shared Library Not Found")}


def test_one_nvidia_card_gets_catalog_bandwidth():
    report = build_report(machine(nvml="nvml_1x_rtx4090.json", cpuinfo="cpuinfo_this_machine.txt",
                                  cgroup="cgroup_this_machine.txt", os="system_this_machine.txt"))
    (d,) = report.hardware.devices
    assert d.bandwidth_bytes_per_s == 1008 * GB and d.fp16_flops == 330e12
    assert report.hardware.hardware_ids == ["rtx4090"] and report.hardware.kind == "desktop"
    assert "rtx4090" in d.notes


def test_two_cards_with_cuda_visible_devices():
    report = build_report(machine(nvml="nvml_2x_rtx3090.json", cuda_visible="1"))
    (d,) = report.hardware.devices
    assert d.index == 1 and d.free_bytes == 16 * GiB
    assert "CUDA_VISIBLE_DEVICES" in next(n.detail for n in report.sources if n.source == "nvml")


def test_mig_slice_gets_its_share_of_the_a100():
    report = build_report(machine(nvml="nvml_mig_a100.json"))
    (d,) = report.hardware.devices
    share = (19968 * MiB) / (40 * GiB)
    assert d.partition == "MIG 3g.20gb"
    assert d.bandwidth_bytes_per_s == int(1555 * GB * share)
    assert d.fp16_flops == pytest.approx(312e12 * 3 / 7)
    assert report.hardware.kind == "server"


def test_nvml_missing_but_nvidia_smi_present():
    report = build_report(machine(nvidia_smi="nvidia_smi_2x_rtx3090.csv", notes=NO_NVML))
    assert [d.memory_bytes for d in report.hardware.devices] == [24 * GiB, 24 * GiB]
    assert all(d.bandwidth_bytes_per_s == 936 * GB for d in report.hardware.devices)
    assert report.could_not_read == ["nvml: NVML Shared Library Not Found"]


def test_nvidia_smi_error_and_a_card_on_the_bus():
    report = build_report(machine(nvidia_smi="nvidia_smi_error.txt", drm_sysfs="drm_nvidia_without_driver.txt",
                                  notes=NO_NVML))
    assert report.hardware.devices == []
    assert any("couldn't communicate" in line for line in report.could_not_read)
    assert any("no NVIDIA driver answered" in line for line in report.ignored_devices)


def test_amd_discrete_via_sysfs():
    report = build_report(machine(drm_sysfs="drm_rx7900xtx.txt"))
    (d,) = report.hardware.devices
    assert d.name == "Radeon RX 7900 XTX" and d.bandwidth_bytes_per_s == 960 * GB
    assert any("display-only" in line for line in report.ignored_devices)


def test_strix_halo_apu_with_gtt():
    ram = 127 * GiB + 256 * MiB
    report = build_report(machine(drm_sysfs="drm_strix_halo_gtt.txt", ram=ram, available=120 * GiB))
    hw = report.hardware
    (d,) = hw.devices
    assert d.unified and d.memory_bytes == 512 * MiB + 124 * GiB
    assert d.bandwidth_bytes_per_s == 256 * GB
    assert hw.ram_bandwidth_bytes_per_s == 256 * GB and hw.ram_bandwidth_source == "catalog"
    assert hw.unified and hw.hardware_ids == ["ryzen_ai_max_395"]


def test_integrated_gpu_beside_a_discrete_one_is_ignored():
    report = build_report(machine(nvml="nvml_1x_rtx4090.json", drm_sysfs="drm_strix_halo_gtt.txt"))
    assert [d.vendor for d in report.hardware.devices] == ["nvidia"]
    assert any("integrated GPU beside a discrete one" in line for line in report.ignored_devices)


@pytest.mark.parametrize("name, ram, budget, bandwidth, target_id", [
    ("sysctl_m3_16gb.txt", 16 * GiB, int(16 * GiB * 2 / 3), None, None),  # M3 16 GB: no catalog target
    ("sysctl_m1_max_64gb_wired.txt", 64 * GiB, 56 * GiB, 400 * GB, "m1_max"),
    ("sysctl_m4_max_128gb.txt", 128 * GiB, int(128 * GiB * 0.84), 546 * GB, "m4_max_40c"),
])
def test_apple_silicon(name, ram, budget, bandwidth, target_id):
    r = machine(system="Darwin", ram=ram, available=ram // 2, sysctl=name)
    report = build_report(r)
    hw = report.hardware
    (d,) = hw.devices
    assert (d.memory_bytes, d.total_bytes, d.bandwidth_bytes_per_s) == (budget, ram, bandwidth)
    assert d.free_bytes == min(ram // 2, budget)
    assert hw.kind == "apple" and hw.ram_bytes == ram, "RAM is not added on top of the GPU budget"
    assert hw.hardware_ids == ([target_id] if target_id else [])
    assert report.system.os_version


def test_wsl():
    report = build_report(machine(nvidia_smi="nvidia_smi_1x_rtx4090.csv", os="system_wsl2.txt", notes=NO_NVML))
    assert report.system.wsl and report.system.wsl_version == 2
    assert report.hardware.devices[0].bandwidth_bytes_per_s == 1008 * GB


@pytest.mark.parametrize("cgroup", ["cgroup_v2_container_8g.txt", "cgroup_v1_container_8g.txt"])
def test_container_with_8gib_limit(cgroup):
    report = build_report(machine(cgroup=cgroup, os="system_this_machine.txt", ram=64 * GiB, available=60 * GiB))
    hw = report.hardware
    assert hw.memory_limit_bytes == 8 * GiB and report.memory_limit.file
    assert hw.host_budget_bytes() == 8 * GiB, "psutil's 60 GiB free is not this process's to use"
    assert report.system.container == "docker"


def test_raspberry_pi_is_an_sbc_with_catalog_bandwidth():
    report = build_report(machine(ram=8 * GiB, cpuinfo="cpuinfo_rpi5.txt", os="system_rpi5.txt"))
    hw = report.hardware
    assert hw.devices == [] and hw.kind == "sbc"
    assert hw.ram_bandwidth_bytes_per_s == int(17.1 * GB) and hw.hardware_ids == ["rpi5"]
    assert hw.cpu.name == "4x Cortex-A76" and "dotprod" in hw.cpu.flags


def test_jetson_gpu_from_the_board_model():
    report = build_report(machine(ram=7 * GiB + 400 * MiB, available=6 * GiB, os="system_jetson_orin_nano.txt",
                                  notes=NO_NVML))
    (d,) = report.hardware.devices
    assert d.name == "Jetson Orin Nano" and d.unified and d.memory_bytes == 7 * GiB + 400 * MiB
    assert d.bandwidth_bytes_per_s == 68 * GB and report.hardware.kind == "sbc"


@pytest.mark.parametrize("texts", [
    {"nvml": "nvml_malformed.json"},
    {"nvidia_smi": "nvidia_smi_malformed.csv"},
    {"drm_sysfs": "drm_malformed.txt"},
    {"amd_smi": "amd_smi_malformed.txt"},
    {"rocm_smi": "rocm_smi_malformed.txt"},
    {"cpuinfo": "cpuinfo_malformed.txt"},
    {"cgroup": "cgroup_malformed.txt"},
    {"os": "system_malformed.txt"},
])
def test_malformed_output_is_reported_not_raised(texts):
    report = build_report(machine(**texts))
    assert isinstance(report, DetectReport)
    source = next(iter(texts)).replace("_", "-")
    assert any(line.startswith(f"{source}: ") for line in report.could_not_read), report.could_not_read
    assert report.hardware.ram_bytes == 64 * GiB and report.hardware.cpu.cores_logical == 16


def test_sysctl_malformed_on_a_mac():
    report = build_report(machine(system="Darwin", sysctl="sysctl_malformed.txt"))
    assert report.hardware.devices == [] and report.could_not_read[0].startswith("sysctl: ")


def test_collect_survives_broken_tools(monkeypatch, tmp_path):
    """Tools that hang, crash or print garbage end up as notes, never as exceptions."""
    from profiles import detect as detect_module
    from profiles.sources import SourceUnavailable

    def hangs():
        raise SourceUnavailable("nvidia-smi did not answer within 3 s")

    def crashes():
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(detect_module.nvidia, "read_nvml", crashes)
    monkeypatch.setattr(detect_module.nvidia, "read_nvidia_smi", hangs)
    monkeypatch.setattr(detect_module.amd, "read_drm_sysfs", lambda: "garbage without sections\n")
    report = detect(model_dir=str(tmp_path))
    lines = report.could_not_read
    assert any(line.startswith("nvml: PermissionError") for line in lines)
    assert any("did not answer" in line for line in lines)
    assert any(line.startswith("drm-sysfs: ") for line in lines)


def test_captured_h200_host():
    """Outputs read on a real H200 machine: catalog bandwidth, server kind, 128 GiB cgroup limit."""
    report = build_report(machine(nvml="nvml_h200_captured.json", cgroup="cgroup_v2_h200_host_captured.txt",
                                  cpuinfo="cpuinfo_xeon_h200_host_captured.txt",
                                  os="system_h200_host_captured.txt", ram=256 * GiB, available=200 * GiB))
    hw = report.hardware
    (d,) = hw.devices
    assert d.bandwidth_bytes_per_s == 4800 * GB and d.fp16_flops == pytest.approx(989.4e12)
    assert hw.kind == "server" and hw.hardware_ids == ["h200"]
    assert hw.memory_limit_bytes == 128 * GiB and hw.host_budget_bytes() == 128 * GiB


# --------------------------------------------------------------------------- the pure parts, value by value


def test_mig_compute_share_is_the_slices_of_seven():
    # A100/H100 MIG: "Ng.XXgb" owns N of the 7 compute slices, so its FP16 rate is N/7 of the card's
    from profiles.detect import _mig_compute_share

    assert _mig_compute_share(None) == _mig_compute_share("") == 1.0
    assert _mig_compute_share("MIG 1g.10gb") == 1 / 7
    assert _mig_compute_share("MIG 3g.40gb") == 3 / 7
    assert _mig_compute_share("MIG 7g.80gb") == 1.0
    assert _mig_compute_share("3g.40gb") == 1.0, "a partition name without the MIG prefix is not a slice count"


def test_cgroup_limit_for_the_bandwidth_bench_budget():
    # detect --bench sizes its buffer from the cgroup limit when one is set; unreadable or absent: no limit
    from profiles.detect import _cgroup_limit

    assert _cgroup_limit(None) is None and _cgroup_limit("") is None
    assert _cgroup_limit(fixture("cgroup_malformed.txt")) is None
    assert _cgroup_limit(fixture("cgroup_v2_unlimited.txt")) is None
    assert _cgroup_limit(fixture("cgroup_v2_container_8g.txt")) == 8 * GiB
    assert _cgroup_limit(fixture("cgroup_v1_container_8g.txt")) == 8 * GiB


def _device(name, memory, **kw):
    from profiles.hardware import Device

    return Device(name=name, vendor="nvidia", backend="CUDA", memory_bytes=memory, **kw)


def test_enrich_fills_a_known_card_from_the_catalog():
    # a detected H100 gets the catalog's bandwidth, FP16 rate, compute capability and datacenter class
    from profiles.detect import _enrich
    from profiles.targets import match_catalog_device

    d = _device("NVIDIA H100 80GB HBM3", 80 * GiB, notes="from NVML")
    matched = _enrich(d, 64 * GiB, match_catalog_device)
    assert matched.target == "h100" and matched.hardware_ids == ("h100_sxm",)
    assert (d.bandwidth_bytes_per_s, d.fp16_flops, d.compute_capability, d.device_class) == (
        3350 * GB, 989e12, "9.0", "datacenter_gpu")
    assert d.notes == "from NVML; bandwidth/compute from target h100"


def test_enrich_keeps_what_the_driver_reported():
    # values the driver gave (bandwidth, FP16 rate, compute capability) are not replaced by the catalog's
    from profiles.detect import _enrich
    from profiles.targets import match_catalog_device

    d = _device("NVIDIA H100 80GB HBM3", 80 * GiB, bandwidth_bytes_per_s=3000 * GB, fp16_flops=900e12,
                compute_capability="9.1")
    _enrich(d, 64 * GiB, match_catalog_device)
    assert (d.bandwidth_bytes_per_s, d.fp16_flops, d.compute_capability) == (3000 * GB, 900e12, "9.1")
    assert d.notes == "bandwidth/compute from target h100"


def test_enrich_an_unknown_or_wrong_sized_card_stays_unknown():
    # an unknown name, or a known name whose memory is not the catalog card's (+-10 %), gets no figures
    from profiles.detect import _enrich
    from profiles.targets import match_catalog_device

    for d in (_device("Some Unknown GPU", 24 * GiB), _device("NVIDIA H100 80GB HBM3", 40 * GiB)):
        assert _enrich(d, 64 * GiB, match_catalog_device) is None
        assert (d.bandwidth_bytes_per_s, d.fp16_flops, d.compute_capability, d.device_class) == (
            None, None, None, "consumer_gpu")
        assert d.notes == "not in the target catalog: bandwidth and compute unknown"


def test_enrich_a_mig_slice_matches_the_whole_card_and_takes_its_share():
    # a MIG slice is matched on the physical card's memory (a 20 GB slice of a 40 GB A100), owns its memory
    # share of the bandwidth and its slice count of the 7 compute slices, and keeps the class the driver set
    from profiles.detect import _enrich
    from profiles.targets import match_catalog_device

    d = _device("NVIDIA A100-SXM4-40GB", 20 * GiB, total_bytes=40 * GiB, partition="MIG 3g.20gb")
    assert _enrich(d, 64 * GiB, match_catalog_device).target == "a100-40gb"
    assert d.bandwidth_bytes_per_s == int(1555 * GB * 0.5) and d.fp16_flops == 312e12 * (3 / 7)
    assert d.device_class == "consumer_gpu" and d.compute_capability == "8.0"
    assert d.notes == "bandwidth/compute from target a100-40gb scaled to the MIG slice"
    # a partition whose physical size is unknown: matched by name alone, the whole card's bandwidth
    d = _device("NVIDIA A100-SXM4-40GB", 20 * GiB, partition="MIG 3g.20gb")
    assert _enrich(d, 64 * GiB, match_catalog_device).target == "a100-40gb"
    assert d.bandwidth_bytes_per_s == 1555 * GB and d.fp16_flops == 312e12 * (3 / 7)


def test_enrich_an_integrated_gpu_keeps_its_class():
    # an integrated GPU keeps the class its source gave it (its memory is the host's), and is matched on RAM
    from profiles.detect import _enrich
    from profiles.targets import match_catalog_device

    d = _device("NVIDIA GB10", 128 * GiB, unified=True, integrated=True, device_class="apu")
    assert _enrich(d, 128 * GiB, match_catalog_device).target == "dgx-spark"
    assert d.device_class == "apu" and d.bandwidth_bytes_per_s == 273 * GB


def _hw(system="Linux", ram=64 * GiB, **kw):
    texts = kw.pop("texts", {})
    r = Readings(system=system, machine="x86_64", ram_total=ram, ram_available=60 * GiB, cpu_count=16,
                 cpu_count_physical=8, **kw)
    for source, name in texts.items():
        r.texts[source] = fixture(name)
    return build_report(r).hardware


def test_hardware_names_each_catalog_id_once_and_says_where_from():
    # two RTX 3090s are one hardware id; the source line carries the detection time when there is one
    hw = _hw(texts={"nvml": "nvml_2x_rtx3090.json"}, timestamp="2026-11-28 04:00 UTC")
    assert hw.hardware_ids == ["rtx3090"] and hw.kind == "desktop" and hw.name == "this-machine"
    assert hw.source == "detected by gemma-plan detect at 2026-11-28 04:00 UTC" and hw.detected
    assert hw.ram_bandwidth_bytes_per_s is None and hw.ram_bandwidth_source == ""
    assert (hw.ram_bytes, hw.ram_free_bytes, hw.memory_limit_bytes) == (64 * GiB, 60 * GiB, None)
    assert _hw().source == "detected by gemma-plan detect"


def test_hardware_kind_laptop_server_and_plain_mac():
    # a battery makes a laptop; a datacenter GPU a server; a Mac without an Apple GPU stays a desktop
    assert _hw(texts={"nvml": "nvml_1x_rtx4090.json"}, battery=True).kind == "laptop"
    assert _hw(texts={"nvml": "nvml_h200_captured.json"}, battery=True).kind == "server"
    assert _hw(texts={"nvml": "nvml_1x_rtx4090.json"}).kind == "desktop"
    mac = _hw(system="Darwin", texts={"sysctl": "sysctl_intel_mac.txt"})
    assert mac.kind == "desktop" and mac.devices == []


def test_hardware_unified_gpu_bandwidth_is_the_hosts_before_the_boards():
    # a unified GPU's catalog bandwidth is the host RAM's; a board's catalog figure only fills in when none
    # did, and its hardware ids are added once; a bench measurement replaces either
    from profiles.bench import BenchResult

    jetson = _hw(ram=7 * GiB + 400 * MiB, texts={"os": "system_jetson_orin_nano.txt"},
                 notes={"nvml": ("unavailable", "no NVML")})
    assert jetson.hardware_ids == ["jetson_orin_nano_8g"] and jetson.kind == "sbc"
    assert (jetson.ram_bandwidth_bytes_per_s, jetson.ram_bandwidth_source) == (68 * GB, "catalog")
    pi = _hw(ram=8 * GiB, texts={"os": "system_rpi5.txt"})
    assert (pi.hardware_ids, pi.ram_bandwidth_bytes_per_s, pi.ram_bandwidth_source) == (["rpi5"], int(17.1 * GB), "catalog")
    both = _hw(ram=127 * GiB + 256 * MiB, texts={"drm-sysfs": "drm_strix_halo_gtt.txt", "os": "system_rpi5.txt"})
    assert both.hardware_ids == ["ryzen_ai_max_395", "rpi5"] and both.ram_bandwidth_bytes_per_s == 256 * GB
    bench = BenchResult(bytes_per_s=200 * GB, threads=16, buffer_bytes=1 << 30, rounds=3, seconds=1.0)
    measured = _hw(ram=127 * GiB + 256 * MiB, texts={"drm-sysfs": "drm_strix_halo_gtt.txt"}, bench=bench)
    assert (measured.ram_bandwidth_bytes_per_s, measured.ram_bandwidth_source) == (200 * GB, "measured")


def test_enrich_an_unknown_card_keeps_the_sources_note():
    # the "not in the catalog" note is added to what the source said, not in its place
    from profiles.detect import _enrich
    from profiles.targets import match_catalog_device

    d = _device("Some Unknown GPU", 24 * GiB, notes="from NVML")
    assert _enrich(d, 64 * GiB, match_catalog_device) is None
    assert d.notes == "from NVML; not in the target catalog: bandwidth and compute unknown"


def test_enrich_a_unified_gpu_is_told_apart_by_the_ram_it_ships_with():
    # an M4 Max with 36 GB is the 410 GB/s part, with 128 GB the 546 GB/s one: the device's own total when the
    # source gave one, else the machine's RAM; a unified device's working-set budget is never compared with a
    # card's memory (so a unified device with a discrete card's name still matches it)
    from profiles.detect import _enrich
    from profiles.hardware import Device
    from profiles.targets import match_catalog_device

    def m4(total=None):
        return Device("Apple M4 Max", "apple", "Metal", 24 * GiB, total_bytes=total, unified=True, device_class="apple")

    for total, ram, target, bandwidth in ((None, 36 * GiB, "m4-max-36gb", 410 * GB),
                                          (None, 128 * GiB, "m4-max-128gb", 546 * GB),
                                          (36 * GiB, 128 * GiB, "m4-max-36gb", 410 * GB)):
        d = m4(total)
        assert _enrich(d, ram, match_catalog_device).target == target
        assert d.bandwidth_bytes_per_s == bandwidth and d.device_class == "apple"
    shared = _device("NVIDIA GeForce RTX 4090", 40 * GiB, unified=True)
    assert _enrich(shared, 64 * GiB, match_catalog_device).target == "rtx4090"


def test_hardware_matches_unified_gpus_on_the_machines_ram_and_skips_unknown_cards():
    # _hardware enriches each device with the machine's RAM (a unified GPU whose source gave no total is told apart
    # by it) and goes on past a card the catalog does not know
    from profiles.detect import _hardware
    from profiles.hardware import CPU, Device
    from profiles.sources.system import CgroupLimit, SystemInfo

    r = Readings(system="Darwin", ram_total=36 * GiB, ram_available=30 * GiB)
    m4 = Device("Apple M4 Max", "apple", "Metal", 24 * GiB, unified=True, integrated=True, device_class="apple")
    hw = _hardware(r, [m4], CPU(), CgroupLimit(None, None, None), SystemInfo())
    assert hw.hardware_ids == ["m4_max_32c"] and m4.bandwidth_bytes_per_s == 410 * GB
    assert (hw.kind, hw.ram_bandwidth_bytes_per_s, hw.ram_bandwidth_source) == ("apple", 410 * GB, "catalog")
    r = Readings(system="Linux", ram_total=64 * GiB, ram_available=60 * GiB)
    unknown, known = _device("Some Unknown GPU", 24 * GiB), _device("NVIDIA GeForce RTX 4090", 24 * GiB)
    hw = _hardware(r, [unknown, known], CPU(), CgroupLimit(None, None, None), SystemInfo())
    assert hw.hardware_ids == ["rtx4090"] and known.bandwidth_bytes_per_s == 1008 * GB
