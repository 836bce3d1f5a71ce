"""Plan one configuration (``plan``) or search for the best one (``recommend``).

recommend enumerates model x weight format x KV type x context x GPU layers, keeps what fits every
device with the safety margin, and ranks by a stated objective. Every candidate it looked at comes
back as an alternative with the reason it lost.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

from planner.catalog import all_models
from planner.errors import DoesNotFitError, InvalidSettingsError
from planner.formats import WeightFormat, parse_format, quality_loss, weight_bytes
from planner.memory import CPU_NAME, DEFAULT_MARGIN, estimate_memory
from planner.policy import DEFAULT_CTX, check_trained_max, planned_ctx, v_cache_allowed  # noqa: F401 (planned_ctx: API)
from planner.speed import estimate_speed
from planner.types import Alternative, ModelSpec, Placement, Plan, RuntimeSettings
from planner.utility import DEFAULT_USE, USES, Utility, is_phone, make_utility, met_line, rank, terms, why_lost
from profiles.hardware import Hardware

from profiles.units import GiB, fmt_gib
MIN_CTX = 4096  # below this recommend prefers a smaller format (llama.cpp --fit's minimum context)
# Formats recommend tries per engine, best quality first.
GGUF_LADDER = ["Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "IQ4_XS", "Q4_0", "Q3_K_M", "Q3_K_S", "Q2_K"]
DENSE_LADDER = {"vllm": ["bf16", "fp8", "gptq-int8", "gptq-int4"], "transformers": ["bf16", "gptq-int8", "gptq-int4"]}
# q4_0 KV is left to those who ask (--kv-type q4_0): its quality cost at long context is not well measured.
KV_LADDER = {"llama.cpp": [("f16", "f16"), ("q8_0", "q8_0")], "vllm": [("auto", "auto"), ("fp8", "fp8")], "transformers": [("f16", "f16")]}
# Perplexity cost of a quantized KV cache, in the same unit as quality.json (small next to weight quantization).
KV_QUALITY = {"f16": 0.0, "auto": 0.0, "q8_0": 0.002, "fp8": 0.005, "q4_0": 0.05}
PRIORITIES = ("quality", "speed", "context")
MAX_MIN_SPEED = 10_000.0  # --min-speed above this is a typo, not a wish
FAMILY_RANK = {"gemma4": 4, "gemma3": 3, "gemma3n": 2, "gemma2": 1}


gib = fmt_gib


def plan(spec: ModelSpec, fmt: WeightFormat, settings: RuntimeSettings, hw: Hardware, *, margin: int = DEFAULT_MARGIN, target: str = "",
         with_speed: bool = True) -> Plan:
    """One configuration: memory per device, speed, quality. Does not search."""
    check_trained_max(settings.n_ctx, spec.name, spec.ctx_train)
    if settings.n_ctx <= 0 or settings.n_parallel <= 0 or settings.n_ubatch <= 0:
        raise InvalidSettingsError("context, parallel slots and ubatch must be positive")
    s = settings
    if s.engine == "vllm":
        s = dataclasses.replace(s, type_k=s.kv_cache_dtype, type_v=s.kv_cache_dtype)
    memory = estimate_memory(spec, fmt, s, hw, margin)
    speed = estimate_speed(spec, fmt, s, hw, memory) if with_speed else None
    notes = []
    if spec.vision_params and s.engine == "vllm":
        notes.append(f"text only: vLLM starts with --language-model-only, so the vision tower (~{spec.vision_params / 1e6:.0f}M params) "
                     f"is neither loaded nor profiled")
    elif spec.vision_params and not (vision_enabled(spec, s) or audio_enabled(spec, s)):
        notes.append(f"text weights only; the vision tower (~{spec.vision_params / 1e6:.0f}M params) is a separate mmproj file if you need images")
    p = Plan(
        model=spec.name,
        fmt=fmt,
        engine=s.engine,
        target=target or hw.name,
        settings=s,
        memory=memory,
        speed=speed,
        weight_file_bytes=weight_bytes(spec, fmt),
        quality_loss=round(quality_loss(fmt.name) + KV_QUALITY.get(s.type_k, 0) / 2 + KV_QUALITY.get(s.type_v, 0) / 2, 4),
        notes=tuple(notes),
    )
    if spec.vision_params and s.engine != "vllm" and (vision_enabled(spec, s) or audio_enabled(spec, s)):
        p = add_projector(p, spec, s)
        if audio_enabled(spec, s):
            p = add_audio_projector(p, spec, s)
    if s.audio and spec.audio_params and spec.family == "gemma3n":
        from planner.projector import ENGINES_WITH_MMPROJ, GEMMA3N_AUDIO_NOTE

        if s.engine in ENGINES_WITH_MMPROJ:
            p = p.noted(GEMMA3N_AUDIO_NOTE)
    return p


def vision_enabled(spec: ModelSpec, s: RuntimeSettings) -> bool:
    """--vision / --no-vision, else the engine's default: Ollama and LM Studio load a model's projector
    whenever it ships one; llama.cpp and llama-cpp-python only when given one (--mmproj, a chat handler)."""
    from planner.projector import LOADED_BY_DEFAULT

    if not spec.vision_params:
        return False
    return bool(s.vision) if s.vision is not None else s.engine in LOADED_BY_DEFAULT


def _audio_modelled(spec: ModelSpec) -> bool:
    from planner.projector import audio_tower_for

    return audio_tower_for(spec.name, bool(spec.audio_params)) is not None


def audio_enabled(spec: ModelSpec, s: RuntimeSettings) -> bool:
    """--audio / --no-audio, else with the projector: Gemma 4 E2B/E4B's audio encoder sits in the same mmproj
    file as the vision tower, and llama.cpp's mtmd loads every encoder the file holds. Only where the tower is
    modelled (planner.projector.AUDIO_TOWERS_BY_MODEL) and the engine runs mtmd."""
    from planner.projector import ENGINES_WITH_MMPROJ, audio_tower_for

    if not spec.audio_params or s.engine not in ENGINES_WITH_MMPROJ or audio_tower_for(spec.name, True) is None:
        return False
    if s.audio is not None:
        if s.audio and s.vision is False:
            raise InvalidSettingsError(f"--audio with --no-vision: {spec.name}'s audio encoder is in the same mmproj file "
                                       "as its vision tower, and llama.cpp loads both", hint="drop --no-vision")
        return bool(s.audio)
    return vision_enabled(spec, s)


def add_audio_projector(p: Plan, spec: ModelSpec, s: RuntimeSettings, am: dict | None = None) -> Plan:
    """A copy of the plan with the audio encoder's weights and compute reservation beside the vision projector
    (same file, same device), saying what audio costs in context. ``am``: computed elsewhere (quantize, from the checkpoint)."""
    from planner.projector import audio_projector_memory

    if am is None:
        am = audio_projector_memory(spec.name, bool(spec.audio_params), spec.hidden)
    dev = next((d for d in p.memory.devices if "projector" in d.detail), None)
    if am is None or dev is None:
        return p
    dev.projector_bytes += am["weights_bytes"] + am["compute_bytes"]
    dev.detail["audio_projector"] = am
    tokens = int(am["tokens_per_second"] * am["slice_seconds"])
    compute = (f"encoder compute {am['compute_bytes'] / 2**20:,.0f} MiB" if am["compute_bytes"]
               else "encoder compute not measured for this tower (not counted)")
    return p.noted(f"audio: the mmproj's {am['kind']} encoder {am['file_type'].upper()} {am['weights_bytes'] / 2**20:,.0f} MiB + "
                   f"{compute} on {dev.device}; audio takes {am['tokens_per_second']} tokens a second of the {p.ctx:,}-token "
                   f"context, encoded in {am['slice_seconds']:.0f} s slices of {tokens} tokens")


def modalities_note(spec: ModelSpec, p: Plan) -> str:
    """Which inputs the plan's memory covers, said every time (on a phone the towers are a third of an E-model)."""
    towers = [f"vision ~{spec.vision_params / 1e6:.0f}M" if spec.vision_params else "",
              f"audio ~{spec.audio_params / 1e6:.0f}M" if spec.audio_params else ""]
    towers = [t for t in towers if t]
    if not towers:
        return f"modalities: text only ({spec.name} has no vision or audio tower)"
    planned = [d.detail["projector"]["kind"] for d in p.memory.devices if "projector" in d.detail]
    if p.engine == "litert-lm":
        return (f"modalities: text only is planned; {spec.name}'s encoders ({', '.join(towers)} params) are not counted "
                f"(LiteRT-LM's allocator is not modelled), so image or audio input on this device is unchecked")
    audio = [d.detail["audio_projector"]["kind"] for d in p.memory.devices if "audio_projector" in d.detail]
    if planned and audio:
        return f"modalities: text + vision + audio planned (projector {planned[0]} + {audio[0]}, one mmproj file)"
    if planned:
        rest = [t for t in towers if not t.startswith("vision")]
        return (f"modalities: text + vision planned (projector {planned[0]})"
                + (f"; {', '.join(rest)} params not planned ("
                   + ("--audio plans the mmproj's audio encoder" if _audio_modelled(spec)
                      else "llama.cpp has no Gemma 3n audio encoder" if spec.family == "gemma3n"
                      else "no audio projector is modelled")
                   + ")" if rest else ""))
    return (f"modalities: text only is planned ({', '.join(towers)} params not loaded"
            + ("; the vision projector is a separate mmproj file, --vision plans it)" if spec.vision_params and p.engine == "llama.cpp"
               else "; no projector is planned for this engine)"))


