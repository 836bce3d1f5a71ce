"""Target profiles: every packaged file loads and is consistent; load/save/list/catalog behave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiles import (CPU, Device, Hardware, Host, InvalidTargetError, TargetExistsError, UnknownTargetError,
                      list_targets, load_target, save_target, target_for_hardware_id)
from profiles.targets import (hardware_to_toml, match_catalog_device, packaged_target_names, parse_target_text,
                              targets_for_hardware_id)
from profiles.unified import apple_default_wired_fraction, apple_gpu_limit_bytes
from profiles.units import GB, GiB, MiB

# ids, bandwidths and FP16 rates from the project's hardware reference, with their sources (see "citation")
REFERENCE = Path(__file__).parent / "fixtures" / "reference" / "hardware_specs.json"

REQUIRED = """rtx3060-12gb rtx3090 rtx4060ti-16gb rtx4070 rtx4080 rtx4090 rtx5080 rtx5090 2x-rtx3090 2x-rtx4090
a6000 2x-a6000 l4 l40s a100-40gb a100-80gb h100 h200 mi300x rx7900xtx strix-halo-128gb dgx-spark m1-max-64gb
m2-ultra-64gb m2-ultra-192gb m3-ultra-96gb m3-ultra-512gb m4-pro-48gb m4-max-128gb macbook-air-16gb cpu-16gb
cpu-32gb cpu-64gb pixel-8 pixel-9 galaxy-s24 raspberry-pi-5-8gb jetson-orin-nano""".split()


@pytest.fixture(autouse=True)
def user_config(tmp_path, monkeypatch):
    """All user state (saved targets) goes to a temp dir."""
    target_dir = tmp_path / "config" / "targets"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr("profiles.targets.user_targets_dir", lambda: target_dir)
    return target_dir


# --------------------------------------------------------------------------- packaged data


def test_required_targets_present():
    assert set(REQUIRED) <= set(packaged_target_names())


def test_cluster_example_present():
    clusters = [hw for hw in list_targets() if hw.is_cluster]
    assert {hw.name for hw in clusters} >= {"2x-node-8x-h100", "cluster-2x-dgx-spark"}


@pytest.mark.parametrize("name", packaged_target_names())
def test_packaged_target_is_consistent(name):
    hw = load_target(name)
    assert hw.name == name
    assert hw.source.strip(), "every target cites its source"
    assert hw.hardware_ids, "every target names the reference ids it stands for"
    assert hw.ram_bytes > 0
    assert hw.ram_bandwidth_bytes_per_s and hw.ram_bandwidth_bytes_per_s > 0
    if not hw.devices:
        assert hw.kind in ("desktop", "laptop", "sbc", "server"), "CPU-only targets are plain machines"
    for d in hw.devices:
        assert d.memory_bytes > 0, d
        assert d.bandwidth_bytes_per_s and d.bandwidth_bytes_per_s > 0, d
        if d.unified:
            assert d.total_bytes is not None and d.total_bytes >= d.memory_bytes, d
        if d.fp16_flops is not None:
            assert d.fp16_flops > 1e12
    if hw.kind == "phone":
        assert all(d.total_bytes > hw.ram_bytes for d in hw.devices), "phones: app-usable RAM below physical"
    if hw.hosts:
        assert hw.network_bytes_per_s and hw.kind == "cluster"
        assert len(hw.devices) == sum(len(h.devices) for h in hw.hosts)
        assert hw.ram_bytes == sum(h.ram_bytes for h in hw.hosts)


def test_hardware_ids_exist_in_reference():
    ref = json.loads(REFERENCE.read_text())
    known = {h["id"] for h in ref["hardware"]} | {c["id"] for c in ref["cpu_memory"]}
    for hw in list_targets():
        assert set(hw.hardware_ids) <= known, (hw.name, set(hw.hardware_ids) - known)


def test_device_figures_match_reference():
    """GPU bandwidth and FP16 rate in the files are the reference's, not retyped differently."""
    ref = {h["id"]: h for h in json.loads(REFERENCE.read_text())["hardware"]}
    for hw in list_targets():
        for hid in hw.hardware_ids:
            if hid not in ref or not hw.devices or hw.kind == "phone" and hid == "pixel8":
                continue
            spec = ref[hid]
            d = hw.devices[0]
            assert d.bandwidth_bytes_per_s == int(round(spec["bandwidth_gbps"] * GB)), hw.name
            if spec.get("fp16_tensor_dense_tflops") and d.fp16_flops:
                assert d.fp16_flops == pytest.approx(spec["fp16_tensor_dense_tflops"] * 1e12), hw.name


