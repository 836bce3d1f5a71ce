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


def test_host_compute_buffer_with_everything_offloaded_holds_the_per_layer_embedding_rows():
    # All layers on the GPU: the host buffer holds the graph inputs, and on Gemma 4 E2B also the per-layer
    # embedding rows it gathers from the table it keeps: F32 [ple_dim x n_layer, n_ubatch] = 4 x 512 x 256 x 35.
    # (Captured CUDA logs of E2B, tests/fixtures/gpu_logs: 41,439,724 bytes measured, tests/test_gpu_logs.py.)
    import dataclasses

    spec, _ = get_model("gemma-4-e2b")  # per-layer embedding 256 x 35 layers
    s = RuntimeSettings(n_ctx=8192)
    with_ple = llamacpp_memory(spec, parse_format("Q4_K_M"), s, gpu_box()).devices[-1].compute_bytes
    no_ple = llamacpp_memory(dataclasses.replace(spec, ple_dim=0), parse_format("Q4_K_M"), s, gpu_box()).devices[-1]
    assert with_ple - no_ple.compute_bytes == 4 * 512 * 256 * 35 == 18_350_080


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


# ---------------------------------------------------------------- transformers: the whole breakdown


def test_transformers_memory_on_a_gpu_by_hand():
    from planner.formats import weight_bytes

    spec, _ = get_model("gemma-3-4b")  # hidden 2560, FFN 10240, vocab 262208, 5 full + 29 sliding layers (4 x 256)
    fmt = parse_format("bf16", "transformers")
    s = RuntimeSettings(n_ctx=8192, n_parallel=2, engine="transformers")
    m = transformers_memory(spec, fmt, s, gpu_box(24), margin=GiB)
    gpu, host = m.devices
    assert (m.engine, gpu.device, host.device) == ("transformers", "GPU", "CPU")
    assert gpu.weights_bytes == weight_bytes(spec, fmt)
    # K and V of 4 heads x 256, bf16, 2 sequences: full layers hold 8192 tokens, sliding ones their 1024 window
    assert gpu.kv_bytes == 2 * 4 * (256 + 256) * 2 * (5 * 8192 + 29 * 1024)
    # prefill of the whole prompt: gate, up, GEGLU (3 x FFN) and 4 hidden-size bf16 tensors per token and
    # sequence, plus one F32 logits row per sequence
    assert gpu.compute_bytes == 8192 * (3 * 10240 + 4 * 2560) * 2 * 2 + 4 * 262208 * 2
    assert gpu.overhead_bytes == 457 * MiB  # CUDA context reserve (Ollama's MinimumMemory)
    assert (gpu.capacity_bytes, gpu.budget_bytes) == (24 * GiB, 23 * GiB)
    assert (host.total_bytes, host.capacity_bytes, host.budget_bytes) == (0, 64 * GiB, 63 * GiB)


def test_transformers_memory_on_the_cpu_by_hand():
    spec, _ = get_model("gemma-3-1b")
    fmt = parse_format("bf16", "transformers")
    s = RuntimeSettings(n_ctx=4096, engine="transformers")
    hw = Hardware("cpu", [], 32 * GiB, CPU(flags=["avx2"], cores_physical=8))
    hw.memory_limit_bytes = 8 * GiB  # a cgroup limit below RAM
    m = transformers_memory(spec, fmt, s, hw, margin=GiB)
    (host,) = m.devices
    assert host.device == "CPU" and host.overhead_bytes == 0
    assert host.kv_bytes == transformers_kv_bytes(spec, s)
    ff = max(lay.n_ff for lay in spec.layers)
    assert host.compute_bytes == 4096 * (3 * ff + 4 * spec.hidden) * 2 + 4 * spec.vocab
    assert (host.capacity_bytes, host.budget_bytes) == (8 * GiB, 7 * GiB)


