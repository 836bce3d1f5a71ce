"""The utility recommend ranks plans by: the plan a person would pick, in stated terms.

A plan is judged on, in this order (``--priority quality``, the default):
1. the engine the target really uses: on a phone, a published LiteRT-LM bundle beats a llama.cpp plan;
2. the usable-speed floor: a plan below ``speed_floor`` tok/s decode loses to any plan above it
   (``--use read`` 5 tok/s, about reading speed; ``chat`` 10; ``batch`` 1; ``--min-speed`` overrides);
3. the wanted context (``--ctx``, else 32,768 tokens or the model's trained maximum; 4,096 on phones);
4. quality: model strength (MMLU-Pro of the instruction-tuned model, planner/data/strength.json) minus
   the quant's cost (``POINTS_PER_PPL`` x the perplexity increase of planner/data/quality.json). Plans
   within ``NOTICEABLE_POINTS`` of the best count as equal in quality, and the fastest of them wins.

``--priority speed``: the fastest plan whose quality score keeps ``QUALITY_FLOOR_SHARE`` of the best
reachable score. ``--priority context``: the longest context above the speed floor and that quality floor.
When no plan reaches the speed floor, the closest (fastest above the quality floor) is chosen and a
note says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Optional

from planner.policy import DEFAULT_CTX
from planner.types import Plan

# Decode tokens/s below which a plan is not usable for the purpose. Silent reading runs at about 238
# words/min (Brysbaert 2019, meta-analysis of 190 studies) = 4 words/s = 5.3 tokens/s at 0.75 words per
# token (OpenAI's tokenizer rule of thumb): "read" is that speed. "chat" is twice it (replies read as they
# stream, skimmed); "batch" only needs the job to finish.
SPEED_FLOORS = {"read": 5.0, "chat": 10.0, "batch": 1.0}
DEFAULT_USE = "read"
USES = tuple(SPEED_FLOORS)
# MMLU-Pro points one unit of perplexity increase (llama.cpp's table, Llama-3-8B, wikitext-2) costs. A
# planner constant, not a measurement: Q4_K_M (+0.18 ppl) costs 0.5 points, Q3_K_M 2.0, Q2_K 10.6.
POINTS_PER_PPL = 3.0
# Quality differences below this many MMLU-Pro points count as unnoticeable: MMLU-Pro has 12,032
# questions, so one run's standard error at 70% is 0.42 points and 1 point is about two of them.
NOTICEABLE_POINTS = 1.0
# Above the floor, speed buys quality points until it is comfortable: each doubling of decode speed is
# worth SPEED_POINTS_PER_DOUBLING MMLU-Pro points, up to SPEED_CAP_FACTOR x the floor (40 tok/s for
# "read": faster than anyone reads or skims). Planner constants: a 31B plan at 5 tok/s loses to a MoE
# plan 2.6 points weaker at 30 tok/s; above the cap only quality counts.
SPEED_POINTS_PER_DOUBLING = 2.0
SPEED_CAP_FACTOR = 8.0
# Among plans of equal value, one at this share of the fastest one's speed or more counts as equally
# fast, and the higher quality of them wins (the issue's own test: 80% of the fastest alternative).
SPEED_TOLERANCE = 0.8
# --priority speed / context: the quality floor is this share of the best reachable quality score.
QUALITY_FLOOR_SHARE = 0.85
ENGINE_NAMES = {"litert-lm": "LiteRT-LM"}
# Default wanted context on phones: LiteRT-LM bundles are exported with a 4,096-token KV cache.
PHONE_CTX = 4096


@lru_cache(maxsize=1)
def _strength_table() -> dict:
    return json.loads(resources.files("planner").joinpath("data/strength.json").read_text())


def strength(model: str) -> tuple[Optional[float], str]:
    """(MMLU-Pro of the model, its source key); (None, '') for a model outside the table."""
    row = _strength_table()["models"].get(model)
    if row is None:
        return None, ""
    return float(row["strength"]), row["source"]


def quant_penalty(p: Plan) -> float:
    return round(POINTS_PER_PPL * p.quality_loss, 2)


def is_phone(hw) -> bool:
    return hw.kind == "phone" or any(d.device_class == "phone" for d in hw.devices)


@dataclass
class Utility:
    """The terms a recommendation is ranked on (one per recommend call)."""

    use: str = DEFAULT_USE
    speed_floor: float = SPEED_FLOORS[DEFAULT_USE]
    speed_floor_source: str = "--use read"
    wanted_ctx: int = DEFAULT_CTX  # before each model's trained maximum
    ctx_max: bool = False
    priority: str = "quality"
    native_engine: Optional[str] = None  # "litert-lm" on phones when the engine was not pinned
    quality_floor: Optional[float] = None  # set while ranking (speed / context priority, or no plan reaches the speed floor)
    speed_floor_reached: bool = True

    def wanted_for(self, ctx_train: int) -> int:
        return ctx_train if self.ctx_max else min(self.wanted_ctx, ctx_train)

    def to_dict(self) -> dict:
        return {
            "use": self.use,
            "speed_floor_tok_s": self.speed_floor,
            "speed_floor_source": self.speed_floor_source,
            "speed_floor_reached": self.speed_floor_reached,
            "wanted_ctx": "max" if self.ctx_max else self.wanted_ctx,
            "noticeable_points": NOTICEABLE_POINTS,
            "points_per_ppl": POINTS_PER_PPL,
            "quality_floor": self.quality_floor,
            "quality_floor_share": QUALITY_FLOOR_SHARE,
            "native_engine": self.native_engine,
            "strength_metric": "MMLU-Pro (%) of the instruction-tuned model (planner/data/strength.json)",
        }


def make_utility(*, use: str = DEFAULT_USE, min_speed: Optional[float] = None, ctx: Optional[int] = None, ctx_max: bool = False,
                 priority: str = "quality", phone: bool = False, native: bool = False, default_ctx: int = DEFAULT_CTX) -> Utility:
    floor = SPEED_FLOORS[use] if min_speed is None else float(min_speed)
    src = f"--min-speed {min_speed:g}" if min_speed is not None else f"--use {use}"
    want = ctx or (PHONE_CTX if phone else default_ctx)
    return Utility(use=use, speed_floor=floor, speed_floor_source=src, wanted_ctx=want, ctx_max=ctx_max, priority=priority,
                   native_engine="litert-lm" if (phone and native) else None)


# ---------------------------------------------------------------- per-plan terms


# Models outside strength.json (local directories, GGUF files) keep a neutral strength, so that formats and
# floors still rank them.
FALLBACK_STRENGTH = 50.0


def terms(p: Plan, u: Utility, ctx_train: int) -> dict:
    """The utility's terms for one plan (what plan.utility and alternatives[].utility hold)."""
    s, src = strength(p.model)
    if s is None:
        s, src = FALLBACK_STRENGTH, "not in planner/data/strength.json (ranked by format only)"
    spd = p.speed.decode_tokens_per_s if p.speed else 0.0
    want = u.wanted_for(ctx_train)
    pen = quant_penalty(p)
    q = round(s - pen, 2)
    bonus = 0.0
    if spd >= u.speed_floor > 0:
        bonus = round(SPEED_POINTS_PER_DOUBLING * math.log2(min(spd, SPEED_CAP_FACTOR * u.speed_floor) / u.speed_floor), 2)
    return {
        "decode_tokens_per_s": spd,
        "speed_floor_tok_s": u.speed_floor,
        "meets_speed_floor": spd >= u.speed_floor,
        "ctx": p.ctx,
        "wanted_ctx": want,
        "reaches_wanted_ctx": p.ctx >= want,
        "engine": p.engine,
        "native_engine": u.native_engine is None or p.engine == u.native_engine,
        "model_strength": s,
        "strength_source": src,
        "quant_penalty": pen,
        "quality_score": q,
        "speed_points": bonus,
        "value": round(q + bonus, 2),
    }


