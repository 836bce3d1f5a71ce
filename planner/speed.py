"""Speed model: decode from bytes read per token over bandwidth, prefill from FLOPs.

decode_time_per_token = sum over devices (bytes read on that device / (bandwidth x efficiency)).
Efficiency per device class is the median of published measurements (planner/data/speed.json).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Optional

from planner.catalog import active_params
from planner.formats import WeightFormat, row_bytes, tensor_sizes
from planner.types import MemoryBreakdown, ModelSpec, RuntimeSettings, SpeedEstimate
from profiles.hardware import Device, Hardware

# Host memory bandwidth when neither the target nor a measurement gives one: dual-channel DDR4-3200 (51.2 GB/s peak).
DEFAULT_RAM_BANDWIDTH = 51_200_000_000
# Prefill runs at this fraction of a GPU's dense FP16 tensor throughput (llama.cpp pp512 rows are 0.2-0.5).
PREFILL_GPU_EFFICIENCY = 0.35
# CPU prefill: FLOP/s per physical core (AVX2: 2 FMA x 8 lanes x 2 at ~2.5 GHz) at this efficiency.
CPU_FLOPS_PER_CORE = 80e9
PREFILL_CPU_EFFICIENCY = 0.3
# Engine factors relative to llama.cpp's single-stream decode (vLLM rows: ~0.46 of the ceiling on HBM parts).
ENGINE_FACTOR = {"llama.cpp": 1.0, "vllm": 1.0, "transformers": 0.5}
DEFAULT_DEPTH = 4096  # context depth at which decode speed is quoted


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(resources.files("planner").joinpath("data/speed.json").read_text())


def efficiency_class(dev: Optional[Device], model_bytes: int, hw: Hardware) -> str:
    small = model_bytes < _table()["small_model_bytes"]
    if dev is None:
        return {"phone": "edge", "sbc": "sbc"}.get(hw.kind, "cpu")
    c = dev.device_class
    if c == "apple":
        return "apple_small" if small else "apple"
    if c == "consumer_gpu":
        return "consumer_gpu_small" if small else "consumer_gpu"
    if c in ("phone",):
        return "edge"
    return c if c in _table()["classes"] else "consumer_gpu"


def efficiency(cls: str) -> float:
    return _table()["classes"][cls]["median"]


def _kv_row(kv_type: str, n: int) -> int:
    """Bytes of n cached elements: ggml types for llama.cpp, vLLM's 'auto' (model dtype) and fp8."""
    if kv_type.startswith("fp8"):
        return n
    if kv_type == "auto":
        return 2 * n
    return row_bytes(kv_type, n)