def test_transformers_memory_edges():
    # The breakdown names its engine version and its one note; no output buffer is counted apart (the logits are
    # in the activations); a backend without a known runtime reserve gets none; a margin larger than the device
    # leaves a budget of 0, not a negative one; on unified memory the host's capacity loses what the GPU holds.
    from planner.formats import weight_bytes
    from planner.types import TRANSFORMERS_VERSION

    spec, _ = get_model("gemma-3-1b")
    fmt = parse_format("bf16", "transformers")
    s = RuntimeSettings(n_ctx=4096, engine="transformers")
    small = Hardware("box", [Device("GPU", "intel", "SYCL", GiB, 10**11)], 2 * GiB, CPU(flags=["avx2"]))
    m = transformers_memory(spec, fmt, s, small, margin=3 * GiB)
    gpu, host = m.devices
    assert m.engine_version == TRANSFORMERS_VERSION == "transformers 5.x"
    assert m.notes == ["transformers: DynamicCache (sliding layers keep the last window); prefill activations for the whole prompt"]
    assert gpu.output_bytes == 0 and gpu.overhead_bytes == 0  # SYCL: not in RUNTIME_OVERHEAD
    assert gpu.budget_bytes == 0 and host.budget_bytes == 0
    cpu_only = transformers_memory(spec, fmt, s, Hardware("cpu", [], GiB, CPU(flags=["avx2"])), margin=3 * GiB)
    (h,) = cpu_only.devices
    assert h.weights_bytes == weight_bytes(spec, fmt) and h.budget_bytes == 0 and h.output_bytes == 0
    dev = Device("Apple M4 Max GPU", "apple", "Metal", 96 * GiB, 546 * 10**9, unified=True, device_class="apple")
    mac = transformers_memory(spec, fmt, s, Hardware("mac", [dev], 128 * GiB, CPU(flags=["neon"]), kind="apple"), margin=0)
    assert mac.devices[0].overhead_bytes == 512 * MiB  # Metal's reserve
    assert mac.devices[1].capacity_bytes == 128 * GiB - mac.devices[0].total_bytes


def test_estimate_memory_dispatches_by_engine_and_refuses_mismatches():
    from planner.errors import InvalidSettingsError
    from planner.memory import estimate_memory

    spec, _ = get_model("gemma-3-1b")
    hw = gpu_box(24)
    got = {e: estimate_memory(spec, parse_format(q, e), RuntimeSettings(n_ctx=4096, engine=e), hw).engine
           for e, q in (("llama.cpp", "Q4_K_M"), ("vllm", "bf16"), ("transformers", "bf16"))}
    assert got == {"llama.cpp": "llama.cpp", "vllm": "vllm", "transformers": "transformers"}
    # the margin reaches every engine's model: each device's budget is its capacity less the margin given; vLLM
    # keeps it free beside the KV its slots need (kv_needed_bytes)
    for e, q in (("llama.cpp", "Q4_K_M"), ("transformers", "bf16")):
        for margin in (0, 3 * GiB):
            devs = estimate_memory(spec, parse_format(q, e), RuntimeSettings(n_ctx=4096, engine=e), hw, margin=margin).devices
            assert [d.budget_bytes for d in devs] == [max(0, d.capacity_bytes - margin) for d in devs], (e, margin)
    vllm = [estimate_memory(spec, parse_format("bf16", "vllm"), RuntimeSettings(n_ctx=4096, engine="vllm"), hw, margin=m)
            for m in (0, 3 * GiB)]
    assert vllm[1].devices[0].detail["kv_needed_bytes"] - vllm[0].devices[0].detail["kv_needed_bytes"] == 3 * GiB
    bad = [("llama.cpp", "bf16", "llama.cpp runs GGUF files; 'bf16' is a"),
           ("vllm", "Q4_K_M", "vllm does not run GGUF type Q4_K_M"),
           ("transformers", "Q8_0", "transformers does not run GGUF type Q8_0"),
           ("transformers", "fp8", "fp8 weights are planned for vLLM only"),
           ("tgi", "bf16", "unknown engine 'tgi'")]
    for engine, quant, msg in bad:
        fmt = parse_format(quant, "vllm" if quant in ("bf16", "fp8") else None)
        with pytest.raises(InvalidSettingsError) as e:
            estimate_memory(spec, fmt, RuntimeSettings(n_ctx=4096, engine=engine), hw)
        assert str(e.value).startswith(msg), (engine, quant, str(e.value))


