"""Memory model: ModelSpec x WeightFormat x RuntimeSettings x Hardware -> MemoryBreakdown, per device.

Pure arithmetic, no I/O. Each engine's rules are written out with the function they mirror:
- llama.cpp as vendored in llama-cpp-python 0.3.36 (``LLAMA_CPP_VERSION``);
- vLLM 0.33 (planner/vllm_memory.py: request_memory, determine_available_memory, kv_cache_planning);
- transformers 5.x (get_memory_footprint, DynamicCache / StaticCache layouts).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from planner.errors import InvalidSettingsError
from planner import policy
from planner.formats import WeightFormat, gguf_tensor_types, row_bytes, tensor_sizes
from planner.types import (
    LLAMA_CPP_VERSION,
    TRANSFORMERS_VERSION,
    DeviceMemory,
    MemoryBreakdown,
    ModelSpec,
    RuntimeSettings,
    TensorSpec,
)
from planner.llama_versions import DEFAULT_BUILD, UNVERIFIED_MARGIN_FRACTION, UNVERIFIED_MARGIN_MIN, LlamaBuild, parse_build, version_label
from profiles.hardware import Device, Hardware
from profiles.units import GiB, MiB

# Runtime memory no llama.cpp log line reports (CUDA context, cuBLAS workspaces): the reserve
# Ollama keeps per GPU (ml/device.go MinimumMemory: 457 MiB CUDA/ROCm, 512 MiB Metal).
RUNTIME_OVERHEAD = {"CUDA": 457 * MiB, "ROCm": 457 * MiB, "Metal": 512 * MiB, "Vulkan": 457 * MiB, "CPU": 0}
# Safety margin kept free on every device unless --margin says otherwise (llama.cpp --fit's default target).
DEFAULT_MARGIN = 1 * GiB
CPU_NAME = "CPU"


def pad(x: int, n: int) -> int:
    return (x + n - 1) // n * n


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------- llama.cpp: KV cache


@dataclass(frozen=True)
class KVCells:
    """Cell counts of llama.cpp's KV caches for one setting (not to be confused with quantize.llamacpp.KVLayout,
    the per-layer widths read back from a GGUF)."""

    n_ctx: int  # padded total cells over all streams (cparams.n_ctx)
    n_ctx_seq: int  # cells per stream of the full-attention cache
    n_stream: int
    swa_cells: int  # cells per stream of the sliding-window cache
    n_ubatch: int
    n_batch: int


def llamacpp_kv_layout(spec: ModelSpec, s: RuntimeSettings) -> KVCells:
    """Context padding and stream split (llama_context constructor, llama-context.cpp)."""
    n_seq = max(1, s.n_parallel)
    n_ctx = pad(s.n_ctx if s.n_ctx > 0 else spec.ctx_train, 256)
    if s.kv_unified:
        n_ctx_seq = n_ctx
    else:
        n_ctx_seq = pad(n_ctx // n_seq, 256)
        n_ctx = n_ctx_seq * n_seq
    n_batch = min(n_ctx, s.n_batch)
    n_ubatch = min(n_batch, s.n_ubatch or n_batch)
    n_stream = 1 if s.kv_unified else n_seq
    # llama_kv_cache_iswa: size_swa = PAD(min(size_base, n_swa*(unified ? n_seq : 1) + n_ubatch), 256)
    if s.swa_full:
        swa = n_ctx_seq
    else:
        swa = pad(min(n_ctx_seq, spec.sliding_window * (n_seq if s.kv_unified else 1) + n_ubatch), 256)
    return KVCells(n_ctx, n_ctx_seq, n_stream, swa, n_ubatch, n_batch)


def check_kv_types(spec: ModelSpec, s: RuntimeSettings) -> None:
    policy.check_kv_types(s.type_k, s.type_v, s.flash_attn)


def llamacpp_kv_layer_bytes(spec: ModelSpec, s: RuntimeSettings, layout: Optional[KVCells] = None) -> dict[int, int]:
    """Bytes of K+V per KV-storing layer (llama_kv_cache constructor, llama-kv-cache.cpp)."""
    layout = layout or llamacpp_kv_layout(spec, s)
    out = {}
    for sliding, nk, nv, layers in _kv_groups(spec, s.flash_attn):
        out.update(dict.fromkeys(layers, _kv_group_layer_bytes(s, layout, sliding, nk, nv)))
    return dict(sorted(out.items()))


def _kv_group_layer_bytes(s: RuntimeSettings, layout: KVCells, sliding: bool, nk: int, nv: int) -> int:
    """K+V bytes of one layer of a KV group: its cache's cells per stream, every stream, one K and one V row each."""
    cells = (layout.swa_cells if sliding else layout.n_ctx_seq) * layout.n_stream
    return cells * (row_bytes(s.type_k, nk) + row_bytes(s.type_v, nv))


