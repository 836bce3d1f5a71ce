"""Speed model: decode and prefill, each the slower of memory traffic and arithmetic, per device.

Per device (a GPU, or the host CPU for what it holds), for one decoded token:

    t_memory     = bytes read (weights it holds that a token touches + its KV cache at the depth)
                   / (bandwidth x memory efficiency of its class x backend factor x engine factor)
    t_arithmetic = weight bytes / the device's dequantize-and-multiply rate for the file type
                   (CPUs: cores x a per-core rate; measured on this machine by ``detect --bench``)
    t_device     = max(t_memory, t_arithmetic) + layers on it x per-layer fixed cost of its class

and decode = 1 / sum over devices (llama.cpp runs the layers of a split one device after the other;
vLLM's tensor parallel ranks run together). MoE models read only the routed top-k experts; experts
kept on the CPU (-ot exps=CPU) are read there. Prefill per prompt token is
(2 x active parameters + attention FLOPs at the prompt's depth) / (the device's FLOP/s x the prefill
efficiency of its class), times a fitted MoE factor for MoE models (a prompt batch split among the
experts fills the matrix units less); time to first token = prompt / prefill. Published rows of 2023/2024
llama.cpp builds pay a fitted multiple of the per-layer cost (``layer_factor``); plans assume a current build.

The constants (planner/data/speed.json) are fitted by bench/speed_fit.py on the "fit" split of the
published rows in bench/data/ and checked on the "held-out" split; the error table there gives every
estimate its expected range. No estimate is printed above the best published measurement of its
device class (the "caps" of speed.json, with their sources). With ``detect --bench`` the host CPU's
rates are this machine's own llama.cpp measurements (``Hardware.speed_basis``), and the basis says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
import weakref
from functools import lru_cache
from importlib import resources
from typing import Optional

from planner.catalog import active_params
from planner.formats import WeightFormat, row_bytes, tensor_sizes
from planner.types import MemoryBreakdown, ModelSpec, RuntimeSettings, SpeedEstimate
from profiles.hardware import Device, Hardware
from profiles.units import GiB

# Host memory bandwidth when neither the target nor a measurement gives one: dual-channel DDR4-3200 (51.2 GB/s peak).
DEFAULT_RAM_BANDWIDTH = 51_200_000_000
DEFAULT_DEPTH = 4096  # context depth at which decode_tokens_per_s is quoted (also given at the plan's context)
# Engines without rows of their own in the fit: transformers' eager single-stream decode is about half of
# llama.cpp's (assumption kept from the first model; no published Gemma rows to fit it on).
ENGINE_DEFAULTS = {"llama.cpp": 1.0, "transformers": 0.5}
# GPUs dequantize and multiply on their vector units during decode: assume a quarter of the dense FP16
# tensor throughput, and these operations per weight (FMA + unpack/scale). Binds only on slow GPUs.
GPU_VECTOR_SHARE = 0.25
OPS_PER_WEIGHT = {"F32": 2, "F16": 2, "BF16": 2, "Q8_0": 3, "Q6_K": 5, "Q5_K": 5, "Q5_0": 5, "Q4_K": 4, "Q4_0": 4,
                  "IQ4_XS": 5, "IQ4_NL": 5, "Q3_K": 5, "Q2_K": 5, "MXFP4": 4}
CPU_CLASSES = ("cpu", "phone_cpu", "sbc_cpu")
SPLIT_SALT = "gemma-plan speed split v1"  # row_split: change only with a new split and refit
HELD_OUT_SHARE = 1 / 3
# tables derived from a spec (frozen, so the object is the key; entries go with the spec)
_SPEC_CACHE: "weakref.WeakKeyDictionary[ModelSpec, dict]" = weakref.WeakKeyDictionary()


_OVERRIDE: Optional[dict] = None  # bench/speed_fit.py evaluates candidate constants through the same functions


def _table() -> dict:
    return _OVERRIDE if _OVERRIDE is not None else _packaged_table()


@lru_cache(maxsize=1)
def _packaged_table() -> dict:
    return json.loads(resources.files("planner").joinpath("data/speed.json").read_text())


# ---------------------------------------------------------------- the shared physics (plans and rows)


@dataclass
class Part:
    """What one device does for one token."""

    cls: str  # efficiency class key of speed.json
    bandwidth: float  # bytes/s
    weight_bytes: float  # weights read per decoded token
    kv_bytes: float = 0.0  # KV read per decoded token at the decode depth
    params: float = 0.0  # active parameters multiplied per token here
    layers: float = 0.0  # repeating layers placed here
    backend: str = ""
    arith_bytes_per_s: Optional[float] = None  # dequantize-and-multiply rate (None: not limiting)
    flops: Optional[float] = None  # FLOP/s for prefill before the class efficiency
    measured: Optional[dict] = None  # this machine's llama.cpp rates (quantize.llama_bench.SpeedBasis)
    output_bytes: float = 0.0  # of weight_bytes, the output matrix (measured basis times it apart)
    attn_flops: float = 0.0  # attention FLOPs per prompt token at the prompt's depth
    name: str = ""  # the device as the memory breakdown names it ("CPU", "RTX 4090" ...)


def class_consts(cls: str) -> dict:
    t = _table()["classes"]
    return t.get(cls) or t["consumer_gpu"]


def backend_key(backend: str) -> str:
    """Backend group of a device or a row: CUDA, ROCm, Vulkan, Vulkan (Intel), Metal, OpenCL, NPU, CPU; rows of
    llama.cpp builds from 2023 and 2024 (slower per-layer kernels) are groups of their own, e.g. "CUDA (2024 build)"."""
    b = (backend or "").lower()
    era = " (2023 build)" if ("2023" in b or "#4167" in b) else (" (2024 build)" if "2024" in b else "")
    if "npu" in b or "hexagon" in b:
        return "NPU"
    if "vulkan" in b and "intel" in b:
        return "Vulkan (Intel)" + era
    for key in ("CUDA", "ROCm", "Vulkan", "Metal", "OpenCL", "SYCL", "CPU"):
        if key.lower() in b:
            return key + era
    return ""


def engine_key(engine: str, cpu: bool) -> str:
    """Engines are fitted apart on CPUs and on GPUs (LiteRT-LM's CPU and GPU paths differ by far more than llama.cpp's)."""
    return f"{(engine or 'llama.cpp').lower()}/{'cpu' if cpu else 'gpu'}"


def engine_factor(engine: str, cpu: bool = False) -> float:
    fitted = _table().get("engines", {})
    key = engine_key(engine, cpu)
    if key in fitted:
        return fitted[key]["factor"]
    return ENGINE_DEFAULTS.get((engine or "llama.cpp").lower(), 1.0)


def backend_factor(backend: str) -> float:
    return _table().get("backends", {}).get(backend_key(backend), {}).get("factor", 1.0)


def build_era(backend: str) -> str:
    """"2023" / "2024" for rows of llama.cpp builds of those years, else "" (a current build, as plans assume)."""
    key = backend_key(backend)
    return key[key.index("(") + 1:key.index(" build")] if " build)" in key else ""


def layer_factor(backend: str) -> float:
    """Per-layer fixed cost of an older llama.cpp build over a current one's (fitted per build year); 1 for plans."""
    era = build_era(backend)
    return _table().get("eras", {}).get(era, {}).get("layer_factor", 1.0) if era else 1.0


