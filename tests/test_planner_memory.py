"""Golden values for the llama.cpp memory model: each case says where its number comes from."""


import pytest

from planner.catalog import get_model
from planner.formats import parse_format
from planner.memory import llamacpp_kv_bytes, llamacpp_kv_layer_bytes, llamacpp_kv_layout, llamacpp_memory
from planner.types import RuntimeSettings
from profiles.hardware import CPU, Device, Hardware

MiB = 1 << 20
GiB = 1 << 30


def hw_gpu(mem_gib=24, n=1, flags=("avx2",)):
    devs = [Device("GPU", "nvidia", "CUDA", mem_gib * GiB, 1000 * 10**9, 80e12) for _ in range(n)]
    return Hardware("test", devs, 64 * GiB, CPU(flags=list(flags)))


def hw_cpu(ram_gib=32, flags=("avx2",)):
    return Hardware("cpu", [], ram_gib * GiB, CPU(flags=list(flags), cores_physical=8))


KV_CASES = [
    # (model, settings, expected bytes, reason)
    ("gemma-3-27b", dict(n_ctx=32768), 3_338_665_984,
     "issue 2 / engine_memory_accounting 1.2: 10 full x 32768 + 52 SWA x pad256(1024+512)=1536 cells, 8 KiB/cell"),
    ("gemma-3-27b", dict(n_ctx=32768, swa_full=True), 15872 * MiB,
     "swa_full: all 62 layers at 32768 cells x 8 KiB (llama-cpp-python's C default)"),
    ("gemma-3-27b", dict(n_ctx=32768, type_k="q8_0", type_v="q8_0"), 3_338_665_984 * 34 // 64,
     "q8_0 rows: 34 bytes per 32 elements instead of 64"),
    ("gemma-3-27b", dict(n_ctx=30000), (10 * 30208 + 52 * 1536) * 8192,
     "n_ctx padded to a multiple of 256 (PR #17046): 30000 -> 30208 cells"),
    ("gemma-3-27b", dict(n_ctx=32768, n_parallel=4), (10 * 8192 * 4 + 52 * 1536 * 4) * 8192,
     "4 non-unified streams: 8192 cells each; SWA per stream pad256(1024+512)"),
    ("gemma-3-27b", dict(n_ctx=32768, n_parallel=4, kv_unified=True), (10 * 32768 + 52 * 4608) * 8192,
     "unified: one stream; SWA pad256(1024*4 + 512) = 4608 cells"),
    ("gemma-4-e2b", dict(n_ctx=8192), (3 * 8192 * 2048 + 12 * 1024 * 1024),
     "E2B: only layers 0-14 store KV (3 full 1x512, 12 SWA 1x256); SWA pad256(512+512)=1024"),
    ("gemma-4-31b", dict(n_ctx=8192), (10 * 8192 * 4 * 512 * 2 * 2 + 50 * 1536 * 16 * 256 * 2 * 2),
     "31B: full layers 4 KV heads x 512, SWA layers 16 x 256; K and V both stored (k_eq_v)"),
    ("gemma-4-31b", dict(n_ctx=8192, flash_attn=False), (10 * 8192 * (2048 + 4096) * 2 + 50 * 1536 * 4096 * 2 * 2),
     "no flash attention: V transposed and padded to the widest V (16x256=4096) on every layer"),
    ("gemma-2-9b", dict(n_ctx=8192), (21 * 8192 + 21 * 4608) * 8 * 256 * 2 * 2,
     "Gemma 2: alternating layers, window 4096: SWA pad256(4096+512)=4608 cells"),
    ("gemma-3n-e4b", dict(n_ctx=4096), (4 * 4096 + 16 * 1024) * 2 * 256 * 2 * 2,
     "Gemma 3n: llama.cpp keeps KV for the first 20 layers only (4 full, 16 SWA)"),
]


@pytest.mark.parametrize("model,settings,expected,reason", KV_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(KV_CASES)])
def test_kv_bytes_match_llamacpp_formula(model, settings, expected, reason):
    spec, _ = get_model(model)
    assert llamacpp_kv_bytes(spec, RuntimeSettings(**settings)) == expected, reason


def test_swa_cells_layout():
    spec, _ = get_model("gemma-3-27b")
    lay = llamacpp_kv_layout(spec, RuntimeSettings(n_ctx=4096, n_ubatch=64))
    assert (lay.n_ctx_seq, lay.swa_cells) == (4096, 1280)  # pad256(1024 + 64)
    small = llamacpp_kv_layout(spec, RuntimeSettings(n_ctx=1000))
    assert small.swa_cells == small.n_ctx_seq == 1024  # SWA never larger than the full cache


def test_shared_kv_layers_store_nothing():
    spec, _ = get_model("gemma-4-e2b")
    per_layer = llamacpp_kv_layer_bytes(spec, RuntimeSettings(n_ctx=4096))
    assert sorted(per_layer) == list(range(15))
    assert spec.layers[20].kv_shared_from == 13 and spec.layers[34].kv_shared_from == 14


def test_full_offload_places_everything_but_input_on_gpu():
    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    m = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192), hw_gpu())
    gpu, host = m.devices
    emb = next(t for t in spec.tensors if t.name == "token_embd.weight")
    emb_bytes = emb.shape[0] * emb.shape[1] // 256 * 210  # tied -> Q6_K
    assert host.weights_bytes == emb_bytes  # token embeddings always stay on the CPU
    assert gpu.detail["tied_output_copy_bytes"] == emb_bytes  # duplicated for the output layer
    assert gpu.kv_bytes == m.kv_bytes and host.kv_bytes == 0
    assert gpu.layers == spec.n_layers
    assert host.output_bytes == 4 * spec.vocab


def test_ngl_offloads_output_first():
    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    one = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=4096, n_gpu_layers=1), hw_gpu())
    gpu, host = one.devices
    assert gpu.layers == 0 and gpu.detail.get("tied_output_copy_bytes")  # -ngl 1 = just the output layer
    assert host.layers == spec.n_layers and host.kv_bytes == one.kv_bytes
    assert host.detail["repack_bytes"] > 0  # CPU Q4_K tensors go to CPU_REPACK on AVX2


def test_experts_on_cpu_moves_expert_bytes():
    spec, _ = get_model("gemma-4-26b-a4b")
    fmt = parse_format("Q4_K_M")
    full = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192), hw_gpu(80))
    moved = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192, experts_on_cpu=True), hw_gpu(80))
    assert moved.weights_bytes == full.weights_bytes
    assert moved.devices[0].weights_bytes < full.devices[0].weights_bytes / 3  # experts are most of the model


