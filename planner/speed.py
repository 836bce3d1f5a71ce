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
from profiles.units import GiB

# Host memory bandwidth when neither the target nor a measurement gives one: dual-channel DDR4-3200 (51.2 GB/s peak).
DEFAULT_RAM_BANDWIDTH = 51_200_000_000
# Prefill runs at this fraction of a GPU's dense FP16 tensor throughput (llama.cpp pp512 rows are 0.2-0.5).
PREFILL_GPU_EFFICIENCY = 0.35
# CPU prefill: effective FLOP/s per physical core on llama.cpp's quantized matmuls (2 x active params x prefill
# tokens/s). Measured 176-316 GFLOP/s per core on a 2-core AVX2 EPYC for Gemma 3 1B/4B-width Q4_K_M models,
# depending on load (bench/fidelity.py --part speed, docs/accuracy.md); the low end is kept. Expect +-50% elsewhere.
CPU_FLOPS_PER_CORE = 180e9
PREFILL_CPU_EFFICIENCY = 1.0
# Engine factors relative to llama.cpp's single-stream decode (vLLM rows: ~0.46 of the ceiling on HBM parts).
ENGINE_FACTOR = {"llama.cpp": 1.0, "vllm": 1.0, "transformers": 0.5}
DEFAULT_DEPTH = 4096  # context depth at which decode speed is quoted
# MoE decode reaches a smaller share of the bandwidth ceiling than dense models (router, scattered expert
# reads): Gemma 4 26B-A4B measured 0.68x (Strix Halo, Vulkan) and 0.60x (RTX 3090, CUDA) of the dense
# prediction in bench/data/calibration_rows.json. Two rows: expect +-20%.
MOE_DECODE_FACTOR = 0.64


def weights_read_per_token(spec: ModelSpec, fmt: WeightFormat) -> int:
    """Every matmul weight once (MoE experts scaled by top-k / experts), not the embedding tables,
    plus the tied embedding once more as the output matrix."""
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
    return total


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
    read_total = weights_read_per_token(spec, fmt)
    kv_read = sum(_kv_read_bytes(spec, s, depth).values())

    # split the per-token bytes over devices in proportion to the weights each reads per token
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
    if spec.moe:
        decode *= MOE_DECODE_FACTOR

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


# ---------------------------------------------------------------- scoring published measurements

# Bits per weight of whole files, for rows that give a size but no parameter count (Llama-3-8B mixes,
# llama.cpp QUANT_OPTIONS; 16 for F16/BF16).
_FILE_BPW = {"F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.7, "Q4_K_M": 4.89, "Q4_K": 4.89,
             "Q4_0": 4.55, "Q3_K_M": 3.9, "MXFP4": 4.25, "FP8": 8.0, "INT4": 4.5}


def _row_format(quant: str) -> Optional[str]:
    q = (quant or "").upper()
    for name in ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "Q3_K_M", "BF16", "F16", "MXFP4", "FP8"):
        if name in q:
            return name
    if q.startswith("Q4_K"):
        return "Q4_K_M"
    if "INT4" in q or "4BIT" in q or "AWQ" in q:
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