def decode_time(parts: list[Part], engine: str = "llama.cpp", parallel_ranks: bool = False) -> tuple[float, list[str], str]:
    """Seconds per decoded token, a line per device, and what bound it ("memory" / "arithmetic" / "measured")."""
    total, lines, bounds = 0.0, [], []
    for p in parts:
        c = class_consts(p.cls)
        ef = engine_factor(engine, p.cls in CPU_CLASSES)
        nbytes = p.weight_bytes + p.kv_bytes
        if nbytes <= 0:
            continue
        if p.measured:
            m = p.measured
            t = ((p.weight_bytes - p.output_bytes) / m["layer_decode_bytes_per_s"] + p.output_bytes / m["output_decode_bytes_per_s"]
                 + p.kv_bytes / (p.bandwidth * c["mem_eff"]))
            lines.append(f"{p.name or p.cls}: {nbytes / 1e9:.2f} GB/token at this machine's measured llama.cpp rates ({p.cls})")
            bounds.append("measured")
        else:
            t_mem = nbytes / (p.bandwidth * c["mem_eff"] * backend_factor(p.backend) * ef)
            t_ar = p.weight_bytes / (p.arith_bytes_per_s * c.get("arith_scale", 1.0) * ef) if p.arith_bytes_per_s else 0.0
            t = max(t_mem, t_ar) + p.layers * c["layer_s"] * layer_factor(p.backend)
            bounds.append("arithmetic" if t_ar > t_mem else "memory")
            lines.append(f"{p.name or p.cls}: {nbytes / 1e9:.2f} GB/token at {p.bandwidth / 1e9:.0f} GB/s"
                         + (f", arithmetic {p.arith_bytes_per_s * c.get('arith_scale', 1.0) * ef / 1e9:.1f} GB/s" if p.arith_bytes_per_s else "")
                         + f" ({p.cls}, {'arithmetic' if t_ar > t_mem else 'memory'}-bound)")
        total = max(total, t) if parallel_ranks else total + t
    bound = "arithmetic" if "arithmetic" in bounds else ("measured" if "measured" in bounds else "memory")
    return total, lines, bound


def prefill_time(parts: list[Part], engine: str = "llama.cpp", parallel_ranks: bool = False) -> float:
    """Seconds per prompt token."""
    total = 0.0
    for p in parts:
        if p.params <= 0:
            continue
        ops = 2 * p.params + p.attn_flops
        c = class_consts(p.cls)
        if p.measured:
            t = ops / p.measured["prefill_flops_per_s"]
        elif p.flops:
            t = ops / (p.flops * c["pp_eff"] * engine_pp_factor(engine, p.cls in CPU_CLASSES))
        else:  # no FLOPs figure for the device: the class's fitted FLOP/s per byte/s of bandwidth
            t = ops / (p.bandwidth * c["pp_flops_per_byte"] * engine_pp_factor(engine, p.cls in CPU_CLASSES))
        total = max(total, t) if parallel_ranks else total + t
    return total


def engine_pp_factor(engine: str, cpu: bool = False) -> float:
    return _table().get("engines", {}).get(engine_key(engine, cpu), {}).get("pp_factor", 1.0)


def cap(cls: str, kind: str) -> Optional[dict]:
    """The best published measurement for a device class ("decode" / "prefill"), with its source."""
    return _table().get("caps", {}).get(cls, {}).get(kind)


def expected_range(value: float, cls: str, kind: str) -> tuple[float, float, str]:
    """(low, high, where from): the value times the 10th and 90th percentile of measured/predicted in the
    held-out rows of the class (all held-out rows when the class has fewer than 3)."""
    errs = _table().get("errors", {}).get(kind, {})
    row = errs.get("by_class", {}).get(cls)
    where = f"held-out {cls} rows"
    if not row or row.get("n", 0) < 3:
        row, where = errs.get("all", {"p10_ratio": 0.5, "p90_ratio": 1.5, "n": 0}), "all held-out rows"
    return value * row["p10_ratio"], value * row["p90_ratio"], f"{where} (n={row['n']})"


# ---------------------------------------------------------------- CPU arithmetic