@pytest.mark.parametrize("name, fraction", [
    ("macbook-air-16gb", 2 / 3),  # <= 24 GB: two thirds
    ("m4-pro-48gb", 0.75),  # 32-64 GB
    ("m3-ultra-96gb", 0.75),  # between the measured rows: the lower share
    ("m4-max-128gb", 0.84),  # 128 GB+: 107.52 GiB measured on macOS 26
    ("m3-ultra-512gb", 0.84),
])
def test_apple_targets_use_the_wired_rule(name, fraction):
    d = load_target(name).devices[0]
    assert d.memory_bytes == int(d.total_bytes * fraction)


def test_apple_128gb_default_matches_the_measurement():
    # antirez/ds4 #890/#893: stock recommendedMaxWorkingSetSize 107.52 GiB on 128 GB
    assert apple_gpu_limit_bytes(128 * GiB) / GiB == pytest.approx(107.52)
    assert apple_default_wired_fraction(128 * GiB, macos_major=15) == 0.75
    assert apple_gpu_limit_bytes(64 * GiB, wired_limit_mb=57344) == 56 * GiB


# --------------------------------------------------------------------------- lookup


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownTargetError) as err:
        load_target("rtx409")
    assert "rtx4090" in str(err.value)
    assert err.value.hint


def test_missing_file_path():
    with pytest.raises(UnknownTargetError, match="no target file"):
        load_target("./nowhere/box.toml")