def score_row(row: dict) -> dict:
    """Predicted vs measured decode (and prefill) for one published measurement.

    The row's own bandwidth and device count are used; a row whose hardware_id maps to a target
    profile takes its device class (and FLOPs for prefill) from there.
    """
    from planner.formats import parse_format, weight_bytes
    from planner.catalog import active_params

    out = {"model": row.get("model"), "quant": row.get("quant"), "hardware": row.get("hardware") or row.get("hardware_id"),
           "backend": row.get("backend"), "measured_tg_tps": row.get("tg_tps"), "measured_pp_tps": row.get("pp_tps")}
    hw = None
    if row.get("hardware_id"):
        try:
            from profiles.targets import target_for_hardware_id

            hw = target_for_hardware_id(row["hardware_id"], row.get("n_devices"))
        except Exception:  # unknown ids just lose the device class
            hw = None
    bw = (row.get("bandwidth_gbps") or 0) * 1e9
    if not bw and hw is not None:
        bw = (hw.devices[0].bandwidth_bytes_per_s if hw.devices else hw.ram_bandwidth_bytes_per_s) or 0
    if not bw:
        return {**out, "skipped": "no bandwidth"}
    fmt_name = _row_format(row.get("quant", ""))
    spec = _row_gemma(row.get("model", ""))
    size = (row.get("size_gb") or 0) * 1e9 or (row.get("size_gib") or 0) * GiB
    active_fraction = 1.0
    params = None
    if spec is not None:
        if fmt_name in (None, "INT4", "MXFP4", "FP8"):
            fmt_name = "Q4_0" if fmt_name in ("INT4", "MXFP4") else (fmt_name or "Q4_K_M")
        fmt = parse_format(fmt_name if fmt_name != "FP8" else "Q8_0", "llama.cpp")
        total = weight_bytes(spec, fmt)
        size = size or total
        params = active_params(spec)
        active_fraction = weights_read_per_token(spec, fmt) / total
    elif row.get("moe"):
        return {**out, "skipped": "MoE model outside the catalog: active parameters unknown"}
    if not size:
        return {**out, "skipped": "no model size"}
    bytes_per_token = size * active_fraction
    dev = hw.devices[0] if hw is not None and hw.devices else None
    cls = "multi_gpu" if (row.get("n_devices") or 1) > 1 else efficiency_class(dev, int(size), hw or Hardware("row", [], 0))
    if dev is None and hw is None:
        cls = "consumer_gpu" if size >= _table()["small_model_bytes"] else "consumer_gpu_small"
    eff = efficiency(cls)
    tg = eff * bw / bytes_per_token * (MOE_DECODE_FACTOR if spec is not None and spec.moe else 1.0)
    out.update(predicted_tg_tps=round(tg, 2), efficiency_class=cls, bytes_per_token=int(bytes_per_token))
    if row.get("tg_tps"):
        out["tg_error_pct"] = round((tg - row["tg_tps"]) / row["tg_tps"] * 100, 1)
    if params is None and fmt_name in _FILE_BPW:
        params = size * 8 / _FILE_BPW[fmt_name]
    flops = dev.fp16_flops if dev is not None else None
    if row.get("pp_tps") and params and flops:
        pp = flops * PREFILL_GPU_EFFICIENCY * (row.get("n_devices") or 1) / (2 * params)
        out["predicted_pp_tps"] = round(pp, 1)
        out["pp_error_pct"] = round((pp - row["pp_tps"]) / row["pp_tps"] * 100, 1)
    return out


# bench row fields -> (lowest, highest); checked when a rows file is read (profiles.bounds)
ROW_NUMBERS = {"tg_tps": (0.0, 1e7), "pp_tps": (0.0, 1e9), "bandwidth_gbps": (0.0, 1e6), "size_gb": (0.0, 1e6),
               "size_gib": (0.0, 1e6), "n_devices": (1, 1024), "ctx": (0, 1 << 24), "n_ctx": (0, 1 << 24)}


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
                if key == "n_devices":
                    B.check_int(origin, f"rows[{i}].{key}", row[key], int(lo), int(hi), fix)
                else:
                    B.check_number(origin, f"rows[{i}].{key}", row[key], lo, hi, fix)
        for key in ("model", "quant", "hardware", "hardware_id", "backend"):
            if row.get(key) is not None and not isinstance(row[key], str):
                raise B.BoundsError(origin, f"rows[{i}].{key}", row[key], "is not a string", fix)


def score_rows(rows: list[dict]) -> dict:
    scored = [score_row(r) for r in rows]
    summary = {}
    for key in ("tg", "pp"):
        errs = [abs(s[f"{key}_error_pct"]) for s in scored if f"{key}_error_pct" in s]
        by_class: dict = {}
        for s in scored:
            if f"{key}_error_pct" in s:
                by_class.setdefault(s["efficiency_class"], []).append(abs(s[f"{key}_error_pct"]))
        summary[key] = {"n": len(errs), "median_abs_error_pct": _pct(errs, 50), "p90_abs_error_pct": _pct(errs, 90),
                        "by_class": {c: {"n": len(v), "median": _pct(v, 50), "p90": _pct(v, 90)} for c, v in sorted(by_class.items())}}
    return {"rows": scored, "summary": summary}


def _pct(values: list[float], q: int) -> Optional[float]:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))], 1)
