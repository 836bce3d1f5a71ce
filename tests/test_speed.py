"""The speed model against published measurements (bench/data/calibration_rows.json) and its CLI."""

import json

import pytest
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


# ---------------------------------------------------------------- the decode estimate plans carry (planner.search.plan)
# decode = bandwidth x efficiency / bytes read per token, by hand from the rule in planner/speed.py's docstring:
# every weight once (tied output matrix included, token embedding rows not), plus the KV cache read at the quoted
# depth (4096 tokens), where a sliding layer reads at most its window.

H100_BW = 3350e9  # profiles/targets/h100.toml: HBM3 3.35 TB/s
DATACENTER_EFF = 0.47  # planner/data/speed.json classes.datacenter_gpu.median (published H100/A100 rows)
MOE_FACTOR = 0.64  # MoE decode share of the dense prediction: 0.68 and 0.60 in two Gemma 4 26B-A4B rows


def _plan(model, quant, **settings):
    from planner.catalog import get_model
    from planner.formats import parse_format
    from planner.search import plan
    from planner.types import RuntimeSettings
    from profiles.targets import load_target

    spec, _ = get_model(model)
    return spec, plan(spec, parse_format(quant), RuntimeSettings(**settings), load_target("h100"))


def test_dense_decode_is_bandwidth_times_efficiency_over_bytes():
    from planner.formats import parse_format, weight_bytes

    spec, p = _plan("gemma-3-27b", "Q4_K_M", n_ctx=32768)
    # Gemma 3 27B: tied embeddings, no per-layer table, so the bytes read are the whole file once;
    # KV at depth 4096: 10 full layers x 4096 cells + 52 sliding layers x their 1024-token window,
    # 16 KV heads x 128 x (K + V) x 2 bytes = 8 KiB per cell
    kv = (10 * 4096 + 52 * 1024) * 8192
    assert kv == 771_751_936
    read = weight_bytes(spec, parse_format("Q4_K_M")) + kv
    assert p.speed.bytes_per_token == read
    assert p.speed.efficiency == DATACENTER_EFF
    assert p.speed.decode_tokens_per_s == round(H100_BW * DATACENTER_EFF / read, 2)
    assert p.memory.devices[0].weights_bytes > 0 and p.memory.devices[1].weights_bytes < p.memory.devices[0].weights_bytes


def test_decode_kv_read_grows_with_depth_only_on_full_layers():
    spec, near = _plan("gemma-3-27b", "Q4_K_M", n_ctx=2048)  # depth = n_ctx when shorter than 4096
    _, far = _plan("gemma-3-27b", "Q4_K_M", n_ctx=32768)
    # 2048 tokens: full layers read 2048 cells, sliding ones their 1024-token window in both cases
    assert far.speed.bytes_per_token - near.speed.bytes_per_token == 10 * (4096 - 2048) * 8192


def test_moe_decode_reads_top_k_experts_and_takes_the_moe_factor():
    from planner.formats import parse_format, tensor_sizes

    spec, p = _plan("gemma-4-26b-a4b", "Q4_K_M", n_ctx=32768)
    sizes = tensor_sizes(spec, parse_format("Q4_K_M"))
    emb = next(b for t, b in sizes if t.name == "token_embd.weight")
    experts = sum(b for t, b in sizes if "_exps." in t.name)
    dense = sum(b for t, b in sizes if t.name != "token_embd.weight" and "_exps." not in t.name)
    read_weights = dense + experts * 8 // 128 + emb  # 8 of 128 experts per token; the tied output matrix once
    # KV at 4096: 5 full layers (2 KV heads x 512) x 4096 cells, 25 sliding (8 x 256) x 1024 cells, f16 K and V
    kv = 5 * 4096 * 2 * 512 * 2 * 2 + 25 * 1024 * 8 * 256 * 2 * 2
    assert p.speed.bytes_per_token == read_weights + kv
    assert p.speed.decode_tokens_per_s == round(H100_BW * DATACENTER_EFF / (read_weights + kv) * MOE_FACTOR, 2)