def test_two_gpu_split_is_proportional():
    spec, _ = get_model("gemma-3-27b")
    m = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=8192), hw_gpu(24, 2))
    a, b, host = m.devices
    # 63 slots (62 layers + output) split at 31.5: llama.cpp counts the output layer in the split
    assert (a.layers, b.layers) == (32, 30)
    assert b.detail["tied_output_copy_bytes"] and "tied_output_copy_bytes" not in a.detail


def test_compute_buffer_without_flash_attention_grows_with_context():
    spec, _ = get_model("gemma-3-27b")
    fmt = parse_format("Q4_K_M")
    short = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=4096, flash_attn=False), hw_gpu(80))
    long = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=32768, flash_attn=False), hw_gpu(80))
    fa = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=32768), hw_gpu(80))
    # KQ scores: 4 * n_kv * n_ubatch * n_head = 4 * 32768 * 512 * 32 = 2 GiB
    assert long.devices[0].compute_bytes >= 2 * GiB > short.devices[0].compute_bytes
    assert fa.devices[0].compute_bytes < GiB


def test_quantized_v_needs_flash_attention():
    from planner.errors import InvalidSettingsError

    spec, _ = get_model("gemma-3-4b")
    with pytest.raises(InvalidSettingsError, match="flash attention"):
        llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(type_v="q8_0", flash_attn=False), hw_gpu())
    # quantized K alone is fine
    llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(type_k="q8_0", flash_attn=False), hw_gpu())


def test_unified_memory_host_budget_shrinks_by_gpu_use():
    spec, _ = get_model("gemma-3-12b")
    dev = Device("Apple M4 Max GPU", "apple", "Metal", 96 * GiB, 546 * 10**9, unified=True, device_class="apple")
    hw = Hardware("mac", [dev], 128 * GiB, CPU(flags=["neon", "asimddp"]), kind="apple")
    m = llamacpp_memory(spec, parse_format("Q8_0"), RuntimeSettings(n_ctx=32768), hw, margin=0)
    gpu, host = m.devices
    assert host.capacity_bytes == 128 * GiB - gpu.total_bytes


# Compute buffers llama-cpp-python 0.3.36 reported (sched_reserve: CPU compute buffer size, MiB) for
# 2-layer GGUFs at the real widths of Gemma 3 4B and 27B; `python bench/compute_buffer.py` reproduces them.
COMPUTE_MEASURED = [
    ("4b", 4096, 512, True, 522.13), ("4b", 32768, 512, False, 605.01), ("4b", 32768, 128, False, 151.13),
    ("27b", 32768, 512, True, 533.13), ("27b", 32768, 512, False, 2168.01), ("27b", 32768, 128, False, 541.88),
    ("27b", 512, 128, True, 133.28),
]


@pytest.mark.parametrize("size,ctx,ub,fa,mib", COMPUTE_MEASURED)
def test_compute_buffer_matches_measured(size, ctx, ub, fa, mib):
    from planner.catalog import spec_from_config
    from planner.memory import _llamacpp_compute_bytes

    full, _ = get_model(f"gemma-3-{size}")
    cfg = dict(model_type="gemma3_text", hidden_size=full.hidden, num_hidden_layers=2, num_attention_heads=full.layers[0].n_head,
               num_key_value_heads=full.layers[0].n_head_kv, head_dim=full.layers[0].head_dim_k, intermediate_size=full.layers[0].n_ff,
               vocab_size=full.vocab, sliding_window=full.sliding_window, layer_types="SF", max_position_embeddings=131072)
    spec = spec_from_config(cfg, name=size, source="test")
    s = RuntimeSettings(n_ctx=ctx, n_ubatch=ub, n_batch=512, flash_attn=fa)
    assert abs(_llamacpp_compute_bytes(spec, s, llamacpp_kv_layout(spec, s)) / MiB - mib) <= max(1.1, 0.005 * mib)


# Gemma 4 31B widths (2 layers, zero weights), llama-cpp-python 0.3.36 CPU compute buffer (MiB); the peak
# tensors of each were traced with `python bench/trace_compute.py gemma-4-31b --n-ctx 32768 ...`:
# KQ scores over 4 streams (648.01), over one 32768-cell cache (2232.01), and the logits phase (543.50).
GEMMA4_31B_MEASURED = [(32768, 4, False, 648.01), (32768, 1, False, 2232.01), (32768, 1, True, 543.50)]


@pytest.mark.parametrize("ctx,n_par,fa,mib", GEMMA4_31B_MEASURED)
def test_gemma4_compute_buffer_matches_traced(ctx, n_par, fa, mib):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.fidelity import width_spec
    from planner.catalog import catalog_entries
    from planner.memory import _llamacpp_compute_bytes

    entry = next(e for e in catalog_entries() if e["name"] == "gemma-4-31b")
    _, spec = width_spec(entry, 2)
    s = RuntimeSettings(n_ctx=ctx, n_parallel=n_par, n_ubatch=512, n_batch=512, flash_attn=fa)
    assert abs(_llamacpp_compute_bytes(spec, s, llamacpp_kv_layout(spec, s)) / MiB - mib) <= 0.01