def test_load_by_path(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text('kind = "desktop"\nsource = "my notes"\nram_gib = 32\n')
    hw = load_target(str(path))
    assert hw.name == "box" and hw.ram_bytes == 32 * GiB and hw.devices == []


@pytest.mark.parametrize("ref_id, n, expected", [
    ("rtx3090", None, "rtx3090"),  # single card preferred
    ("rtx3090", 2, "2x-rtx3090"),  # calibration row with n_devices = 2
    ("rtx_a6000", 4, "4x-a6000"),
    ("ryzen_ai_max_395", None, "strix-halo-128gb"),
    ("cpu_13900k", 0, "cpu-64gb"),
    ("m3_ultra", None, "m3-ultra-512gb"),  # both M3 Ultra targets: first by name
])
def test_target_for_hardware_id(ref_id, n, expected):
    assert target_for_hardware_id(ref_id, n).name == expected


def test_target_for_unknown_hardware_id():
    assert target_for_hardware_id("no-such-id") is None
    assert {h.name for h in targets_for_hardware_id("m2_ultra")} == {"m2-ultra-64gb", "m2-ultra-192gb"}


@pytest.mark.parametrize("name, memory, ram, expected", [
    ("NVIDIA GeForce RTX 4090", 24564 * MiB, None, "rtx4090"),  # NVML name, a little under 24 GiB
    ("NVIDIA GeForce RTX 4090 Laptop GPU", 16 * GiB, None, None),  # a different chip
    ("NVIDIA GeForce RTX 4070 Ti SUPER", 16 * GiB, None, None),  # 'SUPER' is a different card
    ("NVIDIA GeForce RTX 4070 Ti", 12 * GiB, None, "rtx4070ti"),
    ("NVIDIA GeForce RTX 3060", 8 * GiB, None, None),  # the 8 GB 3060 is not the 12 GB one
    ("NVIDIA A100-SXM4-80GB", 80 * GiB, None, "a100-80gb"),  # alias
    ("NVIDIA H100 80GB HBM3", 81559 * MiB, None, "h100"),
    ("NVIDIA H100 PCIe", 81559 * MiB, None, "h100-pcie"),
    ("AMD Instinct MI300X", 196592 * MiB, None, "mi300x"),
    ("Radeon RX 7900 XTX", 24560 * MiB, None, "rx7900xtx"),
    ("Apple M4 Max", None, 36 * GiB, "m4-max-36gb"),  # binned chip ships with 36 GB only
    ("Apple M4 Max", None, 64 * GiB, "m4-max-128gb"),
    ("Apple M4", None, 16 * GiB, "macbook-air-16gb"),
    ("Apple M2 Pro", None, 32 * GiB, None),  # not 'Apple M2'-anything in the catalog
    ("NVIDIA GB10", None, 128 * GiB, "dgx-spark"),
])
def test_match_catalog_device(name, memory, ram, expected):
    found = match_catalog_device(name, memory, ram)
    assert (found.target if found else None) == expected


# --------------------------------------------------------------------------- save / load


def _detected_machine() -> Hardware:
    return Hardware(
        name="this-machine",
        devices=[Device("NVIDIA GeForce RTX 4090", "nvidia", "CUDA", 25757220864, bandwidth_bytes_per_s=1008 * GB,
                        fp16_flops=330e12, free_bytes=25131286528, compute_capability="8.9", index=0,
                        uuid="GPU-5f3c", pci_bus_id="00000000:01:00.0", pcie_gen=4, pcie_width=16,
                        notes='bandwidth from target "rtx4090"\nsecond line')],
        ram_bytes=67_319_164_928, ram_free_bytes=60_000_000_000, memory_limit_bytes=8 * GiB,
        cpu=CPU("AMD Ryzen 9 7950X 16-Core Processor", 16, 32, ["avx", "avx2", "avx512f"], "x86_64"),
        ram_bandwidth_bytes_per_s=71_234_567_890, ram_bandwidth_source="measured",
        kind="desktop", source="detected by gemma-plan detect at 2026-11-28 04:09 UTC", detected=True,
        hardware_ids=["rtx4090"],
    )


def _without_live_fields(hw: Hardware) -> Hardware:
    hw.ram_free_bytes = None
    hw.detected = False
    for d in hw.devices + [d for h in hw.hosts for d in h.devices]:
        d.free_bytes = d.index = d.uuid = d.pci_bus_id = d.pcie_gen = d.pcie_width = None
    return hw


def test_save_then_load_round_trips(user_config):
    hw = _detected_machine()
    path = save_target(hw, "mybox")
    assert path == user_config / "mybox.toml"
    loaded = load_target("mybox")
    expected = _without_live_fields(_detected_machine())
    expected.name = "mybox"
    assert loaded == expected
    assert [p.name for p in user_config.iterdir()] == ["mybox.toml"], "no temp files left behind"
    assert "mybox" in {h.name for h in list_targets()}


@pytest.mark.parametrize("name", ["m4-max-128gb", "2x-node-8x-h100", "pixel-8", "cpu-16gb"])
def test_packaged_targets_survive_save_and_load(name):
    hw = load_target(name)
    save_target(hw, f"copy-of-{name}")
    again = load_target(f"copy-of-{name}")
    hw.name = again.name
    assert again == hw


def test_save_refuses_to_overwrite(user_config):
    save_target(_detected_machine(), "mybox")
    with pytest.raises(TargetExistsError, match="already exists"):
        save_target(_detected_machine(), "mybox")
    changed = _detected_machine()
    changed.ram_bytes = 32 * GiB
    save_target(changed, "mybox", force=True)
    assert load_target("mybox").ram_bytes == 32 * GiB


def test_save_refuses_to_shadow_a_packaged_target():
    with pytest.raises(TargetExistsError, match="packaged"):
        save_target(_detected_machine(), "rtx4090")
    save_target(_detected_machine(), "rtx4090", force=True)
    assert load_target("rtx4090").source.startswith("detected"), "user targets shadow packaged ones"


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", "x" * 65, ".hidden"])
def test_save_rejects_bad_names(bad):
    with pytest.raises(InvalidTargetError):
        save_target(_detected_machine(), bad)


# --------------------------------------------------------------------------- malformed files

GOOD = '''kind = "desktop"
source = "test"
ram_gib = 64

[[devices]]
name = "GeForce RTX 4090"
vendor = "nvidia"
backend = "CUDA"
memory_gib = 24
bandwidth_gb_s = 1008
'''


@pytest.mark.parametrize("text, field", [
    (GOOD.replace('kind = "desktop"', 'kind = "mainframe"'), "kind"),  # not a kind we know
    (GOOD.replace('source = "test"', 'source = ""'), "source"),  # facts need a citation
    (GOOD.replace("ram_gib = 64", "ram_gib = 64\nram_bytes = 1"), "ram"),  # two units for one quantity
    (GOOD.replace("ram_gib = 64", ""), "ram_bytes"),  # RAM is required
    (GOOD.replace("memory_gib = 24", "memory_gib = -24"), "devices[0].memory_gib"),
    (GOOD.replace("memory_gib = 24", "memory_gb = 24"), "devices[0].memory_gb"),  # typo: unknown key
    (GOOD.replace('backend = "CUDA"', 'backend = "cuda"'), "devices[0].backend"),
    (GOOD + "unified = true\ntotal_gib = 16\n", "devices[0].total"),  # physical below GPU budget
    (GOOD + "count = 0\n", "devices[0].count"),
    (GOOD.replace("ram_gib = 64", "ram_bytes = 64.5"), "ram_bytes"),  # bytes are integers
    (GOOD.replace('kind = "desktop"', 'kind = "cluster"'), "hosts"),  # cluster without hosts
    (GOOD + "memory_rule = \"apple-default\"\n", "devices[0].memory_rule"),  # rule and explicit memory
    ("kind = \n", "toml"),  # not TOML at all
])
def test_invalid_target_names_file_and_field(tmp_path, text, field):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidTargetError) as err:
        load_target(str(path))
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert f": {field}" in message, message
    assert "\n" not in message


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("bandwidth_gb_s", "bandwith_gb_s"))
    with pytest.raises(InvalidTargetError, match="did you mean 'bandwidth_gb_s'"):
        load_target(str(path))


def test_count_and_hosts_expand():
    text = '''kind = "cluster"
source = "test"
network_gbit_s = 200

[[hosts]]
name = "n"
count = 2
ram_gib = 128

[[hosts.devices]]
name = "GB10"
vendor = "nvidia"
backend = "CUDA"
memory_gib = 128
total_gib = 128
unified = true
'''
    hw = parse_target_text(text, default_name="c")
    assert [h.name for h in hw.hosts] == ["n0", "n1"]
    assert hw.network_bytes_per_s == 25 * GB
    assert hw.ram_bytes == 256 * GiB and len(hw.devices) == 2
    assert hw.hosts[0].devices[0] is not hw.hosts[1].devices[0]


def test_writer_escapes_strings():
    hw = _detected_machine()
    hw.notes = 'quote " backslash \\ tab \t unicode é'
    again = parse_target_text(hardware_to_toml(hw), default_name="x")
    assert again.notes == hw.notes


def test_from_dict_inverts_to_dict():
    hw = load_target("2x-node-8x-h100")
    assert Hardware.from_dict(hw.to_dict()) == hw
    assert Host.from_dict(hw.hosts[0].__dict__ | {"devices": [d.__dict__ for d in hw.hosts[0].devices]}) == hw.hosts[0]