def _plan_on(target, model, quant, **settings):
    from planner.catalog import get_model
    from planner.formats import parse_format
    from planner.search import plan
    from planner.types import RuntimeSettings
    from profiles.targets import load_target

    spec, _ = get_model(model)
    return spec, plan(spec, parse_format(quant), RuntimeSettings(**settings), load_target(target))


# Gemma 3 1B at depth 4096: 4 full layers x 4096 cells + 22 sliding x their 512 window, 1 KV head x 256,
# K and V in f16 = 1 KiB per cell
KV_1B = (4 * 4096 + 22 * 512) * 1024


@pytest.mark.parametrize("target, bandwidth, cls, eff", [
    # efficiencies: planner/data/speed.json classes.<class>.median; small models (< 10 GB) have their own rows
    ("cpu-16gb", 89.6e9, "cpu", 0.64),  # no GPU: host RAM bandwidth (DDR5-5600 dual channel)
    ("raspberry-pi-5-8gb", 17.1e9, "sbc", 0.57),
    ("pixel-8", 60e9, "edge", 0.71),
    ("macbook-air-16gb", 120e9, "apple_small", 0.58),
    ("rtx3060-12gb", 360e9, "consumer_gpu_small", 0.72),
    ("h100", 3350e9, "datacenter_gpu", 0.47),
])
def test_decode_by_device_class(target, bandwidth, cls, eff):
    from planner.formats import parse_format, weight_bytes

    spec, p = _plan_on(target, "gemma-3-1b", "Q4_0", n_ctx=8192)
    read = weight_bytes(spec, parse_format("Q4_0")) + KV_1B  # tied, no per-layer table: the file once
    assert p.speed.bytes_per_token == read
    assert p.speed.efficiency == eff and cls in p.speed.basis
    assert p.speed.decode_tokens_per_s == round(bandwidth * eff / read, 2)


def test_prefill_on_the_cpu_is_cores_times_the_per_core_rate():
    # 6 physical cores x 180 GFLOP/s (speed.CPU_FLOPS_PER_CORE) over 2 FLOPs per active parameter
    spec, p = _plan_on("cpu-16gb", "gemma-3-1b", "Q4_0", n_ctx=8192)
    pp = 6 * 180e9 / (2 * 999_885_952)
    assert p.speed.prefill_tokens_per_s == round(pp, 1) == 540.1
    assert p.speed.time_to_first_token_s == round(1024 / pp, 3) and p.speed.prompt_tokens == 1024


def test_prefill_on_a_gpu_is_a_share_of_its_fp16_rate():
    # 51 TFLOP/s FP16 x 0.35 (speed.PREFILL_GPU_EFFICIENCY) / (2 x active parameters)
    spec, p = _plan_on("rtx3060-12gb", "gemma-3-1b", "Q4_0", n_ctx=8192)
    pp = 51e12 * 0.35 / (2 * 999_885_952)
    assert p.speed.prefill_tokens_per_s == round(pp, 1) == 8926.0
    assert p.speed.time_to_first_token_s == round(1024 / pp, 3)


def test_prefill_is_capped_at_512_times_decode():
    # a made-up GPU with 1 PFLOP/s and 1 GB/s: prefill by FLOPs (175k tok/s) would beat 512 x decode; the
    # published rows never show batches beyond that
    from planner.catalog import get_model
    from planner.formats import parse_format
    from planner.search import plan
    from planner.types import RuntimeSettings
    from profiles.hardware import CPU, Device, Hardware

    spec, _ = get_model("gemma-3-1b")
    hw = Hardware("odd", [Device("GPU", "nvidia", "CUDA", 24 << 30, 10**9, 1e15)], 64 << 30, CPU(cores_physical=8))
    p = plan(spec, parse_format("Q4_0"), RuntimeSettings(n_ctx=8192), hw)
    decode = 1e9 * 0.72 / p.speed.bytes_per_token  # consumer_gpu_small
    assert p.speed.decode_tokens_per_s == round(decode, 2)
    assert 1e15 * 0.35 / (2 * 999_885_952) > decode * 512
    assert p.speed.prefill_tokens_per_s == round(decode * 512, 1)


