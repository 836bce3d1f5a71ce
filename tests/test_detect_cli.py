"""`gemma-plan detect` through click's CliRunner (the command object is imported directly)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from planner.commands.detect import detect
from profiles import load_target
from profiles.detect import Readings, build_report
from profiles.units import GiB

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"


@pytest.fixture(autouse=True)
def user_config(tmp_path, monkeypatch):
    target_dir = tmp_path / "config" / "targets"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr("profiles.targets.user_targets_dir", lambda: target_dir)
    return target_dir


def run(*args: str, columns: int = 80):
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(detect, list(args), catch_exceptions=False)


def test_detect_json_on_this_machine(tmp_path):
    result = run("--json", "--model-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    hw = data["hardware"]
    assert data["schema"] == "gemma-plan.detect/1"
    assert hw["ram_bytes"] == psutil.virtual_memory().total
    assert hw["cpu"]["cores_logical"] == os.cpu_count()
    assert hw["devices"] == [] or Path("/dev/nvidia0").exists()
    assert data["disk"]["checked"] == str(tmp_path)
    assert data["saved_to"] is None
    assert isinstance(data["could_not_read"], list)


def test_detect_table_on_this_machine():
    result = run()
    assert result.exit_code == 0
    for label in ("RAM", "memory limit", "CPU", "ISA flags", "OS", "WSL", "container", "disk free"):
        assert label in result.output
    assert "GiB" in result.output, "the table says which unit it shows"


def test_detect_save_then_load(user_config):
    result = run("--save", "mybox")
    assert result.exit_code == 0, result.output
    assert "--target mybox" in result.output
    hw = load_target("mybox")
    assert hw.ram_bytes == psutil.virtual_memory().total and hw.detected is False
    assert (user_config / "mybox.toml").is_file()

    again = run("--save", "mybox")
    assert again.exit_code == 1
    assert "already exists" in again.output and "--force" in again.output
    assert run("--save", "mybox", "--force").exit_code == 0


def test_detect_save_json_reports_the_path(user_config):
    result = run("--json", "--save", "box2")
    data = json.loads(result.stdout)
    assert data["saved_to"] == str(user_config / "box2.toml")


def test_detect_save_refuses_a_packaged_name_before_detecting():
    result = run("--save", "rtx4090")
    assert result.exit_code == 1 and "packaged target" in result.output


def test_detect_bench_json(monkeypatch):
    from profiles import bench

    real = bench.measure_ram_bandwidth
    monkeypatch.setattr(bench, "measure_ram_bandwidth", lambda **kw: real(**{**kw, "seconds": 0.3}))
    result = run("--json", "--bench")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["hardware"]["ram_bandwidth_source"] == "measured"
    assert data["hardware"]["ram_bandwidth_bytes_per_s"] == data["bench"]["bytes_per_s"] > 0


def test_detect_table_with_accelerators(monkeypatch):
    """The table for a machine with a GPU, an ignored iGPU and an unreadable tool."""
    r = Readings(system="Linux", machine="x86_64", ram_total=64 * GiB, ram_available=60 * GiB, cpu_count=16)
    r.texts["nvml"] = (FIXTURES / "nvml_mig_a100.json").read_text()
    r.texts["drm-sysfs"] = (FIXTURES / "drm_intel_igpu.txt").read_text()
    r.texts["cgroup"] = (FIXTURES / "cgroup_v2_container_8g.txt").read_text()
    r.notes["rocm-smi"] = ("unavailable", "rocm-smi not found")
    report = build_report(r)
    monkeypatch.setattr("profiles.detect.detect", lambda **kw: report)
    result = run(columns=160)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Accelerators" in out and "NVIDIA A100-SXM4-40GB [MIG 3g.20gb]" in out
    assert "758" in out, "bandwidth scaled to the slice, in GB/s"
    assert "8.0 GiB (cgroup v2" in out
    assert "Not used for planning" in out and "Intel GPU" in out
    assert "Could not read" in out and "rocm-smi not found" in out


def test_saved_target_works_from_a_fresh_shell(tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    cli = [sys.executable, "-m", "planner.cli"]
    subprocess.run(cli + ["detect", "--save", "mybox"], env=env, check=True, capture_output=True, text=True)
    r = subprocess.run(cli + ["recommend", "--model", "27b", "--target", "mybox", "--json"], env=env, capture_output=True, text=True)
    d = json.loads(r.stdout)
    assert r.returncode == (0 if d["plan"] else 3), r.stderr  # 3: nothing fits this machine's free memory
    # with the RAM given, the saved machine holds a 27B plan whatever this machine has free right now
    r = subprocess.run(cli + ["recommend", "--model", "27b", "--target", "mybox", "--ram", "64GiB", "--json"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["target"] == "mybox"