def _cpu_family(hw: Hardware) -> str:
    arch = (hw.cpu.arch or "").lower()
    flags = {f.lower() for f in hw.cpu.flags}
    if arch in ("aarch64", "arm64") or "neon" in flags:
        return "arm"
    return "x86"


def cpu_threads(hw: Hardware) -> int:
    return max(1, hw.cpu.cores_physical or hw.cpu.cores_logical or 4)


def cpu_rates(hw: Hardware, ftype: str) -> tuple[Optional[float], Optional[float], str]:
    """(decode bytes/s, prefill FLOP/s, what from) of the host CPU for a file type, before the class's fitted
    scale: cores x a nominal per-core operation rate, divided for decode by the file type's operations per
    weight (OPS_PER_WEIGHT). The nominal rates only set the unit; the classes' ``arith_scale`` and ``pp_eff``
    are fitted on published CPU rows, and a machine that ran ``detect --bench`` uses its own measurement."""
    from planner.formats import parse_format

    k = _table()["cpu_kernels"]
    fam = k["families"].get(_cpu_family(hw), k["families"]["x86"])
    n = cpu_threads(hw)
    try:
        bpw = _bytes_per_weight(parse_format(ftype, "llama.cpp"))
    except Exception:  # noqa: BLE001 - a non-GGUF name: 4-bit
        bpw = 0.5625
    dec = n * k["ops_per_s_per_core"] / OPS_PER_WEIGHT.get(_main_type(ftype), 4) * bpw * fam["decode"]
    pre = n * k["flops_per_core"] * fam["prefill"]
    return dec, pre, f"{n} cores x nominal rates"


def measured_basis(hw: Hardware, ftype: str, model: str = "") -> Optional[dict]:
    """This machine's measured rates for the file type (detect --bench), those measured on slices of ``model``
    when there are some (the same layer shapes), else those of another model."""
    rows = [b for b in (getattr(hw, "speed_basis", None) or []) if isinstance(b, dict)]
    if not rows:
        return None
    exact = [b for b in rows if b.get("ftype") == ftype]
    if not exact:  # the same kernels: Q4_K_S runs Q4_K_M's, Q5_K_S Q5_K_M's (rates are per byte)
        exact = [b for b in rows if _main_type(b.get("ftype", "")) == _main_type(ftype) and b.get("ftype", "")[:4] == ftype[:4]]
    if not exact:  # another file type: its per-byte rates (nearest bits per weight), so that plans of one
        # machine are ranked on one basis; the basis line names the type the rates were measured for
        exact = sorted(rows, key=lambda b: abs(_ftype_bits(b.get("ftype", "")) - _ftype_bits(ftype)))[:1]
    same_model = [b for b in exact if model and b.get("model") == model]
    return (same_model or exact or [None])[0]


def _ftype_bits(ftype: str) -> float:
    try:
        from planner.formats import parse_format

        return parse_format(ftype, "llama.cpp").bits
    except Exception:  # noqa: BLE001 - unknown names sort last
        return 99.0


# ---------------------------------------------------------------- plans


def _per_spec(spec: ModelSpec) -> dict:
    return _SPEC_CACHE.get(spec) or _SPEC_CACHE.setdefault(spec, {})


def weights_read_per_token(spec: ModelSpec, fmt: WeightFormat) -> int:
    """Every matmul weight once (MoE experts scaled by top-k / experts), not the embedding tables,
    plus the tied embedding once more as the output matrix. Cached per (spec, format)."""
    memo = _per_spec(spec)
    key = ("read", fmt)
    if key in memo:
        return memo[key]
    sizes = tensor_sizes(spec, fmt)
    total = 0
    for t, b in sizes:
        if t.name in ("token_embd.weight", "per_layer_token_embd.weight"):
            continue
        if "_exps." in t.name and spec.moe:
            b = b * spec.moe.n_expert_used // spec.moe.n_expert
        total += b
    if spec.tied_embeddings:
        total += next(b for t, b in sizes if t.name == "token_embd.weight")
    memo[key] = total
    return total


def _output_bytes(spec: ModelSpec, fmt: WeightFormat) -> int:
    for t, b in tensor_sizes(spec, fmt):
        if t.name == "output.weight" or (spec.tied_embeddings and t.name == "token_embd.weight"):
            return b
    return 0


def efficiency_class(dev: Optional[Device], model_bytes: int = 0, hw: Optional[Hardware] = None) -> str:
    """The class key of speed.json for a device (None = the host CPU of ``hw``)."""
    if dev is None:
        kind = hw.kind if hw is not None else ""
        return {"phone": "phone_cpu", "sbc": "sbc_cpu"}.get(kind, "cpu")
    c = dev.device_class
    return c if c in _table()["classes"] else "consumer_gpu"


def _kv_row(kv_type: str, n: int) -> int:
    """Bytes of n cached elements: ggml types for llama.cpp, vLLM's 'auto' (model dtype) and fp8."""
    if kv_type.startswith("fp8"):
        return n
    if kv_type == "auto":
        return 2 * n
    return row_bytes(kv_type, n)


def _layer_groups(spec: ModelSpec, kv_only: bool) -> tuple:
    """(sliding, K width, V width, layer indices) per distinct layer shape, once per spec: the per-token
    sums below then cost a few terms instead of one per layer."""
    memo = _per_spec(spec)
    key = ("groups", kv_only)
    if key not in memo:
        groups: dict = {}
        for lay in spec.kv_layers if kv_only else spec.layers:
            heads = lay.n_head_kv if kv_only else lay.n_head
            g = (lay.sliding, heads * lay.head_dim_k, heads * lay.head_dim_v)
            groups.setdefault(g, []).append(lay.index)
        memo[key] = tuple((*g, tuple(idx)) for g, idx in groups.items())
    return memo[key]


