"""vLLM 0.33 memory, rule by rule from its source (the vllm-0.33.0 wheel on PyPI).

Pure arithmetic. Every rule names the vLLM file and function it mirrors; the KV planning part
(groups, blocks, concurrency, the start-up check) is compared with vLLM's own functions in
tests/test_vllm_kv_planning.py. What vLLM measures on the GPU (the profile run's activation peak,
CUDA-graph memory, non-torch memory) is estimated and labelled as such.

Per GPU rank, in the order vLLM does it:

1. ``requested = ceil(total x gpu_memory_utilization)`` where ``total`` is what CUDA reports
   (``torch.accelerator.get_memory_info``), less than the card's nominal size
   (v1/worker/utils.py ``request_memory``). Start-up refuses when free memory is below it.
2. ``available KV = requested - (weights + non-torch + activation peak) - CUDA-graph estimate``
   (v1/worker/gpu_worker.py ``determine_available_memory``, utils/mem_utils.py
   ``memory_profiling``: non_kv_cache_memory = total_consumed + transient_peak_headroom; the CUDA
   context and NCCL communicators are created before the baseline snapshot, so they sit outside).
3. KV groups, blocks and the start-up check (v1/core/kv_cache_planning.py ``get_kv_cache_groups``,
   ``get_kv_cache_configs``; v1/core/kv_cache_utils.py ``get_max_concurrency_for_kv_cache_config``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from planner.errors import InvalidSettingsError
from planner.formats import WeightFormat, gptq_quantized, tensor_sizes
from planner.types import VLLM_VERSION, DeviceMemory, LayerSpec, MemoryBreakdown, ModelSpec, RuntimeSettings
from profiles.hardware import Device, Hardware

MiB = 1 << 20
from profiles.units import GiB

BLOCK_SIZE = 16  # config/cache.py CacheConfig.DEFAULT_BLOCK_SIZE
VOCAB_PADDING = 64  # model_executor/layers/vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE

# What CUDA reports as the total memory of a card (torch.accelerator.get_memory_info()[1], the
# "x/TOTAL GiB" vLLM prints at start-up), per GPU model, from vLLM and PyTorch logs. Detected GPUs
# carry their own value (NVML total minus the driver's reserved memory, Device.cuda_total_bytes).
CUDA_TOTAL_GIB = {
    # pytorch/pytorch#175666 (vLLM CI on L4): "Free memory on device cuda:0 (19.77/22.05 GiB) on
    # startup is less than desired GPU memory utilization (0.9, 19.84 GiB)"
    "L4": 22.05,
    # vLLM logs on H100 80GB HBM3: "Free memory on device (78.66/79.19 GiB) on startup. Desired GPU
    # memory utilization is (0.9, 71.27 GiB)"
    "H100 SXM": 79.19,
    # the PCIe card has the same 80 GB and the same NVML total (81,559 MiB) as the SXM module
    "H100 PCIe": 79.19,
    # PyTorch OOM messages on 48 GB GDDR6 Ampere cards: "GPU 0; 47.54 GiB total capacity"
    "RTX A6000": 47.54,
}
# NVML names of the same cards (what `detect` sees without a catalog match).
_CUDA_ALIASES = {"NVIDIA L4": "L4", "NVIDIA H100 80GB HBM3": "H100 SXM", "NVIDIA H100 SXM5 80GB": "H100 SXM",
                 "NVIDIA H100 PCIe": "H100 PCIe", "NVIDIA RTX A6000": "RTX A6000"}
# Cards outside the table: the H100's ratio of CUDA-reported to nominal memory (79.19 / 80).
CUDA_TOTAL_FALLBACK_RATIO = 79.19 / 80
# Used on the GPU before vLLM's baseline snapshot (CUDA context): 79.19 - 78.66 GiB free on an idle
# H100 in the log above. Start-up needs requested <= total - this.
CUDA_CONTEXT_BYTES = int(0.53 * GiB)
# Estimates of what vLLM measures on the GPU (not traced here; no GPU in this project's tests):
# non-torch memory inside the request (0.07 GiB in the H100 log above, one GPU; NCCL and custom
# all-reduce buffers with more ranks), and the CUDA-graph pool (0.67 GiB in the same log).
NON_TORCH_BYTES = int(0.07 * GiB)
NON_TORCH_MULTI_GPU_BYTES = 256 * MiB
CUDA_GRAPH_BYTES = int(0.67 * GiB)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def round_up(x: int, n: int) -> int:
    return cdiv(x, n) * n


def cuda_total_bytes(d: Device) -> tuple[int, str]:
    """(bytes CUDA reports as total, where the number comes from)."""
    own = getattr(d, "cuda_total_bytes", None)
    if own:
        return int(own), "measured (NVML total - reserved)"
    key = d.name if d.name in CUDA_TOTAL_GIB else _CUDA_ALIASES.get(d.name)
    if key:
        return int(CUDA_TOTAL_GIB[key] * GiB), f"CUDA-reported total of {key} (vLLM/PyTorch logs)"
    nominal = d.total_bytes or d.memory_bytes
    return int(nominal * CUDA_TOTAL_FALLBACK_RATIO), "estimated: nominal x 79.19/80 (no CUDA-reported value for this card)"


# ---------------------------------------------------------------- KV cache (exact)


@dataclass(frozen=True)
class KVLayer:
    """One KV-storing layer as vLLM's Attention.get_kv_cache_spec sees it on one rank."""

    index: int
    sliding: bool
    kv_heads: int  # per rank: max(1, total // tp) (QKVParallelLinear replicates heads when tp > total)
    head_size: int
    head_size_v: int
    dtype_bytes: int
    block_size: int = BLOCK_SIZE

    @property
    def page_bytes(self) -> int:
        """AttentionSpec.page_size_bytes: block_size x kv_heads x (head + head_v) x dtype."""
        return self.block_size * self.kv_heads * (self.head_size + self.head_size_v) * self.dtype_bytes