# ---------------------------------------------------------------- llama.cpp layer placement


def test_layer_placement_partial_offload_and_tensor_split():
    # llama_model_base::load_tensors: -ngl k puts the output layer and the last k-1 repeating layers on the GPUs;
    # the layers offloaded are split by cumulative fractions of tensor_split (by free memory when not given)
    from planner.memory import layer_devices as _layer_devices

    gpu = Device("GPU", "nvidia", "CUDA", 24 * GiB, 10**12)
    assert _layer_devices(10, 4, [gpu], None) == [None] * 7 + [0] * 4
    assert _layer_devices(10, 0, [gpu], None) == [None] * 11
    assert _layer_devices(10, -1, [gpu], None) == [0] * 11
    assert _layer_devices(10, 99, [gpu], None) == [0] * 11
    assert _layer_devices(10, 5, [], None) == [None] * 11
    two = [gpu, Device("GPU2", "nvidia", "CUDA", 8 * GiB, 10**12)]
    # 11 layers over 24:8 GiB -> fractions 0.75 / 1.0: layers with (il / 11) < 0.75 on the first
    assert _layer_devices(10, -1, two, None) == [0] * 9 + [1] * 2
    assert _layer_devices(10, -1, two, [1.0, 1.0]) == [0] * 6 + [1] * 5
    assert _layer_devices(10, 6, two, [1.0, 3.0]) == [None] * 5 + [0] * 2 + [1] * 4


def test_pad_and_cdiv():
    from planner.memory import cdiv, pad

    assert [pad(x, 256) for x in (0, 1, 256, 257)] == [0, 256, 256, 512]
    assert [cdiv(a, 16) for a in (0, 1, 16, 17, 33)] == [0, 1, 1, 2, 3]