# ggml_cuda_should_use_mmq (ggml-cuda/mmq.cu, b11312) per compute capability / gfx target: whether a prefill
# matmul quantizes its activations to Q8_1 (MMQ, small pool) or dequantizes the weight to F16 for cuBLAS/hipBLAS
# (a pool the size of the weight). (backend, capability, type, ubatch, experts) -> MMQ
MMQ_CASES = [
    ("CUDA", "8.6", "Q4_K", 512, 0, True), ("CUDA", "8.6", "F16", 512, 0, False), ("CUDA", "8.6", "BF16", 8, 0, False),
    ("CUDA", "8.0", "Q6_K", 512, 0, True), ("CUDA", "7.5", "q4_k", 512, 0, True),  # Turing and newer: MMA MMQ
    ("CUDA", "7.0", "Q4_K", 63, 0, True), ("CUDA", "7.0", "Q4_K", 64, 0, False), ("CUDA", "7.0", "Q4_K", 512, 0, False),
    ("CUDA", "7.2", "Q8_0", 512, 0, False),  # Volta (Xavier): cuBLAS from MMQ_DP4A_MAX_BATCH_SIZE = 64 tokens
    ("CUDA", "6.1", "Q4_K", 512, 0, True),  # Pascal: no FP16 tensor cores, DP4A MMQ
    ("CUDA", None, "Q4_K", 512, 0, True), ("CUDA", "sm_90", "Q4_K", 512, 0, True),  # unreadable capability: MMQ
    ("ROCm", "gfx942", "Q6_K", 512, 0, True), ("ROCm", "gfx1201", "Q2_K", 512, 0, True),  # CDNA3, RDNA4: MMQ
    ("ROCm", "gfx1100", "Q2_K", 128, 0, True), ("ROCm", "gfx1100", "Q2_K", 129, 0, False),  # RDNA3 per-type limits
    ("ROCm", "gfx1100", "Q6_K", 128, 0, True), ("ROCm", "gfx1100", "Q6_K", 129, 0, False),
    ("ROCm", "GFX1100", "Q6_K", 129, 0, False),  # the target is matched case-insensitively
    ("ROCm", "gfx1151", "Q6_K", 256, 0, True), ("ROCm", "gfx1151", "Q6_K", 257, 0, False),  # RDNA3.5: Q6_K up to 256
    ("ROCm", "gfx1100", "IQ2_XS", 128, 0, True), ("ROCm", "gfx1100", "IQ2_XS", 129, 0, False), ("ROCm", "gfx1100", "IQ2_S", 129, 0, False),
    ("ROCm", "gfx1151", "IQ2_XS", 512, 0, True), ("ROCm", "gfx1100", "Q4_K", 4096, 0, True),
    ("ROCm", "gfx1100", "Q6_K", 512, 64, True), ("ROCm", "gfx1100", "Q6_K", 512, 63, False),  # many experts: MMQ
    ("ROCm", "gfx90a", "Q6_K", 128, 0, True), ("ROCm", "gfx90a", "Q6_K", 129, 0, False),  # CDNA2
    ("ROCm", "gfx90a", "Q4_0", 512, 0, True), ("ROCm", "gfx90a", "Q4_1", 512, 0, True), ("ROCm", "gfx908", "Q5_0", 512, 0, True),
    ("ROCm", "gfx908", "Q5_1", 512, 0, True),
    ("ROCm", "gfx90a", "Q4_K", 256, 0, True), ("ROCm", "gfx90a", "Q5_K", 256, 0, True), ("ROCm", "gfx90a", "Q4_K", 257, 0, False),
    ("ROCm", "gfx908", "Q8_0", 256, 0, False), ("ROCm", "gfx90a", "Q6_K", 512, 65, True), ("ROCm", "gfx90a", "Q6_K", 512, 64, False),
    ("ROCm", "gfx1030", "Q6_K", 512, 0, True),  # RDNA2 and others: MMQ
]


@pytest.mark.parametrize("backend,cc,typ,ub,n_exp,mmq", MMQ_CASES)
def test_mmq_choice_per_gpu(backend, cc, typ, ub, n_exp, mmq):
    from planner.memory import _uses_mmq

    dev = Device("GPU", "nvidia" if backend == "CUDA" else "amd", backend, 24 * GiB, 10**12, compute_capability=cc)
    assert _uses_mmq(dev, typ, ub, n_exp) is mmq


def test_host_compute_buffer_with_full_offload_per_build():
    # Gemma 3 4B, 8192 cells, ubatch 512, flash attention: graph inputs (ids, positions, output ids; the
    # token-embedding rows), per cache (full 8192 cells, sliding pad256(1024 + 512) = 1536) k_idxs and v_idxs
    # (8 bytes per token) and the F16 mask; b11312 adds the F32 inp_embd input. Older graphs: no index inputs,
    # F32 masks, no inp_embd.
    import dataclasses

    from planner.llama_versions import BUILDS
    from planner.memory import gpu_host_compute_bytes

    spec, _ = get_model("gemma-3-4b")
    s = RuntimeSettings(n_ctx=8192)
    layout = llamacpp_kv_layout(spec, s)
    ids, embd = 3 * 4 * 512, 4 * 512 * 2560
    new = ids + embd + 2 * (8 * 512 + 8 * 512) + 2 * 512 * (8192 + 1536) + embd
    assert gpu_host_compute_bytes(spec, s, layout, BUILDS["b11312"]) == new == 20_469_760
    old = dataclasses.replace(BUILDS["b11312"], embd_input_tensor=False, kv_idx_inputs=False, kq_mask_f16=False)
    assert gpu_host_compute_bytes(spec, s, layout, old) == ids + embd + 4 * 512 * (8192 + 1536) == 25_171_968
    m = llamacpp_memory(spec, parse_format("Q4_K_M"), s, hw_gpu())
    assert m.devices[-1].compute_bytes == new  # every layer offloaded: the host buffer is the inputs alone


def test_gpu_pool_is_the_largest_op_temporary_of_the_layers_held():
    # The CUDA pool grows to the largest temporary of one matmul over the weights the GPU holds (ubatch 512):
    # MMQ: activations as Q8_1, 36 bytes per 32 values over rows padded to 512; cuBLAS (Volta at 512 tokens):
    # the weight dequantized to F16 plus F16 activations and result; F16/BF16 weights: activations and result only.
    from planner.memory import gpu_pool_bytes

    spec, _ = get_model("gemma-3-4b")  # hidden 2560, FFN 10240, vocab 262208 (tied output, Q6_K)
    q4 = parse_format("Q4_K_M")
    ampere = Device("GPU", "nvidia", "CUDA", 24 * GiB, 10**12, compute_capability="8.6")
    volta = Device("GPU", "nvidia", "CUDA", 24 * GiB, 10**12, compute_capability="7.0")
    every = set(range(spec.n_layers)) | {None}
    assert gpu_pool_bytes(spec, q4, ampere, 512, every) == 512 * 10240 * 36 // 32  # ffn_down's K = 10240
    assert gpu_pool_bytes(spec, q4, volta, 512, every) == 2 * 262208 * 2560 + 2 * 512 * (2560 + 262208)  # the output matmul
    assert gpu_pool_bytes(spec, q4, volta, 512, {3}) == 2 * 10240 * 2560 + 2 * 512 * (2560 + 10240)  # a layer alone
    assert gpu_pool_bytes(spec, parse_format("F16"), volta, 512, {3}) == 2 * 512 * (2560 + 10240)
    assert gpu_pool_bytes(spec, parse_format("BF16"), volta, 512, {None}) == 2 * 512 * (2560 + 262208)
    assert gpu_pool_bytes(spec, q4, ampere, 512, set()) == 0
    metal = Device("M", "apple", "Metal", 24 * GiB, 10**12, unified=True)
    vulkan = Device("V", "amd", "Vulkan", 24 * GiB, 10**12)
    assert gpu_pool_bytes(spec, q4, metal, 512, every) == gpu_pool_bytes(spec, q4, vulkan, 512, every) == 0  # no such pool
    rocm = Device("R", "amd", "ROCm", 24 * GiB, 10**12, compute_capability="gfx1100")
    assert gpu_pool_bytes(spec, q4, rocm, 512, {3}) == 2 * 10240 * 2560 + 2 * 512 * (2560 + 10240)  # RDNA3 Q6_K: hipBLAS
    # MoE (26B-A4B, 128 experts, 8 used): the expert stacks see 8 rows per token; with the experts on the CPU the
    # largest is the F32 router's cuBLAS temporary
    moe, _ = get_model("gemma-4-26b-a4b")
    assert gpu_pool_bytes(moe, q4, ampere, 512, {3}) == 512 * 8 * 3072 * 36 // 32  # gate_up_exps: K 2816 padded to 3072
    assert gpu_pool_bytes(moe, q4, ampere, 512, {3}, experts_on_cpu=True) == 2 * 512 * (2816 + 128)