def _kv_shares(spec: ModelSpec, flash_attn: bool, dev_of: Optional[tuple]) -> tuple:
    """Per device (None = the host), in the order of its first KV layer, the KV groups (_kv_groups index) it holds
    and how many layers of each, in the order of their first layer there; ``dev_of`` None puts every layer on the
    host (offload_kqv off). Once per (spec, placement)."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    key = ("kv shares", flash_attn, dev_of)
    hit = per_spec.get(key)
    if hit is not None:
        return hit
    group_of = {il: g for g, (*_, layers) in enumerate(_kv_groups(spec, flash_attn)) for il in layers}
    shares: dict = {}
    for lay in spec.kv_layers:
        per_dev = shares.setdefault(dev_of[lay.index] if dev_of is not None else None, {})
        g = group_of[lay.index]
        per_dev[g] = per_dev.get(g, 0) + 1
    out = per_spec[key] = tuple((idx, tuple(per_dev.items())) for idx, per_dev in shares.items())
    return out


def _held(spec: ModelSpec, dev_of: tuple, i: int) -> frozenset:
    """The repeating layers GPU ``i`` holds, and None for the output layer if it holds that; once per placement."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    key = ("held", dev_of, i)
    hit = per_spec.get(key)
    if hit is None:
        L = spec.n_layers
        hit = per_spec[key] = frozenset(il for il, dv in enumerate(dev_of[:L]) if dv == i) | (
            frozenset({None}) if dev_of[L] == i else frozenset())
    return hit


def _kv_groups(spec: ModelSpec, flash_attn: bool) -> tuple:
    """(sliding, K row width, V row width, layer indices) per distinct KV-storing layer shape, once per spec:
    without flash attention V is stored transposed and padded to the widest V of the model."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    key = ("kv groups", flash_attn)
    hit = per_spec.get(key)
    if hit is not None:
        return hit
    v_max = max(lay.n_head_kv * lay.head_dim_v for lay in spec.layers)
    groups: dict = {}
    for lay in spec.kv_layers:
        nv = lay.n_head_kv * lay.head_dim_v if flash_attn else v_max
        groups.setdefault((lay.sliding, lay.n_head_kv * lay.head_dim_k, nv), []).append(lay.index)
    out = per_spec[key] = tuple((*g, tuple(idx)) for g, idx in groups.items())
    return out


def llamacpp_kv_bytes(spec: ModelSpec, s: RuntimeSettings) -> int:
    return sum(llamacpp_kv_layer_bytes(spec, s).values())


# ---------------------------------------------------------------- llama.cpp: placement


def layer_devices(n_layer: int, ngl: int, gpus: list[Device], split: Optional[list[float]]) -> list[Optional[int]]:
    """Device index per layer 0..n_layer (n_layer = output layer); None = CPU.

    Mirrors llama_model_base::load_tensors (LC-new): -ngl k offloads the output layer and the
    last k-1 repeating layers; layers are split over GPUs by cumulative tensor_split fractions.
    """
    if not gpus:
        return [None] * (n_layer + 1)
    weights = tuple(split or [float(d.usable_bytes()) for d in gpus])
    return list(_layer_devices(n_layer, ngl, weights))


@lru_cache(maxsize=1024)
def _layer_devices(n_layer: int, ngl: int, weights: tuple[float, ...]) -> tuple[Optional[int], ...]:
    n_gpus = len(weights)
    if ngl < 0:
        ngl = n_layer + 1
    act = min(ngl, n_layer + 1)
    start = max(n_layer + 1 - ngl, 0)
    total = sum(weights) or 1.0
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    out: list[Optional[int]] = []
    for il in range(n_layer + 1):
        if il < start:
            out.append(None)
            continue
        frac = (il - start) / act
        idx = next((i for i, c in enumerate(cum) if frac < c), n_gpus - 1)
        out.append(idx)
    return tuple(out)


def _tensor_layer_role(t: TensorSpec, spec: ModelSpec) -> tuple[str, Optional[int]]:
    """('input'|'output'|'repeating', layer) as in LLM_TENSOR_INFOS (llama-arch.cpp)."""
    if t.name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "input", None
    if t.name in ("output.weight", "output_norm.weight") or t.name.startswith("altup_"):
        return "output", None
    if t.layer is not None:
        return "repeating", t.layer
    if t.name.startswith("per_layer_"):
        return "repeating", 0
    if t.name.startswith("rope_freqs"):
        first_full = next((lay.index for lay in spec.layers if not lay.sliding), 0)
        return "repeating", first_full
    return "repeating", 0


# ggml-cpu extra buffer (repack.cpp ggml_repack_get_optimal_repack_type): types repacked for matmul.
def repack_types(cpu_flags: list[str]) -> set[str]:
    flags = {f.lower() for f in cpu_flags}
    out: set[str] = set()
    if "avx2" in flags:
        out |= {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
        if any(f.startswith("avx512") for f in flags):
            out.add("Q2_K")
    if "neon" in flags or "asimd" in flags:
        if "asimddp" in flags or "dotprod" in flags or "i8mm" in flags:
            out |= {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4"}
        if "i8mm" in flags:
            out.add("Q8_0")
    return out


@dataclass
class WeightsByPlacement:
    """Per-tensor GGUF sizes grouped by where llama.cpp places them (computed once per model and format)."""

    input_bytes: int
    output_bytes: int
    tied_bytes: int  # token_embd size: the duplicated output matrix of tied models
    layer_bytes: list[int]  # repeating layer il (incl. global tensors llama.cpp files under a layer)
    layer_expert_bytes: list[int]  # MoE expert stacks per layer (movable to CPU with -ot)
    layer_repack: list[int]  # bytes of repackable-type tensors per layer (if CPU-resident)
    layer_expert_repack: list[int]
    output_repack: int
    layer_max_matmul: list[int]  # largest matmul weight per layer (op-offload copy)
    output_max_matmul: int
    repack_types: frozenset


# derived per (spec, format, repack types); specs are frozen, so the spec object itself is the key
_WEIGHTS_CACHE: "weakref.WeakKeyDictionary[ModelSpec, dict]" = weakref.WeakKeyDictionary()


def _gguf_types(spec: ModelSpec, fmt: WeightFormat) -> tuple[tuple[TensorSpec, str, int], ...]:
    """(tensor, GGUF type, bytes) per tensor, once per (spec, format)."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    key = ("typed", fmt)
    hit = per_spec.get(key)
    if hit is not None:
        return hit
    sizes = [b for _, b in tensor_sizes(spec, fmt)]
    if spec.gguf_file_type and spec.gguf_file_type.upper() == fmt.name:
        out = tuple((t, t.dtype, b) for t, b in zip(spec.tensors, sizes))
    else:
        out = tuple((t, typ, b) for (t, typ), b in zip(gguf_tensor_types(spec, fmt.name), sizes))
    per_spec[key] = out
    return out