@dataclass
class KVGroup:
    """A KVCacheGroupSpec: layers sharing one block table."""

    sliding: bool
    block_size: int
    pages: list[int]  # page bytes of each layer
    layers: list[int]

    @property
    def page_bytes(self) -> int:
        return max(self.pages, default=0)


@dataclass
class KVPlan:
    groups: list[KVGroup]
    sliding_window: int
    max_in_flight_tokens: int
    stages: list[list[int]]  # layer indices of each pipeline stage

    def stage_groups(self, stage: int) -> list[KVGroup]:
        """_project_kv_cache_groups_to_worker: every global group, keeping this stage's layers (a group
        may end up empty; it still counts in the request's blocks)."""
        mine = set(self.stages[stage])
        out = []
        for g in self.groups:
            keep = [(p, i) for p, i in zip(g.pages, g.layers) if i in mine]
            out.append(KVGroup(g.sliding, g.block_size, [p for p, _ in keep], [i for _, i in keep]))
        return out

    def bytes_per_block(self, stage: int) -> int:
        """_get_kv_cache_bytes_per_block, layer-outer layout (LBNHC, the default preference of the
        attention backends Gemma uses): the largest group's sum of per-layer pages."""
        return max((sum(g.pages) for g in self.stage_groups(stage)), default=0)

    def group_blocks(self, g: KVGroup, max_len: int) -> int:
        """Blocks one request of max_len takes in group g: FullAttentionSpec cdiv(len, block);
        SlidingWindowSpec.max_admission_blocks_per_request cdiv(min(w - 1 + in_flight, len), block) + 1."""
        if g.sliding:
            return cdiv(min(self.sliding_window - 1 + self.max_in_flight_tokens, max_len), g.block_size) + 1
        return cdiv(max_len, g.block_size)

    def blocks_per_request(self, max_len: int) -> int:
        return sum(self.group_blocks(g, max_len) for g in self.groups)

    def request_bytes(self, stage: int, max_len: int) -> int:
        """_max_memory_usage_bytes_from_groups: bytes_per_block x total blocks of one request."""
        return self.bytes_per_block(stage) * self.blocks_per_request(max_len)

    def fits(self, stage: int, available: int, max_len: int) -> bool:
        """get_kv_cache_configs' check: the pool less the null block holds one max_len request."""
        bpb = self.bytes_per_block(stage)
        if bpb == 0:
            return True
        check = available - bpb
        return check > 0 and self.request_bytes(stage, max_len) <= check

    def max_model_len(self, stage: int, available: int, limit: int) -> int:
        """_estimate_max_model_len_from_groups: the longest request the pool (less the null block) holds."""
        bpb = self.bytes_per_block(stage)
        if bpb == 0:
            return limit
        check = available - bpb
        lo, hi, best = 1, limit, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.request_bytes(stage, mid) <= check:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        return best


