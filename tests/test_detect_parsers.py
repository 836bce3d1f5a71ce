"""Every detection parser on captured outputs in tests/fixtures/hardware/, malformed ones included."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiles.sources import ParseError, dump_sections, parse_sections
from profiles.sources import amd, apple, cpu, nvidia, system
from profiles.units import GiB, MiB

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture(autouse=True)
def user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr("profiles.targets.user_targets_dir", lambda: tmp_path / "config" / "targets")


# --------------------------------------------------------------------------- NVIDIA


def test_nvml_one_card():
    (d,) = nvidia.parse_nvml(fixture("nvml_1x_rtx4090.json"))
    assert (d.name, d.vendor, d.backend) == ("NVIDIA GeForce RTX 4090", "nvidia", "CUDA")
    assert d.memory_bytes == 24564 * MiB and d.free_bytes == 25131286528
    assert (d.compute_capability, d.pcie_gen, d.pcie_width, d.unified) == ("8.9", 4, 16, False)


def test_nvml_two_cards_keep_their_own_free_memory():
    devices = nvidia.parse_nvml(fixture("nvml_2x_rtx3090.json"))
    assert [d.index for d in devices] == [0, 1]
    assert devices[1].free_bytes == 16 * GiB, "the second card is partly in use (llmfit #835: free, not total)"
    assert devices[1].pcie_width == 8


def test_nvml_mig_slice_is_the_device():
    (d,) = nvidia.parse_nvml(fixture("nvml_mig_a100.json"))
    assert d.partition == "MIG 3g.20gb"
    assert d.memory_bytes == 19968 * MiB, "the slice's memory, not the whole A100"
    assert d.total_bytes == 40 * GiB and d.uuid.startswith("MIG-")


def test_nvml_gb10_shares_system_ram():
    (d,) = nvidia.parse_nvml(fixture("nvml_gb10.json"), host_ram_bytes=128 * GiB, host_available_bytes=100 * GiB)
    assert d.unified and d.integrated and d.device_class == "apu"
    assert (d.memory_bytes, d.free_bytes, d.total_bytes) == (128 * GiB, 100 * GiB, 128 * GiB)


@pytest.mark.parametrize("name", ["nvml_malformed.json", "nvml_bad_record.json"])
def test_nvml_malformed(name):
    with pytest.raises(ParseError):
        nvidia.parse_nvml(fixture(name))


def test_nvidia_smi_one_card():
    (d,) = nvidia.parse_nvidia_smi(fixture("nvidia_smi_1x_rtx4090.csv"))
    assert d.name == "NVIDIA GeForce RTX 4090"
    assert (d.memory_bytes, d.free_bytes) == (24564 * MiB, 23582 * MiB)
    assert (d.compute_capability, d.pcie_gen, d.pcie_width, d.pci_bus_id) == ("8.9", 4, 16, "00000000:01:00.0")


def test_nvidia_smi_two_cards():
    devices = nvidia.parse_nvidia_smi(fixture("nvidia_smi_2x_rtx3090.csv"))
    assert [(d.index, d.memory_bytes, d.free_bytes) for d in devices] == [
        (0, 24 * GiB, 24265 * MiB), (1, 24 * GiB, 16 * GiB)]


def test_nvidia_smi_minimal_fields_of_an_old_driver():
    (d,) = nvidia.parse_nvidia_smi(fixture("nvidia_smi_minimal_old_driver.csv"), nvidia.NVIDIA_SMI_FIELD_SETS[-1])
    assert (d.name, d.memory_bytes, d.compute_capability) == ("Tesla T4", 15360 * MiB, None)


def test_nvidia_smi_gb10():
    (d,) = nvidia.parse_nvidia_smi(fixture("nvidia_smi_gb10.csv"), host_ram_bytes=128 * GiB,
                                   host_available_bytes=90 * GiB)
    assert d.unified and d.memory_bytes == 128 * GiB and d.compute_capability == "12.1"


def test_nvidia_smi_error_is_reported_verbatim():
    with pytest.raises(ParseError, match="couldn't communicate with the NVIDIA driver"):
        nvidia.parse_nvidia_smi(fixture("nvidia_smi_error.txt"))


def test_nvidia_smi_malformed():
    with pytest.raises(ParseError, match="columns"):
        nvidia.parse_nvidia_smi(fixture("nvidia_smi_malformed.csv"))


def test_nvidia_smi_no_devices():
    assert nvidia.parse_nvidia_smi("No devices were found\n") == []
    assert nvidia.parse_nvidia_smi("") == []


@pytest.mark.parametrize("value, expected", [
    (None, [0, 1]),  # unset: all cards
    ("1", [1]),
    ("1,0", [1, 0]),  # CUDA renumbers in the order given
    ("GPU-9f8e", [1]),  # UUID prefix
    ("", []),  # empty hides every card
    ("-1", []),
    ("0,7,1", [0]),  # CUDA stops at the first entry it cannot resolve
])
def test_cuda_visible_devices(value, expected):
    devices = nvidia.parse_nvml(fixture("nvml_2x_rtx3090.json"))
    chosen, note = nvidia.apply_cuda_visible_devices(devices, value)
    assert [d.index for d in chosen] == expected
    assert bool(note) == (value is not None)


# --------------------------------------------------------------------------- AMD and other DRM cards


def test_drm_amd_discrete_and_display_igpu():
    cards = amd.parse_drm_sysfs(fixture("drm_rx7900xtx.txt"), host_ram_bytes=64 * GiB, host_available_bytes=60 * GiB)
    (d,) = cards.devices
    assert (d.name, d.compute_capability, d.unified) == ("Radeon RX 7900 XTX", "gfx1100", False)
    assert d.memory_bytes == 24560 * MiB and d.free_bytes == 25753026560 - 1184858112
    assert (d.pcie_gen, d.pcie_width, d.pci_bus_id) == (4, 16, "0000:03:00.0")
    assert len(cards.ignored) == 1 and "display-only" in cards.ignored[0], "Raphael iGPU is not a second GPU"


def test_drm_strix_halo_counts_gtt_as_shared_memory():
    host_ram = 127 * GiB + 256 * MiB
    cards = amd.parse_drm_sysfs(fixture("drm_strix_halo_gtt.txt"), host_ram_bytes=host_ram,
                                host_available_bytes=120 * GiB)
    (d,) = cards.devices
    assert d.name == "Radeon 8060S" and d.unified and d.integrated and d.device_class == "apu"
    assert d.memory_bytes == 512 * MiB + 124 * GiB, "carve-out + GTT"
    assert d.total_bytes == host_ram + 512 * MiB, "physical = what the OS sees + the hidden carve-out"
    assert d.free_bytes <= 512 * MiB + 120 * GiB, "GTT free cannot exceed available RAM"


def test_drm_intel_igpu_is_not_a_gpu_to_plan_on():
    cards = amd.parse_drm_sysfs(fixture("drm_intel_igpu.txt"))
    assert cards.devices == [] and "Intel GPU" in cards.ignored[0]


def test_drm_nvidia_card_without_driver_is_remembered():
    cards = amd.parse_drm_sysfs(fixture("drm_nvidia_without_driver.txt"))
    assert cards.devices == [] and cards.nvidia_seen == ["NVIDIA GPU 0x2684 card0 at 0000:01:00.0"]


def test_drm_malformed():
    with pytest.raises(ParseError, match="mem_info_vram_total"):
        amd.parse_drm_sysfs(fixture("drm_malformed.txt"))
    with pytest.raises(ParseError):
        amd.parse_drm_sysfs("vendor = 0x1002\n")


def test_read_drm_sysfs_from_a_fake_tree(tmp_path):
    dev = tmp_path / "card0" / "device"
    dev.mkdir(parents=True)
    (tmp_path / "card0-DP-1").mkdir()  # connectors are not cards
    for name, value in {"vendor": "0x1002\n", "device": "0x744c\n", "mem_info_vram_total": "25753026560\n",
                        "mem_info_vram_used": "0\n", "uevent": "DRIVER=amdgpu\nPCI_SLOT_NAME=0000:03:00.0\n"}.items():
        (dev / name).write_text(value)
    text = amd.read_drm_sysfs(str(tmp_path))
    (d,) = amd.parse_drm_sysfs(text).devices
    assert d.name == "Radeon RX 7900 XTX" and d.pci_bus_id == "0000:03:00.0"


def test_amd_smi_mi300x():
    (d,) = amd.parse_amd_smi(fixture("amd_smi_mi300x.json"))
    assert (d.name, d.compute_capability) == ("AMD Instinct MI300X", "gfx942")
    assert (d.memory_bytes, d.free_bytes) == (196592 * MiB, 196309 * MiB)


def test_amd_smi_older_string_sizes():
    (d,) = amd.parse_amd_smi(fixture("amd_smi_old_string_sizes.json"))
    assert d.memory_bytes == 24560 * MiB and d.free_bytes is None


def test_amd_smi_malformed():
    with pytest.raises(ParseError, match="amdgpu driver not loaded"):
        amd.parse_amd_smi(fixture("amd_smi_malformed.txt"))


def test_rocm_smi_rx7900xtx():
    (d,) = amd.parse_rocm_smi(fixture("rocm_smi_rx7900xtx.json"))
    assert (d.name, d.compute_capability, d.memory_bytes) == ("Radeon RX 7900 XTX", "gfx1100", 24560 * MiB)


def test_rocm_smi_malformed():
    with pytest.raises(ParseError, match="VRAM Total Memory"):
        amd.parse_rocm_smi(fixture("rocm_smi_malformed.txt"))
    with pytest.raises(ParseError):
        amd.parse_rocm_smi("ERROR: GPU[0] : Unable to get VRAM info")


# --------------------------------------------------------------------------- Apple


@pytest.mark.parametrize("name, chip, ram, gpu_budget, flags", [
    # 16 GB: two thirds by default (the M4 Mac mini measured 0.667)
    ("sysctl_m3_16gb.txt", "Apple M3", 16 * GiB, int(16 * GiB * 2 / 3), {"neon", "dotprod", "i8mm", "bf16"}),
    # iogpu.wired_limit_mb set by the user wins over the default
    ("sysctl_m1_max_64gb_wired.txt", "Apple M1 Max", 64 * GiB, 56 * GiB, {"neon", "dotprod", "fp16"}),
    # 128 GB on macOS 26: 0.84 (107.52 GiB measured)
    ("sysctl_m4_max_128gb.txt", "Apple M4 Max", 128 * GiB, int(128 * GiB * 0.84), {"sme"}),
])
def test_apple_sysctl(name, chip, ram, gpu_budget, flags):
    values = apple.parse_sysctl(fixture(name))
    gpu = apple.apple_gpu(values, available_bytes=200 * GiB)
    assert (gpu.name, gpu.total_bytes, gpu.memory_bytes) == (chip, ram, gpu_budget)
    assert gpu.unified and gpu.backend == "Metal"
    assert gpu.free_bytes == gpu_budget, "free is capped at the working-set limit"
    c = apple.apple_cpu(values)
    assert c.name == chip and c.arch == "arm64" and flags <= set(c.flags)
    assert c.cores_logical == c.cores_physical


def test_intel_mac_has_no_metal_gpu_budget():
    values = apple.parse_sysctl(fixture("sysctl_intel_mac.txt"))
    assert apple.apple_gpu(values) is None
    c = apple.apple_cpu(values)
    assert c.arch == "x86_64" and {"avx2", "fma"} <= set(c.flags) and "avx512f" not in c.flags


def test_sysctl_malformed():
    with pytest.raises(ParseError):
        apple.parse_sysctl(fixture("sysctl_malformed.txt"))
    with pytest.raises(ParseError, match="hw.memsize"):
        apple.parse_sysctl("hw.physicalcpu: 8\n")


# --------------------------------------------------------------------------- CPU


@pytest.mark.parametrize("name, model, physical, logical, flags, absent", [
    ("cpuinfo_sapphire_rapids.txt", "Intel(R) Xeon(R) Platinum 8480+", 2, 4,
     {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx"}, {"neon"}),
    ("cpuinfo_rpi5.txt", "4x Cortex-A76", 4, 4, {"neon", "dotprod", "fp16"}, {"sve", "i8mm", "avx2"}),
    ("cpuinfo_grace.txt", "4x Neoverse V2", 4, 4, {"neon", "sve", "sve2", "i8mm", "bf16"}, {"amx"}),
])
def test_cpuinfo(name, model, physical, logical, flags, absent):
    c = cpu.parse_cpuinfo(fixture(name))
    assert (c.name, c.cores_physical, c.cores_logical) == (model, physical, logical)
    assert flags <= set(c.flags) and not (absent & set(c.flags))


def test_cpuinfo_this_machine():
    c = cpu.parse_cpuinfo(fixture("cpuinfo_this_machine.txt"), "x86_64")
    assert c.cores_logical == 2 and "avx2" in c.flags and "avx512f" not in c.flags


def test_cpuinfo_malformed():
    with pytest.raises(ParseError):
        cpu.parse_cpuinfo(fixture("cpuinfo_malformed.txt"))
    with pytest.raises(ParseError, match="processor"):
        cpu.parse_cpuinfo("vendor_id : GenuineIntel\n")


# --------------------------------------------------------------------------- OS, WSL, containers, boards


@pytest.mark.parametrize("name, wsl, container, os_version, board", [
    ("system_this_machine.txt", None, "docker", "Debian GNU/Linux 12 (bookworm)", None),
    ("system_wsl2.txt", 2, None, "Ubuntu 22.04.4 LTS", None),
    ("system_podman.txt", None, "podman", "Fedora Linux 40 (Container Image)", None),
    ("system_kubernetes.txt", None, "kubernetes", "Ubuntu 24.04.1 LTS", None),
    ("system_rpi5.txt", None, None, "Debian GNU/Linux 12 (bookworm)", "Raspberry Pi 5 Model B Rev 1.0"),
    ("system_jetson_orin_nano.txt", None, None, "Ubuntu 22.04.5 LTS",
     "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"),
])
def test_system(name, wsl, container, os_version, board):
    info = system.parse_system(fixture(name), "Linux", "", "x86_64")
    assert info.wsl == (wsl is not None) and info.wsl_version == wsl
    assert (info.container, info.os_version, info.board) == (container, os_version, board)
    assert info.kernel


def test_wsl1_kernel():
    text = dump_sections([("proc_version", "Linux version 4.4.0-19041-Microsoft (Microsoft@Microsoft.com)"),
                          ("markers", "/.dockerenv = no")])
    info = system.parse_system(text)
    assert info.wsl and info.wsl_version == 1


def test_system_malformed():
    with pytest.raises(ParseError):
        system.parse_system(fixture("system_malformed.txt"))


@pytest.mark.parametrize("model, target, jetson", [
    ("Raspberry Pi 5 Model B Rev 1.0", "raspberry-pi-5-8gb", None),
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "jetson-orin-nano", "Jetson Orin Nano"),
    ("NVIDIA Jetson AGX Orin Developer Kit", "jetson-agx-orin-64gb", "Jetson AGX Orin"),
    ("Pine64 RockPro64", None, None),
    (None, None, None),
])
def test_boards(model, target, jetson):
    assert system.board_target(model) == target
    assert system.jetson_gpu_name(model) == jetson


# --------------------------------------------------------------------------- cgroup limits


@pytest.mark.parametrize("name, limit, version", [
    ("cgroup_v2_container_8g.txt", 8 * GiB, 2),
    ("cgroup_v1_container_8g.txt", 8 * GiB, 1),
    ("cgroup_v2_nested.txt", 16 * GiB, 2),  # the tightest limit on the path to the root
    ("cgroup_v2_unlimited.txt", None, 2),  # "max"
    ("cgroup_this_machine.txt", None, 1),  # v1 PAGE_COUNTER_MAX: no limit
])
def test_cgroup(name, limit, version):
    result = system.parse_cgroup(fixture(name))
    assert (result.limit_bytes, result.version) == (limit, version)
    assert (result.file is None) == (limit is None)


def test_cgroup_malformed():
    with pytest.raises(ParseError, match="memory.max"):
        system.parse_cgroup(fixture("cgroup_malformed.txt"))


def test_read_cgroup_walks_a_fake_v2_tree(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "memory.max").write_text("max\n")
    (tmp_path / "a" / "memory.max").write_text(f"{4 * GiB}\n")
    proc = tmp_path / "self_cgroup"
    proc.write_text("0::/a/b\n")
    result = system.parse_cgroup(system.read_cgroup(str(tmp_path), str(proc)))
    assert result.limit_bytes == 4 * GiB and result.file.endswith("a/memory.max")


def test_read_cgroup_refuses_paths_outside_the_mount(tmp_path):
    proc = tmp_path / "self_cgroup"
    proc.write_text("0::/../../elsewhere\n")
    (tmp_path / "memory.max").write_text(f"{2 * GiB}\n")
    assert system.parse_cgroup(system.read_cgroup(str(tmp_path), str(proc))).limit_bytes == 2 * GiB


# --------------------------------------------------------------------------- helpers


def test_sections_round_trip():
    sections = [("a", "one\ntwo"), ("b", "")]
    assert parse_sections(dump_sections(sections)) == sections
    with pytest.raises(ParseError):
        parse_sections("loose text\n[a]\n")


def test_disk_free_of_a_directory_not_created_yet(tmp_path):
    info = system.disk_free(str(tmp_path / "not" / "yet"))
    assert info.checked == str(tmp_path) and info.free_bytes > 0 and info.total_bytes >= info.free_bytes


# --------------------------------------------------------------------------- captured on a real H200 host


def test_captured_h200_nvml_and_nvidia_smi_agree():
    """NVML and nvidia-smi as read on an H200 machine (driver 580) give the same card."""
    (a,) = nvidia.parse_nvml(fixture("nvml_h200_captured.json"))
    (b,) = nvidia.parse_nvidia_smi(fixture("nvidia_smi_h200_captured.csv"))
    assert a.name == b.name == "NVIDIA H200"
    assert a.memory_bytes == b.memory_bytes == 143771 * MiB
    assert (a.compute_capability, a.pcie_gen, a.pcie_width) == (b.compute_capability, b.pcie_gen, b.pcie_width) \
        == ("9.0", 5, 16)
    assert "MIG" not in b.notes, "mig.mode.current = Disabled"


def test_captured_h200_host_cgroup_limit_is_on_the_parent():
    # the process's own cgroup says "max"; its parent caps it at 128 GiB
    result = system.parse_cgroup(fixture("cgroup_v2_h200_host_captured.txt"))
    assert result.limit_bytes == 128 * GiB and result.file == "/sys/fs/cgroup/process_api/memory.max"


def test_captured_h200_host_cpu_and_os():
    c = cpu.parse_cpuinfo(fixture("cpuinfo_xeon_h200_host_captured.txt"))
    assert c.cores_logical == 16 and {"avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx"} <= set(c.flags)
    info = system.parse_system(fixture("system_h200_host_captured.txt"))
    assert (info.os_version, info.container) == ("Ubuntu 24.04.3 LTS", "docker")


def test_nvml_reserved_memory_gives_the_cuda_total():
    """NVML v2 'reserved' is the memory CUDA does not offer; vLLM sizes its request by the rest."""
    import json

    total, reserved = 23034 * MiB, 455 * MiB
    rec = {"name": "NVIDIA L4", "memory_total": total, "memory_free": total - reserved, "memory_reserved": reserved}
    d = nvidia.parse_nvml(json.dumps({"devices": [rec]}))[0]
    assert d.memory_bytes == total and d.cuda_total_bytes == total - reserved
    rec.pop("memory_reserved")
    assert nvidia.parse_nvml(json.dumps({"devices": [rec]}))[0].cuda_total_bytes is None