def test_pool_bytes_land_in_the_breakdown_of_the_gpu_holding_them():
    # two Volta GPUs, whole model: the second holds the output layer, so its pool is the output matmul's
    spec, _ = get_model("gemma-3-4b")
    volta = [Device("V100", "nvidia", "CUDA", 16 * GiB, 10**12, compute_capability="7.0") for _ in range(2)]
    m = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096), Hardware("v", volta, 64 * GiB, CPU(flags=["avx2"])))
    a, b, host = m.devices
    assert a.detail["pool_bytes"] == 2 * 10240 * 2560 + 2 * 512 * (2560 + 10240)
    assert b.detail["pool_bytes"] == 2 * 262208 * 2560 + 2 * 512 * (2560 + 262208)
    assert a.overhead_bytes == 457 * MiB + a.detail["pool_bytes"] and "pool_bytes" not in host.detail
    assert (a.device, b.device) == ("V100 #0", "V100 #1")  # same names: numbered


def test_quantized_kv_adds_the_hadamard_rotation_inputs():
    # llama_kv_cache::build_input_k_rot / v_rot: a quantized K cache takes an F32 n_rot x n_rot rotation per cache,
    # n_rot the largest power of two dividing the (single) K head size, when that size is a multiple of 64; a
    # quantized V cache a 64 x 64 one. Gemma 3 4B: both caches 256 wide; Gemma 4 31B: full 512, sliding 256.
    import dataclasses

    from planner.memory import _graph_input_bytes

    def extra(spec, **kv):
        layout = llamacpp_kv_layout(spec, RuntimeSettings(n_ctx=8192))
        return _graph_input_bytes(spec, RuntimeSettings(n_ctx=8192, **kv), layout) - _graph_input_bytes(spec, RuntimeSettings(n_ctx=8192), layout)

    g3, _ = get_model("gemma-3-4b")
    g4, _ = get_model("gemma-4-31b")
    assert extra(g3, type_k="q8_0") == 2 * 4 * 256 * 256 and extra(g3, type_v="q8_0") == 2 * 4 * 64 * 64
    assert extra(g3, type_k="q4_0", type_v="q4_0") == 2 * 4 * 256 * 256 + 2 * 4 * 64 * 64
    assert extra(g4, type_k="q8_0") == 4 * 512 * 512 + 4 * 256 * 256
    heads = lambda k: dataclasses.replace(g3, layers=tuple(dataclasses.replace(lay, head_dim_k=k(lay), head_dim_v=k(lay))
                                                           for lay in g3.layers))
    assert extra(heads(lambda lay: 192), type_k="q8_0", type_v="q8_0") == 2 * 4 * 64 * 64 + 2 * 4 * 64 * 64  # 192: n_rot 64
    assert extra(heads(lambda lay: 96), type_k="q8_0", type_v="q8_0") == 0  # not a multiple of 64: no rotation
    # heads 128 on even layers, 256 on odd ones: the full layers (5, 11, ...) are all 256 and keep their rotations,
    # the sliding cache mixes both sizes and gets none
    assert extra(heads(lambda lay: 128 + 128 * (lay.index % 2)), type_k="q8_0", type_v="q8_0") == 4 * 256 * 256 + 4 * 64 * 64


def test_reserved_outputs_and_their_logits():
    # sched_reserve reserves min(n_ubatch, n_outputs_max) output rows, n_outputs_max 0 meaning n_batch; llama-server
    # passes n_parallel. The logits phase of the compute buffer holds that many F32 rows of the vocabulary.
    from planner.memory import _llamacpp_compute_bytes, reserved_outputs

    spec, _ = get_model("gemma-3-27b")
    for n_out, ub, expected in [(0, 512, 512), (0, 128, 128), (4, 512, 4), (1000, 512, 512), (1, 512, 1)]:
        s = RuntimeSettings(n_ctx=4096, n_ubatch=ub, n_outputs_max=n_out)
        assert reserved_outputs(s, llamacpp_kv_layout(spec, s)) == expected
    # at 512 outputs the logits phase is the peak (533.12 MiB, as measured in COMPUTE_MEASURED); 256 outputs drop
    # 256 rows of vocabulary + hidden F32
    full, half = RuntimeSettings(n_ctx=4096), RuntimeSettings(n_ctx=4096, n_outputs_max=256)
    H, V = spec.hidden, spec.vocab
    assert _llamacpp_compute_bytes(spec, full, llamacpp_kv_layout(spec, full)) == 4 * 512 * (V + H) + 4 * 512 * H == 559_022_080
    assert _llamacpp_compute_bytes(spec, half, llamacpp_kv_layout(spec, half)) == 4 * 256 * (V + H) + 4 * 512 * H


def test_unverified_build_keeps_more_free_per_gpu():
    # --engine-version b11400 (not read here): each GPU keeps max(256 MiB, 25% of its compute buffer) more free
    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    known = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192), hw_gpu(), margin=GiB)
    other = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192, engine_version="b11400"), hw_gpu(), margin=GiB)
    gpu = other.devices[0]
    extra = max(256 * MiB, int(0.25 * gpu.compute_bytes))
    assert gpu.detail["unverified_build_margin_bytes"] == extra
    assert gpu.budget_bytes == known.devices[0].budget_bytes - extra == 23 * GiB - extra
    assert other.devices[-1].budget_bytes == known.devices[-1].budget_bytes  # the host is not touched
    assert "unverified_build_margin_bytes" not in known.devices[0].detail
    assert other.engine_version == "llama.cpp b11400 (rules of b11312; not verified for this build)"
    with pytest.raises(Exception, match="unknown llama.cpp build"):
        llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192, engine_version="latest"), hw_gpu())