def test_llamacpp_layer_split_over_two_gpus_reads_each_share_at_its_bandwidth():
    # layers split over two equal GPUs: each reads its share at 1008 GB/s, one after the other, so the time per
    # token is that of one GPU reading everything (llama.cpp's default split adds capacity, not speed)
    from planner.formats import parse_format, weight_bytes

    spec, p = _plan_on("2x-rtx4090", "gemma-3-27b", "Q4_K_M", n_ctx=32768)
    gpus = p.memory.devices[:2]
    assert gpus[0].layers + gpus[1].layers == 62 and min(gpus[0].layers, gpus[1].layers) >= 30
    read = weight_bytes(spec, parse_format("Q4_K_M")) + (10 * 4096 + 52 * 1024) * 8192
    assert p.speed.bytes_per_token == read
    assert p.speed.decode_tokens_per_s == pytest.approx(1008e9 * 0.81 / read, abs=0.01)
    assert p.speed.prefill_tokens_per_s == round(330e12 * 0.35 / (2 * 27_009_346_304), 1)


def test_partial_offload_decode_sums_each_devices_share_at_its_bandwidth():
    # 20 of 63 layers on an RTX 3060, the rest on the CPU: per token each device reads its share of the weights
    # (by the weights it holds and reads: the host's token-embedding table is not read, the tied output matrix
    # is read where it sits) and its layers' KV, at its own bandwidth and efficiency
    from planner.formats import parse_format, tensor_sizes, weight_bytes

    spec, p = _plan_on("rtx3060-12gb", "gemma-3-27b", "Q4_K_M", n_ctx=8192, n_gpu_layers=20)
    gpu, host = p.memory.devices
    fmt = parse_format("Q4_K_M")
    emb = next(b for t, b in tensor_sizes(spec, fmt) if t.name == "token_embd.weight")
    g_read, c_read = gpu.weights_bytes, host.weights_bytes - emb  # output (and its tied copy) is on the GPU
    read = weight_bytes(spec, fmt)
    kv = (10 * 4096 + 52 * 1024) * 8192
    assert p.speed.bytes_per_token == read + kv
    kv_g = kv * gpu.kv_bytes / (gpu.kv_bytes + host.kv_bytes)
    t = (read * g_read / (g_read + c_read) + kv_g) / (360e9 * 0.81) \
        + (read * c_read / (g_read + c_read) + kv - kv_g) / (51.2e9 * 0.64)
    assert p.speed.decode_tokens_per_s == pytest.approx(1 / t, abs=0.011)


def test_moe_experts_on_the_cpu_are_read_top_k_only():
    # -ot exps=CPU: the host holds every expert but reads 8 of 128 per token; the GPU reads the rest
    from planner.formats import parse_format, tensor_sizes

    spec, p = _plan_on("rtx3060-12gb", "gemma-4-26b-a4b", "Q4_K_M", n_ctx=8192, experts_on_cpu=True)
    gpu, host = p.memory.devices
    sizes = tensor_sizes(spec, parse_format("Q4_K_M"))
    emb = next(b for t, b in sizes if t.name == "token_embd.weight")
    experts = sum(b for t, b in sizes if "_exps." in t.name)
    assert host.weights_bytes == emb + experts  # the table and every expert stay on the host
    c_read = experts - sum(int(b * (1 - 8 / 128)) for b in _per_layer_experts(spec, sizes))
    g_read = gpu.weights_bytes
    read = p.speed.bytes_per_token - (5 * 4096 * 2 * 512 * 2 * 2 + 25 * 1024 * 8 * 256 * 2 * 2)
    t = read * g_read / (g_read + c_read) / (360e9 * 0.81) + read * c_read / (g_read + c_read) / (51.2e9 * 0.64)
    kv_t = (p.speed.bytes_per_token - read) / (360e9 * 0.81)  # KV stays with the layers, on the GPU
    assert p.speed.decode_tokens_per_s == pytest.approx(0.64 / (t + kv_t), abs=0.011)


def _per_layer_experts(spec, sizes):
    per = [0] * spec.n_layers
    for t, b in sizes:
        if "_exps." in t.name:
            per[t.layer] += b
    return per