def _roles(spec: ModelSpec) -> tuple[tuple[str, Optional[int], bool], ...]:
    """(role, layer, rows a multiple of 8) per tensor: where each tensor goes does not depend on the format."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    roles = per_spec.get("roles")
    if roles is None:
        roles = per_spec["roles"] = tuple((*_tensor_layer_role(t, spec), len(t.shape) >= 2 and t.shape[-2] % 8 == 0)
                                          for t in spec.tensors)
    return roles


def weights_by_placement(spec: ModelSpec, fmt: WeightFormat, repackable: frozenset) -> WeightsByPlacement:
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    hit = per_spec.get((fmt, repackable))
    if hit is not None:
        return hit
    L = spec.n_layers
    layer_bytes, expert_bytes, layer_repack, expert_repack, layer_max = [0] * L, [0] * L, [0] * L, [0] * L, [0] * L
    input_bytes = output_bytes = output_repack = output_max = tied = 0
    for (t, typ, nbytes), (role, layer, rows8) in zip(_gguf_types(spec, fmt), _roles(spec)):
        rep = nbytes if (rows8 and typ in repackable) else 0
        if role == "repeating":
            if "_exps." in t.name:
                expert_bytes[layer] += nbytes
                expert_repack[layer] += rep
                layer_max[layer] = max(layer_max[layer], nbytes)
            else:
                layer_bytes[layer] += nbytes
                layer_repack[layer] += rep
                if len(t.shape) >= 2:
                    layer_max[layer] = max(layer_max[layer], nbytes)
        elif role == "input":
            input_bytes += nbytes
            if t.name == "token_embd.weight" and spec.tied_embeddings:
                tied = nbytes
        else:  # output
            output_bytes += nbytes
            output_repack += rep
            if len(t.shape) >= 2:
                output_max = max(output_max, nbytes)
    w = WeightsByPlacement(input_bytes, output_bytes, tied, layer_bytes, expert_bytes, layer_repack, expert_repack, output_repack,
                           layer_max, output_max, repackable)
    per_spec[(fmt, repackable)] = w
    return w


@dataclass(frozen=True)
class _Placed:
    """Weights per device for one placement of the layers."""

    devices: tuple  # per GPU, then the host: (weights bytes, repeating layers, detail items in order)
    cpu_matmul_max: int  # largest CPU-resident matmul weight (the op-offload copy)


def _placed_weights(spec: ModelSpec, fmt: WeightFormat, repackable: frozenset, dev_of: tuple, n_gpus: int,
                    experts_on_cpu: bool, use_mmap: bool) -> _Placed:
    """Weight bytes, layer counts and named parts per device for one placement (llama_model_base::load_tensors)."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    key = ("placed", fmt, repackable, dev_of, n_gpus, experts_on_cpu, use_mmap)
    hit = per_spec.get(key)
    if hit is not None:
        return hit
    L = spec.n_layers
    w = weights_by_placement(spec, fmt, repackable)
    mems = [DeviceMemory("") for _ in range(n_gpus)]
    host = DeviceMemory(CPU_NAME)
    out_dev = dev_of[L]

    def mem(idx: Optional[int]) -> DeviceMemory:
        return host if idx is None else mems[idx]

    def add_repack(nbytes: int) -> None:
        if nbytes:
            host.detail["repack_bytes"] = host.detail.get("repack_bytes", 0) + nbytes

    # input layer (token embeddings, PLE table): always on the CPU
    host.weights_bytes += w.input_bytes
    cpu_matmul_max = 0
    mem(out_dev).weights_bytes += w.output_bytes
    if out_dev is None:
        add_repack(w.output_repack)
        cpu_matmul_max = max(w.output_max_matmul, w.tied_bytes)
    if w.tied_bytes:
        # the tied output matrix is created TENSOR_DUPLICATED: a second copy on the output device
        if out_dev is not None:
            mems[out_dev].weights_bytes += w.tied_bytes
            mems[out_dev].detail["tied_output_copy_bytes"] = w.tied_bytes
        elif spec.arch == "gemma4" and not use_mmap:
            host.weights_bytes += w.tied_bytes
            host.detail["tied_output_copy_bytes"] = w.tied_bytes
    for il in range(L):
        d = dev_of[il]
        mem(d).weights_bytes += w.layer_bytes[il]
        ed = None if experts_on_cpu else d
        mem(ed).weights_bytes += w.layer_expert_bytes[il]
        if d is None:
            add_repack(w.layer_repack[il])
            cpu_matmul_max = max(cpu_matmul_max, w.layer_max_matmul[il])
        if ed is None and w.layer_expert_bytes[il]:  # --cpu-moe moves expert stacks only: a dense layer stays put
            add_repack(w.layer_expert_repack[il])
            cpu_matmul_max = max(cpu_matmul_max, w.layer_max_matmul[il])
    for d in dev_of[:L]:
        mem(d).layers += 1
    out = _Placed(tuple((m.weights_bytes, m.layers, tuple(m.detail.items())) for m in mems + [host]), cpu_matmul_max)
    per_spec[key] = out
    return out