def _kv_read_bytes(spec: ModelSpec, s: RuntimeSettings, depth: int) -> dict[int, int]:
    """K and V bytes one decoded token reads per KV-storing layer at ``depth`` cached tokens."""
    out = {}
    for sliding, nk, nv, layers in _layer_groups(spec, kv_only=True):
        cells = min(depth, spec.sliding_window) if sliding else depth
        per_layer = cells * (_kv_row(s.type_k, nk) + _kv_row(s.type_v, nv))
        out.update(dict.fromkeys(layers, per_layer))
    return out


def prefill_params(spec: ModelSpec) -> int:
    """Parameters multiplied per prompt token: the active ones less the embedding lookup and the output matrix
    (llama.cpp computes logits for the last prompt token only)."""
    memo = _per_spec(spec)
    if "prefill_params" not in memo:
        skip = sum(t.n_elements for t in spec.tensors if t.name in ("token_embd.weight", "output.weight"))
        memo["prefill_params"] = max(0, active_params(spec) - skip)
    return memo["prefill_params"]


def attention_flops(spec: ModelSpec, depth: int) -> float:
    """FLOPs of QK^T and AV for one token attending to ``depth`` cached tokens (sliding layers to their window)."""
    total = 0.0
    for sliding, qk, qv, layers in _layer_groups(spec, kv_only=False):
        cells = min(depth, spec.sliding_window) if sliding else depth
        total += len(layers) * 2 * cells * (qk + qv)
    return total


def _ftype_key(fmt: WeightFormat) -> str:
    if fmt.kind == "gguf":
        return fmt.name
    if fmt.kind == "gptq":
        return "Q4_0" if fmt.bits <= 4 else "Q8_0"
    return {"fp8": "Q8_0"}.get(fmt.name, "F16")