@pytest.mark.parametrize("flags, types", [
    # ggml_repack_get_optimal_repack_type (ggml-cpu/repack.cpp): x86 repacks Q4_0/Q4_K/IQ4_NL/MXFP4 with AVX2,
    # Q2_K only with AVX-512; Arm needs the dot-product extension, Q8_0 needs i8mm; nothing without SIMD
    (["avx2"], {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}),
    (["AVX2", "avx512f"], {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4", "Q2_K"}),
    (["avx512f"], set()),
    (["neon"], set()),
    (["asimd", "asimddp"], {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4"}),
    (["neon", "dotprod"], {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4"}),
    (["neon", "i8mm"], {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0"}),
    (["i8mm"], set()),
    ([], set()),
])
def test_cpu_repack_types(flags, types):
    from planner.memory import repack_types

    assert repack_types(flags) == types


@pytest.mark.parametrize("model", ["gemma-3n-e2b", "gemma-4-e2b"])
def test_partial_offload_places_global_tensors_by_their_llama_cpp_layer(model):
    # -ngl n_layer: the output layer and layers 1.. on the GPU, layer 0 on the CPU. Where llama.cpp files the
    # tensors that belong to no block (LLM_TENSOR_INFOS, llama-arch.cpp; llama_model_base::load_tensors):
    # token and per-layer embedding tables: input layer (CPU); output_norm and Gemma 3n's altup_* projections:
    # output layer; per_layer_model_proj / per_layer_proj_norm: with layer 0; rope_freqs: with the first full
    # attention layer (layer 4 in both). A tied output matrix is a second copy of token_embd on the output device.
    from planner.formats import tensor_sizes

    spec, _ = get_model(model)
    fmt = parse_format("Q4_K_M")
    m = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=4096, n_gpu_layers=spec.n_layers), gpu_box(24))
    gpu = cpu = 0
    for t, b in tensor_sizes(spec, fmt):
        if t.name in ("token_embd.weight", "per_layer_token_embd.weight") or t.layer == 0:
            cpu += b
        elif t.name.startswith("per_layer_"):
            cpu += b
        else:  # output_norm, altup_*, rope_freqs (layer 4) and blocks 1..n-1
            gpu += b
    tied = next(b for t, b in tensor_sizes(spec, fmt) if t.name == "token_embd.weight")
    assert (m.devices[0].weights_bytes, m.devices[-1].weights_bytes) == (gpu + tied, cpu)
    assert (m.devices[0].layers, m.devices[-1].layers) == (spec.n_layers - 1, 1)
    assert m.devices[0].detail["tied_output_copy_bytes"] == tied


def test_weights_memo_keeps_formats_apart():
    # the per-(model, format) memo must not hand one format's sizes to another
    spec, _ = get_model("gemma-3-1b")
    a = llamacpp_memory(spec, parse_format("Q4_0"), RuntimeSettings(n_ctx=4096), gpu_box())
    b = llamacpp_memory(spec, parse_format("Q8_0"), RuntimeSettings(n_ctx=4096), gpu_box())
    from planner.formats import weight_bytes

    assert a.weights_bytes == weight_bytes(spec, parse_format("Q4_0")) + a.devices[0].detail["tied_output_copy_bytes"]
    assert b.weights_bytes == weight_bytes(spec, parse_format("Q8_0")) + b.devices[0].detail["tied_output_copy_bytes"]


# ---------------------------------------------------------------- OS, WSL and container markers, one rule per case


def _sys_text(**sections):
    from profiles.sources import dump_sections

    return dump_sections([(k, v) for k, v in sections.items()])


@pytest.mark.parametrize("sections, expect", [
    # /proc/version names the WSL kernel: "microsoft-standard" is WSL2, a bare "Microsoft" WSL1
    ({"proc_version": "Linux version 5.15.153.1-microsoft-standard-WSL2 (root@x) #1 SMP"},
     {"wsl": True, "wsl_version": 2, "kernel": "5.15.153.1-microsoft-standard-WSL2"}),
    ({"proc_version": "Linux version 4.19.84-Microsoft-Standard (x)"}, {"wsl": True, "wsl_version": 2}),  # any case
    ({"proc_version": "Linux version 4.4.0-19041-Microsoft (Microsoft@Microsoft.com)"},
     {"wsl": True, "wsl_version": 1, "kernel": "4.4.0-19041-Microsoft"}),
    ({"markers": "env.WSL_DISTRO_NAME = Ubuntu"}, {"wsl": True, "wsl_version": 1, "kernel": ""}),
    ({"proc_version": "Linux version 6.8.0-45-generic (buildd@lcy02)"}, {"wsl": False, "wsl_version": None,
                                                                         "kernel": "6.8.0-45-generic"}),
    ({"os_release": 'NAME="X"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian'},
     {"os_version": "Debian GNU/Linux 12 (bookworm)"}),
    ({"os_release": 'PRETTY_NAME="Odd=Name 1"'}, {"os_version": "Odd=Name 1"}),  # split at the first "="
    ({"os_release": 'PRETTY_NAME="Xubuntu 24.04 X"'}, {"os_version": "Xubuntu 24.04 X"}),  # only quotes stripped
    ({"markers": "/.dockerenv = yes"}, {"container": "docker"}),
    ({"markers": "/run/.containerenv = yes"}, {"container": "podman"}),
    ({"markers": "env.container = podman"}, {"container": "podman"}),
    ({"markers": "env.container = podman", "pid1_cgroup": "0::/docker/abc"}, {"container": "podman"}),  # marker first
    ({"markers": "env.KUBERNETES_SERVICE_HOST = 10.0.0.1"}, {"container": "kubernetes"}),
    ({"pid1_cgroup": "0::/kubepods/besteffort/pod1"}, {"container": "kubernetes"}),
    ({"pid1_cgroup": "12:memory:/docker/0123abcd"}, {"container": "docker"}),
    ({"pid1_cgroup": "0::/system.slice/containerd.service"}, {"container": "containerd"}),
    ({"pid1_cgroup": "0::/lxc/box1"}, {"container": "lxc"}),
    ({"markers": "env.container = lxc"}, {"container": "lxc"}),
    ({"markers": "env.container = systemd-nspawn"}, {"container": "systemd-nspawn"}),
    ({"markers": "env.container = a=b"}, {"container": "a=b"}),  # a marker value may hold "="
    ({"board": "NVIDIA Jetson Orin Nano Developer Kit\n"}, {"board": "NVIDIA Jetson Orin Nano Developer Kit"}),
    ({}, {"os": "Linux", "kernel": "", "arch": "", "os_version": "", "container": None, "board": None, "wsl": False}),
])
def test_parse_system_rules(sections, expect):
    from profiles.sources import system

    info = system.parse_system(_sys_text(**sections), "Linux", "", "")
    got = info.to_dict()
    assert {k: got[k] for k in expect} == expect


def test_parse_system_keeps_the_callers_kernel_and_arch():
    from profiles.sources import system

    assert (system.parse_system("").os, system.parse_system("").kernel, system.parse_system("").arch) == ("Linux", "", "")
    info = system.parse_system(_sys_text(proc_version="Linux version 6.1.0 (x)"), "Linux", "6.6.6", "aarch64")
    assert (info.os, info.kernel, info.arch) == ("Linux", "6.6.6", "aarch64")


def test_cgroup_edges():
    from profiles.sources import system
    from profiles.sources.system import CGROUP_UNLIMITED_AT

    def limit(*files):
        return system.parse_cgroup(_sys_text(**{f"/sys/fs/cgroup/{name}/memory.max": v for name, v in files}))

    # at the threshold is "unlimited" (v1 writes PAGE_COUNTER_MAX rounded to pages), and a huge value is skipped,
    # not the end of the walk
    assert limit(("a", str(CGROUP_UNLIMITED_AT)), ("b", str(8 * GiB))).limit_bytes == 8 * GiB
    assert limit(("a", str(CGROUP_UNLIMITED_AT))).limit_bytes is None
    assert limit(("a", str(CGROUP_UNLIMITED_AT - 1))).limit_bytes == CGROUP_UNLIMITED_AT - 1
    # equal limits: the first file listed (the innermost cgroup) is named
    assert limit(("leaf", str(8 * GiB)), ("parent", str(8 * GiB))).file == "/sys/fs/cgroup/leaf/memory.max"
    none = system.parse_cgroup(_sys_text(**{"/proc/self/cgroup": "0::/"}))
    assert (none.limit_bytes, none.file, none.version) == (None, None, None)


def test_cgroup_ancestors_stop_at_the_namespace_root():
    from profiles.sources.system import _ancestors

    assert _ancestors("/sys/fs/cgroup", "/a/b") == ["/sys/fs/cgroup/a/b", "/sys/fs/cgroup/a", "/sys/fs/cgroup"]
    assert _ancestors("/sys/fs/cgroup", "/../../outside") == ["/sys/fs/cgroup"]
    assert _ancestors("/sys/fs/cgroup", "/") == ["/sys/fs/cgroup"]
    assert _ancestors("/sys/fs/cgroup", "/user.slice/boX/") == ["/sys/fs/cgroup/user.slice/boX",
                                                                "/sys/fs/cgroup/user.slice", "/sys/fs/cgroup"]


def test_jetson_names_ignore_case_and_spacing():
    from profiles.sources.system import jetson_gpu_name

    assert jetson_gpu_name("nvidia jetson orin  nano engineering reference developer kit") == "Jetson orin nano"
    assert jetson_gpu_name("NVIDIA Jetson AGX Orin Developer Kit") == "Jetson AGX Orin"
    assert jetson_gpu_name(None) is None and jetson_gpu_name("Raspberry Pi 5 Model B Rev 1.0") is None


@pytest.mark.parametrize("model, gpus, tp", [
    # vLLM: the TP size divides the attention heads, and per layer divides the KV heads or is a multiple of them
    ("gemma-3-27b", 1, 1), ("gemma-3-27b", 3, 2), ("gemma-3-27b", 8, 8), ("gemma-3-27b", 64, 32),  # 32 heads, 16 KV
    ("gemma-3-1b", 8, 4),  # 4 heads, 1 KV head (replicated)
    ("gemma-4-26b-a4b", 8, 8), ("gemma-4-26b-a4b", 32, 16),  # 16 heads, KV 2 and 8
])
def test_vllm_tensor_parallel_size(model, gpus, tp):
    from planner.search import vllm_tensor_parallel

    assert vllm_tensor_parallel(get_model(model)[0], gpus) == tp


@pytest.mark.parametrize("target, n", [("2x-node-8x-h100", 8), ("cluster-2x-dgx-spark", 1), ("4x-a6000", 4), ("h100", 1),
                                       ("cpu-16gb", 0)])
def test_gpus_per_host(target, n):
    from planner.search import gpus_per_host
    from profiles.targets import load_target

    assert gpus_per_host(load_target(target)) == n


def test_plan_fields_and_quality_loss():
    # quality loss: the weight format's perplexity increase plus half of each KV type's (K and V count alike);
    # search.KV_QUALITY: q8_0 0.002, q4_0 0.05; formats: Q4_K_M 0.1754
    from planner.formats import weight_bytes
    from planner.search import plan

    spec, _ = get_model("gemma-3-1b")
    p = plan(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096, type_k="q8_0", type_v="q4_0"), gpu_box())
    assert p.quality_loss == round(0.1754 + 0.002 / 2 + 0.05 / 2, 4) == 0.2014
    assert (p.model, p.weight_format, p.engine, p.target) == ("gemma-3-1b", "Q4_K_M", "llama.cpp", "box")
    assert p.weight_file_bytes == weight_bytes(spec, parse_format("Q4_K_M")) and p.settings.type_v == "q4_0"
    assert p.speed is not None and plan(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096), gpu_box(),
                                        target="named", with_speed=False).speed is None
    assert plan(spec, parse_format("Q8_0"), RuntimeSettings(n_ctx=4096), gpu_box(), target="named").target == "named"


@pytest.mark.parametrize("settings", [dict(n_ctx=0), dict(n_ctx=4096, n_parallel=0), dict(n_ctx=4096, n_ubatch=0),
                                      dict(n_ctx=32769 * 4)])
def test_plan_refuses_impossible_settings(settings):
    from planner.errors import InvalidSettingsError
    from planner.search import plan

    spec, _ = get_model("gemma-3-1b")  # trained to 32768
    with pytest.raises(InvalidSettingsError):
        plan(spec, parse_format("Q4_K_M"), RuntimeSettings(**settings), gpu_box())


def test_max_context_steps_by_slots_only_for_split_llama_cpp_caches():
    from planner.memory import DEFAULT_MARGIN
    from planner.search import max_context

    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    split = max_context(spec, fmt, RuntimeSettings(n_ctx=4096, n_parallel=3), gpu_box(5), DEFAULT_MARGIN)
    unified = max_context(spec, fmt, RuntimeSettings(n_ctx=4096, n_parallel=3, kv_unified=True), gpu_box(5), DEFAULT_MARGIN)
    # three split streams: whole steps of 3 x 256; one unified cache: steps of 256 (this case is not a multiple of 768)
    assert split > 0 and split % (3 * 256) == 0
    assert unified % 256 == 0 and unified % (3 * 256) != 0
    from planner.search import _fits

    s = RuntimeSettings(n_ctx=unified + 256, n_parallel=3, kv_unified=True)
    assert not _fits(spec, fmt, s, gpu_box(5), DEFAULT_MARGIN)[0]


# ---------------------------------------------------------------- plan(): what the memory covers, said in the notes

def _plan_of(model, engine="llama.cpp", fmt="Q4_K_M", **kw):
    from planner.search import plan

    spec, _ = get_model(model)
    return plan(spec, parse_format(fmt, engine), RuntimeSettings(engine=engine, n_ctx=4096, **kw), gpu_box())


def _projector(p):
    return sum(d.projector_bytes for d in p.memory.devices)


def test_plan_text_only_notes_name_the_tower_left_out():
    # llama.cpp loads no mmproj unless asked: the note says the tower is a separate file (the catalog's ~417M / ~150M);
    # vLLM runs --language-model-only, asked for vision or not; a text-only model gets no such note at all.
    p = _plan_of("gemma-3-4b")
    assert p.notes == ("text weights only; the vision tower (~417M params) is a separate mmproj file if you need images",)
    assert _projector(p) == 0
    assert _plan_of("gemma-4-e4b").notes == ("text weights only; the vision tower (~150M params) is a separate mmproj file "
                                            "if you need images",)
    vllm_note = ("text only: vLLM starts with --language-model-only, so the vision tower (~417M params) is neither loaded "
                 "nor profiled",)
    for vision in (None, True):
        p = _plan_of("gemma-3-4b", "vllm", "bf16", vision=vision)
        assert p.notes == vllm_note and _projector(p) == 0
    assert _plan_of("gemma-3-1b", "vllm", "bf16").notes == () and _plan_of("gemma-3-1b").notes == ()


def test_plan_with_vision_or_audio_carries_the_projector():
    # --vision: the mmproj's bytes sit on the GPU and the note says what it costs instead of the text-only note.
    p = _plan_of("gemma-3-4b", vision=True)
    assert _projector(p) > 0 and len(p.notes) == 1 and p.notes[0].startswith("vision: mmproj F16 ")
    # Gemma 4 E4B: --audio alone loads the shared mmproj (vision tower + audio encoder); --no-audio keeps vision only.
    both = _plan_of("gemma-4-e4b", audio=True)
    assert [n.split(":")[0] for n in both.notes] == ["vision", "audio"]
    assert both.notes[1].startswith("audio: the mmproj's gemma4a encoder F16 ")
    assert any("audio_projector" in d.detail for d in both.memory.devices)
    vision_only = _plan_of("gemma-4-e4b", vision=True, audio=False)
    assert [n.split(":")[0] for n in vision_only.notes] == ["vision"] and 0 < _projector(vision_only) < _projector(both)
    assert _projector(_plan_of("gemma-4-e4b", vision=True)) == _projector(both)
    # asked for vision where the projector is not modelled: one note says so, without the contradicting text-only note
    assert _plan_of("gemma-3-4b", "transformers", "bf16", vision=True).notes == ("vision: not modelled for transformers",)
    # Gemma 3n's MobileNetV5 projector is modelled (570 MiB of F16 weights, 557 MiB of encoder compute at 768 px)
    assert _plan_of("gemma-3n-e4b", vision=True).notes == (
        "vision: mmproj F16 570 MiB + encoder compute 557 MiB on GPU; each 768 px image takes 256 tokens of the "
        "4,096-token context",)
    # a model read from a local checkpoint carries no catalog tower: one note says so, with its vision parameters
    import dataclasses

    from planner.search import plan

    local = dataclasses.replace(get_model("gemma-3-4b")[0], source="hf-dir:/models/gemma-3-4b-it")
    p = plan(local, parse_format("Q4_K_M", "llama.cpp"), RuntimeSettings(n_ctx=4096, vision=True), gpu_box())
    assert p.notes == ("vision: the gemma3 projector's memory is not modelled for this model; the plan holds the text "
                       f"weights only (+~{local.vision_params / 1e6:.0f}M vision params)",)


def test_plan_settings_checks_boundaries_and_margin():
    from planner.errors import InvalidSettingsError
    from planner.memory import DEFAULT_MARGIN

    # the smallest positive context and ubatch pass the positivity check
    assert _plan_of("gemma-3-1b").ctx == 4096
    from planner.search import plan

    spec, _ = get_model("gemma-3-1b")
    assert plan(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=1), gpu_box()).ctx == 1
    assert plan(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096, n_ubatch=1), gpu_box()).settings.n_ubatch == 1
    # a context above the trained maximum names the model in the one-line error
    with pytest.raises(InvalidSettingsError, match="above gemma-3-1b's trained maximum of 32768"):
        plan(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=65536), gpu_box())
    # --margin reaches every device's budget
    gpu = plan(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096), gpu_box(), margin=0).memory.devices[0]
    assert gpu.budget_bytes == gpu.capacity_bytes == 24 * GiB
    assert _plan_of("gemma-3-1b").memory.devices[0].budget_bytes == 24 * GiB - DEFAULT_MARGIN
    # a KV type outside search.KV_QUALITY (bf16 keeps 16 bits like f16) adds no quality loss to the format's 0.1754
    assert _plan_of("gemma-3-1b", type_k="bf16", type_v="bf16").quality_loss == 0.1754