def add_projector(p: Plan, spec: ModelSpec, s: RuntimeSettings, pm=None) -> Plan:
    """A copy of the plan with the projector's weights and encoder compute buffer on the device mtmd loads it on (the first GPU
    holding layers, else system RAM) and say what an image costs in context. ``pm``: a ProjectorMemory
    computed elsewhere (quantize, from the checkpoint's own tower); default: the catalog tower."""
    from planner.projector import ENGINES_WITH_MMPROJ, projector_memory

    if pm is None:
        pm = (projector_memory(spec.family, bool(spec.vision_params), spec.hidden, name=spec.name)
              if spec.source == "catalog" else None)
    if s.engine not in ENGINES_WITH_MMPROJ:
        return p.noted(f"vision: not modelled for {s.engine}")
    if pm is None:
        return p.noted(f"vision: the {spec.family} projector's memory is not modelled for this model; the plan holds the "
                       f"text weights only (+~{spec.vision_params / 1e6:.0f}M vision params)")
    p = dataclasses.replace(p, notes=tuple(n for n in p.notes if not n.startswith("text weights only")))
    gpus = [d for d in p.memory.devices if d.device != "CPU" and (d.weights_bytes or d.layers)]
    dev = gpus[0] if gpus else next((d for d in p.memory.devices if d.device == "CPU"), p.memory.devices[0])
    dev.projector_bytes += pm.weights_bytes + pm.compute_bytes
    dev.detail["projector"] = pm.to_dict()
    def mib(n: int) -> str:
        return f"{n / 2**20:,.0f} MiB" if n >= 10 * 2**20 else f"{n / 2**20:.2f} MiB"

    compute = (f"encoder compute {mib(pm.compute_bytes)}" if pm.compute_bytes
               else "encoder compute not measured for this tower (not counted)")
    image = (f"each {pm.image_size} px image takes {pm.tokens_per_image} tokens of the {p.ctx:,}-token context"
             if pm.kind != "gemma4v" else
             f"images take 70-1120 tokens of the {p.ctx:,}-token context by size (planned: a {pm.image_size} px image, "
             f"{pm.tokens_per_image} tokens, the size clip reserves for; larger images grow the encoder buffer)")
    return p.noted(f"vision: mmproj {pm.file_type.upper()} {mib(pm.weights_bytes)} + {compute} on {dev.device}; {image}")


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
    """The chosen plan, the ranked alternatives, the largest context per KV type, and notes."""

    plan: Optional[Plan]
    alternatives: list[Alternative] = field(default_factory=list)
    max_context: dict = field(default_factory=dict)  # "k/v" -> largest context that fits with the chosen weights
    notes: list[str] = field(default_factory=list)
    priority: str = "quality"
    utility: Optional[Utility] = None

    def to_dict(self) -> dict:
        return {
            "plan": self.plan.to_dict() if self.plan else None,
            "max_context": self.max_context,
            "alternatives": [a.to_dict() for a in self.alternatives],
            "priority": self.priority,
            "notes": list(self.notes),
            "utility": self.utility.to_dict() if self.utility else None,
        }