def estimate_speed(
    spec: ModelSpec,
    fmt: WeightFormat,
    s: RuntimeSettings,
    hw: Hardware,
    memory: MemoryBreakdown,
    *,
    depth: Optional[int] = None,
    prompt_tokens: int = 1024,
) -> SpeedEstimate:
    """Decode at ``depth`` (default 4096, at most the context) and at the plan's full context per slot,
    prefill of ``prompt_tokens``; each with its expected range and capped at the class's best published rate."""
    slot_ctx = max(1, s.n_ctx // max(1, s.n_parallel)) if s.engine == "llama.cpp" else s.n_ctx
    depth = min(depth or DEFAULT_DEPTH, slot_ctx)
    ftype = _ftype_key(fmt)
    sizes = tensor_sizes(spec, fmt)
    read_total = weights_read_per_token(spec, fmt)
    out_bytes = _output_bytes(spec, fmt)
    params_total = prefill_params(spec)

    held = [(d, m) for d, m in zip(_devices_for(memory, hw), memory.devices)]
    input_bytes = sum(b for t, b in sizes if t.name in ("token_embd.weight", "per_layer_token_embd.weight"))
    tied = next((b for t, b in sizes if t.name == "token_embd.weight"), 0) if spec.tied_embeddings else 0
    output_on_cpu = not any(m.detail.get("tied_output_copy_bytes") for d, m in held if d is not None)
    unread = _unread_expert_bytes(spec, fmt, s, hw) if memory.engine == "llama.cpp" else {}
    gpu_index = {id(m): i for i, (d, m) in enumerate((d, m) for d, m in held if d is not None)}

    def readable(d, m) -> int:
        if d is not None:
            return max(0, m.weights_bytes - unread.get(gpu_index[id(m)], 0))
        return max(0, m.weights_bytes - input_bytes + (tied if output_on_cpu else 0) - unread.get(None, 0))

    held_total = sum(readable(d, m) for d, m in held) or 1
    kv_total = sum(m.kv_bytes for _, m in held) or 1
    vllm = memory.engine == "vllm"

    def parts_at(dep: int, prompt_depth: int) -> tuple[list[Part], list[str]]:
        kv_read = sum(_kv_read_bytes(spec, s, dep).values())
        parts, classes = [], []
        for dev, m in held:
            share = readable(dev, m) / held_total
            kv_share = m.kv_bytes / kv_total if memory.kv_bytes else 0
            if vllm:
                share = kv_share = 1.0 / max(1, len(held))
            wbytes = read_total * share
            if wbytes + kv_read * kv_share <= 0:
                continue
            cls = efficiency_class(dev, 0, hw)
            if dev is not None:
                bw = dev.bandwidth_bytes_per_s or DEFAULT_RAM_BANDWIDTH
                flops = dev.fp16_flops
                arith = flops * GPU_VECTOR_SHARE / OPS_PER_WEIGHT.get(_main_type(ftype), 4) * _bytes_per_weight(fmt) if flops else None
                measured = None
                backend = dev.backend
                out_here = out_bytes if not output_on_cpu and m.detail.get("tied_output_copy_bytes") else 0
            else:
                bw = hw.ram_bandwidth_bytes_per_s or DEFAULT_RAM_BANDWIDTH
                measured = measured_basis(hw, ftype, spec.name) if memory.engine == "llama.cpp" else None
                arith, flops, _ = cpu_rates(hw, ftype)
                backend = "CPU"
                out_here = out_bytes if output_on_cpu else 0
            layers = m.layers if m.layers else (spec.n_layers if dev is None and len(held) == 1 else spec.n_layers * share)
            parts.append(Part(cls=cls, bandwidth=bw, weight_bytes=wbytes, kv_bytes=kv_read * kv_share, params=params_total * share,
                              layers=layers, backend=backend, arith_bytes_per_s=arith, flops=flops, measured=measured,
                              output_bytes=min(out_here, wbytes), attn_flops=attention_flops(spec, prompt_depth) * share,
                              name=m.device))
            classes.append(cls)
        return parts, classes

    ranks = vllm and len(held) > 1 and s.pipeline_parallel == 1
    parts, classes = parts_at(depth, prompt_tokens // 2)
    t_tok, lines, bound = decode_time(parts, memory.engine, parallel_ranks=ranks)
    parts_ctx, _ = parts_at(slot_ctx, prompt_tokens // 2)
    t_ctx, _, _ = decode_time(parts_ctx, memory.engine, parallel_ranks=ranks)
    if spec.moe:
        t_tok /= moe_factor()
        t_ctx /= moe_factor()
    decode = 1.0 / t_tok if t_tok > 0 else 0.0
    decode_ctx = 1.0 / t_ctx if t_ctx > 0 else 0.0
    # prefill runs where the weights are: the GPUs if any hold layers, else the CPU
    gpu_parts = [p for p in parts if p.cls not in CPU_CLASSES]
    pp_parts = gpu_parts or parts
    if gpu_parts:  # the GPUs also run the matmuls of CPU-held layers (llama.cpp op offload)
        scale = sum(p.params for p in parts) / (sum(p.params for p in gpu_parts) or 1)
        pp_parts = [Part(**{**p.__dict__, "params": p.params * scale, "attn_flops": p.attn_flops * scale}) for p in gpu_parts]
    t_pp = prefill_time(pp_parts, memory.engine, parallel_ranks=vllm and len(held) > 1)
    if spec.moe:
        t_pp /= moe_pp_factor()
    prefill = 1.0 / t_pp if t_pp > 0 else 0.0

    main_cls = _main_class(parts)
    pp_cls = _main_class(pp_parts) if pp_parts else main_cls
    capped = []
    measured_here = any(p.measured for p in parts)
    for kind, cls in (("decode", main_cls), ("prefill", pp_cls)):
        c = cap(cls, kind)
        value = decode if kind == "decode" else prefill
        if c and value > c["tokens_per_s"]:
            capped.append(f"{kind} capped at {c['tokens_per_s']:g} tok/s, the best published {cls} measurement "
                          f"({c['model']} on {c['hardware']}, {c['source']})")
            if kind == "decode":
                decode_ctx = min(decode_ctx, c["tokens_per_s"])
                decode = c["tokens_per_s"]
            else:
                prefill = c["tokens_per_s"]
    d_lo, d_hi, d_from = expected_range(decode, "measured" if measured_here else main_cls, "decode")
    p_lo, p_hi, p_from = expected_range(prefill, "measured" if measured_here else pp_cls, "prefill")
    # the range never reaches above the class's best published rate either, nor below what it brackets
    for kind, cls in (("decode", main_cls), ("prefill", pp_cls)):
        c = cap(cls, kind)
        if c:
            if kind == "decode":
                d_hi = min(d_hi, c["tokens_per_s"])
            else:
                p_hi = min(p_hi, c["tokens_per_s"])
    d_lo, d_hi = min(d_lo, decode), max(d_hi, decode)
    p_lo, p_hi = min(p_lo, prefill), max(p_hi, prefill)
    # rounded for printing, never above the cap by the rounding
    dcap, pcap = cap(main_cls, "decode"), cap(pp_cls, "prefill")
    decode = min(round(decode, 2), dcap["tokens_per_s"]) if dcap else round(decode, 2)
    prefill = min(round(prefill, 1), pcap["tokens_per_s"]) if pcap else round(prefill, 1)
    ttft = prompt_tokens / prefill if prefill else 0.0
    d_rng = [min(round(d_lo, 2), decode), min(round(d_hi, 2), dcap["tokens_per_s"]) if dcap else round(d_hi, 2)]
    p_rng = [min(round(p_lo, 1), prefill), min(round(p_hi, 1), pcap["tokens_per_s"]) if pcap else round(p_hi, 1)]
    d_rng[1], p_rng[1] = max(d_rng[1], decode), max(p_rng[1], prefill)
    if measured_here:
        b = next(p.measured for p in parts if p.measured)
        basis_kind = "measured"
        basis = (f"measured: this machine's llama.cpp rates for {b['ftype']}{'' if b['ftype'] == ftype else f' (applied to {ftype})'} "
                 f"({b.get('engine', 'llama.cpp')}, {b['threads']} threads, slices of {b['model']}, {b.get('measured_at', '')})")
    else:
        basis_kind = "published"
        basis = (f"published: {', '.join(sorted(set(classes))) or 'cpu'} constants fitted on published measurements, "
                 f"ranges from the held-out ones (docs/accuracy.md)")
    return SpeedEstimate(
        decode_tokens_per_s=decode,
        prefill_tokens_per_s=prefill,
        time_to_first_token_s=round(ttft, 3),
        prompt_tokens=prompt_tokens,
        bytes_per_token=int(sum(p.weight_bytes + p.kv_bytes for p in parts)),
        bound="; ".join(lines),
        efficiency=round(min(class_consts(c)["mem_eff"] for c in classes), 3) if classes else 0.0,
        basis=basis,
        expected_error=(f"expected decode {d_rng[0]:.1f}-{d_rng[1]:.1f} tok/s, prefill {p_rng[0]:.0f}-{p_rng[1]:.0f} tok/s "
                        f"(10th-90th percentile of measured/predicted in {d_from}; prefill: {p_from})"
                        + ("; " + "; ".join(capped) if capped else "")),
        decode_range_tokens_per_s=d_rng,
        prefill_range_tokens_per_s=p_rng,
        decode_depth_tokens=depth,
        decode_at_context_tokens_per_s=round(min(decode_ctx, decode), 2),
        context_tokens=slot_ctx,
        decode_bound=bound if not any(c.startswith("decode") for c in capped) else "cap",
        basis_kind=basis_kind,
        speed_class=main_cls,
        prefill_class=pp_cls,
        capped_by=capped,
    )


def _main_class(parts: list[Part]) -> str:
    if not parts:
        return "cpu"
    return max(parts, key=lambda p: p.weight_bytes).cls


def _main_type(ftype: str) -> str:
    from planner.formats import GGUF_FTYPES

    return GGUF_FTYPES.get(ftype, ftype)


def _bytes_per_weight(fmt: WeightFormat) -> float:
    return max(fmt.bits, 1) / 8


def moe_factor() -> float:
    return _table().get("moe", {}).get("factor", 1.0)


def moe_pp_factor() -> float:
    """MoE prefill over the dense rule on active parameters: a prompt batch is split among the experts (each
    expert's matmul sees about batch x top-k / experts rows, too few to fill the matrix units) and gathered back."""
    return _table().get("moe", {}).get("pp_factor", 1.0)


def _unread_expert_bytes(spec: ModelSpec, fmt: WeightFormat, s: RuntimeSettings, hw: Hardware) -> dict:
    """MoE: expert bytes a device holds but does not read per token (all but top-k of the experts), by
    GPU index (None = the host). Without this the per-token split would follow the bytes held, and
    experts kept on the CPU (-ot exps=CPU) would look as if the CPU read them all."""
    if not spec.moe:
        return {}
    from planner.memory import layer_devices, repack_types, weights_by_placement

    w = weights_by_placement(spec, fmt, frozenset(repack_types(hw.cpu.flags)))
    dev_of = layer_devices(spec.n_layers, s.n_gpu_layers, list(hw.devices), s.tensor_split)
    frac = 1 - spec.moe.n_expert_used / spec.moe.n_expert
    out: dict = {}
    for il in range(spec.n_layers):
        d = None if s.experts_on_cpu else dev_of[il]
        out[d] = out.get(d, 0) + int(w.layer_expert_bytes[il] * frac)
    return out


def _devices_for(memory: MemoryBreakdown, hw: Hardware) -> list[Optional[Device]]:
    """Map breakdown rows back to hardware devices (None = the host CPU)."""
    out: list[Optional[Device]] = []
    gi = 0
    for m in memory.devices:
        if m.device == "CPU":
            out.append(None)
        else:
            out.append(hw.devices[gi % len(hw.devices)] if hw.devices else None)
            gi += 1
    return out


def row_split(row: dict) -> str:
    """"fit" or "held-out" for a published row, from a hash of its identity (source, hardware, model, quant,
    backend, tests): decided before any fitting and recorded in the rows files."""
    ident = "|".join(str(row.get(k) or "") for k in ("source", "hardware_id", "hardware", "model", "quant", "backend",
                                                    "tg_test", "pp_test"))
    import hashlib  # here, not at the top: plans never split rows, and hashlib costs start-up time

    h = int(hashlib.sha256(f"{SPLIT_SALT}|{ident}".encode()).hexdigest()[:8], 16)
    return "held-out" if (h % 1000) / 1000 < HELD_OUT_SHARE else "fit"


# ---------------------------------------------------------------- scoring published measurements

# Bits per weight of whole files, for rows that give a size but no parameter count (Llama-3-8B mixes,
# llama.cpp QUANT_OPTIONS; 16 for F16/BF16).
_FILE_BPW = {"F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.7, "Q4_K_M": 4.89, "Q4_K": 4.89,
             "Q4_0": 4.55, "Q3_K_M": 3.9, "MXFP4": 4.25, "FP8": 8.0, "INT4": 4.5}
# Repeating layers of the non-Gemma models in the published rows (their config.json num_hidden_layers),
# for the per-layer fixed cost; other models get 32.
_KNOWN_LAYERS = {"llama 3 8b": 32, "llama 3.1 8b": 32, "llama 3 70b": 80, "llama 3.1 70b": 80, "llama 2 7b": 32,
                 "llama 3.2 3b": 28, "qwen2.5 7b": 28, "deepseek-r1-distill-qwen-14b": 48, "nemotron super 49b": 80,
                 "gpt-oss 20b": 24, "gpt-oss 120b": 36}
_SKIP_WORDS = ("mtp", "speculative", "drafter")


def _row_format(quant: str) -> Optional[str]:
    q = (quant or "").upper()
    for name in ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "Q3_K_M", "BF16", "F16", "MXFP4", "FP8"):
        if name in q:
            return name
    if q.startswith("Q4_K"):
        return "Q4_K_M"
    if "8-BIT" in q or "INT8" in q:
        return "Q8_0"
    if "INT4" in q or "4BIT" in q or "4-BIT" in q or "AWQ" in q or "MIXED" in q:
        return "INT4"
    return None


def _row_gemma(model: str):
    """A calibration row's model -> our catalog spec, when it is a Gemma."""
    from planner.catalog import resolve_entry, spec_by_name

    m = model.lower().replace("(qat)", "").strip()
    if not m.startswith("gemma"):
        return None
    parts = m.split()
    try:
        entry, _ = resolve_entry(f"gemma-{parts[1]}-{parts[2]}")
    except Exception:  # an unlisted Gemma: score it as a dense file of the row's size
        return None
    return spec_by_name(entry["name"])


def row_engine(row: dict) -> str:
    if row.get("engine"):
        return str(row["engine"]).lower()
    b = (row.get("backend") or "").lower()
    for key, name in (("vllm", "vllm"), ("mlx", "mlx"), ("litert", "litert-lm"), ("mediapipe", "mediapipe"), ("mlc", "mlc"),
                      ("core ai", "coreai"), ("lm studio", "mlx")):
        if key in b:
            return name
    return "llama.cpp"


def _row_hardware(row: dict):
    if not row.get("hardware_id"):
        return None
    try:
        from profiles.targets import target_for_hardware_id

        return target_for_hardware_id(row["hardware_id"], row.get("n_devices"))
    except Exception:  # unknown ids just lose the device facts
        return None


def _gpu_core_ratio(row_hardware: str, device_notes: str) -> float:
    """GPU cores the row names over those of the target it is scored on ("N-core GPU" in both), else 1."""
    import re

    a, b = (re.search(r"(\d{1,4})-core GPU", s) for s in (row_hardware, device_notes))
    return int(a.group(1)) / int(b.group(1)) if a and b and int(b.group(1)) else 1.0


def row_parts(row: dict) -> dict:
    """The Parts (see ``Part``) a published row's device(s) run, built from the row and its target profile:
    {"decode": [...], "prefill": [...], "engine", "moe", "cls"} or {"skipped": why}."""
    from profiles.hardware import CPU

    text = " ".join(str(row.get(k) or "") for k in ("quant", "backend", "model")).lower()
    if any(w in text for w in _SKIP_WORDS):
        return {"skipped": "speculative decoding: not a single-stream rate"}
    hw = _row_hardware(row)
    bw = (row.get("bandwidth_gbps") or 0) * 1e9
    dev = hw.devices[0] if hw is not None and hw.devices else None
    on_cpu = "cpu" in (row.get("backend") or "").lower() and "gpu" not in (row.get("backend") or "").lower()
    if on_cpu:
        dev = None
    if not bw and hw is not None:
        bw = (dev.bandwidth_bytes_per_s if dev is not None else hw.ram_bandwidth_bytes_per_s) or 0
    if not bw:
        return {"skipped": "no bandwidth"}
    fmt_name = _row_format(row.get("quant", ""))
    spec = _row_gemma(row.get("model", ""))
    size = (row.get("size_gb") or 0) * 1e9 or (row.get("size_gib") or 0) * GiB
    depth = int(row.get("tg_depth") if row.get("tg_depth") is not None else 64)
    pp_tokens = int(row.get("pp_tokens") or 512)
    pp_depth = int(row.get("pp_depth") or 0) + pp_tokens // 2
    kv = attn = out = 0.0
    moe = False
    if spec is not None:
        from planner.formats import parse_format
        if fmt_name in (None, "INT4", "MXFP4", "FP8"):
            fmt_name = "Q4_0" if fmt_name in ("INT4", "MXFP4", None) else "Q8_0"
        fmt = parse_format(fmt_name, "llama.cpp")
        read = weights_read_per_token(spec, fmt)
        params = prefill_params(spec)
        layers = spec.n_layers
        kv = sum(_kv_read_bytes(spec, RuntimeSettings(n_ctx=max(depth, 1)), max(depth, 1)).values())
        attn = attention_flops(spec, pp_depth)
        out = _output_bytes(spec, fmt)
        moe = spec.moe is not None
        ftype = fmt_name
    else:
        if row.get("moe"):
            return {"skipped": "MoE model outside the catalog: active parameters unknown"}
        if not size:
            return {"skipped": "no model size"}
        read = size
        params = (row.get("params_b") or 0) * 1e9 or (size * 8 / _FILE_BPW[fmt_name] if fmt_name in _FILE_BPW else 0)
        layers = row.get("n_layers") or _KNOWN_LAYERS.get((row.get("model") or "").lower().replace("(assumed q4_0)", "").strip(), 32)
        ftype = fmt_name if fmt_name in _FILE_BPW and fmt_name not in ("INT4", "FP8", "MXFP4") else "Q4_0"
    n = int(row.get("n_devices") or 1)
    if dev is not None:
        cls = dev.device_class if dev.device_class in _table()["classes"] else "consumer_gpu"
        flops = dev.fp16_flops
        backend = row.get("backend") or dev.backend
    elif on_cpu or (hw is not None and not hw.devices) or row.get("device_class") in CPU_CLASSES:
        cls = row.get("device_class") or (efficiency_class(None, 0, hw) if hw is not None else "cpu")
        flops = None
        backend = row.get("backend") or "CPU"
    else:  # a GPU no target describes: the row's class, else a discrete GPU
        cls, flops, backend = row.get("device_class") or "consumer_gpu", None, row.get("backend") or ""
    if row.get("device_class"):
        cls = row["device_class"]
    if flops and dev is not None:  # a row of a binned part ("M3 Ultra 60-core GPU" scored on the 80-core target)
        flops *= _gpu_core_ratio(str(row.get("hardware") or ""), dev.notes or "")
    if row.get("fp16_tflops"):
        flops = row["fp16_tflops"] * 1e12
    arith = None
    cpu_class = cls in CPU_CLASSES
    if cpu_class:
        cores = row.get("cores") or (hw.cpu.cores_physical if hw is not None else None) or 8
        arch = "aarch64" if "neon" in str(row.get("isa") or "") or cls in ("phone_cpu",) or (hw is not None and hw.cpu.arch in ("aarch64", "arm64")) else "x86_64"
        fake = Hardware("row", [], 0, CPU(cores_physical=cores, arch=arch))
        arith, flops, _ = cpu_rates(fake, ftype)
    elif flops:
        from planner.formats import parse_format as _pf
        arith = flops * GPU_VECTOR_SHARE / OPS_PER_WEIGHT.get(_main_type(ftype), 4) * _bytes_per_weight(_pf(ftype, "llama.cpp"))
    parts = [Part(cls=cls, bandwidth=bw, weight_bytes=read / n, kv_bytes=kv / n, params=params / n, layers=layers / n,
                  backend=backend, arith_bytes_per_s=arith, flops=flops,
                  output_bytes=out / n, attn_flops=attn / n) for _ in range(n)]
    return {"decode": parts, "prefill": parts, "engine": row_engine(row), "moe": moe, "cls": cls,
            "bytes_per_token": read + kv, "params": params, "ranks": row_engine(row) == "vllm" and n > 1}


def predict_row(row: dict, rp: Optional[dict] = None) -> dict:
    rp = rp or row_parts(row)
    if "skipped" in rp:
        return rp
    t, _, bound = decode_time(rp["decode"], rp["engine"], parallel_ranks=rp["ranks"])
    tg = (1 / t if t > 0 else 0.0) * (moe_factor() if rp["moe"] else 1.0)
    t_pp = prefill_time(rp["prefill"], rp["engine"], parallel_ranks=rp["ranks"])
    pp = (1 / t_pp) * (moe_pp_factor() if rp["moe"] else 1.0) if t_pp > 0 else None
    return {"tg": tg, "pp": pp, "bound": bound}


def score_row(row: dict) -> dict:
    """Predicted vs measured decode (and prefill) for one published measurement, through the same
    ``decode_time`` / ``prefill_time`` the plans use (without the caps, which come from these rows)."""
    out = {"model": row.get("model"), "quant": row.get("quant"), "hardware": row.get("hardware") or row.get("hardware_id"),
           "backend": row.get("backend"), "engine": row_engine(row), "split": row.get("split") or row_split(row),
           "source": row.get("source"), "measured_tg_tps": row.get("tg_tps"), "measured_pp_tps": row.get("pp_tps")}
    rp = row_parts(row)
    if "skipped" in rp:
        return {**out, "skipped": rp["skipped"]}
    pr = predict_row(row, rp)
    tg = pr["tg"]
    out.update(predicted_tg_tps=round(tg, 2), efficiency_class=rp["cls"], bytes_per_token=int(rp["bytes_per_token"]),
               decode_bound=pr["bound"])
    if row.get("tg_tps"):
        out["tg_error_pct"] = round((tg - row["tg_tps"]) / row["tg_tps"] * 100, 1)
    pp = pr["pp"]
    if pp:
        out["predicted_pp_tps"] = round(pp, 1)
        if row.get("pp_tps"):
            out["pp_error_pct"] = round((pp - row["pp_tps"]) / row["pp_tps"] * 100, 1)
    return out


# bench row fields -> (lowest, highest); checked when a rows file is read (profiles.bounds)
ROW_NUMBERS = {"tg_tps": (0.0, 1e7), "pp_tps": (0.0, 1e9), "bandwidth_gbps": (0.0, 1e6), "size_gb": (0.0, 1e6),
               "size_gib": (0.0, 1e6), "n_devices": (1, 1024), "ctx": (0, 1 << 24), "n_ctx": (0, 1 << 24),
               "tg_depth": (0, 1 << 24), "pp_tokens": (1, 1 << 24), "pp_depth": (0, 1 << 24), "n_layers": (1, 100_000),
               "params_b": (0.0, 1e5), "fp16_tflops": (0.0, 1e6), "cores": (1, 100_000)}
_INT_KEYS = ("n_devices", "tg_depth", "pp_tokens", "pp_depth", "n_layers", "cores")


def check_rows(rows: list, origin: str) -> None:
    """Every row of a measurements file: an object whose numbers are in bounds and whose names are strings."""
    from profiles import bounds as B

    fix = "fix the row (docs/accuracy.md describes the format)"
    if not rows:
        raise B.BoundsError(origin, "rows", 0, "holds no measurements to score", "give a file with at least one row "
                            "(bench/data/calibration_rows.json shows the format)")
    if len(rows) > 1_000_000:
        raise B.BoundsError(origin, "rows", len(rows), "is above 1,000,000 rows", fix)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise B.BoundsError(origin, f"rows[{i}]", row, "is not an object", fix)
        for key, (lo, hi) in ROW_NUMBERS.items():
            if row.get(key) is not None:
                if key in _INT_KEYS:
                    B.check_int(origin, f"rows[{i}].{key}", row[key], int(lo), int(hi), fix)
                else:
                    B.check_number(origin, f"rows[{i}].{key}", row[key], lo, hi, fix)
        for key in ("model", "quant", "hardware", "hardware_id", "backend", "engine", "device_class", "split", "isa"):
            if row.get(key) is not None and not isinstance(row[key], str):
                raise B.BoundsError(origin, f"rows[{i}].{key}", row[key], "is not a string", fix)
        if row.get("split") is not None and row["split"] not in ("fit", "held-out"):
            raise B.BoundsError(origin, f"rows[{i}].split", row["split"], "is not 'fit' or 'held-out'", fix)


def _summary(scored: list[dict]) -> dict:
    summary = {}
    for key in ("tg", "pp"):
        errs = [abs(s[f"{key}_error_pct"]) for s in scored if f"{key}_error_pct" in s]
        by_class: dict = {}
        for s in scored:
            if f"{key}_error_pct" in s:
                by_class.setdefault(s["efficiency_class"], []).append(abs(s[f"{key}_error_pct"]))
        summary[key] = {"n": len(errs), "median_abs_error_pct": _pct(errs, 50), "p90_abs_error_pct": _pct(errs, 90),
                        "by_class": {c: {"n": len(v), "median": _pct(v, 50), "p90": _pct(v, 90)} for c, v in sorted(by_class.items())}}
    return summary


def score_rows(rows: list[dict], split: str = "all") -> dict:
    """Score every row; ``summary`` covers the rows of ``split`` ("all", "fit" or "held-out"), and
    ``summary_by_split`` each split apart (a row's split is its own "split" field or ``row_split``)."""
    scored = [score_row(r) for r in rows]
    chosen = [s for s in scored if split == "all" or s["split"] == split]
    return {"rows": scored if split == "all" else chosen, "split": split, "summary": _summary(chosen),
            "summary_by_split": {sp: _summary([s for s in scored if s["split"] == sp]) for sp in ("fit", "held-out")}}


def _pct(values: list[float], q: int) -> Optional[float]:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))], 1)