def _kv_read_bytes(spec: ModelSpec, s: RuntimeSettings, depth: int) -> dict[int, int]:
    out = {}
    for lay in spec.kv_layers:
        cells = min(depth, spec.sliding_window) if lay.sliding else depth
        out[lay.index] = cells * (_kv_row(s.type_k, lay.n_head_kv * lay.head_dim_k) + _kv_row(s.type_v, lay.n_head_kv * lay.head_dim_v))
    return out


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
    depth = min(depth or DEFAULT_DEPTH, s.n_ctx)
    sizes = tensor_sizes(spec, fmt)
    model_bytes = sum(b for _, b in sizes)
    # bytes read per token: every matmul weight once (experts scaled by top-k), not the embedding tables
    read_total = 0
    for t, b in sizes:
        if t.name in ("token_embd.weight", "per_layer_token_embd.weight"):
            continue
        if "_exps." in t.name and spec.moe:
            b = b * spec.moe.n_expert_used // spec.moe.n_expert
        read_total += b
    if spec.tied_embeddings:
        read_total += next(b for t, b in sizes if t.name == "token_embd.weight")  # lm_head = tied embedding
    kv_read = sum(_kv_read_bytes(spec, s, depth).values())

    # split the per-token bytes over devices in proportion to the weights each reads per token
    held = [(d, m) for d, m in zip(_devices_for(memory, hw), memory.devices)]
    input_bytes = sum(b for t, b in sizes if t.name in ("token_embd.weight", "per_layer_token_embd.weight"))
    tied = next((b for t, b in sizes if t.name == "token_embd.weight"), 0) if spec.tied_embeddings else 0
    output_on_cpu = not any(m.detail.get("tied_output_copy_bytes") for d, m in held if d is not None)

    def readable(d, m) -> int:
        if d is not None:
            return m.weights_bytes
        return max(0, m.weights_bytes - input_bytes + (tied if output_on_cpu else 0))

    held_total = sum(readable(d, m) for d, m in held) or 1
    kv_total = sum(m.kv_bytes for _, m in held) or 1
    time_per_token = 0.0
    bound = []
    classes = []
    for dev, m in held:
        share = readable(dev, m) / held_total
        kv_share = m.kv_bytes / kv_total if memory.kv_bytes else 0
        if memory.engine == "vllm":
            share, kv_share = 1.0 / max(1, len(held)), 1.0 / max(1, len(held))
        nbytes = read_total * share + kv_read * kv_share
        if nbytes <= 0:
            continue
        bw = dev.bandwidth_bytes_per_s if dev is not None else (hw.ram_bandwidth_bytes_per_s or DEFAULT_RAM_BANDWIDTH)
        bw = bw or DEFAULT_RAM_BANDWIDTH
        cls = efficiency_class(dev, model_bytes, hw)
        classes.append(cls)
        eff = efficiency(cls) * ENGINE_FACTOR.get(memory.engine, 1.0)
        if memory.engine == "vllm" and len(held) > 1:
            time_per_token += nbytes / (bw * eff) / 1  # tensor parallel: ranks read in parallel
        else:
            time_per_token += nbytes / (bw * eff)
        bound.append(f"{m.device}: {nbytes / 1e9:.2f} GB/token at {bw / 1e9:.0f} GB/s")
    if memory.engine == "vllm" and len(held) > 1 and s.pipeline_parallel == 1:
        time_per_token /= len(held)
    decode = 1.0 / time_per_token if time_per_token > 0 else 0.0

    # prefill: 2 FLOPs per active parameter per token, on the device doing the matmuls
    flops_per_token = 2 * active_params(spec)
    gpu = next((d for d, m in held if d is not None and m.weights_bytes), None)
    if gpu is not None and gpu.fp16_flops:
        n_gpus = sum(1 for d, _ in held if d is not None)
        pp_flops = gpu.fp16_flops * PREFILL_GPU_EFFICIENCY * (n_gpus if memory.engine == "vllm" else 1)
    else:
        cores = hw.cpu.cores_physical or hw.cpu.cores_logical or 4
        pp_flops = cores * CPU_FLOPS_PER_CORE * PREFILL_CPU_EFFICIENCY
        if gpu is not None:  # GPU without a FLOPs figure: assume 10x the CPU
            pp_flops *= 10
    prefill = pp_flops / flops_per_token
    prefill = min(prefill, decode * 512) if decode else prefill  # batches never beat 512x decode in the rows
    ttft = prompt_tokens / prefill if prefill else 0.0
    basis_cls = ", ".join(sorted(set(classes))) or "cpu"
    table = _table()["classes"]
    rng = "; ".join(f"{c}: {table[c]['min']:.2f}-{table[c]['max']:.2f} (n={table[c]['n']})" for c in sorted(set(classes)))
    return SpeedEstimate(
        decode_tokens_per_s=round(decode, 2),
        prefill_tokens_per_s=round(prefill, 1),
        time_to_first_token_s=round(ttft, 3),
        prompt_tokens=prompt_tokens,
        bytes_per_token=int(read_total + kv_read),
        bound="; ".join(bound),
        efficiency=round(min(efficiency(c) for c in classes), 3) if classes else 0.0,
        basis=f"bandwidth x efficiency, median of published measurements for {basis_cls}; KV read at {depth} tokens",
        expected_error=f"decode efficiency range in the calibration rows: {rng}; prefill is a FLOPs estimate, expect +-50%",
    )


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