def llamacpp_memory(spec: ModelSpec, fmt: WeightFormat, s: RuntimeSettings, hw: Hardware, margin: int = DEFAULT_MARGIN) -> MemoryBreakdown:
    check_kv_types(spec, s)
    layout = llamacpp_kv_layout(spec, s)
    gpus = list(hw.devices)
    L = spec.n_layers
    dev_of = layer_devices(L, s.n_gpu_layers, gpus, s.tensor_split)
    names = [d.name if len({g.name for g in gpus}) == len(gpus) else f"{d.name} #{i}" for i, d in enumerate(gpus)]
    mems = [DeviceMemory(n) for n in names]
    host = DeviceMemory(CPU_NAME)
    out_dev = dev_of[L]

    def mem(idx: Optional[int]) -> DeviceMemory:
        return host if idx is None else mems[idx]

    # weights by device: the same for every context, so computed once per placement
    placed = _placed_weights(spec, fmt, frozenset(repack_types(hw.cpu.flags)), tuple(dev_of), len(gpus), s.experts_on_cpu,
                             s.use_mmap)
    for m, (weights, layers, detail) in zip(mems + [host], placed.devices):
        m.weights_bytes, m.layers = weights, layers
        m.detail.update(detail)
    cpu_matmul_max = placed.cpu_matmul_max

    # KV lives with its layer's weights unless offload_kqv is off: each device's share is its layers of each KV shape
    # (llamacpp_kv_layer_bytes) times that shape's bytes
    dev_key = tuple(dev_of)
    groups = _kv_groups(spec, s.flash_attn)
    for idx, shares in _kv_shares(spec, s.flash_attn, dev_key if s.offload_kqv else None):
        m = mem(idx)
        for g, count in shares:
            sliding, nk, nv, _ = groups[g]
            nbytes = count * _kv_group_layer_bytes(s, layout, sliding, nk, nv)
            m.kv_bytes += nbytes
            key = "kv_swa_bytes" if sliding else "kv_full_bytes"
            m.detail[key] = m.detail.get(key, 0) + nbytes

    # Compute buffers: worst-case ubatch graph reserved at context creation (sched_reserve).
    build, build_verified = _build_of(s)
    main = _llamacpp_compute_bytes(spec, s, layout)
    used = set(dev_of)
    on_gpu = [i for i in range(len(gpus)) if i in used]
    if on_gpu:
        for i in on_gpu:
            mems[i].compute_bytes = main
        partial = any(d is None for d in dev_of[:L + 1]) or (s.experts_on_cpu and spec.moe is not None)
        if partial:
            # op offload copies a host-resident weight into the GPU buffer as a split input
            mems[out_dev if out_dev is not None else on_gpu[-1]].compute_bytes += cpu_matmul_max
            host.compute_bytes = main
        else:
            host.compute_bytes = gpu_host_compute_bytes(spec, s, layout, build)
    else:
        host.compute_bytes = main
    host.output_bytes = 4 * spec.vocab * max(1, s.n_parallel)  # output_reserve: n_vocab * n_seq_max floats

    for i, (m, d) in enumerate(zip(mems, gpus)):
        m.overhead_bytes = RUNTIME_OVERHEAD.get(d.backend, 0) if (m.weights_bytes or m.kv_bytes) else 0
        held = _held(spec, dev_key, i)
        pool = gpu_pool_bytes(spec, fmt, d, layout.n_ubatch, held, s.experts_on_cpu) if held else 0
        if pool:
            m.overhead_bytes += pool
            m.detail["pool_bytes"] = pool
        m.capacity_bytes = d.usable_bytes()
        m.budget_bytes = max(0, m.capacity_bytes - margin)
    host.capacity_bytes = _host_capacity(hw, mems)
    host.budget_bytes = max(0, host.capacity_bytes - margin)
    notes = []
    if on_gpu:
        notes += _gpu_backend_notes(gpus, mems, build, build_verified, margin)
    if host.detail.get("repack_bytes"):
        notes.append("CPU-resident tensors of repackable types are copied into a CPU_REPACK buffer (anonymous memory)")
    devices = mems + [host]
    return MemoryBreakdown(
        "llama.cpp",
        LLAMA_CPP_VERSION if build.name == DEFAULT_BUILD else version_label(build),
        devices,
        kv_cells={"full": layout.n_ctx_seq, "swa": layout.swa_cells, "streams": layout.n_stream, "n_ctx": layout.n_ctx},
        notes=notes,
    )


