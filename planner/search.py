"""Plan one configuration (``plan``) or search for the best one (``recommend``).

recommend enumerates model x weight format x KV type x context x GPU layers, keeps what fits every
device with the safety margin, and ranks by a stated objective. Every candidate it looked at comes
back as an alternative with the reason it lost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from planner.catalog import all_models
from planner.errors import DoesNotFitError, InvalidSettingsError
from planner.formats import WeightFormat, parse_format, quality_loss, weight_bytes
from planner.memory import DEFAULT_MARGIN, estimate_memory
from planner.speed import estimate_speed
from planner.types import Alternative, ModelSpec, Plan, RuntimeSettings
from profiles.hardware import Hardware

GiB = 1 << 30
DEFAULT_CTX = 32768  # recommend aims for this context (or the trained maximum if smaller)
MIN_CTX = 4096  # below this recommend prefers a smaller format (llama.cpp --fit's minimum context)
# Formats recommend tries per engine, best quality first.
GGUF_LADDER = ["Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "IQ4_XS", "Q4_0", "Q3_K_M", "Q3_K_S", "Q2_K"]
DENSE_LADDER = {"vllm": ["bf16", "fp8", "gptq-int8", "gptq-int4"], "transformers": ["bf16", "gptq-int8", "gptq-int4"]}
# q4_0 KV is left to those who ask (--kv-type q4_0): its quality cost at long context is not well measured.
KV_LADDER = {"llama.cpp": [("f16", "f16"), ("q8_0", "q8_0")], "vllm": [("auto", "auto"), ("fp8", "fp8")], "transformers": [("f16", "f16")]}
# Perplexity cost of a quantized KV cache, in the same unit as quality.json (small next to weight quantization).
KV_QUALITY = {"f16": 0.0, "auto": 0.0, "q8_0": 0.002, "fp8": 0.005, "q4_0": 0.05}
PRIORITIES = ("quality", "speed", "context")
FAMILY_RANK = {"gemma4": 4, "gemma3": 3, "gemma3n": 2, "gemma2": 1}


def gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def plan(spec: ModelSpec, fmt: WeightFormat, settings: RuntimeSettings, hw: Hardware, *, margin: int = DEFAULT_MARGIN, target: str = "",
         with_speed: bool = True) -> Plan:
    """One configuration: memory per device, speed, quality. Does not search."""
    if settings.n_ctx > spec.ctx_train:
        raise InvalidSettingsError(
            f"context {settings.n_ctx} is above {spec.name}'s trained maximum of {spec.ctx_train}",
            hint=f"use --ctx {spec.ctx_train} or less",
        )
    if settings.n_ctx <= 0 or settings.n_parallel <= 0 or settings.n_ubatch <= 0:
        raise InvalidSettingsError("context, parallel slots and ubatch must be positive")
    s = settings
    if s.engine == "vllm":
        s = dataclasses.replace(s, type_k=s.kv_cache_dtype, type_v=s.kv_cache_dtype)
    memory = estimate_memory(spec, fmt, s, hw, margin)
    speed = estimate_speed(spec, fmt, s, hw, memory) if with_speed else None
    p = Plan(
        model=spec.name,
        weight_format=fmt.name,
        engine=s.engine,
        target=target or hw.name,
        settings=s,
        memory=memory,
        speed=speed,
        weight_file_bytes=weight_bytes(spec, fmt),
        quality_loss=round(quality_loss(fmt.name) + KV_QUALITY.get(s.type_k, 0) / 2 + KV_QUALITY.get(s.type_v, 0) / 2, 4),
    )
    if spec.vision_params and s.engine == "vllm":
        p.notes.append(f"text only: vLLM starts with --language-model-only, so the vision tower (~{spec.vision_params / 1e6:.0f}M params) "
                       f"is neither loaded nor profiled")
    elif spec.vision_params:
        p.notes.append(f"text weights only; the vision tower (~{spec.vision_params / 1e6:.0f}M params) is a separate mmproj file if you need images")
    return p


def shortfall(p: Plan) -> str:
    """'needs 26.1 GiB, 23.0 GiB usable on RTX 4090' for the worst device."""
    worst = None
    for d in p.memory.devices:
        if d.budget_bytes is not None and d.total_bytes > d.budget_bytes:
            over = d.total_bytes - d.budget_bytes
            if worst is None or over > worst[0]:
                worst = (over, d)
    if worst is None:
        return ""
    d = worst[1]
    if p.engine == "vllm" and d.budget_bytes is not None and d.budget_bytes < 0:
        need = d.detail.get("kv_needed_bytes", 0)
        return f"KV pool {gib(d.kv_bytes)} on {d.device} < {gib(need)} needed for {p.ctx} tokens x {p.settings.n_parallel}"
    return f"needs {gib(d.total_bytes)}, {gib(max(0, d.budget_bytes))} usable on {d.device}"


@dataclass
class Recommendation:
    plan: Optional[Plan]
    alternatives: list[Alternative] = field(default_factory=list)
    max_context: dict = field(default_factory=dict)  # "k/v" -> largest context that fits with the chosen weights
    notes: list[str] = field(default_factory=list)
    priority: str = "quality"

    def to_dict(self) -> dict:
        return {
            "plan": self.plan.to_dict() if self.plan else None,
            "max_context": self.max_context,
            "alternatives": [a.to_dict() for a in self.alternatives],
            "priority": self.priority,
            "notes": list(self.notes),
        }


def _fits(spec, fmt, s, hw, margin) -> tuple[bool, Plan]:
    p = plan(spec, fmt, s, hw, margin=margin, with_speed=False)
    return p.fits, p


def _with_speed(p: Plan, spec: ModelSpec, hw: Hardware) -> Plan:
    if p.speed is None:
        p.speed = estimate_speed(spec, parse_format(p.weight_format, p.engine), p.settings, hw, p.memory)
    return p


def max_context(spec: ModelSpec, fmt: WeightFormat, s: RuntimeSettings, hw: Hardware, margin: int, limit: Optional[int] = None) -> int:
    """Largest context (multiple of 256, per slot x slots) that fits; 0 if even 256 does not.

    The result is the total over all slots (what n_ctx means), kept within the limit or trained maximum.
    """
    step = max(1, s.n_parallel) if s.engine == "llama.cpp" and not s.kv_unified else 1
    hi = (limit or spec.ctx_train) // (256 * step)
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        ok, _ = _fits(spec, fmt, dataclasses.replace(s, n_ctx=mid * 256 * step), hw, margin)
        if ok:
            lo = mid
        else:
            hi = mid - 1
    return lo * 256 * step


def _placements(spec: ModelSpec, hw: Hardware, s: RuntimeSettings) -> list[RuntimeSettings]:
    """GPU-layer variants to try, best first: all on GPU, MoE experts on CPU, then partial offload.

    vLLM on a cluster: one host first (tensor parallel inside it), then pipeline stages across all hosts.
    """
    if s.engine == "vllm" and hw.is_cluster and hw.devices and s.pipeline_parallel == 1:
        return [s, dataclasses.replace(s, pipeline_parallel=len(hw.hosts))]
    if s.engine != "llama.cpp" or not hw.devices:
        return [dataclasses.replace(s, n_gpu_layers=0 if s.engine == "llama.cpp" else s.n_gpu_layers)]
    out = [dataclasses.replace(s, n_gpu_layers=-1)]
    if spec.moe:
        out.append(dataclasses.replace(s, n_gpu_layers=-1, experts_on_cpu=True))
    return out


def _best_partial(spec, fmt, s, hw, margin) -> Optional[Plan]:
    """Most GPU layers that fit (memory grows with -ngl, so bisect)."""
    lo, hi = 0, spec.n_layers
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        ok, p = _fits(spec, fmt, dataclasses.replace(s, n_gpu_layers=mid), hw, margin)
        if ok:
            best, lo = p, mid + 1
        else:
            hi = mid - 1
    return best


def recommend(
    hw: Hardware,
    *,
    models: Optional[list[ModelSpec]] = None,
    formats: Optional[list[str]] = None,
    engine: str = "llama.cpp",
    ctx: Optional[int] = None,
    ctx_max: bool = False,
    parallel: int = 1,
    kv_types: Optional[list[tuple[str, str]]] = None,
    priority: str = "quality",
    margin: int = DEFAULT_MARGIN,
    base: Optional[RuntimeSettings] = None,
    target: str = "",
) -> Recommendation:
    if priority not in PRIORITIES:
        raise InvalidSettingsError(f"unknown priority '{priority}'", hint=f"use one of {', '.join(PRIORITIES)}")
    explicit_model = models is not None
    models = models or sorted(all_models(), key=lambda m: (FAMILY_RANK[m.family], m.n_params_text), reverse=True)
    fmts = formats or (GGUF_LADDER if engine == "llama.cpp" else DENSE_LADDER[engine])
    kvs = kv_types or KV_LADDER[engine]
    base = base or RuntimeSettings(engine=engine)
    base = dataclasses.replace(base, engine=engine, n_parallel=parallel)
    rec = Recommendation(None, priority=priority)
    candidates: list[Plan] = []
    for spec in models:
        sbase = base
        if engine == "vllm" and hw.devices and base.tensor_parallel * base.pipeline_parallel == 1:
            # per model: heads differ; on a cluster TP stays inside one host (pipeline stages span hosts)
            sbase = dataclasses.replace(base, tensor_parallel=vllm_tensor_parallel(spec, gpus_per_host(hw)))
        want = min(ctx or DEFAULT_CTX, spec.ctx_train) if not ctx_max else spec.ctx_train
        floor = want if (ctx and not ctx_max) else min(MIN_CTX, want)
        for fname in fmts:
            fmt = parse_format(fname, engine)
            if engine not in fmt.engines:
                continue
            for k, v in kvs:
                s0 = dataclasses.replace(sbase, type_k=k, type_v=v, kv_cache_dtype=k if engine == "vllm" else base.kv_cache_dtype, n_ctx=want)
                if engine == "llama.cpp" and v not in ("f16", "f32", "bf16") and not s0.flash_attn:
                    continue
                found = None
                layouts = _placements(spec, hw, s0)
                for i, s1 in enumerate(layouts):
                    ok, p = _fits(spec, fmt, s1, hw, margin)
                    if ok:
                        found = p
                        if s1.experts_on_cpu:
                            found.notes.append("partial offload: MoE expert tensors on the CPU (-ot exps=CPU)")
                        if s1.pipeline_parallel > 1 and hw.is_cluster:
                            found.notes.append(_multi_node_note(s1, hw))
                        break
                    if s1.engine == "vllm" and i + 1 < len(layouts):
                        continue  # more hosts may reach the full context before a shorter one is accepted
                    c = max_context(spec, fmt, s1, hw, margin, limit=want)
                    if c >= floor:
                        found = plan(spec, fmt, dataclasses.replace(s1, n_ctx=c), hw, margin=margin)
                        found.notes.append(f"context reduced from {want} to {c} to fit")
                        if s1.experts_on_cpu:
                            found.notes.append("partial offload: MoE expert tensors on the CPU (-ot exps=CPU)")
                        break
                if found is None and engine == "llama.cpp" and hw.devices:
                    part = _best_partial(spec, fmt, dataclasses.replace(s0, n_ctx=floor if floor < want else want), hw, margin)
                    if part is not None and part.settings.n_gpu_layers > 0:
                        found = part
                        found.notes.append(f"partial offload: {part.settings.n_gpu_layers} of {spec.n_layers + 1} layers on the GPU")
                if found is None:
                    miss = plan(spec, fmt, dataclasses.replace(s0, n_gpu_layers=-1 if hw.devices else 0), hw, margin=margin, with_speed=False)
                    rec.alternatives.append(Alternative(miss, f"does not fit: {shortfall(miss) or 'no placement fits'}"))
                    continue
                candidates.append(_with_speed(found, spec, hw))
                full_speed = found.settings.n_ctx >= want and not any("partial" in n for n in found.notes)
                if priority == "quality" and full_speed:
                    break  # a higher-quality KV type already fits at full context
            else:
                continue
            if priority == "quality" and not explicit_model and candidates and candidates[-1].model == spec.name and full_speed:
                break  # lower formats of this model can only lose on quality
    if not candidates:
        rec.notes.append("nothing fits this target with the margin; see the alternatives for the closest")
        rec.alternatives.sort(key=lambda a: a.plan.memory.total_bytes)
        return rec

    def key(p: Plan):
        partial = any("partial" in n for n in p.notes)
        spd = p.speed.decode_tokens_per_s if p.speed else 0
        rank = (FAMILY_RANK.get(_family(models, p.model), 0), _params(models, p.model))
        if priority == "speed":
            return (p.quality_loss <= quality_loss("Q4_0") + 0.06, spd, -p.quality_loss)
        if priority == "context":
            return (p.ctx, -p.quality_loss, spd)
        # quality: the best model at full GPU speed, reaching the wanted context, least quality loss, then context, speed
        reaches = p.ctx >= min(ctx or DEFAULT_CTX, _ctx_train(models, p.model)) if not ctx_max else True
        return (not partial, rank if not explicit_model else (0, 0), reaches, -round(p.quality_loss, 3), p.ctx, spd)

    candidates.sort(key=key, reverse=True)
    rec.plan = candidates[0]
    for p in candidates[1:]:
        rec.alternatives.append(Alternative(p, _why_lost(rec.plan, p, priority)))
    rec.alternatives.sort(key=lambda a: (not a.plan.fits, a.plan.quality_loss))
    chosen = rec.plan
    spec = next(m for m in models if m.name == chosen.model)
    for k, v in kvs:
        s1 = dataclasses.replace(chosen.settings, type_k=k, type_v=v, kv_cache_dtype=k if engine == "vllm" else chosen.settings.kv_cache_dtype)
        if engine == "llama.cpp" and v not in ("f16", "f32", "bf16") and not s1.flash_attn:
            continue
        rec.max_context[f"{k}/{v}" if k != v else k] = max_context(spec, parse_format(chosen.weight_format, engine), s1, hw, margin)
    return rec


def vllm_tensor_parallel(spec: ModelSpec, n_gpus: int) -> int:
    """Largest power-of-two TP size <= the GPU count that divides the attention heads and, per layer, either
    divides the KV heads or is a multiple of them (vLLM replicates KV heads when TP exceeds them)."""
    heads = spec.layers[0].n_head
    kv = {lay.n_head_kv for lay in spec.layers}
    tp = 1
    while tp * 2 <= n_gpus and heads % (tp * 2) == 0 and all(k % (tp * 2) == 0 or (tp * 2) % k == 0 for k in kv):
        tp *= 2
    return tp


def gpus_per_host(hw: Hardware) -> int:
    """GPUs one tensor-parallel group may use: a cluster's smallest host, else every GPU."""
    if hw.is_cluster:
        return min(len(h.devices) for h in hw.hosts) or 1
    return len(hw.devices)