def test_max_context_is_whole_slots_below_the_trained_maximum():
    # 131,072 trained tokens do not split into 3 llama.cpp slots of whole 256-token steps: 3 x 43,520 = 130,560.
    # A unified cache or vLLM (one pool of blocks) takes the full 131,072.
    from planner.memory import DEFAULT_MARGIN
    from planner.search import max_context

    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    assert max_context(spec, fmt, RuntimeSettings(n_ctx=4096, n_parallel=3), gpu_box(80), DEFAULT_MARGIN) == 130560
    assert max_context(spec, fmt, RuntimeSettings(n_ctx=4096, n_parallel=3, kv_unified=True), gpu_box(80), DEFAULT_MARGIN) == 131072
    assert max_context(spec, parse_format("bf16", "vllm"), RuntimeSettings(engine="vllm", n_ctx=4096, n_parallel=3),
                       gpu_box(80), DEFAULT_MARGIN) == 131072


def test_max_context_smallest_step_under_a_tight_margin():
    # A --margin that leaves exactly the 256-token plan's bytes free on the GPU: the answer is that one step, not 0.
    from planner.search import max_context, plan

    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    gpu = plan(spec, fmt, RuntimeSettings(n_ctx=256), gpu_box(), margin=0).memory.devices[0]
    margin = gpu.capacity_bytes - gpu.total_bytes
    assert max_context(spec, fmt, RuntimeSettings(n_ctx=4096), gpu_box(), margin) == 256
    assert max_context(spec, fmt, RuntimeSettings(n_ctx=4096), gpu_box(), margin + 1) == 0