def _kv_caches(spec: ModelSpec) -> tuple[int, tuple]:
    """The widest V row of the KV-storing layers, and per cache (full, then sliding if any layer slides) its
    layers' K and V head sizes; once per spec."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    hit = per_spec.get("kv caches")
    if hit is None:
        kv_layers = spec.kv_layers
        caches = []
        for sliding in [False] + ([True] if any(lay.sliding for lay in kv_layers) else []):
            layers = [lay for lay in kv_layers if lay.sliding == sliding] or kv_layers
            caches.append((sliding, frozenset(lay.head_dim_k for lay in layers), frozenset(lay.head_dim_v for lay in layers)))
        hit = per_spec["kv caches"] = (max((lay.n_head_kv * lay.head_dim_v for lay in kv_layers), default=0), tuple(caches))
    return hit


def _graph_input_bytes(spec: ModelSpec, s: RuntimeSettings, layout: KVCells, build: Optional[LlamaBuild] = None) -> int:
    """Graph inputs, allocated before the first node and alive until their last reader (llm_graph_input_*):
    token ids, positions and output ids; the token embeddings; per KV cache the row indices for storing
    K and V (V per element when it is stored transposed, without flash attention), the mask (F16 with flash
    attention, F32 without) and, for a quantized cache, the Hadamard rotation matrices."""
    ub = layout.n_ubatch
    total = 3 * pad(4 * ub, 32) + pad(4 * ub * spec.hidden, 32)
    v_width, caches = _kv_caches(spec)
    for sliding, head_k, head_v in caches:
        cells = layout.swa_cells if sliding else layout.n_ctx_seq
        if build is None or build.kv_idx_inputs:
            total += pad(8 * ub, 32)  # k_idxs
            total += pad(8 * ub * (1 if s.flash_attn else v_width), 32)  # v_idxs
        f16_mask = s.flash_attn and (build is None or build.kq_mask_f16)
        total += pad((2 if f16_mask else 4) * cells * ub, 32)  # kq_mask
        if policy.kv_type_is_quantized(s.type_k) and len(head_k) == 1 and min(head_k) % 64 == 0:
            n = min(head_k)
            n_rot = n & -n  # the largest power of two dividing the head size (llama_kv_cache::build_input_k_rot)
            total += 4 * n_rot * n_rot
        if policy.kv_type_is_quantized(s.type_v) and len(head_v) == 1 and min(head_v) % 64 == 0:
            total += 4 * 64 * 64
    return total


def _layer_shapes(spec: ModelSpec) -> tuple:
    """The distinct (sliding, heads, K head size, FFN width) of the model's layers, once per spec."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    hit = per_spec.get("layer shapes")
    if hit is None:
        hit = per_spec["layer shapes"] = tuple(dict.fromkeys((lay.sliding, lay.n_head, lay.head_dim_k, lay.n_ff)
                                                             for lay in spec.layers))
    return hit


def _llamacpp_compute_bytes(spec: ModelSpec, s: RuntimeSettings, layout: KVCells) -> int:
    """Peak of the worst-case graph reserved by sched_reserve (n_ubatch tokens, every one an output, the
    KV cache full). ggml-alloc reuses freed tensors, so the peak is one phase of the graph on top of the
    graph inputs, not a sum. The phases and what is alive in each were traced on the real graphs with
    bench/trace_compute.py (llama_graph_reserve + a replay of ggml-alloc that reproduces llama.cpp's
    reported size exactly):
    - FFN: the residual, the freed norm output (a hole the next tensors do not fit), gate, up and their
      GEGLU product;
    - attention without flash attention: the residual, Q before and after the norm (the first is a hole
      by then) and one layer's F32 KQ scores over its cache, per head;
    - attention with flash attention: the residual, Q and the attention output;
    - per-layer embeddings (Gemma 4 E2B/E4B): the combined inputs live through every layer; building
      them holds the scaled rows above the freed raw rows, the projection and its norm;
    - logits: F32 logits for every token above the final norm's output (Gemma 4 also keeps the
      pre-selection norm as an output, h_nextn); the graph inputs are freed by then.
    What the rule cannot see is fragmentation: the logits land above the highest live tensor, and the
    final norm may sit above holes left by the last layer (up to about 10% more at Gemma 4 31B widths;
    docs/accuracy.md).
    """
    ub = layout.n_ubatch
    H = spec.hidden
    inputs = _graph_input_bytes(spec, s, layout)
    final_norms = 2 if spec.family == "gemma4" else 1
    n_out = reserved_outputs(s, layout)
    # F32 logits for the reserved outputs (the last layer selects their rows first, inp_out_ids)
    logits = 4 * n_out * (spec.vocab + final_norms * H) + 4 * ub * H  # + the token embeddings, kept to the end
    phases = []
    for sliding, n_head, head_dim_k, n_ff in _layer_shapes(spec):  # layers of one shape have the same phases
        q = 4 * ub * n_head * head_dim_k
        if s.flash_attn:
            phases.append(4 * ub * H + 2 * q)
        else:
            n_kv = layout.swa_cells if sliding else layout.n_ctx_seq
            phases.append(4 * ub * H + 2 * q + 4 * n_kv * ub * n_head)
        phases.append(4 * ub * (2 * H + 3 * n_ff))
    if spec.moe:
        # routed experts: the residual, a freed hidden-size tensor, the fused gate+up rows of the chosen
        # experts (freed: a hole below), their GEGLU product and the down projection's per-expert outputs,
        # [n_embd, n_expert_used, n_tokens] before the weighted sum (build_moe_ffn, llama-graph.cpp); the
        # last term is what real widths add (4.7 MiB per 512 tokens per used expert at 26B-A4B's 2816)
        n_used = spec.moe.n_expert_used
        phases.append(4 * ub * (3 * n_used * spec.moe.expert_ff + 2 * H + n_used * H))
    ple_all = 4 * ub * spec.ple_dim * spec.n_layers
    peak = max(phases)
    if ple_all:
        # per-layer embeddings: the combined per-layer inputs stay alive through every layer; they are
        # built at the first layer's gate from the scaled rows (sitting above the freed raw rows), the
        # projection and its norm
        peak = max(peak + ple_all, 4 * ub * H + 4 * ple_all)
    return max(logits, inputs + peak)