def test_vllm_kv_read_uses_the_model_dtype_or_one_byte_for_fp8():
    # vLLM's cache: 'auto' stores K and V in the model dtype (2 bytes), fp8 in 1 byte
    from planner.catalog import get_model
    from planner.formats import parse_format
    from planner.search import plan
    from planner.types import RuntimeSettings
    from profiles.targets import load_target

    spec, _ = get_model("gemma-3-1b")
    got = {}
    for kv in ("auto", "fp8"):
        s = RuntimeSettings(n_ctx=8192, engine="vllm", kv_cache_dtype=kv)
        got[kv] = plan(spec, parse_format("bf16", "vllm"), s, load_target("h100")).speed.bytes_per_token
    assert got["auto"] - got["fp8"] == KV_1B // 2  # the f16 KV read at depth 4096, halved


@pytest.mark.parametrize("tp, pp, speedup", [(2, 1, 2), (1, 2, 1)])
def test_vllm_tensor_parallel_reads_in_parallel_and_pipeline_stages_in_turn(tp, pp, speedup):
    # vLLM over two RTX A6000s (768 GB/s, consumer_gpu 0.81): tensor parallel ranks each read half of every
    # layer at the same time (twice the single-GPU rate); pipeline stages read their halves one after the other
    from planner.catalog import get_model
    from planner.formats import parse_format, weight_bytes
    from planner.search import plan
    from planner.types import RuntimeSettings
    from profiles.targets import load_target

    spec, _ = get_model("gemma-3-27b")
    s = RuntimeSettings(n_ctx=8192, engine="vllm", tensor_parallel=tp, pipeline_parallel=pp)
    p = plan(spec, parse_format("bf16", "vllm"), s, load_target("2x-a6000"))
    read = weight_bytes(spec, parse_format("bf16", "vllm")) + (10 * 4096 + 52 * 1024) * 8192  # 'auto' KV: bf16
    assert p.speed.bytes_per_token == read
    assert p.speed.decode_tokens_per_s == round(speedup * 768e9 * 0.81 / read, 2)
    # prefill: both GPUs' FP16 rate (154.8 TFLOP/s each) x 0.35 over 2 FLOPs per parameter
    assert p.speed.prefill_tokens_per_s == round(2 * 154.8e12 * 0.35 / (2 * 27_009_346_304), 1)


def test_transformers_decode_runs_at_half_the_llama_cpp_efficiency():
    # speed.ENGINE_FACTOR: transformers' eager decode reaches about half of llama.cpp's share of the bandwidth
    from planner.catalog import get_model
    from planner.formats import parse_format, weight_bytes
    from planner.search import plan
    from planner.types import RuntimeSettings
    from profiles.targets import load_target

    spec, _ = get_model("gemma-3-1b")
    s = RuntimeSettings(n_ctx=8192, engine="transformers")
    p = plan(spec, parse_format("bf16", "transformers"), s, load_target("h100"))
    read = weight_bytes(spec, parse_format("bf16", "transformers")) + KV_1B
    assert p.speed.bytes_per_token == read
    assert p.speed.decode_tokens_per_s == round(3350e9 * 0.47 * 0.5 / read, 2)


def test_efficiency_class_rules():
    # planner/data/speed.json: small_model_bytes = 10 GB splits the GPU and Apple rows; a device class without a
    # row reads as a consumer GPU; without an accelerator the machine kind decides (phone -> edge, sbc, else cpu)
    from planner.speed import efficiency_class
    from profiles.hardware import CPU, Device, Hardware

    def dev(cls):
        return Device("D", "x", "CUDA", 8 << 30, 10**11, device_class=cls)

    box = Hardware("box", [], 8 << 30, CPU())
    assert efficiency_class(dev("consumer_gpu"), 10**10 - 1, box) == "consumer_gpu_small"
    assert efficiency_class(dev("consumer_gpu"), 10**10, box) == "consumer_gpu"
    assert efficiency_class(dev("apple"), 10**10 - 1, box) == "apple_small"
    assert efficiency_class(dev("apple"), 10**10, box) == "apple"
    assert efficiency_class(dev("phone"), 1, box) == "edge"
    assert efficiency_class(dev("datacenter_gpu"), 1, box) == "datacenter_gpu"
    assert efficiency_class(dev("npu-of-the-future"), 1, box) == "consumer_gpu"
    kinds = {"phone": "edge", "sbc": "sbc", "laptop": "cpu", "server": "cpu"}
    for kind, cls in kinds.items():
        assert efficiency_class(None, 1, Hardware("h", [], 8 << 30, CPU(), kind=kind)) == cls