def test_gpus_per_host_with_a_gpu_less_host_is_one():
    # A cluster whose smallest host has no GPU: tensor-parallel groups of one, not of zero (or two).
    from planner.search import gpus_per_host
    from profiles.hardware import Host

    gpu = Device("GPU", "nvidia", "CUDA", 24 * GiB, 1000 * 10**9, 80e12)
    hw = Hardware("pair", [gpu, gpu], 128 * GiB, CPU(flags=["avx2"], cores_physical=8),
                  hosts=[Host("a", [gpu, gpu], 64 * GiB), Host("b", [], 64 * GiB)])
    assert hw.is_cluster and gpus_per_host(hw) == 1


def test_vllm_tensor_parallel_with_kv_heads_tp_cannot_split():
    # 12 attention heads, 3 KV heads (one layer): TP 2 or 4 neither divides 3 nor is a multiple of it, so vLLM runs TP 1;
    # 6 KV heads allow TP 2 but not 4 (4 neither divides 6 nor is a multiple of it).
    import dataclasses

    from planner.search import vllm_tensor_parallel

    spec, _ = get_model("gemma-3-1b")
    one = lambda kv: dataclasses.replace(spec, layers=[dataclasses.replace(spec.layers[0], n_head=12, n_head_kv=kv)])  # noqa: E731
    assert vllm_tensor_parallel(one(3), 4) == 1
    assert vllm_tensor_parallel(one(6), 4) == 2
    assert vllm_tensor_parallel(one(12), 4) == 4


def test_quality_losses_have_four_decimals_at_most():
    # plan() rounds a plan's quality_loss (format loss + half of each KV type's) to four places: no figure is finer.
    import json

    from planner.search import KV_QUALITY

    for name, row in json.loads((FIXTURES.parents[2] / "planner" / "data" / "quality.json").read_text())["formats"].items():
        assert round(row["loss"], 4) == row["loss"], name
    assert all(round(v / 2, 4) == v / 2 for v in KV_QUALITY.values())