# ---------------------------------------------------------------- llama.cpp: GPU backends (b11312)


def _build_of(s: RuntimeSettings) -> tuple[LlamaBuild, bool]:
    try:
        return parse_build(s.engine_version)
    except ValueError as e:
        raise InvalidSettingsError(str(e), hint="use a release tag such as b11312 (the vendored build)") from None


def reserved_outputs(s: RuntimeSettings, layout: KVCells) -> int:
    """Output rows of the worst-case graph: llama_context::sched_reserve reserves
    min(n_tokens, n_outputs_max) outputs, and n_outputs_max = 0 means n_batch (llama-context.cpp).
    llama-server passes n_parallel (tools/server/server-context.cpp server_output_limits ->
    common_speculative_get_output_limits); llama-cpp-python leaves 0."""
    cap = s.n_outputs_max if s.n_outputs_max > 0 else layout.n_batch
    return max(1, min(layout.n_ubatch, cap))


def gpu_host_compute_bytes(spec: ModelSpec, s: RuntimeSettings, layout: KVCells, build: LlamaBuild) -> int:
    """Host-side compute buffer (CUDA_Host, ROCm_Host, Vulkan_Host; "CPU" on Metal) when every layer is
    offloaded. ggml_backend_sched assigns every graph input to the last backend, the CPU
    (ggml_backend_sched_backend_id_from_cur: GGML_TENSOR_FLAG_INPUT -> n_backends - 1), whose buffer
    type llama_context swaps for the first GPU's host buffer type; the token-embedding rows are
    computed there too, because token_embd always stays on the CPU (llama_model_base::load_tensors).
    So the buffer holds all graph inputs: token ids, positions, output ids, KV row indices, the KQ
    masks of both caches (n_kv x n_ubatch each; F16 with flash attention since PR #23764, F32 and
    cast on the device before it), the token-embedding rows, and since PR #18550 (build_inp_embd,
    llama-graph.cpp) the F32 inp_embd input beside them; Gemma 3n/4 E-models add the per-layer
    embedding rows."""
    ub = layout.n_ubatch
    total = _graph_input_bytes(spec, s, layout, build)
    if build.embd_input_tensor:
        total += pad(4 * ub * spec.hidden, 32)
    total += 4 * ub * spec.ple_dim * spec.n_layers
    return total


# The CUDA/ROCm memory pool (ggml_cuda_pool_vmm / _leg in ggml-cuda.cu) holds the temporaries of the
# running op and grows to the largest one; no log line reports it. Its size follows the matmul path
# ggml_cuda_should_use_mmq picks (ggml-cuda/mmq.cu, b11312):
# - MMQ (quantized weights on NVIDIA Turing+, Pascal, CDNA3; small batches elsewhere): src1 quantized
#   to q8_1, 36 bytes per 32 values, rows padded to MATRIX_ROW_PADDING (512);
# - cuBLAS/hipBLAS otherwise (Volta with a batch >= MMQ_DP4A_MAX_BATCH_SIZE, RDNA/CDNA1-2 for large
#   batches of K-quants): the weight dequantized to F16 (N x K x 2), src1 and the result in F16.
MMQ_ROW_PADDING = 512
MMQ_DP4A_MAX_BATCH = 64
Q8_1_BYTES_PER_32 = 36
_MMQ_TYPES = frozenset({"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ1_S", "IQ2_XXS",
                        "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS", "IQ4_NL", "MXFP4"})