def kv_dtype_bytes(s: RuntimeSettings) -> int:
    """CacheConfig.cache_dtype: 'auto' is the model dtype (bf16 for Gemma), fp8* one byte."""
    return 1 if s.kv_cache_dtype.startswith("fp8") else 2


def kv_layers(spec: ModelSpec, s: RuntimeSettings) -> list[KVLayer]:
    """Layers with a KV spec: Attention.get_kv_cache_spec returns None for layers reading another
    layer's cache (kv_sharing_target_layer_name: Gemma 3n / Gemma 4 E models)."""
    tp, dt = s.tensor_parallel, kv_dtype_bytes(s)
    return [KVLayer(lay.index, lay.sliding, max(1, lay.n_head_kv // tp), lay.head_dim_k, lay.head_dim_v, dt)
            for lay in spec.kv_layers]


def pp_stages(n_layers: int, pp: int) -> list[list[int]]:
    """distributed/utils.py get_pp_indices: equal partitions, the remainder spread over the stages
    before the last one (from the second-to-last backwards)."""
    parts = [n_layers // pp] * pp
    for i in range(2, n_layers % pp + 2):
        parts[-i] += 1
    out, start = [], 0
    for p in parts:
        out.append(list(range(start, start + p)))
        start += p
    return out


def max_concurrent_batches(s: RuntimeSettings) -> int:
    """VllmConfig.max_concurrent_batches with the defaults of vLLM 0.33 (async scheduling on, the V2
    model runner): pipeline stages + 1."""
    return s.pipeline_parallel + 1


def plan_kv(spec: ModelSpec, s: RuntimeSettings) -> KVPlan:
    """get_kv_cache_groups for Gemma's mix of full and sliding layers.

    - unify_kv_cache_spec_page_size: a layer whose page is a divisor of the largest page gets its
      block size multiplied to match (Gemma 4: full layers with fewer KV heads or wider heads);
    - _get_kv_cache_groups_uniform_page_size: layers grouped by spec, the group size is the smaller
      count (the larger one when it is below 1.5x the smaller), each type split into
      cdiv(count, size) groups of layers[i::n] (Gemma 3 27B: 10 full -> 1 group, 52 sliding -> 6).
    """
    layers = kv_layers(spec, s)
    window = spec.sliding_window
    stages = pp_stages(spec.n_layers, s.pipeline_parallel)
    in_flight = max_concurrent_batches(s) * s.max_num_batched_tokens  # VllmConfig.max_in_flight_tokens
    if not layers:
        return KVPlan([], window, in_flight, stages)
    max_page = max(lay.page_bytes for lay in layers)
    unified = []
    for lay in layers:
        if lay.page_bytes != max_page:
            if max_page % lay.page_bytes:
                raise InvalidSettingsError(f"{spec.name}: KV pages of {lay.page_bytes} and {max_page} bytes do not divide; "
                                           f"vLLM pads them, which this plan does not model")
            lay = KVLayer(lay.index, lay.sliding, lay.kv_heads, lay.head_size, lay.head_size_v, lay.dtype_bytes,
                          lay.block_size * (max_page // lay.page_bytes))
        unified.append(lay)
    if len({lay.sliding for lay in layers}) == 1:
        # one attention type: is_kv_cache_spec_uniform / UniformTypeKVCacheSpecs.from_specs -> one group
        return KVPlan([KVGroup(layers[0].sliding, layers[0].block_size, [x.page_bytes for x in layers],
                               [x.index for x in layers])], window, in_flight, stages)
    buckets: dict[tuple, list[KVLayer]] = {}
    for lay in unified:
        buckets.setdefault((lay.sliding, lay.block_size, lay.kv_heads, lay.head_size, lay.head_size_v), []).append(lay)
    counts = [len(v) for v in buckets.values()]
    size = min(counts)
    if max(counts) < size * 1.5:
        size = max(counts)
    groups = []
    for v in buckets.values():
        n = cdiv(len(v), size)
        for i in range(n):
            part = v[i::n]
            groups.append(KVGroup(part[0].sliding, part[0].block_size, [x.page_bytes for x in part], [x.index for x in part]))
    return KVPlan(groups, window, in_flight, stages)


# ---------------------------------------------------------------- weights per rank


def _padded_vocab(n: int) -> int:
    return round_up(n, VOCAB_PADDING)


def rank_weights(spec: ModelSpec, fmt: WeightFormat, s: RuntimeSettings, stage: int, stages: list[list[int]]) -> dict:
    """Weight bytes one tensor-parallel rank of a pipeline stage holds.

    - embed_tokens (and the Gemma 3n/4 per-layer embeddings with their projection) are built on every
      stage: Gemma2Model/Gemma3Model/Gemma4Model create VocabParallelEmbedding unconditionally;
      the tied lm_head reuses it. Rows are padded to a multiple of 64 and split over TP ranks.
    - each stage holds its own layers (get_pp_indices), split over TP ranks; K/V projections are
      replicated when TP exceeds the KV heads (QKVParallelLinear).
    - Gemma 4 full-attention layers with attention_k_eq_v ship only k_proj, but vLLM's
      QKVParallelLinear still allocates the V slot and loads K into both (gemma4.py).
    - GPTQ runs through Marlin (AutoGPTQLinearMethod.create_weights in auto_gptq.py): qweight,
      qzeros and scales; no g_idx.
    - multimodal towers are not loaded: the recipe passes --language-model-only.
    """
    tp = s.tensor_parallel
    mine = set(stages[stage])
    sizes = tensor_sizes(spec, fmt)
    k_bytes: dict[int, int] = {}
    has_v: set[int] = set()
    out = {"embed": 0, "layers": 0, "other": 0}
    for t, b in sizes:
        if fmt.kind == "gptq" and gptq_quantized(t):
            b -= t.shape[1] * 4  # Marlin: no g_idx
        if t.layer is None:
            if t.name == "token_embd.weight":
                out["embed"] += _padded_vocab(t.shape[0]) * t.shape[1] * (b // t.n_elements) // tp
            elif t.name == "per_layer_token_embd.weight":
                out["embed"] += _padded_vocab(t.shape[0]) * t.shape[1] * (b // t.n_elements) // tp
            elif len(t.shape) >= 2:
                out["other"] += b // tp
            else:
                out["other"] += b
            continue
        if t.layer not in mine:
            continue
        lay = spec.layers[t.layer]
        if t.name.endswith("attn_k.weight") or t.name.endswith("attn_v.weight"):
            share = b // min(tp, max(1, lay.n_head_kv))
            out["layers"] += share
            if t.name.endswith("attn_k.weight"):
                k_bytes[t.layer] = share
            else:
                has_v.add(t.layer)
        elif len(t.shape) >= 2:
            out["layers"] += b // tp
        else:
            out["layers"] += b
    if spec.family == "gemma4":
        for il, kb in k_bytes.items():
            if il not in has_v:
                out["layers"] += kb  # the V slot K is loaded into
    out["total"] = out["embed"] + out["layers"] + out["other"]
    return out


# ---------------------------------------------------------------- activations (estimated)


def activation_peak(spec: ModelSpec, s: RuntimeSettings, stage: int, stages: list[list[int]]) -> dict:
    """The profile run's transient peak (v1/worker/gpu/model_runner.py profile_run): a forward pass of
    max_num_batched_tokens dummy tokens, then, on the last stage, the sampler run on max_num_seqs rows.
    The forward's intermediates are freed before the sampler runs, so the peak is the larger of the
    two, not their sum. Estimated from tensor shapes (bf16 activations):
    - forward: residual, hidden and normed input, plus the widest of one layer's attention
      (q, k, v and the attention output) or MLP (gate_up and the GELU product) slices per TP rank;
      MoE (Gemma 4 26B-A4B): the fused-MoE workspaces for top-k experts of every token beside the
      dense MLP; per-layer embeddings (E models): the per-layer inputs of every layer and their
      projection, alive through the pass;
    - sampler (_dummy_sampler_run): logits in the model dtype, then the warm-up pass
      (SamplingParams.for_sampler_warmup: top-k, top-p, penalties, logprobs) over fp32 logits:
      the processed logits and the top-k/top-p sort (fp32 values and int64 indices).
    """
    tp = s.tensor_parallel
    T = s.max_num_batched_tokens
    S = min(s.max_num_seqs, T)
    H = spec.hidden
    layer_peak = 0
    for il in stages[stage]:
        lay: LayerSpec = spec.layers[il]
        q = lay.n_head // tp * lay.head_dim_k
        kv = max(1, lay.n_head_kv // tp) * (lay.head_dim_k + lay.head_dim_v)
        attn = T * (2 * q + kv) * 2
        mlp = T * 3 * cdiv(lay.n_ff, tp) * 2
        if spec.moe:
            m = spec.moe
            eff = cdiv(m.expert_ff, tp)
            mlp += T * m.n_expert_used * (3 * eff + H) * 2 + T * m.n_expert * 4
        layer_peak = max(layer_peak, attn, mlp)
    ple = 2 * T * spec.ple_dim * spec.n_layers * 2 if spec.ple_dim else 0
    forward = 3 * T * H * 2 + layer_peak + ple
    last = stage == len(stages) - 1
    sampler = S * H * 2 + S * _padded_vocab(spec.vocab) * (2 + 4 + 4 + 8) if last else 0
    return {"forward": forward, "sampler": sampler, "peak": max(forward, sampler)}


# ---------------------------------------------------------------- the breakdown


@dataclass
class RankPlan:
    stage: int
    device: Device
    cuda_total: int
    cuda_total_source: str
    requested: int
    weights: dict
    activation: dict
    non_torch: int
    cuda_graphs: int
    available_kv: int
    startup_ok: bool
    notes: list = field(default_factory=list)


def vllm_memory(spec: ModelSpec, fmt: WeightFormat, s: RuntimeSettings, hw: Hardware, margin: int = 0) -> MemoryBreakdown:
    """Per rank: requested memory, weights, activation peak, CUDA graphs and the KV pool; the pool
    becomes blocks exactly as vLLM's KV planning does (kv_cells: what vLLM would log and decide).
    ``margin`` covers the estimated terms (activation peak, CUDA graphs, non-torch memory): a plan
    fits when vLLM's check passes on the pool less the margin and that pool holds the planned slots."""
    gpus = list(hw.devices)
    tp, pp = s.tensor_parallel, s.pipeline_parallel
    n_ranks = tp * pp
    if not gpus:
        raise InvalidSettingsError("vLLM needs a GPU; this target has none", hint="use --engine llama.cpp")
    if tp < 1 or pp < 1:
        raise InvalidSettingsError("tensor and pipeline parallel sizes must be at least 1")
    if n_ranks > len(gpus):  # devices already lists every GPU of every host
        raise InvalidSettingsError(f"tensor x pipeline parallel = {n_ranks} GPUs, the target has {len(gpus)}")
    if pp > spec.n_layers:
        raise InvalidSettingsError(f"pipeline parallel {pp} is above {spec.name}'s {spec.n_layers} layers")
    first = spec.layers[0]
    if first.n_head % tp:
        raise InvalidSettingsError(f"tensor parallel {tp} does not divide {first.n_head} attention heads")
    if not 0 < s.gpu_memory_utilization <= 1:
        raise InvalidSettingsError(f"gpu_memory_utilization {s.gpu_memory_utilization} is outside (0, 1]")
    if fmt.name == "f16" and spec.family in ("gemma2", "gemma3"):
        # config/model.py _FLOAT16_NOT_SUPPORTED_MODELS: gemma2, gemma3, gemma3_text
        raise InvalidSettingsError(f"vLLM refuses float16 for {spec.family} ('Numerical instability')", hint="use --quant bf16")
    kv = plan_kv(spec, s)
    max_len = s.n_ctx
    non_torch = NON_TORCH_BYTES + (NON_TORCH_MULTI_GPU_BYTES if n_ranks > 1 else 0)
    graphs = 0 if s.enforce_eager else CUDA_GRAPH_BYTES
    ranks: list[RankPlan] = []
    for stage in range(pp):
        w = rank_weights(spec, fmt, s, stage, kv.stages)
        act = activation_peak(spec, s, stage, kv.stages)
        for t in range(tp):
            d = gpus[(stage * tp + t) % len(gpus)]
            total, src = cuda_total_bytes(d)
            requested = math.ceil(total * s.gpu_memory_utilization)  # request_memory
            avail = requested - (w["total"] + non_torch + act["peak"]) - graphs
            ranks.append(RankPlan(stage, d, total, src, requested, w, act, non_torch, graphs, avail,
                                  requested <= total - CUDA_CONTEXT_BYTES))
    # get_kv_cache_configs: blocks per worker from its own pool, then every worker takes the smallest count
    blocks = [r.available_kv // kv.bytes_per_block(r.stage) if kv.bytes_per_block(r.stage) else 0 for r in ranks]
    num_blocks = max(0, min(blocks))
    per_request = kv.blocks_per_request(max_len)
    # a stage whose layers all read another layer's cache (Gemma 4 E2B's last stage at PP 2) gets only
    # empty groups; get_kv_cache_configs' per-block probe then fails (validate_kv_cache_layout)
    empty_stage = bool(kv.groups) and any(kv.bytes_per_block(st) == 0 for st in range(pp))
    accepted = not empty_stage and all(r.startup_ok for r in ranks) and \
        all(r.available_kv > 0 and kv.fits(r.stage, r.available_kv, max_len) for r in ranks)
    # the plan: vLLM's check on the pool less the margin, and n_parallel requests of max_len at once
    # (vLLM itself starts with one)
    margin = max(0, margin)
    safe_blocks = min(((r.available_kv - margin) // kv.bytes_per_block(r.stage) if kv.bytes_per_block(r.stage) else 0) for r in ranks)
    slots_fit = all(r.available_kv - margin > 0 and kv.fits(r.stage, r.available_kv - margin, max_len) for r in ranks) and \
        safe_blocks - 1 >= max(1, s.n_parallel) * per_request
    vllm_max_len = 0 if empty_stage else min(kv.max_model_len(r.stage, max(0, r.available_kv), spec.ctx_train) for r in ranks)
    concurrency = num_blocks / per_request if per_request else 0.0
    mems = []
    for i, r in enumerate(ranks):
        bpb = kv.bytes_per_block(r.stage)
        m = DeviceMemory(f"{r.device.name} #{i}" if n_ranks > 1 else r.device.name)
        m.weights_bytes = r.weights["total"]
        m.compute_bytes = r.activation["peak"] + r.cuda_graphs
        m.overhead_bytes = r.non_torch
        m.kv_bytes = num_blocks * bpb
        m.capacity_bytes = r.cuda_total
        m.budget_bytes = r.requested if accepted and slots_fit else -1
        m.detail = {
            "requested_bytes": r.requested,
            "cuda_total_bytes": r.cuda_total,
            "cuda_total_source": r.cuda_total_source,
            "available_kv_bytes": r.available_kv,
            # the slots' requests, the null block and the margin kept for the estimated terms
            "kv_needed_bytes": max(1, s.n_parallel) * kv.request_bytes(r.stage, max_len) + bpb + margin,
            "kv_bytes_per_block": bpb,
            "num_blocks": blocks[i],
            "embedding_bytes": r.weights["embed"],
            "activation_peak_bytes": r.activation["peak"],
            "forward_peak_bytes": r.activation["forward"],
            "sampler_peak_bytes": r.activation["sampler"],
            "cuda_graph_bytes": r.cuda_graphs,
            "pipeline_stage": r.stage,
            "layers": len(kv.stages[r.stage]),
        }
        mems.append(m)
    groups = [{"type": "sliding" if g.sliding else "full", "block_size": g.block_size, "layers": len(g.layers),
               "page_bytes": g.page_bytes, "blocks_per_request": kv.group_blocks(g, max_len)} for g in kv.groups]
    kv_cells = {
        "needed_bytes_per_gpu": max((kv.request_bytes(r.stage, max_len) for r in ranks), default=0) * max(1, s.n_parallel),
        "vllm_accepts": accepted,
        "groups": groups,
        "blocks_per_request": per_request,
        "num_blocks": num_blocks,
        "max_concurrency": round(concurrency, 4),
        "kv_cache_tokens": int(concurrency * max_len),
        "max_model_len": vllm_max_len,
        "max_in_flight_tokens": kv.max_in_flight_tokens,
    }
    notes = [f"vLLM requests ceil(CUDA total x {s.gpu_memory_utilization:g}) per GPU; the rest after weights, the profiled "
             f"activation peak, non-torch memory and the CUDA-graph estimate is the KV pool"]
    if accepted:
        notes.append(f"vLLM should log: GPU KV cache size: {int(concurrency * max_len):,} tokens; Maximum concurrency for "
                     f"{max_len:,} tokens per request: {concurrency:.2f}x; the pool holds requests up to {vllm_max_len:,} tokens")
    else:
        notes.append(f"vLLM would refuse --max-model-len {max_len}: the pool holds requests up to {vllm_max_len:,} tokens")
    padded = sum(len(g.layers) for g in kv.groups)
    slots = len(kv.groups) * max((len(g.layers) for g in kv.groups), default=0)
    if slots > padded:
        notes.append(f"hybrid KV groups: {len(kv.groups)} groups of {max(len(g.layers) for g in kv.groups)} layers for "
                     f"{padded} KV layers ({slots - padded} padding slots)")
    if accepted and not slots_fit:
        notes.append(f"vLLM should start (its pool holds {concurrency:.2f} requests of {max_len} tokens), but not with "
                     f"{s.n_parallel} slot(s) and the {margin / GiB:.1f} GiB margin kept for the estimated activations")
    if empty_stage:
        notes.append(f"vLLM 0.33 fails to plan the KV cache: a pipeline stage holds only KV-sharing layers "
                     f"(use fewer pipeline stages)")
    if not all(r.startup_ok for r in ranks):
        notes.append("vLLM refuses to start: requested memory exceeds what is free after the CUDA context")
    return MemoryBreakdown("vllm", VLLM_VERSION, mems, kv_cells=kv_cells, notes=notes)