def test_pool_leaves_out_the_input_tables_but_not_the_tied_output():
    # Gemma 4 E2B on Volta (cuBLAS at 512 tokens): the output layer's largest op is the logits matmul over the tied
    # token_embd (262144 x 1536); the per-layer embedding table (262144 x 8960) is read by row lookups on the CPU,
    # never multiplied, so it adds nothing; a layer's largest op is its FFN (6144 x 1536); layer 0 also holds the
    # model-level PLE projection (8960 x 1536), kept BF16, so only its activations (2 x 512 x (1536 + 8960)) count
    from planner.memory import gpu_pool_bytes

    spec, _ = get_model("gemma-4-e2b")
    fmt = parse_format("Q4_K_M")
    volta = Device("V100", "nvidia", "CUDA", 16 * GiB, 10**12, compute_capability="7.0")
    assert gpu_pool_bytes(spec, fmt, volta, 512, {None}) == 2 * 262144 * 1536 + 2 * 512 * (1536 + 262144)
    assert gpu_pool_bytes(spec, fmt, volta, 512, {3}) == 2 * 6144 * 1536 + 2 * 512 * (1536 + 6144)
    assert gpu_pool_bytes(spec, fmt, volta, 512, {0}) == 2 * 6144 * 1536 + 2 * 512 * (1536 + 6144) > 2 * 512 * (1536 + 8960)


def test_partial_offload_by_hand():
    # Gemma 3 4B Q4_K_M, 8192 cells, one CUDA GPU, AVX2 host (llama_model_base::load_tensors, sched_reserve):
    from planner.formats import gguf_tensor_types, tensor_sizes

    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    full = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192), hw_gpu())
    one = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192, n_gpu_layers=1), hw_gpu())
    zero = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192, n_gpu_layers=0), hw_gpu())
    main = full.devices[0].compute_bytes  # the worst-case graph, the same on whichever device runs it
    sizes = dict((t.name, b) for t, b in tensor_sizes(spec, fmt))
    types = dict((t.name, typ) for t, typ in gguf_tensor_types(spec, "Q4_K_M"))
    tied = sizes["token_embd.weight"]
    # -ngl 1: the output layer (output_norm + the tied output copy) on the GPU, every block on the CPU
    gpu, host = one.devices
    assert (gpu.weights_bytes, gpu.layers, host.layers) == (4 * 2560 + tied, 0, 34)
    assert gpu.kv_bytes == 0 and host.kv_bytes == full.kv_bytes
    # the CPU's Q4_K block weights (AVX2 repacks Q4_0/Q4_K/IQ4_NL; rows a multiple of 8) get a CPU_REPACK copy
    repack = sum(sizes[n] for n, typ in types.items() if typ == "Q4_K" and n.startswith("blk."))
    assert host.detail["repack_bytes"] == repack
    assert one.notes == ["CPU-resident tensors of repackable types are copied into a CPU_REPACK buffer (anonymous memory)"]
    # op offload: the largest CPU-resident matmul weight (a Q6_K ffn_down, 2560 rows of 10240) is copied into the
    # GPU's compute buffer; the host runs the whole graph's CPU part with a buffer of its own
    assert gpu.compute_bytes == main + 2560 * 10240 // 256 * 210 and host.compute_bytes == main
    assert gpu.detail["pool_bytes"] == 512 * 2560 * 36 // 32  # only the logits matmul runs on the GPU
    assert gpu.overhead_bytes == 457 * MiB + gpu.detail["pool_bytes"]
    # -ngl 0: nothing on the GPU, not even the CUDA context reserve
    g0, h0 = zero.devices
    assert (g0.total_bytes, g0.overhead_bytes, h0.compute_bytes, h0.weights_bytes) == (0, 0, main, sum(sizes.values()))
    assert zero.kv_cells == {"full": 8192, "swa": 1536, "streams": 1, "n_ctx": 8192}
    assert full.notes == [] and "repack_bytes" not in full.devices[-1].detail


def test_kv_stays_on_the_host_without_offload_kqv():
    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    on = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192), hw_gpu())
    off = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192, offload_kqv=False), hw_gpu())
    # 5 full layers x 8192 cells and 29 sliding x 1536, K + V of 4 heads x 256 in F16
    full_kv, swa_kv = 5 * 8192 * 4096, 29 * 1536 * 4096
    assert on.devices[0].detail["kv_full_bytes"] == full_kv and on.devices[0].detail["kv_swa_bytes"] == swa_kv
    assert off.devices[0].kv_bytes == 0 and off.devices[-1].kv_bytes == full_kv + swa_kv
    assert off.devices[-1].detail["kv_full_bytes"] == full_kv and off.devices[-1].detail["kv_swa_bytes"] == swa_kv


def test_gemma4_without_mmap_keeps_the_tied_output_copy_on_the_host():
    # -ngl 0: the output layer is on the CPU. With mmap the tied output reads the mapped token_embd; Gemma 4
    # without mmap loads the duplicated tensor into its own host buffer. Gemma 3 never does.
    from planner.formats import tensor_sizes

    fmt = parse_format("Q4_K_M")
    g4, _ = get_model("gemma-4-e2b")
    g3, _ = get_model("gemma-3-1b")
    tied4 = next(b for t, b in tensor_sizes(g4, fmt) if t.name == "token_embd.weight")
    mmap = llamacpp_memory(g4, fmt, RuntimeSettings(n_ctx=4096, n_gpu_layers=0), hw_gpu()).devices[-1]
    nommap = llamacpp_memory(g4, fmt, RuntimeSettings(n_ctx=4096, n_gpu_layers=0, use_mmap=False), hw_gpu()).devices[-1]
    assert nommap.weights_bytes - mmap.weights_bytes == tied4 and nommap.detail["tied_output_copy_bytes"] == tied4
    assert "tied_output_copy_bytes" not in mmap.detail
    g3host = llamacpp_memory(g3, fmt, RuntimeSettings(n_ctx=4096, n_gpu_layers=0, use_mmap=False), hw_gpu()).devices[-1]
    assert "tied_output_copy_bytes" not in g3host.detail


def test_metal_plans_say_the_working_set_is_the_limit():
    spec, _ = get_model("gemma-3-4b")
    dev = Device("Apple M4 GPU", "apple", "Metal", 12 * GiB, 120 * 10**9, unified=True, device_class="apple")
    mac = Hardware("mac", [dev], 16 * GiB, CPU(flags=["neon", "asimddp"]), kind="apple")
    notes = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096), mac).notes
    assert any(n.startswith("Metal: usable memory is the GPU working set") for n in notes)
    cuda = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096), hw_gpu()).notes
    assert not any(n.startswith("Metal") for n in cuda)
    cpu_only = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096, n_gpu_layers=0), mac).notes
    assert not any(n.startswith("Metal") for n in cpu_only)  # nothing on the GPU: no GPU notes


def test_unified_host_capacity_never_goes_negative():
    # a working set larger than the RAM left: the host has nothing, not a negative amount
    spec, _ = get_model("gemma-3-27b")
    dev = Device("Apple M4 Max GPU", "apple", "Metal", 96 * GiB, 546 * 10**9, unified=True, device_class="apple")
    hw = Hardware("mac", [dev], 16 * GiB, CPU(flags=["neon", "asimddp"]), kind="apple")
    m = llamacpp_memory(spec, parse_format("Q8_0"), RuntimeSettings(n_ctx=8192), hw, margin=0)
    assert m.devices[0].total_bytes > 16 * GiB and m.devices[-1].capacity_bytes == 0 == m.devices[-1].budget_bytes