def _multi_node_note(s: RuntimeSettings, hw: Hardware) -> str:
    return (f"multi-node: tensor parallel {s.tensor_parallel} inside each host, pipeline parallel {s.pipeline_parallel} "
            f"across {len(hw.hosts)} hosts (vLLM on Ray)")


def _ctx_train(models, name):
    return next((m.ctx_train for m in models if m.name == name), 0)


def _family(models, name):
    return next((m.family for m in models if m.name == name), "")


def _params(models, name):
    return next((m.n_params_text for m in models if m.name == name), 0)


def _why_lost(best: Plan, p: Plan, priority: str) -> str:
    if p.model != best.model:
        return f"fits, but {best.model} is the stronger model that fits"
    if any("partial" in n for n in p.notes) and not any("partial" in n for n in best.notes):
        return "fits only with layers on the CPU (much slower)"
    if priority == "speed":
        return f"slower ({p.speed.decode_tokens_per_s:.1f} vs {best.speed.decode_tokens_per_s:.1f} tok/s)"
    if priority == "context" and p.ctx < best.ctx:
        return f"shorter context ({p.ctx} vs {best.ctx})"
    if p.quality_loss > best.quality_loss:
        return f"lower quality (+{p.quality_loss:.3f} ppl vs +{best.quality_loss:.3f})"
    if p.ctx < best.ctx:
        return f"shorter context ({p.ctx} vs {best.ctx})"
    return f"ranked lower ({p.speed.decode_tokens_per_s:.1f} tok/s)"


def require_fit(p: Plan) -> Plan:
    if not p.fits:
        raise DoesNotFitError(f"{p.model} {p.weight_format} at {p.ctx} tokens does not fit {p.target}: {shortfall(p)}")
    return p