def _fits(spec, fmt, s, hw, margin) -> tuple[bool, Plan]:
    p = plan(spec, fmt, s, hw, margin=margin, with_speed=False)
    return p.fits, p


def _with_speed(p: Plan, spec: ModelSpec, hw: Hardware) -> Plan:
    if p.speed is None:
        p = dataclasses.replace(p, speed=estimate_speed(spec, p.fmt, p.settings, hw, p.memory))
    return p


def max_context(spec: ModelSpec, fmt: WeightFormat, s: RuntimeSettings, hw: Hardware, margin: int, limit: Optional[int] = None) -> int:
    """Largest context (multiple of 256, per slot x slots) that fits; 0 if even 256 does not.

    The result is the total over all slots (what n_ctx means), kept within the limit or trained maximum.
    """
    step = max(1, s.n_parallel) if s.engine == "llama.cpp" and not s.kv_unified else 1
    unit = 256 * step

    def at(k: int) -> tuple[bool, int]:
        ok, p = _fits(spec, fmt, dataclasses.replace(s, n_ctx=k * unit), hw, margin)
        return ok, _slack(p)

    return _largest(1, (limit or spec.ctx_train) // unit, at) * unit


def _slack(p: Plan, gpus_only: bool = False) -> int:
    """Bytes left on the tightest device, or the tightest GPU (negative when over)."""
    return min((d.budget_bytes - d.total_bytes for d in p.memory.devices
                if d.budget_bytes is not None and not (gpus_only and d.device == CPU_NAME)), default=0)


def _largest(lo: int, hi: int, at) -> int:
    """Largest k in lo..hi with at(k) fitting (0 if none), for a fit that holds up to some k and fails above it,
    as memory does when only the context grows. The free bytes left are nearly linear in k, so the next probe is
    interpolated from them (2-4 probes instead of ~10 bisection steps), checked from both sides, and bisection
    takes over whenever interpolation does not narrow the bracket."""
    if hi < lo:
        return 0
    ok, hi_slack = at(hi)
    if ok:
        return hi
    ok, lo_slack = at(lo)
    if not ok:
        return 0
    local = None  # (k, slack there, bytes per step) from the last pair of neighbouring probes
    while hi - lo > 1:
        guess = lo + (hi - lo) // 2
        if local is not None and local[2] > 0:
            guess = local[0] + math.floor(local[1] / local[2])  # where the local slope crosses zero
        elif lo_slack > hi_slack:
            guess = lo + int((hi - lo) * lo_slack / (lo_slack - hi_slack))
        guess = min(max(guess, lo + 1), hi - 1)
        ok, slack = at(guess)
        if ok:
            lo, lo_slack = guess, slack
            if guess + 1 < hi:  # the crossing is usually right above a guess that fits
                ok, nxt = at(guess + 1)
                if not ok:
                    return guess
                lo, lo_slack, local = guess + 1, nxt, (guess + 1, nxt, slack - nxt)
        else:
            hi, hi_slack = guess, slack
            if guess - 1 > lo:
                ok, prev = at(guess - 1)
                if ok:
                    return guess - 1
                hi, hi_slack, local = guess - 1, prev, (guess - 1, prev, prev - slack)
    return lo


def _placements(spec: ModelSpec, hw: Hardware, s: RuntimeSettings) -> list[RuntimeSettings]:
    """GPU-layer variants to try, best first: all on GPU, MoE experts on CPU, then partial offload.

    vLLM on a cluster: one host first (tensor parallel inside it), then pipeline stages across all hosts.
    """
    if s.engine == "vllm" and hw.is_cluster and hw.devices and s.pipeline_parallel == 1:
        return [s, dataclasses.replace(s, pipeline_parallel=len(hw.hosts))]
    if s.engine != "llama.cpp" or not hw.devices:
        return [dataclasses.replace(s, n_gpu_layers=0 if s.engine == "llama.cpp" else s.n_gpu_layers)]
    out = [dataclasses.replace(s, n_gpu_layers=-1)]
    if spec.moe and not hw.unified:  # on unified memory the CPU reads the same RAM: nothing to gain
        out.append(dataclasses.replace(s, n_gpu_layers=-1, experts_on_cpu=True))
    return out


def _best_partial(spec, fmt, s, hw, margin) -> Optional[Plan]:
    """Most GPU layers that fit. The GPUs' memory grows with -ngl by about one layer's weights and KV per step
    while the host's shrinks, so the layers the GPUs can take are found on the GPUs' free bytes alone, with the
    same interpolating search as the context (_largest); the host then either holds the rest there or at no
    smaller -ngl."""
    plans: dict[int, Plan] = {}

    def on_gpus(ngl: int) -> tuple[bool, int]:
        p = plans[ngl] = plan(spec, fmt, dataclasses.replace(s, n_gpu_layers=ngl), hw, margin=margin, with_speed=False)
        slack = _slack(p, gpus_only=True)
        return slack >= 0, slack

    k = _largest(0, spec.n_layers, on_gpus)
    if k not in plans:
        on_gpus(k)
    return plans[k] if plans[k].fits else None


def recommend(
    hw: Hardware,
    *,
    models: Optional[list[ModelSpec]] = None,
    formats: Optional[list[str]] = None,
    engine: Optional[str] = "llama.cpp",
    ctx: Optional[int] = None,
    ctx_max: bool = False,
    parallel: int = 1,
    kv_types: Optional[list[tuple[str, str]]] = None,
    priority: str = "quality",
    margin: int = DEFAULT_MARGIN,
    base: Optional[RuntimeSettings] = None,
    target: str = "",
    use: str = DEFAULT_USE,
    min_speed: Optional[float] = None,
) -> Recommendation:
    """Search the plans that fit and rank them by the utility (planner/utility.py).

    ``engine=None`` means the engine the target really uses: LiteRT-LM bundles on a phone (when one fits,
    and no format is pinned), llama.cpp otherwise.
    """
    if priority not in PRIORITIES:
        raise InvalidSettingsError(f"unknown priority '{priority}'", hint=f"use one of {', '.join(PRIORITIES)}")
    if use not in USES:
        raise InvalidSettingsError(f"unknown use '{use}'", hint=f"use one of {', '.join(USES)}")
    if min_speed is not None and not (0 < min_speed <= MAX_MIN_SPEED):
        raise InvalidSettingsError(f"--min-speed must be above 0 and at most {MAX_MIN_SPEED:g} tok/s, got {min_speed:g}")
    native = engine is None and not formats
    engine = engine or "llama.cpp"
    explicit_model = models is not None
    models = models or sorted(all_models(), key=lambda m: (FAMILY_RANK[m.family], m.n_params_text), reverse=True)
    fmts = formats or (GGUF_LADDER if engine == "llama.cpp" else DENSE_LADDER[engine])
    kvs = kv_types or KV_LADDER[engine]
    base = base or RuntimeSettings(engine=engine)
    base = dataclasses.replace(base, engine=engine, n_parallel=parallel)
    phone = is_phone(hw)
    u = make_utility(use=use, min_speed=min_speed, ctx=ctx, ctx_max=ctx_max, priority=priority, phone=phone, native=native,
                     default_ctx=DEFAULT_CTX)
    rec = Recommendation(None, priority=priority, utility=u)
    candidates: list[Plan] = []
    specs = {m.name: m for m in models}
    for spec in models:
        sbase = base
        if engine == "vllm" and hw.devices and base.tensor_parallel * base.pipeline_parallel == 1:
            # per model: heads differ; on a cluster TP stays inside one host (pipeline stages span hosts)
            sbase = dataclasses.replace(base, tensor_parallel=vllm_tensor_parallel(spec, gpus_per_host(hw)))
        want = u.wanted_for(spec.ctx_train)
        floor = want if (ctx and not ctx_max) else min(MIN_CTX, want)
        for fname in fmts:
            fmt = parse_format(fname, engine)
            if engine not in fmt.engines:
                continue
            for k, v in kvs:
                s0 = dataclasses.replace(sbase, type_k=k, type_v=v, kv_cache_dtype=k if engine == "vllm" else base.kv_cache_dtype, n_ctx=want)
                if not v_cache_allowed(engine, v, s0.flash_attn):
                    continue
                found = [] if _weights_exceed_memory(spec, fmt, hw) else _fitting_plans(spec, fmt, s0, hw, margin, want, floor)
                if not found:
                    miss = plan(spec, fmt, dataclasses.replace(s0, n_gpu_layers=-1 if hw.devices else 0), hw, margin=margin, with_speed=False)
                    rec.alternatives.append(Alternative(miss, f"does not fit: {shortfall(miss) or 'no placement fits'}"))
                    continue
                candidates += [_with_speed(p, spec, hw) for p in found]
                if any(p.ctx >= want and not _partial(p) for p in found):
                    break  # this KV type already reaches the wanted context on the fastest placement
    if native and phone:
        candidates += _litert_plans(models, hw, u, margin, base, target)
    if not candidates:
        rec.notes.append("nothing fits this target with the margin; see the alternatives for the closest")
        rec.alternatives.sort(key=lambda a: a.plan.memory.total_bytes)
        return rec

    candidates = [dataclasses.replace(p, utility=terms(p, u, specs[p.model].ctx_train)) for p in candidates]
    ranked = rank(candidates, u)
    chosen = ranked[0]
    misses = rec.alternatives
    rec.alternatives = [Alternative(p, why_lost(chosen, p, u)) for p in ranked[1:]]
    rec.alternatives += sorted(misses, key=lambda a: a.plan.memory.total_bytes)
    if not u.speed_floor_reached:
        rec.notes.append(f"nothing that fits {target or hw.name} reaches the {u.speed_floor:g} tok/s floor ({u.speed_floor_source}); "
                         f"the closest is {chosen.model} {chosen.weight_format} at {chosen.utility['decode_tokens_per_s']:.1f} tok/s")
    # the first note says which floors the plan met; one line for what the plan covers replaces plan()'s
    # "text weights only" note
    notes = (met_line(chosen, u), *(n for n in chosen.notes if not n.startswith("text weights only")),
             modalities_note(specs[chosen.model], chosen))
    chosen = rec.plan = dataclasses.replace(chosen, notes=notes)
    if chosen.engine == "litert-lm":
        return rec  # the bundle's KV size is fixed when it is exported
    spec = specs[chosen.model]
    for k, v in kvs:
        s1 = dataclasses.replace(chosen.settings, type_k=k, type_v=v, kv_cache_dtype=k if engine == "vllm" else chosen.settings.kv_cache_dtype)
        if not v_cache_allowed(engine, v, s1.flash_attn):
            continue
        rec.max_context[f"{k}/{v}" if k != v else k] = max_context(spec, chosen.fmt, s1, hw, margin)
    return rec


def _partial(p: Plan) -> bool:
    return p.placement in (Placement.PARTIAL, Placement.EXPERTS_ON_CPU)


def _fitting_plans(spec: ModelSpec, fmt: WeightFormat, s0: RuntimeSettings, hw: Hardware, margin: int, want: int, floor: int) -> list[Plan]:
    """Every placement of one format and KV type worth ranking: each layout at the wanted context (or the
    longest that fits, if at least ``floor``), and on a GPU target the most GPU layers that fit at the
    wanted context (KV of CPU-resident layers in RAM), or at ``floor`` when even that does not fit."""
    out: list[Plan] = []
    layouts = _placements(spec, hw, s0)
    for i, s1 in enumerate(layouts):
        ok, p = _fits(spec, fmt, s1, hw, margin)
        if ok:
            if s1.experts_on_cpu:
                p = p.noted("partial offload: MoE expert tensors on the CPU (-ot exps=CPU)")
            if s1.pipeline_parallel > 1 and hw.is_cluster:
                p = p.noted(_multi_node_note(s1, hw))
            out.append(p)
            if s1.engine == "vllm" or not s1.experts_on_cpu:
                break  # the first layout that holds the wanted context is the fastest one
            continue
        if s1.engine == "vllm" and i + 1 < len(layouts):
            continue  # more hosts may reach the full context before a shorter one is accepted
        c = max_context(spec, fmt, s1, hw, margin, limit=want)
        if c >= floor:
            p = plan(spec, fmt, dataclasses.replace(s1, n_ctx=c), hw, margin=margin, with_speed=False)
            p = p.noted(f"context reduced from {want} to {c} to fit")
            if s1.experts_on_cpu:
                p = p.noted("partial offload: MoE expert tensors on the CPU (-ot exps=CPU)")
            out.append(p)
    # Layer offload when no layout holds the wanted context with every layer on the GPU. MoE models skip it
    # when their experts alone fit on the CPU (llama.cpp's --cpu-moe): attention, KV and the shared MLP stay
    # on the GPU, the CPU reads only the top-k experts per token.
    if s0.engine == "llama.cpp" and hw.devices and not hw.unified and not any(p.ctx >= want and p.settings.n_gpu_layers < 0
                                                                              for p in out):
        for n_ctx in dict.fromkeys((want, floor)):
            part = _best_partial(spec, fmt, dataclasses.replace(s0, n_ctx=n_ctx), hw, margin)
            if part is not None and part.settings.n_gpu_layers > 0:
                out.append(part.noted(f"partial offload: {part.settings.n_gpu_layers} of {spec.n_layers + 1} layers on the GPU"))
                break
    return out


def _weights_exceed_memory(spec: ModelSpec, fmt: WeightFormat, hw: Hardware) -> bool:
    """The weights alone are larger than every device and the host together: no placement can fit."""
    total = hw.host_budget_bytes() + (0 if hw.unified else sum(d.usable_bytes() for d in hw.devices))
    return weight_bytes(spec, fmt) > total


def _litert_plans(models: list[ModelSpec], hw: Hardware, u, margin: int, base: RuntimeSettings, target: str) -> list[Plan]:
    """Phones: one plan per published LiteRT-LM bundle that fits. LiteRT-LM's own allocator is not
    modelled: memory and speed come from the equivalent 4-bit GGUF (Q4_0 with the bundle's KV size), with
    the bundle's published size in place of the GGUF's weights where it is larger."""
    from planner.recipes.litert import BUNDLES

    by_model = {b.model: b for b in BUNDLES}
    out = []
    for spec in models:
        b = by_model.get(spec.name)
        if b is None:
            continue
        n_ctx = min(u.wanted_for(spec.ctx_train), b.max_tokens)
        s = dataclasses.replace(base, engine="llama.cpp", n_ctx=n_ctx, n_parallel=1, type_k="f16", type_v="f16",
                                n_gpu_layers=-1 if hw.devices else 0, experts_on_cpu=False)
        p = plan(spec, parse_format("Q4_0", "llama.cpp"), s, hw, margin=margin, target=target)
        if b.size_bytes:
            holder = next((d for d in p.memory.devices if d.weights_bytes and d.device != "CPU"), p.memory.devices[-1])
            extra = b.size_bytes - p.weight_file_bytes
            if extra > 0:
                holder.weights_bytes += extra
            holder.detail["litert_bundle_bytes"] = b.size_bytes
            p = dataclasses.replace(p, weight_file_bytes=b.size_bytes)
        if not p.fits:
            continue
        p = dataclasses.replace(p, engine="litert-lm").noted(
            f"LiteRT-LM bundle {b.repo} (4-bit, exported with a {b.max_tokens}-token KV cache; {b.source})",
            "LiteRT-LM's allocator is not modelled: memory and speed are those of the equivalent Q4_0 GGUF "
            "(settings.engine names the model that sized it)")
        out.append(p)
    return out


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


def require_fit(p: Plan) -> Plan:
    if not p.fits:
        raise DoesNotFitError(f"{p.model} {p.weight_format} at {p.ctx} tokens does not fit {p.target}: {shortfall(p)}")
    return p