def test_unverified_margin_only_on_gpus_with_a_compute_buffer():
    # two GPUs, tensor split 0:1: every layer on the second; the idle first has no compute buffer and keeps no extra
    spec, _ = get_model("gemma-3-4b")
    m = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096, tensor_split=[0.0, 1.0], engine_version="b11400"),
                        hw_gpu(24, 2), margin=GiB)
    a, b, _ = m.devices
    assert a.compute_bytes == 0 and "unverified_build_margin_bytes" not in a.detail and a.budget_bytes == 23 * GiB
    assert b.detail["unverified_build_margin_bytes"] == max(256 * MiB, int(0.25 * b.compute_bytes))
    tiny = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096, engine_version="b11400"), hw_gpu(1), margin=GiB)
    assert tiny.devices[0].budget_bytes == 0  # 1 GiB less the margin less the extra: nothing, not below zero


def test_kv_layout_defaults_and_clamps():
    # n_ctx 0 takes the trained context; the batch is capped at the context, the ubatch at the batch (0 = the batch)
    spec, _ = get_model("gemma-3-1b")  # trained on 32768
    lay = llamacpp_kv_layout(spec, RuntimeSettings(n_ctx=0, n_batch=4096, n_ubatch=0))
    assert (lay.n_ctx, lay.n_ctx_seq, lay.n_batch, lay.n_ubatch) == (32768, 32768, 4096, 4096)
    small = llamacpp_kv_layout(spec, RuntimeSettings(n_ctx=300, n_batch=2048, n_ubatch=1024))
    assert (small.n_ctx, small.n_batch, small.n_ubatch, small.n_stream) == (512, 512, 512, 1)
    zero = llamacpp_kv_layout(spec, RuntimeSettings(n_ctx=4096, n_parallel=0))
    assert (zero.n_stream, zero.n_ctx_seq) == (1, 4096)  # no slots asked: one stream
    one = llamacpp_kv_layout(spec, RuntimeSettings(n_ctx=1))
    assert one.n_ctx == one.n_ctx_seq == 256  # a 1-token context is padded, not replaced by the trained one
    four = llamacpp_kv_layout(spec, RuntimeSettings(n_ctx=30000, n_parallel=4))  # 30208 cells / 4 -> pad256(7552) = 7680
    assert (four.n_ctx, four.n_ctx_seq, four.n_stream) == (30720, 7680, 4)
    assert all(isinstance(v, int) for v in (four.n_ctx, four.n_ctx_seq, four.swa_cells, four.n_batch, four.n_ubatch))


def test_rdna3_moe_experts_keep_mmq_at_large_batches():
    # RDNA3 (gfx1100) at 512 tokens: Q2_K weights go to hipBLAS (limit 128), except a MoE expert stack of 64 or more
    # experts, which stays on MMQ. Gemma 4 26B-A4B Q2_K, layer 3: the Q2_K attn_q (4096 x 2816) dequantized to F16
    # is the largest temporary; the Q2_K gate_up experts (128 of them, 8 used per token) only quantize activations.
    from planner.memory import gpu_pool_bytes

    moe, _ = get_model("gemma-4-26b-a4b")
    rdna3 = Device("RX 7900", "amd", "ROCm", 24 * GiB, 10**12, compute_capability="gfx1100")
    pool = gpu_pool_bytes(moe, parse_format("Q2_K"), rdna3, 512, {3})
    assert pool == 2 * 4096 * 2816 + 2 * 512 * (2816 + 4096) == 30_146_560
    assert pool > 512 * 8 * 3072 * 36 // 32  # the expert stack's MMQ temporary


def test_pool_and_compute_bytes_are_integers():
    # byte counts reach the JSON output as integers
    spec, _ = get_model("gemma-3-4b")
    m = llamacpp_memory(spec, parse_format("Q4_K_M"), RuntimeSettings(n_ctx=4096), hw_gpu())
    for d in m.devices:
        assert all(isinstance(v, int) for v in (d.weights_bytes, d.kv_bytes, d.compute_bytes, d.overhead_bytes, d.output_bytes))
        assert all(isinstance(v, int) for v in d.detail.values())


def test_unverified_margin_is_a_quarter_of_a_large_compute_buffer():
    # Gemma 3 27B without flash attention at 32768 cells: a compute buffer over 2 GiB, so 25% of it (not 256 MiB)
    spec, _ = get_model("gemma-3-27b")
    s = RuntimeSettings(n_ctx=32768, flash_attn=False, engine_version="b11400")
    gpu = llamacpp_memory(spec, parse_format("Q4_K_M"), s, hw_gpu(80)).devices[0]
    assert gpu.compute_bytes > 2 * GiB and gpu.detail["unverified_build_margin_bytes"] == int(0.25 * gpu.compute_bytes)


def test_volta_moe_expert_stacks_use_cublas_with_their_row_length():
    # Volta at 512 tokens: an expert stack [experts, rows, K] is dequantized like a matrix of its rows x K, with
    # 8 used experts x 512 tokens of activations: gate_up (1408 x 2816) is the largest of 26B-A4B's layer 3
    from planner.memory import gpu_pool_bytes

    moe, _ = get_model("gemma-4-26b-a4b")
    volta = Device("V100", "nvidia", "CUDA", 32 * GiB, 10**12, compute_capability="7.0")
    assert gpu_pool_bytes(moe, parse_format("Q4_K_M"), volta, 512, {3}) == 2 * 1408 * 2816 + 2 * 4096 * (2816 + 1408)


