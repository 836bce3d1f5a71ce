"""The speed model against published measurements (bench/data/calibration_rows.json) and its CLI."""

import json
from pathlib import Path

from click.testing import CliRunner

from planner.cli import main
from planner.speed import score_row

ROWS = Path(__file__).resolve().parents[1] / "bench/data/calibration_rows.json"


def test_bench_speed_scores_every_row():
    r = CliRunner().invoke(main, ["bench", "speed", "--rows", str(ROWS), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    rows = json.loads(ROWS.read_text())["rows"]
    assert len(d["rows"]) == len(rows)
    scored = [x for x in d["rows"] if "predicted_tg_tps" in x]
    assert len(scored) >= 60 and all(x["predicted_tg_tps"] > 0 for x in scored)
    # in-sample (the efficiencies are these rows' medians), so this guards the arithmetic, not the model
    assert d["summary"]["tg"]["median_abs_error_pct"] < 15


def test_gemma_rows_use_the_catalog():
    row = {"model": "Gemma 4 31B", "quant": "Q4_K_M", "hardware_id": "r9700", "n_devices": 1, "bandwidth_gbps": 640,
           "tg_tps": 27.73, "pp_tps": 719.26, "size_gb": None, "moe": False}
    s = score_row(row)
    assert s["bytes_per_token"] > 18e9  # Q4_K_M weights of the 31B incl. the tied output matrix
    assert abs(s["tg_error_pct"]) < 15


def test_moe_reads_only_active_experts():
    dense = score_row({"model": "Gemma 4 31B", "quant": "Q4_0", "bandwidth_gbps": 936, "hardware_id": "rtx3090", "n_devices": 1, "tg_tps": 1})
    moe = score_row({"model": "Gemma 4 26B-A4B", "quant": "Q4_0", "bandwidth_gbps": 936, "hardware_id": "rtx3090", "n_devices": 1, "tg_tps": 1, "moe": True})
    assert moe["bytes_per_token"] < dense["bytes_per_token"] / 5


def test_bad_rows_file_is_one_line(tmp_path):
    bad = tmp_path / "rows.json"
    bad.write_text("{not json")
    r = CliRunner().invoke(main, ["bench", "speed", "--rows", str(bad)])
    assert r.exit_code != 0 and "not JSON" in r.output and "Traceback" not in r.output
    bad.write_text('{"x": 1}')
    r = CliRunner().invoke(main, ["bench", "speed", "--rows", str(bad)])
    assert r.exit_code != 0 and "no list of rows" in r.output


def test_recommend_plot_writes_png(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    out = tmp_path / "plan.png"
    r = CliRunner().invoke(main, ["recommend", "--model", "gemma-3-4b", "--target", "rtx4090", "--plot", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
