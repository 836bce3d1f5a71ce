"""Exact values for estimator parts the golden tables did not pin down, each computed by hand from the engine
rule it cites (or read from a captured engine log), and the boundaries where a rule changes."""

from types import SimpleNamespace

import pytest

from planner.catalog import get_model
from planner.formats import parse_format
from planner.memory import llamacpp_memory, transformers_kv_bytes, transformers_memory
from planner.types import RuntimeSettings
from profiles.hardware import CPU, Device, Hardware
from profiles.units import GiB, MiB

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "hardware"


def gpu_box(mem_gib: int = 24) -> Hardware:
    return Hardware("box", [Device("GPU", "nvidia", "CUDA", mem_gib * GiB, 1000 * 10**9, 80e12)], 64 * GiB,
                    CPU(flags=["avx2"], cores_physical=8))


# ---------------------------------------------------------------- llama.cpp host buffers


@pytest.mark.parametrize("slots", [1, 2, 4])
def test_llamacpp_output_buffer_holds_one_logits_row_per_slot(slots):
    # llama_context::output_reserve: n_outputs_max = n_seq_max rows of n_vocab F32 logits. A captured log
    # agrees: tests/fixtures/llama_logs/gemma2_2seq.log (n_vocab 1024, n_seq_max 2) prints 0.01 MiB = 8 KiB,
    # the one-slot logs 0.00 MiB (4 KiB).
    spec, _ = get_model("gemma-3-4b")
    m = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=8192, n_parallel=slots), gpu_box())
    host = m.devices[-1]
    assert host.device == "CPU" and host.output_bytes == 4 * 262_208 * slots


def test_captured_log_output_buffer_matches_the_rule():
    log = (FIXTURES.parent / "llama_logs" / "gemma2_2seq.log").read_text()
    assert "n_vocab               = 1024" in log and "n_seq_max             = 2" in log
    assert "CPU  output buffer size =     0.01 MiB" in log
    assert f"{4 * 1024 * 2 / MiB:.2f}" == "0.01" and f"{4 * 1024 * 1 / MiB:.2f}" == "0.00"


def test_host_compute_buffer_with_everything_offloaded_holds_token_and_per_layer_embeddings():
    # All layers on the GPU: the host graph only gathers the embedding rows it holds (llm_graph_input_embd):
    # F32 [n_embd, n_ubatch] for the tokens and, on Gemma 4 E2B, [ple_dim x n_layer, n_ubatch] per-layer rows.
    spec, _ = get_model("gemma-4-e2b")  # hidden 1536, per-layer embedding 256 x 35 layers
    m = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=8192), gpu_box())
    assert m.devices[-1].compute_bytes == 4 * 512 * (1536 + 256 * 35) == 21_495_808
    dense, _ = get_model("gemma-3-4b")  # no per-layer table: the token rows only
    m = llamacpp_memory(dense, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=8192, n_ubatch=256), gpu_box())
    assert m.devices[-1].compute_bytes == 4 * 256 * 2560


# ---------------------------------------------------------------- transformers KV


def test_transformers_kv_keeps_the_window_on_sliding_layers():
    # DynamicCache: DynamicSlidingWindowLayer keeps the last sliding_window tokens, DynamicLayer all of them.
    # Gemma 3 27B: 10 full + 52 sliding layers, 16 KV heads x 128 x (K + V) x 2 bytes = 8 KiB per token
    spec, _ = get_model("gemma-3-27b")
    assert transformers_kv_bytes(spec, RuntimeSettings(n_ctx=32768)) == (10 * 32768 + 52 * 1024) * 8192
    assert transformers_kv_bytes(spec, RuntimeSettings(n_ctx=512)) == 62 * 512 * 8192  # below the window
    assert transformers_kv_bytes(spec, RuntimeSettings(n_ctx=32768, n_parallel=2)) == 2 * (10 * 32768 + 52 * 1024) * 8192
    m = transformers_memory(spec, parse_format("bf16", "transformers"), RuntimeSettings(n_ctx=32768, engine="transformers"),
                            gpu_box(80))
    assert m.devices[0].kv_bytes == (10 * 32768 + 52 * 1024) * 8192


# ---------------------------------------------------------------- max context: the boundary


@pytest.mark.parametrize("model, quant, mem_gib, slots", [
    ("gemma-3-4b", "Q4_K_M", 5, 1),
    ("gemma-3-12b", "Q4_K_M", 10, 1),
    ("gemma-3-27b", "Q4_K_M", 20, 1),
    ("gemma-3-4b", "Q8_0", 7, 2),  # two slots: steps of 2 x 256
])
def test_max_context_fits_and_one_step_more_does_not(model, quant, mem_gib, slots):
    import dataclasses

    from planner.memory import DEFAULT_MARGIN
    from planner.search import _fits, max_context

    spec, _ = get_model(model)
    fmt, hw = parse_format(quant), gpu_box(mem_gib)
    s = RuntimeSettings(n_ctx=4096, n_parallel=slots)
    ctx = max_context(spec, fmt, s, hw, DEFAULT_MARGIN)
    assert 0 < ctx < spec.ctx_train and ctx % (256 * slots) == 0
    assert _fits(spec, fmt, dataclasses.replace(s, n_ctx=ctx), hw, DEFAULT_MARGIN)[0]
    assert not _fits(spec, fmt, dataclasses.replace(s, n_ctx=ctx + 256 * slots), hw, DEFAULT_MARGIN)[0]