def _uses_mmq(device: Device, typ: str, ub: int, n_experts: int = 0) -> bool:
    """ggml_cuda_should_use_mmq (ggml-cuda/mmq.cu, b11312) for one weight type at batch ub. NVIDIA reads
    the compute capability ("8.6"); AMD the gfx target ("gfx1100"). Unknown devices take MMQ."""
    t = typ.upper()
    if t not in _MMQ_TYPES:
        return False
    cc = (device.compute_capability or "").lower()
    if device.backend == "CUDA":
        try:
            v = float(cc)
        except ValueError:
            return True
        if v >= 7.5 or v < 7.0:  # Turing MMA, or no FP16 tensor cores (Pascal and older)
            return True
        return ub < MMQ_DP4A_MAX_BATCH  # Volta: cuBLAS for larger batches
    if cc.startswith(("gfx94", "gfx95", "gfx12")):  # CDNA3+, RDNA4: always MMQ
        return True
    if cc.startswith("gfx11"):  # RDNA3: hipBLAS wins for some types at larger batches
        if n_experts >= 64:
            return True
        limit = {"Q2_K": 128, "Q6_K": 256 if cc.startswith("gfx115") else 128}
        if t in ("IQ2_XS", "IQ2_S") and not cc.startswith("gfx115"):
            limit[t] = 128
        return ub <= limit.get(t, 1 << 30)
    if cc.startswith(("gfx908", "gfx90a")):  # CDNA1/2
        if n_experts > 64 or ub <= 128 or t in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
            return True
        return ub <= 256 and t in ("Q4_K", "Q5_K")
    return True