def _k(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else f"{n:,}"


def _tiers(t: dict, u: Utility) -> tuple:
    return (t["native_engine"], t["meets_speed_floor"] or not u.speed_floor_reached)


def rank(plans: list[Plan], u: Utility) -> list[Plan]:
    """Plans best first under the utility (each plan must carry .utility from terms())."""
    if not plans:
        return []
    native = [p for p in plans if p.utility["native_engine"]] or plans
    u.speed_floor_reached = any(p.utility["meets_speed_floor"] for p in native)
    pool = [p for p in native if p.utility["meets_speed_floor"]] or native
    best_q = max(p.utility["quality_score"] for p in pool)
    floor_q = round(QUALITY_FLOOR_SHARE * best_q, 2) if best_q > 0 else None
    if u.priority != "quality" or not u.speed_floor_reached:
        u.quality_floor = floor_q
    ctx_pool = [p for p in pool if p.utility["reaches_wanted_ctx"]] or pool
    band_top = max(p.utility["value"] for p in ctx_pool)
    cap = SPEED_CAP_FACTOR * u.speed_floor  # speeds above the cap count as equally fast

    def capped(p: Plan) -> float:
        return min(p.utility["decode_tokens_per_s"], cap)

    band_fast = max(capped(p) for p in ctx_pool if p.utility["value"] >= band_top - NOTICEABLE_POINTS)

    def key(p: Plan):
        t = p.utility
        q = t["quality_score"]
        spd = t["decode_tokens_per_s"]
        above_q = floor_q is None or q >= floor_q
        if u.priority == "speed" or (u.priority == "quality" and not u.speed_floor_reached):
            return (*_tiers(t, u), above_q, t["reaches_wanted_ctx"], spd, q)
        if u.priority == "context":
            return (*_tiers(t, u), above_q, p.ctx, q, spd)
        val = t["value"]
        in_band = val >= band_top - NOTICEABLE_POINTS
        fast_enough = in_band and capped(p) >= SPEED_TOLERANCE * band_fast
        q1 = round(val, 1)  # hundredths of a point (a q8_0 KV cache costs 0.006) do not outrank speed
        return (*_tiers(t, u), t["reaches_wanted_ctx"], in_band, fast_enough, spd if in_band and not fast_enough else q1,
                q1 if in_band and not fast_enough else spd, p.ctx)

    return sorted(plans, key=key, reverse=True)


def why_lost(best: Plan, p: Plan, u: Utility) -> str:
    """One line, on the utility's terms, why p lost to best."""
    b, t = best.utility, p.utility
    if b["native_engine"] and not t["native_engine"]:
        return f"runs through {p.engine}; this phone runs Gemma through {ENGINE_NAMES.get(u.native_engine, u.native_engine)} bundles"
    if u.speed_floor_reached and b["meets_speed_floor"] and not t["meets_speed_floor"]:
        return f"{t['decode_tokens_per_s']:.1f} tok/s is below the {u.speed_floor:g} tok/s floor"
    q, bq = t["quality_score"], b["quality_score"]
    if u.quality_floor is not None and q < u.quality_floor <= bq:
        return f"quality {q:.1f} is below the floor {u.quality_floor:.1f} ({QUALITY_FLOOR_SHARE:.0%} of the best)"
    if u.priority == "context" and p.ctx < best.ctx:
        return f"{_k(p.ctx)} context is shorter than {_k(best.ctx)}"
    if b["reaches_wanted_ctx"] and not t["reaches_wanted_ctx"]:
        return f"{_k(p.ctx)} context is below the {_k(t['wanted_ctx'])} wanted"
    spd, bspd = t["decode_tokens_per_s"], b["decode_tokens_per_s"]
    if u.priority == "speed" or not u.speed_floor_reached:
        if spd < bspd:
            return f"slower: {spd:.1f} vs {bspd:.1f} tok/s"
    v, bv = t["value"], b["value"]
    if u.priority == "quality" and v < bv - NOTICEABLE_POINTS:
        if q > bq:
            # one line at 80 columns; --explain gives the points per doubling of speed
            return f"quality {q:.1f} vs {bq:.1f} not worth {spd:.1f} vs {bspd:.1f} tok/s (value {v:.1f} vs {bv:.1f})"
        return f"lower quality: {q:.1f} vs {bq:.1f}" + (f" (value {v:.1f} vs {bv:.1f})" if round(v - q, 1) != round(bv - bq, 1) else "")
    if u.priority != "quality" and q < bq - NOTICEABLE_POINTS:
        return f"lower quality: {q:.1f} vs {bq:.1f}"
    cap = SPEED_CAP_FACTOR * u.speed_floor
    if min(spd, cap) < SPEED_TOLERANCE * min(bspd, cap):
        return f"value within {NOTICEABLE_POINTS:g} point ({v:.1f} vs {bv:.1f}), slower: {spd:.1f} vs {bspd:.1f} tok/s"
    if round(v, 1) < round(bv, 1):
        return f"as fast (within {1 - SPEED_TOLERANCE:.0%}), lower value: {v:.1f} vs {bv:.1f} (quality {q:.1f} vs {bq:.1f})"
    if spd < bspd:
        return f"slower: {spd:.1f} vs {bspd:.1f} tok/s at the same quality"
    return f"ranked lower ({spd:.1f} tok/s, quality {q:.1f}, {_k(p.ctx)} context)"


def met_line(p: Plan, u: Utility) -> str:
    """Which floors the chosen plan met, in one line."""
    t = p.utility
    parts = []
    if t["meets_speed_floor"]:
        parts.append(f"meets the {u.speed_floor:g} tok/s speed floor ({t['decode_tokens_per_s']:.1f} tok/s, {u.speed_floor_source})")
    else:
        parts.append(f"below the {u.speed_floor:g} tok/s speed floor ({t['decode_tokens_per_s']:.1f} tok/s): nothing that fits reaches it")
    if t["reaches_wanted_ctx"]:
        parts.append(f"reaches the {_k(t['wanted_ctx'])} wanted context")
    else:
        parts.append(f"{_k(p.ctx)} context, below the {_k(t['wanted_ctx'])} wanted")
    parts.append(f"quality {t['quality_score']:.1f} (MMLU-Pro {t['model_strength']:g} - {t['quant_penalty']:g} for {p.weight_format})"
                 + (f" + {t['speed_points']:g} for speed = value {t['value']:.1f}" if u.priority == "quality" else ""))
    if u.quality_floor is not None:
        parts.append(f"quality floor {u.quality_floor:.1f}")
    return "utility: " + "; ".join(parts)


def explain_lines(rec) -> list[str]:
    """`recommend --explain`: the utility's terms for the chosen plan and the runner-up."""
    u = rec.utility
    out = [f"utility ({u.priority} priority): speed floor {u.speed_floor:g} tok/s ({u.speed_floor_source}); wanted context "
           f"{'the trained maximum' if u.ctx_max else _k(u.wanted_ctx)}; quality = MMLU-Pro - {POINTS_PER_PPL:g} x ppl increase; "
           f"value = quality + {SPEED_POINTS_PER_DOUBLING:g} per doubling of speed above the floor (up to {SPEED_CAP_FACTOR * u.speed_floor:g} tok/s); "
           f"differences under {NOTICEABLE_POINTS:g} point unnoticeable"
           + (f"; quality floor {u.quality_floor:.1f}" if u.quality_floor is not None else "")
           + (f"; engine: {u.native_engine} first" if u.native_engine else "")]
    if rec.plan is None:
        return out + ["no plan fits"]
    runner = next((a for a in rec.alternatives if a.plan.fits and a.plan.utility), None)
    rows = [("chosen", rec.plan, "")] + ([("runner-up", runner.plan, runner.reason)] if runner else [])
    for label, p, reason in rows:
        t = p.utility
        out.append(f"{label}: {p.model} {p.weight_format} on {p.engine}, {_k(p.ctx)} context, KV {p.settings.type_k}"
                   + (f", -ngl {p.settings.n_gpu_layers}" if p.settings.n_gpu_layers >= 0 and p.engine == "llama.cpp" else "")
                   + (", experts on CPU" if p.settings.experts_on_cpu else ""))
        out.append(f"  speed {t['decode_tokens_per_s']:.1f} tok/s (floor {t['speed_floor_tok_s']:g}: {'met' if t['meets_speed_floor'] else 'not met'}); "
                   f"context {_k(p.ctx)} of {_k(t['wanted_ctx'])} wanted ({'met' if t['reaches_wanted_ctx'] else 'not met'}); "
                   f"quality {t['quality_score']:.1f} = strength {t['model_strength']:g} ({t['strength_source']}) - {t['quant_penalty']:g} for {p.weight_format}"
                   + (f"/KV {p.settings.type_k}" if p.settings.type_k not in ("f16", "auto") else "")
                   + f"; value {t['value']:.1f} (+{t['speed_points']:g} for speed)")
        if reason:
            out.append(f"  lost because: {reason}")
    if runner is None:
        out.append("runner-up: none (no other plan fits)")
    return out