def test_max_context_is_capped_by_the_limit_and_zero_when_nothing_fits():
    from planner.memory import DEFAULT_MARGIN
    from planner.search import max_context

    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    assert max_context(spec, fmt, RuntimeSettings(n_ctx=4096), gpu_box(80), DEFAULT_MARGIN, limit=10_000) == 9984
    assert max_context(spec, fmt, RuntimeSettings(n_ctx=4096), gpu_box(80), DEFAULT_MARGIN) == spec.ctx_train
    assert max_context(spec, fmt, RuntimeSettings(n_ctx=4096), gpu_box(2), DEFAULT_MARGIN) == 0


# ---------------------------------------------------------------- ranking by priority


def _cand(name, spd, q, ctx=32768):
    t = {"native_engine": True, "meets_speed_floor": spd >= 5, "quality_score": q, "value": q,
         "reaches_wanted_ctx": ctx >= 32768, "decode_tokens_per_s": spd}
    return SimpleNamespace(model=name, utility=t, ctx=ctx)


def test_priority_speed_puts_the_fastest_above_the_quality_floor_first():
    from planner.utility import make_utility, rank

    plans = [_cand("slow-strong", 20.0, 70.0), _cand("fast", 90.0, 60.0), _cand("fastest-weak", 200.0, 20.0),
             _cand("middle", 40.0, 65.0)]
    u = make_utility(priority="speed")
    order = [p.model for p in rank(plans, u)]
    # quality floor: QUALITY_FLOOR_SHARE (0.85) x the best 70 = 59.5; "fastest-weak" is below it and goes last
    assert u.quality_floor == 59.5
    assert order == ["fast", "middle", "slow-strong", "fastest-weak"]


def test_priority_context_puts_the_longest_context_first():
    from planner.utility import make_utility, rank

    plans = [_cand("short", 90.0, 70.0, ctx=8192), _cand("long", 20.0, 65.0, ctx=131072), _cand("mid", 40.0, 70.0, ctx=32768)]
    assert [p.model for p in rank(plans, make_utility(priority="context"))] == ["long", "mid", "short"]


# ---------------------------------------------------------------- cgroup: several limits on the path


def test_cgroup_takes_the_tightest_of_several_limits():
    from profiles.sources import system

    # a leaf with 12 GiB under a 32 GiB slice under a 64 GiB parent: the kernel enforces the smallest
    text = (FIXTURES / "cgroup_v2_three_limits.txt").read_text()
    got = system.parse_cgroup(text)
    assert (got.limit_bytes, got.version) == (12 * GiB, 2)
    assert got.file == "/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope/memory.max"
    from profiles.sources import dump_sections, parse_sections

    sections = parse_sections(text)
    for order in (sections[::-1], sections[:1] + sections[2:] + sections[1:2]):  # order must not matter
        assert system.parse_cgroup(dump_sections(order)).limit_bytes == 12 * GiB


# ---------------------------------------------------------------- Apple: wired-limit fraction at the RAM boundaries


@pytest.mark.parametrize("ram, macos, fraction", [
    (16 * GiB, None, 2 / 3),
    (24 * GiB, None, 2 / 3),  # the 24 GB row includes 24 GB
    (24 * GiB + 1, None, 0.75),
    (127 * GiB, None, 0.75),
    (127 * GiB + 1, None, 0.84),  # 128 GB machines: 107.52 GiB of 128 measured on macOS 26
    (128 * GiB, 26, 0.84),
    (128 * GiB, 25, 0.75),  # before macOS 26 large Macs wired about 0.75
    (64 * GiB, 25, 0.75),
    (16 * GiB, 25, 2 / 3),  # the macOS rule only concerns the open-ended row
])
def test_apple_default_wired_fraction_boundaries(ram, macos, fraction):
    from profiles.unified import apple_default_wired_fraction, apple_gpu_limit_bytes

    assert apple_default_wired_fraction(ram, macos) == fraction
    assert apple_gpu_limit_bytes(ram, None, macos) == int(ram * fraction)


def test_apple_wired_limit_sysctl_wins_but_never_above_ram():
    from profiles.unified import apple_gpu_limit_bytes

    assert apple_gpu_limit_bytes(128 * GiB, 114688, 26) == 112 * GiB  # iogpu.wired_limit_mb=114688 (ds4 #893)
    assert apple_gpu_limit_bytes(16 * GiB, 65536) == 16 * GiB
    assert apple_gpu_limit_bytes(16 * GiB, 0) == int(16 * GiB * 2 / 3)  # 0: the default