def _matmul_weights(spec: ModelSpec, fmt: WeightFormat) -> list[tuple[Optional[int], str, int, int, bool]]:
    """(layer or None for the output layer, GGUF type, rows N, row length K, expert stack) per matmul weight,
    once per (spec, format)."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    hit = per_spec.get(("matmuls", fmt))
    if hit is not None:
        return hit
    shapes = per_spec.get("matmul shapes")
    if shapes is None:  # which tensors are matmul weights, and where they run, does not depend on the format
        shapes = []
        for i, (t, (role, layer, _)) in enumerate(zip(spec.tensors, _roles(spec))):
            if len(t.shape) < 2:
                continue
            if role == "input" and not (t.name == "token_embd.weight" and spec.tied_embeddings):
                continue
            # the tied token_embd's duplicate on the output device runs the logits matmul
            where = layer if role not in ("output", "input") else None
            shapes.append((i, where, t.shape[-2], t.shape[-1], len(t.shape) == 3))
        shapes = per_spec["matmul shapes"] = tuple(shapes)
    typed = _gguf_types(spec, fmt)
    out = [(where, typed[i][1], n, k, experts) for i, where, n, k, experts in shapes]
    per_spec[("matmuls", fmt)] = out
    return out


def gpu_pool_bytes(spec: ModelSpec, fmt: WeightFormat, device: Device, ub: int, on_gpu: set, experts_on_cpu: bool = False) -> int:
    """Bound on the CUDA/ROCm pool during a prefill ubatch: the largest single op's temporaries over the
    matmul weights held by this device (layers in on_gpu; None = the output layer)."""
    if device.backend not in ("CUDA", "ROCm"):
        return 0
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    key = ("pool max", fmt, device.backend, device.compute_capability, ub, experts_on_cpu, frozenset(on_gpu))
    hit = per_spec.get(key)
    if hit is None:
        by_layer = _pool_by_layer(spec, fmt, device, ub, experts_on_cpu)
        hit = per_spec[key] = max((need for where, need in by_layer.items() if where in on_gpu), default=0)
    return hit


def _pool_by_layer(spec: ModelSpec, fmt: WeightFormat, device: Device, ub: int, experts_on_cpu: bool) -> dict:
    """The largest op temporary per layer (None = the output layer); the same for every context and placement,
    so computed once per (spec, format, backend and capability, ubatch)."""
    per_spec = _WEIGHTS_CACHE.get(spec) or _WEIGHTS_CACHE.setdefault(spec, {})
    key = ("pool", fmt, device.backend, device.compute_capability, ub, experts_on_cpu)
    hit = per_spec.get(key)
    if hit is not None:
        return hit
    out: dict = {}
    needs: dict = {}  # the temporary depends on the type, the shape and whether it is an expert stack only
    for where, typ, n, k, experts in _matmul_weights(spec, fmt):
        if experts and experts_on_cpu:
            continue
        need = needs.get((typ, n, k, experts))
        if need is None:
            need = needs[(typ, n, k, experts)] = _op_temporary(spec, device, typ, n, k, experts, ub)
        out[where] = max(out.get(where, 0), need)
    per_spec[key] = out
    return out


def _op_temporary(spec: ModelSpec, device: Device, typ: str, n: int, k: int, experts: bool, ub: int) -> int:
    """Pool bytes of one matmul at batch ub: the activations quantized to Q8_1 (MMQ), or the F16 copies cuBLAS
    takes (the weight too, when it is quantized)."""
    rows = ub * (spec.moe.n_expert_used if (spec.moe and experts) else 1)
    if _uses_mmq(device, typ, ub, spec.moe.n_expert if (spec.moe and experts) else 0):
        return rows * pad(k, MMQ_ROW_PADDING) * Q8_1_BYTES_PER_32 // 32
    if typ.upper() in ("F16", "BF16", "F32"):
        return 2 * rows * (k + n)
    return 2 * n * k + 2 * rows * (k + n)


def _gpu_backend_notes(gpus: list[Device], mems: list[DeviceMemory], build: LlamaBuild, verified: bool, margin: int) -> list[str]:
    """What the plan says about the GPU runtime no log line reports, per backend."""
    notes = []
    backends = sorted({d.backend for d in gpus})
    if not verified:
        for m in mems:
            extra = max(UNVERIFIED_MARGIN_MIN, int(UNVERIFIED_MARGIN_FRACTION * m.compute_bytes)) if m.compute_bytes else 0
            if extra and m.budget_bytes is not None:
                m.budget_bytes = max(0, m.budget_bytes - extra)
                m.detail["unverified_build_margin_bytes"] = extra
        notes.append(f"llama.cpp {build.name}: compute-buffer rules not verified for this build (planned with {DEFAULT_BUILD}'s); "
                     f"each GPU keeps max({UNVERIFIED_MARGIN_MIN >> 20} MiB, {int(UNVERIFIED_MARGIN_FRACTION * 100)}% of its compute buffer) more free")
    if "Metal" in backends:
        notes.append("Metal: usable memory is the GPU working set (recommendedMaxWorkingSetSize / iogpu.wired_limit_mb), not the RAM size; "
                     "ggml-metal warns past it and macOS pages")
    return notes


def _host_capacity(hw: Hardware, gpu_mems: list[DeviceMemory]) -> int:
    cap = hw.host_budget_bytes()
    if hw.unified:
        # unified memory: what the GPU holds comes out of the same RAM
        cap -= sum(m.total_bytes for m in gpu_mems)
    return max(0, cap)


# ---------------------------------------------------------------- vLLM

# vLLM's rules live in planner/vllm_memory.py (requested memory, weights per rank, KV groups and blocks).


# ---------------------------------------------------------------- transformers


def transformers_kv_bytes(spec: ModelSpec, s: RuntimeSettings, dtype_bytes: int = 2) -> int:
    """DynamicCache: full layers hold every token, sliding layers the last window; shared layers nothing."""
    total = 0
    for lay in spec.kv_layers:
        length = min(s.n_ctx, spec.sliding_window) if lay.sliding else s.n_ctx
        total += max(1, s.n_parallel) * lay.n_head_kv * (lay.head_dim_k + lay.head_dim_v) * length * dtype_bytes
    return total


def transformers_memory(spec: ModelSpec, fmt: WeightFormat, s: RuntimeSettings, hw: Hardware, margin: int = DEFAULT_MARGIN) -> MemoryBreakdown:
    weights = sum(b for _, b in tensor_sizes(spec, fmt))
    kv = transformers_kv_bytes(spec, s)
    ff = max(lay.n_ff for lay in spec.layers)
    # prefill runs the whole prompt at once: MLP intermediates for every token, logits for the last one
    activation = s.n_ctx * (3 * ff + 4 * spec.hidden) * 2 * max(1, s.n_parallel) + 4 * spec.vocab * max(1, s.n_parallel)
    gpus = list(hw.devices)
    if gpus:
        d = gpus[0]
        m = DeviceMemory(d.name, weights, kv, activation, 0, RUNTIME_OVERHEAD.get(d.backend, 0))
        m.capacity_bytes = d.usable_bytes()
        m.budget_bytes = max(0, m.capacity_bytes - margin)
        host = DeviceMemory(CPU_NAME)
        host.capacity_bytes = _host_capacity(hw, [m])
        host.budget_bytes = max(0, host.capacity_bytes - margin)
        devices = [m, host]
    else:
        host = DeviceMemory(CPU_NAME, weights, kv, activation)
        host.capacity_bytes = hw.host_budget_bytes()
        host.budget_bytes = max(0, host.capacity_bytes - margin)
        devices = [host]
    return MemoryBreakdown("transformers", TRANSFORMERS_VERSION, devices,
                           notes=["transformers: DynamicCache (sliding layers keep the last window); prefill activations for the whole prompt"])


def estimate_memory(spec: ModelSpec, fmt: WeightFormat, s: RuntimeSettings, hw: Hardware, margin: int = DEFAULT_MARGIN) -> MemoryBreakdown:
    if s.engine == "llama.cpp":
        if fmt.kind != "gguf":
            raise InvalidSettingsError(f"llama.cpp runs GGUF files; '{fmt.name}' is a {fmt.kind} format", hint="use --quant Q4_K_M (or another GGUF type) or --engine vllm")
        return llamacpp_memory(spec, fmt, s, hw, margin)
    if fmt.kind == "gguf":
        raise InvalidSettingsError(f"{s.engine} does not run GGUF type {fmt.name}", hint="use --quant bf16, fp8 or gptq-int4, or --engine llama.cpp")
    if s.engine == "vllm":
        from planner.vllm_memory import vllm_memory  # loaded when a vLLM plan is made

        return vllm_memory(spec, fmt, s, hw, margin)
    if s.engine == "transformers":
        if fmt.name == "fp8":
            raise InvalidSettingsError("fp8 weights are planned for vLLM only", hint="use --engine vllm or --quant bf16")
        return transformers_memory(spec, fmt, s, hw, margin)
    raise InvalidSettingsError(f"unknown engine '{s.engine}'", hint="use llama.cpp, vllm or transformers")