def test_untied_output_is_placed_and_offloaded_like_any_weight():
    # a model with its own output.weight (not tied): no duplicate copy; with -ngl 0 the CPU holds it and the
    # largest CPU matmul is that output matrix; -ngl 1 puts it (and output_norm) on the GPU
    import dataclasses

    from planner.formats import tensor_sizes
    from planner.types import TensorSpec

    base, _ = get_model("gemma-3-1b")
    out = TensorSpec("output.weight", (base.vocab, base.hidden), None, "BF16")
    norm = next(t for t in base.tensors if t.name == "output_norm.weight")  # after the matrix, as converters write it
    spec = dataclasses.replace(base, tensors=tuple(t for t in base.tensors if t is not norm) + (out, norm), tied_embeddings=False)
    fmt = parse_format("Q8_0")
    sizes = dict((t.name, b) for t, b in tensor_sizes(spec, fmt))
    one = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=4096, n_gpu_layers=1), hw_gpu())
    assert one.devices[0].weights_bytes == sizes["output.weight"] + sizes["output_norm.weight"]
    assert "tied_output_copy_bytes" not in one.devices[0].detail
    zero = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=4096, n_gpu_layers=0), hw_gpu())
    assert zero.devices[-1].weights_bytes == sum(sizes.values()) and "tied_output_copy_bytes" not in zero.devices[-1].detail
    # on an Arm host with i8mm (repacks Q8_0) the CPU-resident output matrix gets a CPU_REPACK copy too
    q4 = parse_format("Q4_0")
    q4_sizes = dict((t.name, b) for t, b in tensor_sizes(spec, q4))
    arm = llamacpp_memory(spec, q4, RuntimeSettings(n_ctx=4096, n_gpu_layers=0), hw_gpu(flags=("neon", "i8mm"))).devices[-1]
    arm_gpu = llamacpp_memory(spec, q4, RuntimeSettings(n_ctx=4096, n_gpu_layers=1), hw_gpu(flags=("neon", "i8mm"))).devices[-1]
    assert arm.detail["repack_bytes"] - arm_gpu.detail["repack_bytes"] == q4_sizes["output.weight"]  # Q8_0: 1152-wide rows



def test_cpu_moe_keeps_the_experts_and_their_repack_on_the_host():
    # Gemma 4 26B-A4B Q4_K_M, --cpu-moe, AVX2: the expert stacks stay on the CPU; the Q4_K ones (gate_up, 128 x 1408
    # x 2816, one per layer over 30 layers) get a CPU_REPACK copy; the GPU's compute buffer takes a copy of the
    # largest (op offload); the host runs a compute buffer of its own (the whole graph's)
    spec, _ = get_model("gemma-4-26b-a4b")
    fmt = parse_format("Q4_K_M")
    full = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192), hw_gpu(80))
    moe = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192, experts_on_cpu=True), hw_gpu(80))
    gate_up = 128 * 1408 * 2816 // 256 * 144
    assert moe.devices[-1].detail["repack_bytes"] == 30 * gate_up
    assert moe.devices[0].compute_bytes == full.devices[0].compute_bytes + gate_up
    assert moe.devices[-1].compute_bytes == full.devices[0].compute_bytes
    assert "repack_bytes" not in full.devices[-1].detail
    # the GPU's pool leaves the experts out (they run on the CPU): its largest temporary is a full-attention layer's
    # output projection (K = 16 heads x 512), not the expert stack's (gate_up: 8 x 512 rows of 2816 -> 3072)
    assert moe.devices[0].detail["pool_bytes"] == 512 * 8192 * 36 // 32
    assert full.devices[0].detail["pool_bytes"] == 512 * 8 * 3072 * 36 // 32


def test_breakdown_edges_versions_budgets_and_unknown_backends():
    from planner.types import LLAMA_CPP_VERSION

    spec, _ = get_model("gemma-3-1b")
    fmt = parse_format("Q4_K_M")
    # the default build is named as vendored (with its commit), not by the generic label
    m = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=4096), hw_gpu())
    assert m.engine_version == LLAMA_CPP_VERSION == "llama.cpp b11312 (0c1e57098, as vendored in llama-cpp-python 0.3.36)"
    # a margin above the device and the host: budgets of 0, not negative
    tight = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=4096), Hardware("t", [Device("GPU", "nvidia", "CUDA", GiB, 10**12)],
                                                                           GiB, CPU(flags=["avx2"])), margin=2 * GiB)
    assert [d.budget_bytes for d in tight.devices] == [0, 0]
    # an OpenCL GPU (no runtime reserve known, no CUDA pool): nothing added beyond its buffers
    ocl = Hardware("o", [Device("Adreno", "qualcomm", "OpenCL", 8 * GiB, 10**11)], 16 * GiB, CPU(flags=["neon", "dotprod"]))
    gpu = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=4096), ocl).devices[0]
    assert gpu.weights_bytes > 0 and gpu.overhead_bytes == 0 and "pool_bytes" not in gpu.detail


def test_kv_groups_memo_keeps_flash_attention_apart():
    # without flash attention V is padded to the widest V; the per-spec memo must not hand one layout to the other
    spec, _ = get_model("gemma-4-31b")
    fa = llamacpp_kv_bytes(spec, RuntimeSettings(n_ctx=8192))
    no_fa = llamacpp_kv_bytes(spec, RuntimeSettings(n_ctx=8192, flash_attn=False))
    assert fa == 10 * 8192 * 4 * 512 * 2 * 2 + 50 * 1536 * 16 * 256 * 2 * 2
    assert no_fa == 10 * 8192 * (2048 + 4096) * 2 + 50 * 1536 * 4096 * 2 * 2


def test_attention_phases_when_they_are_the_peak():
    # Shapes where attention outgrows the FFN (one reserved output, so the logits stay small): with flash attention
    # the residual, Q and the attention output; without it, one layer's F32 KQ scores over its own cache (a sliding
    # layer over its window, not the whole context)
    import dataclasses

    from planner.memory import _graph_input_bytes, _llamacpp_compute_bytes

    base, _ = get_model("gemma-3-4b")  # hidden 2560, 8 heads of 256, FFN 10240, window 1024

    def above_inputs(spec, **kw):
        s = RuntimeSettings(n_outputs_max=1, **kw)
        layout = llamacpp_kv_layout(spec, s)
        return _llamacpp_compute_bytes(spec, s, layout) - _graph_input_bytes(spec, s, layout)

    narrow = dataclasses.replace(base, layers=tuple(dataclasses.replace(lay, n_ff=256) for lay in base.layers))
    assert above_inputs(narrow, n_ctx=4096) == 4 * 512 * 2560 + 2 * (4 * 512 * 8 * 256)
    sliding = dataclasses.replace(base, layers=tuple(dataclasses.replace(lay, sliding=True) for lay in base.layers))
    # every layer slides: KQ over pad256(1024 + 512) = 1536 cells (38.8 MB) stays below the FFN phase at 32768 cells
    assert above_inputs(sliding, n_ctx=32768, flash_attn=False) == 4 * 512 * (2 * 2560 + 3 * 10240)
    assert above_inputs(base, n_ctx=32768, flash_attn=False) == 4 * 512 * 2560 + 2 * (4 * 512 * 8 * 256) + 4 * 32768 * 512 * 8


def test_a_model_without_sliding_layers_has_one_cache_of_inputs():
    # graph inputs per KV cache: k_idxs, v_idxs and the mask; no sliding layer, no second cache
    import dataclasses

    from planner.memory import _graph_input_bytes

    base, _ = get_model("gemma-3-4b")
    full = dataclasses.replace(base, layers=tuple(dataclasses.replace(lay, sliding=False) for lay in base.layers))
    s = RuntimeSettings(n_ctx=8192)
    layout = llamacpp_kv_layout(full, s)
    assert _graph_input_bytes(full, s, layout) == 3 * 4 * 512 + 4 * 512 * 2560 + 8 * 512 + 8 * 512 + 2 * 8192 * 512


