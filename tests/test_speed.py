"""The speed model against published measurements (bench/data/calibration_rows.json) and its CLI."""

import json
from pathlib import Path

import pytest

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


def test_bad_rows_file_is_one_line(tmp_path, one_line_error):
    bad = tmp_path / "rows.json"
    bad.write_text("{not json")
    r = CliRunner().invoke(main, ["bench", "speed", "--rows", str(bad)])
    assert one_line_error(r, 1) == (f"Error: {bad} is not JSON (Expecting property name enclosed in double quotes: line 1 "
                                    "column 2 (char 1)); give a JSON list of rows")
    bad.write_text('{"x": 1}')
    r = CliRunner().invoke(main, ["bench", "speed", "--rows", str(bad)])
    assert "no list of rows" in one_line_error(r, 1)


def test_recommend_plot_writes_png(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    out = tmp_path / "plan.png"
    r = CliRunner().invoke(main, ["recommend", "--model", "gemma-3-4b", "--target", "rtx4090", "--plot", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- bytes read per token, through planner.search.plan
# The traffic the decode estimate divides by, by hand: every weight once (the tied output matrix included, the
# token-embedding rows not), MoE experts scaled by top-k, plus the KV cache read at the quoted depth (4096
# tokens), where a sliding layer reads at most its window.


def _plan_on(target, model, quant, engine=None, **settings):
    from planner.catalog import get_model
    from planner.formats import parse_format
    from planner.search import plan
    from planner.types import RuntimeSettings
    from profiles.targets import load_target

    spec, _ = get_model(model)
    if engine:
        settings["engine"] = engine
    return spec, plan(spec, parse_format(quant, engine), RuntimeSettings(**settings), load_target(target))


# Gemma 3 27B: 10 full + 52 sliding layers (window 1024), 16 KV heads x 128 x (K + V) x 2 bytes = 8 KiB per cell
KV_27B = (10 * 4096 + 52 * 1024) * 8192
# Gemma 3 1B: 4 full + 22 sliding layers (window 512), 1 KV head x 256 x (K + V) x 2 bytes = 1 KiB per cell
KV_1B = (4 * 4096 + 22 * 512) * 1024


def test_dense_bytes_per_token_is_the_file_once_plus_the_windowed_kv():
    from planner.formats import parse_format, weight_bytes

    spec, p = _plan_on("h100", "gemma-3-27b", "Q4_K_M", n_ctx=32768)
    assert KV_27B == 771_751_936
    assert p.speed.bytes_per_token == weight_bytes(spec, parse_format("Q4_K_M")) + KV_27B


def test_kv_read_grows_with_depth_only_on_full_layers():
    _, near = _plan_on("h100", "gemma-3-27b", "Q4_K_M", n_ctx=2048)  # depth = n_ctx when shorter than 4096
    _, far = _plan_on("h100", "gemma-3-27b", "Q4_K_M", n_ctx=32768)
    assert far.speed.bytes_per_token - near.speed.bytes_per_token == 10 * (4096 - 2048) * 8192


def test_moe_bytes_per_token_reads_top_k_experts():
    from planner.formats import parse_format, tensor_sizes

    spec, p = _plan_on("h100", "gemma-4-26b-a4b", "Q4_K_M", n_ctx=32768)
    sizes = tensor_sizes(spec, parse_format("Q4_K_M"))
    emb = next(b for t, b in sizes if t.name == "token_embd.weight")
    experts = sum(b for t, b in sizes if "_exps." in t.name)
    dense = sum(b for t, b in sizes if t.name != "token_embd.weight" and "_exps." not in t.name)
    # 8 of 128 experts per token; KV: 5 full layers (2 x 512) x 4096 cells, 25 sliding (8 x 256) x 1024, f16 K and V
    kv = 5 * 4096 * 2 * 512 * 2 * 2 + 25 * 1024 * 8 * 256 * 2 * 2
    assert p.speed.bytes_per_token == dense + experts * 8 // 128 + emb + kv


@pytest.mark.parametrize("target", ["cpu-16gb", "raspberry-pi-5-8gb", "pixel-8", "macbook-air-16gb", "rtx3060-12gb", "h100"])
def test_bytes_per_token_do_not_depend_on_the_device(target):
    from planner.formats import parse_format, weight_bytes

    spec, p = _plan_on(target, "gemma-3-1b", "Q4_0", n_ctx=8192)
    assert p.speed.bytes_per_token == weight_bytes(spec, parse_format("Q4_0")) + KV_1B


def test_vllm_kv_read_uses_the_model_dtype_or_one_byte_for_fp8():
    # vLLM's cache: 'auto' stores K and V in the model dtype (2 bytes), fp8 in 1 byte
    from planner.formats import parse_format, weight_bytes

    got = {kv: _plan_on("h100", "gemma-3-1b", "bf16", "vllm", n_ctx=8192, kv_cache_dtype=kv)[1].speed.bytes_per_token
           for kv in ("auto", "fp8")}
    spec, _ = _plan_on("h100", "gemma-3-1b", "bf16", "vllm", n_ctx=8192)
    assert got["auto"] == weight_bytes(spec, parse_format("bf16", "vllm")) + KV_1B
    assert got["auto"] - got["fp8"] == KV_1B // 2


def test_moe_decode_takes_the_moe_factor(monkeypatch):
    # MoE decode reaches a smaller share of the ceiling than a dense model reading the same bytes (router,
    # scattered expert reads): the estimate is the dense-rule time divided by speed.moe_factor() (< 1)
    import planner.speed as speed

    factor = speed.moe_factor()
    assert 0 < factor < 1
    # (an A100: on an H100 the dense-rule rate reaches the class's best published rate, and the cap would hide the factor)
    _, moe = _plan_on("a100-80gb", "gemma-4-26b-a4b", "Q4_K_M", n_ctx=32768)
    monkeypatch.setattr(speed, "moe_factor", lambda: 1.0)
    _, dense_rule = _plan_on("a100-80gb", "gemma-4-26b-a4b", "Q4_K_M", n_ctx=32768)
    assert not [c for c in dense_rule.speed.capped_by if c.startswith("decode")]
    assert moe.speed.decode_tokens_per_s == pytest.approx(dense_rule.speed.decode_tokens_per_s * factor, abs=0.011)


def test_moe_prefill_takes_the_moe_prefill_factor(monkeypatch):
    # a prompt batch split among 128 experts fills the matrix units less than a dense matmul on the same
    # active parameters: the MoE prefill estimate is the dense-rule rate times speed.moe_pp_factor() (< 1)
    import planner.speed as speed

    factor = speed.moe_pp_factor()
    assert 0 < factor < 1
    _, moe = _plan_on("strix-halo-128gb", "gemma-4-26b-a4b", "Q4_K_M", n_ctx=32768)
    monkeypatch.setattr(speed, "moe_pp_factor", lambda: 1.0)
    _, dense_rule = _plan_on("strix-halo-128gb", "gemma-4-26b-a4b", "Q4_K_M", n_ctx=32768)
    assert not [c for c in dense_rule.speed.capped_by if c.startswith("prefill")]
    assert moe.speed.prefill_tokens_per_s == pytest.approx(dense_rule.speed.prefill_tokens_per_s * factor, rel=1e-3)


def test_old_builds_pay_their_per_layer_cost_and_plans_do_not():
    import planner.speed as speed

    era = speed._table()["eras"]["2024"]["layer_factor"]
    assert era > 1
    assert speed.build_era("llama.cpp CUDA (2024 build)") == "2024" and speed.build_era("CUDA") == ""
    assert speed.layer_factor("llama.cpp Metal (2024 build)") == era
    assert speed.layer_factor("CUDA") == speed.layer_factor("Metal") == 1.0  # a plan's device backend
    part = speed.Part(cls="consumer_gpu", bandwidth=1e12, weight_bytes=4e9, layers=32, backend="CUDA")
    old = speed.Part(**{**part.__dict__, "backend": "llama.cpp CUDA (2024 build)"})
    t_new, t_old = speed.decode_time([part])[0], speed.decode_time([old])[0]
    assert t_old - t_new == pytest.approx(32 * speed.class_consts("consumer_gpu")["layer_s"] * (era - 1), rel=1e-9)


def test_a_binned_apple_gpu_row_scales_the_targets_flops():
    # "M3 Ultra 60-core GPU" scores on the 80-core m3-ultra target: 60/80 of its FP16 rate
    import planner.speed as speed

    row = {"model": "Llama 2 7B", "quant": "Q4_0", "size_gb": 3.8, "hardware_id": "m3_ultra", "n_devices": 1,
           "backend": "llama.cpp Metal", "pp_tps": 1, "tg_tps": 1}
    full = speed.row_parts({**row, "hardware": "Apple M3 Ultra 80-core GPU"})["prefill"][0].flops
    binned = speed.row_parts({**row, "hardware": "Mac Studio M3 Ultra 60-core GPU"})["prefill"][0].flops
    assert full == pytest.approx(80 * 128 * 2 * 1.398e9, rel=1e-3) and binned == pytest.approx(full * 0.75)