def test_vllm_on_one_gpu_reads_everything_there():
    from planner.catalog import get_model
    from planner.formats import parse_format, weight_bytes
    from planner.search import plan
    from planner.types import RuntimeSettings
    from profiles.targets import load_target

    spec, _ = get_model("gemma-3-1b")
    p = plan(spec, parse_format("bf16", "vllm"), RuntimeSettings(n_ctx=8192, engine="vllm"), load_target("h100"))
    read = weight_bytes(spec, parse_format("bf16", "vllm")) + KV_1B
    assert p.speed.decode_tokens_per_s == round(3350e9 * 0.47 / read, 2)


def test_layer_split_over_unequal_gpus_reads_each_share_at_its_own_bandwidth():
    # a fast 24 GiB GPU and a slow 8 GiB one (layers split 3:1 by memory): each reads the weights it holds
    from planner.catalog import get_model
    from planner.formats import parse_format, weight_bytes
    from planner.search import plan
    from planner.types import RuntimeSettings
    from profiles.hardware import CPU, Device, Hardware

    spec, _ = get_model("gemma-3-12b")
    hw = Hardware("mixed", [Device("Fast", "nvidia", "CUDA", 24 << 30, 10**12, 1e14),
                            Device("Slow", "nvidia", "CUDA", 8 << 30, 2 * 10**11, 1e14)], 64 << 30, CPU(cores_physical=8))
    p = plan(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=8192), hw)
    fast, slow, host = p.memory.devices
    read = weight_bytes(spec, parse_format("Q4_K_M"))
    kv = p.speed.bytes_per_token - read
    g = fast.weights_bytes + slow.weights_bytes  # the host only holds the token table, which is not read
    eff = 0.72 if read < 10**10 else 0.81
    t = (read * fast.weights_bytes / g + kv * fast.kv_bytes / (fast.kv_bytes + slow.kv_bytes)) / (1e12 * eff) \
        + (read * slow.weights_bytes / g + kv * slow.kv_bytes / (fast.kv_bytes + slow.kv_bytes)) / (2e11 * eff)
    assert fast.layers > slow.layers > 0
    assert p.speed.decode_tokens_per_s == pytest.approx(1 / t, abs=0.011)


def test_moe_partial_offload_reads_top_k_experts_on_each_side():
    # 15 of 31 llama.cpp layers offloaded (layers 16-29 and the output): each side holds its layers' experts and
    # reads 8 of 128 of them per token
    from planner.formats import parse_format, tensor_sizes

    spec, p = _plan_on("rtx3060-12gb", "gemma-4-26b-a4b", "Q4_K_M", n_ctx=8192, n_gpu_layers=15)
    gpu, host = p.memory.devices
    sizes = tensor_sizes(spec, parse_format("Q4_K_M"))
    emb = next(b for t, b in sizes if t.name == "token_embd.weight")
    per = _per_layer_experts(spec, sizes)
    unread_cpu = sum(int(b * (1 - 8 / 128)) for b in per[:16])
    unread_gpu = sum(int(b * (1 - 8 / 128)) for b in per[16:])
    g_read, c_read = gpu.weights_bytes - unread_gpu, host.weights_bytes - emb - unread_cpu
    read = p.speed.bytes_per_token - (5 * 4096 * 2 * 512 * 2 * 2 + 25 * 1024 * 8 * 256 * 2 * 2)
    kv = p.speed.bytes_per_token - read
    kv_g = kv * gpu.kv_bytes / (gpu.kv_bytes + host.kv_bytes)
    t = (read * g_read / (g_read + c_read) + kv_g) / (360e9 * 0.81) \
        + (read * c_read / (g_read + c_read) + kv - kv_g) / (51.2e9 * 0.64)
    assert p.speed.decode_tokens_per_s == pytest.approx(0.64 / t, abs=0.011)