def test_a_gguf_source_is_planned_with_its_own_tensor_types():
    # a GGUF read from disk and planned at its own file type keeps each tensor's real type: here a file labelled
    # Q4_0 whose matrices are all Q8_0 (made with --tensor-type overrides); on an AVX2 host Q8_0 is not repacked,
    # so -ngl 0 makes no CPU_REPACK copy, where the Q4_0 rule would have repacked nearly every matrix
    import dataclasses

    from planner.formats import tensor_bytes
    from planner.types import TensorSpec

    base, _ = get_model("gemma-3-1b")
    ts = tuple(TensorSpec(t.name, t.shape, t.layer, "Q8_0" if len(t.shape) > 1 else "F32",
                          tensor_bytes("Q8_0" if len(t.shape) > 1 else "F32", t.shape)) for t in base.tensors)
    spec = dataclasses.replace(base, tensors=ts, gguf_file_type="Q4_0")
    host = llamacpp_memory(spec, parse_format("Q4_0"), RuntimeSettings(n_ctx=4096, n_gpu_layers=0), hw_gpu()).devices[-1]
    assert host.weights_bytes == sum(t.nbytes for t in ts) and "repack_bytes" not in host.detail
    rule = llamacpp_memory(base, parse_format("Q4_0"), RuntimeSettings(n_ctx=4096, n_gpu_layers=0), hw_gpu()).devices[-1]
    assert rule.detail["repack_bytes"] > 0


def test_global_tensors_without_a_block_go_with_layer_0_and_rope_with_the_first_full_layer():
    # LLM_TENSOR_INFOS files rope_freqs with the first full-attention layer (layer 0 when every layer slides) and any
    # other block-less tensor that is neither input nor output with layer 0
    import dataclasses

    from planner.formats import tensor_sizes
    from planner.memory import repack_types, weights_by_placement
    from planner.types import TensorSpec

    base, _ = get_model("gemma-4-e2b")
    extra = TensorSpec("mystery.weight", (256, 1536), None, "BF16")
    spec = dataclasses.replace(base, tensors=base.tensors + (extra,),
                               layers=tuple(dataclasses.replace(lay, sliding=True) for lay in base.layers))
    fmt = parse_format("Q8_0")
    sizes = dict((t.name, b) for t, b in tensor_sizes(spec, fmt))
    w = weights_by_placement(spec, fmt, frozenset(repack_types(["avx2"])))
    at0 = ("rope_freqs.weight", "mystery.weight", "per_layer_model_proj.weight", "per_layer_proj_norm.weight")
    assert w.layer_bytes[0] == sum(b for n, b in sizes.items() if n.startswith("blk.0.") or n in at0)
    assert w.layer_bytes[1] == sum(b for n, b in sizes.items() if n.startswith("blk.1."))


def test_weights_by_placement_groups_bytes_by_llama_cpp_layer():
    # called directly (the speed model does) on a model seen for the first time: input, output and per-layer bytes
    from planner.formats import tensor_sizes
    from planner.memory import repack_types, weights_by_placement

    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    w = weights_by_placement(spec, fmt, frozenset(repack_types(["avx2"])))
    sizes = dict((t.name, b) for t, b in tensor_sizes(spec, fmt))
    assert w.input_bytes == w.tied_bytes == sizes["token_embd.weight"]
    assert w.output_bytes == sizes["output_norm.weight"] and w.output_max_matmul == 0  # tied: no output matrix of its own
    assert w.layer_bytes[7] == sum(b for n, b in sizes.items() if n.startswith("blk.7."))
    assert w.layer_max_matmul[9] == 2560 * 10240 // 256 * 210  # layer 9: ffn_down Q6_K (use_more_bits: (9 - 34/8) % 3 == 2)
    assert w.layer_max_matmul[7] == 10240 * 2560 // 256 * 144  # layer 7: Q4_K, the gate/up (10240 x 2560) are the largest
    assert sum(w.layer_bytes) + w.input_bytes + w.output_bytes == sum(sizes.values())
    assert w.layer_expert_bytes == [0] * 34 and w.repack_types == frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"})


def test_compute_phases_of_moe_and_per_layer_embeddings():
    # One reserved output (llama-server with one slot), flash attention, ubatch 512: the logits are small and the
    # peak is the graph inputs plus the largest phase.
    import dataclasses

    from planner.memory import _graph_input_bytes, _llamacpp_compute_bytes

    s = RuntimeSettings(n_ctx=4096, n_outputs_max=1)

    def above_inputs(spec):
        layout = llamacpp_kv_layout(spec, s)
        return _llamacpp_compute_bytes(spec, s, layout) - _graph_input_bytes(spec, s, layout)

    # 26B-A4B (hidden 2816, 8 of 128 experts of width 704): the routed experts' phase, the residual, a freed hidden
    # tensor, the chosen experts' fused gate+up rows, their GEGLU and the down projection's per-expert outputs
    moe, _ = get_model("gemma-4-26b-a4b")
    assert above_inputs(moe) == 4 * 512 * (3 * 8 * 704 + 2 * 2816 + 8 * 2816)
    # E2B (hidden 1536, widest FFN 12288, per-layer embeddings 256 x 35 layers): the widest FFN phase with the
    # combined per-layer inputs alive beside it
    e2b, _ = get_model("gemma-4-e2b")
    ff = max(lay.n_ff for lay in e2b.layers)
    assert ff == 12288 and above_inputs(e2b) == 4 * 512 * (2 * 1536 + 3 * ff) + 4 * 512 * 256 * 35
    # per-layer embeddings 4x wider: building them (scaled rows above the freed raw rows, projection, norm: four
    # tables' worth over the hidden state) is the peak
    wide = dataclasses.replace(e2b, ple_dim=1024)
    assert above_inputs(wide) == 4 * 512 * 1536 + 4 * (4 * 512 * 1024 * 35)


def test_cpu_moe_on_a_dense_model_changes_nothing():
    # --cpu-moe (-ot exps=CPU) matches no tensor of a dense model: every weight stays on the GPU, no host weight is
    # copied into the GPU's compute buffer and the host keeps the inputs-only buffer of a full offload
    spec, _ = get_model("gemma-3-4b")
    fmt = parse_format("Q4_K_M")
    full = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192), hw_gpu())
    cpu_moe = llamacpp_memory(spec, fmt, RuntimeSettings(n_ctx=8192, experts_on_cpu=True), hw_gpu())
    assert [d.to_dict() for d in cpu_moe.devices] == [d.to_dict() for d in full.devices]

