"""recommend ranks plans the way a person would (planner/utility.py): the scenarios of the issue that
introduced the utility, each with the reason it encodes, and the table in docs/recommendations.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from planner.catalog import get_model
from planner.cli import main
from planner.search import GGUF_LADDER, recommend
from planner.formats import parse_format, quality_loss
from planner.speed import estimate_speed, weights_read_per_token
from planner.types import MemoryBreakdown, Plan, RuntimeSettings, SpeedEstimate
from planner.utility import (NOTICEABLE_POINTS, PHONE_CTX, SPEED_FLOORS, Utility, _strength_table, make_utility, quant_penalty,
                             rank, strength, terms)
from profiles.targets import load_target

ROOT = Path(__file__).resolve().parents[1]
PHONE_CLASS = {"gemma-3-270m", "gemma-3-1b", "gemma-3n-e2b", "gemma-3n-e4b", "gemma-4-e2b", "gemma-4-e4b"}
_CACHE: dict = {}


def rec_json(*args) -> dict:
    if args not in _CACHE:
        r = CliRunner().invoke(main, ["recommend", *args, "--json"])
        assert r.exit_code == 0, r.output
        _CACHE[args] = json.loads(r.output)
    return _CACHE[args]


def test_27b_on_a_12gb_card_takes_the_wanted_context_at_usable_speed():
    # Before: Q8_0 at 4,096 tokens, 21 layers on the GPU, 1.6 tok/s. A person takes a smaller quant at a
    # longer context (KV of the CPU-resident layers in RAM) and several times the speed.
    d = rec_json("--model", "27b", "--target", "rtx3060-12gb")
    p = d["plan"]
    assert p["model"] == "gemma-3-27b" and p["ctx"] >= 16384
    assert p["settings"]["n_gpu_layers"] > 0 and any("partial offload" in n for n in p["notes"])
    cpu = next(dev for dev in p["memory"]["devices"] if dev["device"] == "CPU")
    assert cpu["kv_bytes"] > 0  # the CPU layers' KV lives in RAM
    better = [a for a in d["alternatives"] if a["fits"] and GGUF_LADDER.index(a["weight_format"]) <= GGUF_LADDER.index("Q4_K_M")]
    assert better
    fastest = max(a["decode_tokens_per_s"] for a in better)
    assert p["speed"]["decode_tokens_per_s"] >= 0.8 * fastest
    assert p["utility"]["meets_speed_floor"] and p["utility"]["reaches_wanted_ctx"]
    q8 = [a for a in d["alternatives"] if a["weight_format"] == "Q8_0" and a["fits"]]
    assert q8 and all("below the 5 tok/s floor" in a["reason"] for a in q8)  # and it says why, in one line


@pytest.mark.parametrize("target", ["cpu-16gb", "raspberry-pi-5-8gb"])
def test_cpu_and_pi_plans_reach_the_speed_floor(target):
    # Before: cpu-16gb took 31B Q2_K at 4.6 tok/s, the Pi 12B Q3_K_M at 1.6 tok/s.
    d = rec_json("--target", target)
    p = d["plan"]
    assert p["speed"]["decode_tokens_per_s"] >= SPEED_FLOORS["read"]
    assert p["utility"]["meets_speed_floor"] and p["notes"][0].startswith("utility: meets the 5 tok/s speed floor")
    assert p["weight_format"] not in ("Q2_K", "Q3_K_S")
    slow = [a for a in d["alternatives"] if a["fits"] and a["decode_tokens_per_s"] < SPEED_FLOORS["read"]]
    assert slow and all("below the 5 tok/s floor" in a["reason"] for a in slow)


def test_cpu_16gb_takes_the_moe_model():
    p = rec_json("--target", "cpu-16gb")["plan"]
    assert p["model"] == "gemma-4-26b-a4b"  # 3.8B active parameters: the fast strong model on a CPU


def test_nothing_reaches_the_floor_says_so_and_gives_the_closest():
    d = rec_json("--target", "raspberry-pi-5-8gb", "--min-speed", "500")
    assert d["plan"] is not None and not d["plan"]["utility"]["meets_speed_floor"]
    assert any("reaches the 500 tok/s floor" in n for n in d["notes"])
    fastest = max(a["decode_tokens_per_s"] or 0 for a in d["alternatives"] if a["fits"] and a["utility"]
                  and a["utility"]["quality_score"] >= d["utility"]["quality_floor"])
    assert d["plan"]["speed"]["decode_tokens_per_s"] >= fastest  # the closest above the quality floor


def test_speed_priority_on_a_4090_is_a_real_model():
    # Before: Gemma 3 270M, the fastest plan of a model nobody would run on a 24 GB card.
    p = rec_json("--target", "rtx4090", "--priority", "speed")["plan"]
    spec, _ = get_model(p["model"])
    assert spec.n_params_text >= 4e9
    assert p["utility"]["quality_score"] >= rec_json("--target", "rtx4090", "--priority", "speed")["utility"]["quality_floor"]


@pytest.mark.parametrize("target", ["galaxy-s24", "pixel-9"])
def test_phones_get_the_phone_engine_and_a_phone_class_model(target):
    d = rec_json("--target", target)
    p = d["plan"]
    assert p["engine"] == "litert-lm" and p["model"] in PHONE_CLASS and p["ctx"] <= PHONE_CTX
    assert any("LiteRT-LM bundle" in n for n in p["notes"])
    llama = [a for a in d["alternatives"] if a["engine"] == "llama.cpp" and a["fits"]]
    assert llama and all("LiteRT-LM" in a["reason"] or "litert-lm" in a["reason"] for a in llama)
    r = CliRunner().invoke(main, ["recommend", "--target", target])
    assert r.exit_code == 0 and "LiteRT-LM" in r.output and "adb" in r.output  # the run-it recipe is the phone's


def test_pinned_engine_on_a_phone_is_kept():
    p = rec_json("--target", "pixel-9", "--engine", "llama.cpp")["plan"]
    assert p["engine"] == "llama.cpp"


def test_context_is_reached_before_small_quality_gains():
    # 31B fits a 4090 at Q8_0 only partly offloaded and slow; at the wanted 32k context Q4/Q5 on the GPU wins.
    d = rec_json("--model", "31b", "--target", "rtx4090")
    p = d["plan"]
    assert p["ctx"] >= 32768 and p["settings"]["n_gpu_layers"] == -1
    best_q = max(a["utility"]["quality_score"] for a in d["alternatives"] if a["utility"])
    assert best_q - p["utility"]["quality_score"] < 2 * NOTICEABLE_POINTS


def test_use_chat_raises_the_floor_and_min_speed_overrides():
    assert rec_json("--target", "cpu-16gb", "--use", "chat")["utility"]["speed_floor_tok_s"] == SPEED_FLOORS["chat"]
    d = rec_json("--target", "cpu-16gb", "--min-speed", "12")
    assert d["utility"]["speed_floor_tok_s"] == 12 and d["utility"]["speed_floor_source"] == "--min-speed 12"
    assert d["plan"]["speed"]["decode_tokens_per_s"] >= 12


@pytest.mark.parametrize("bad, shown", [("-1", "-1"), ("0", "0"), ("nan", "nan"), ("inf", "inf"), ("1e9", "1e+09")])
def test_min_speed_out_of_bounds_is_one_line(bad, shown, one_line_error):
    r = CliRunner().invoke(main, ["recommend", "--target", "cpu-16gb", "--min-speed", bad])
    assert one_line_error(r, 1) == f"Error: --min-speed must be above 0 and at most 10000 tok/s, got {shown}"


def test_json_contract_extended_not_renamed():
    d = rec_json("--target", "rtx4090")
    for key in ("plan", "max_context", "alternatives", "priority", "notes", "utility"):
        assert key in d
    for key in ("speed_floor_tok_s", "wanted_ctx", "noticeable_points", "use"):
        assert key in d["utility"]
    t = d["plan"]["utility"]
    for key in ("meets_speed_floor", "reaches_wanted_ctx", "model_strength", "strength_source", "quant_penalty",
                "quality_score", "speed_points", "value", "native_engine"):
        assert key in t
    a = d["alternatives"][0]
    assert a["reason"] and "utility" in a and a["weight_format"] and "quality_loss" in a


def test_explain_prints_the_terms_of_the_chosen_plan_and_the_runner_up():
    r = CliRunner().invoke(main, ["recommend", "--model", "27b", "--target", "rtx3060-12gb", "--explain"])
    assert r.exit_code == 0, r.output
    out = r.output
    assert "utility (quality priority): speed floor 5 tok/s" in out
    chosen = out[out.index("chosen:"):]
    assert "runner-up:" in chosen and "lost because:" in chosen
    assert re.search(r"speed [\d.]+ tok/s \(floor 5: met\)", chosen)
    assert "strength 67.5 (gemma3_report)" in chosen


def test_moe_experts_on_the_cpu_read_only_the_top_k():
    # The CPU holds every expert but reads 8 of 128 per token: its share of the bytes read is the experts'
    # top-k, not the bytes it holds.
    spec, _ = get_model("26b")
    hw = load_target("rtx4070")
    fmt = parse_format("Q4_K_M", "llama.cpp")
    p = recommend(hw, models=[spec], formats=["Q4_K_M"], kv_types=[("f16", "f16")]).plan
    s = p.settings
    if not s.experts_on_cpu:
        from dataclasses import replace

        from planner.search import plan as make_plan
        p = make_plan(spec, fmt, replace(s, n_gpu_layers=-1, experts_on_cpu=True), hw)
    sp = estimate_speed(spec, fmt, p.settings, hw, p.memory)
    cpu_gb = float(re.search(r"CPU: ([\d.]+) GB/token", sp.bound).group(1))
    assert cpu_gb * 1e9 < 0.5 * weights_read_per_token(spec, fmt)
    assert sp.decode_tokens_per_s > 20


def test_every_strength_has_a_source_and_every_catalog_model_a_strength():
    table = _strength_table()
    from planner.catalog import all_models

    for m in all_models():
        s, src = strength(m.name)
        assert s is not None and 0 < s < 100, m.name
        assert round(s, 2) == s, m.name  # two decimals at most: quality scores and values stay exact to the hundredth
        assert src in table["sources"], (m.name, src)
        if src == "derived":
            assert table["models"][m.name].get("note"), m.name


# ---------------------------------------------------------------- docs/recommendations.md

def _table_rows() -> list[dict]:
    text = (ROOT / "docs" / "recommendations.md").read_text()
    section = text.split("## Sources")[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or not cells[0].startswith("`"):
            continue
        ticks = lambda c: re.findall(r"`([^`]+)`", c)  # noqa: E731
        rows.append({"target": ticks(cells[0])[0], "args": " ".join(ticks(cells[1])).split(), "models": set(ticks(cells[2])),
                     "formats": None if cells[3] == "any" else set(ticks(cells[3])), "engine": ticks(cells[4])[0],
                     "min_ctx": int(cells[5]), "sources": re.findall(r"\[(s\d+)\]", cells[7])})
    return rows


def test_the_recommendations_table_is_read():
    rows = _table_rows()
    assert len(rows) >= 8 and all(r["sources"] for r in rows)
    text = (ROOT / "docs" / "recommendations.md").read_text()
    for r in rows:
        for s in r["sources"]:
            assert f"- [{s}]" in text  # every cited source is listed with its address


@pytest.mark.parametrize("row", _table_rows(), ids=lambda r: " ".join([r["target"], *r["args"]]))
def test_recommend_picks_what_a_person_would(row):
    p = rec_json("--target", row["target"], *row["args"])["plan"]
    assert p["model"] in row["models"], (p["model"], row["models"])
    if row["formats"] is not None:
        assert p["weight_format"] in row["formats"]
    assert p["engine"] == row["engine"] and p["ctx"] >= row["min_ctx"]


def test_partial_offload_finds_the_most_gpu_layers_when_the_host_alone_cannot_hold_the_model():
    """31B at Q8_0 (33 GB) on an 8 GB card with 32 GB of RAM at the full 32k context: with no layer on the GPU the
    host overflows, with too many the card does; the plan must be the most layers the card takes (a search that
    halves 0..L from the middle stepped down into host overflow and fell back to a 4k context)."""
    import dataclasses

    from planner.search import _best_partial, plan
    from planner.types import RuntimeSettings

    spec, hw = get_model("31b")[0], load_target("rtx3070")
    fmt = parse_format("Q8_0", "llama.cpp")
    s = RuntimeSettings(n_ctx=32768)
    best = _best_partial(spec, fmt, s, hw, 1 << 30)
    assert best is not None and best.fits and best.ctx == 32768
    k = best.settings.n_gpu_layers
    assert k > 0
    assert not plan(spec, fmt, dataclasses.replace(s, n_gpu_layers=0), hw, margin=1 << 30, with_speed=False).fits
    over = plan(spec, fmt, dataclasses.replace(s, n_gpu_layers=k + 1), hw, margin=1 << 30, with_speed=False)
    gpu = next(d for d in over.memory.devices if d.device != "CPU")
    assert gpu.total_bytes > gpu.budget_bytes  # one more layer no longer fits on the card


# ---------------------------------------------------------------- exact terms (what --json's utility blocks hold)

def _plan(model: str, fmt: str, decode, ctx: int = 32768, engine: str = "llama.cpp") -> Plan:
    """A plan as recommend builds it, with the decode speed under the test's control (None: no estimate)."""
    speed = None if decode is None else SpeedEstimate(float(decode), 0.0, 0.0, 0, 0, "bandwidth", 1.0, "", "")
    return Plan(model, parse_format(fmt), engine, "box", RuntimeSettings(engine=engine, n_ctx=ctx),
                MemoryBreakdown(engine, "", []), speed, quality_loss=quality_loss(fmt))


@pytest.mark.parametrize("fmt, points", [("bf16", 0.0), ("Q8_0", 0.01), ("Q6_K", 0.07), ("Q5_K_M", 0.17), ("Q4_K_M", 0.53),
                                         ("IQ4_XS", 0.9), ("Q4_0", 1.41), ("Q3_K_M", 1.97), ("Q2_K", 10.56)])
def test_quant_penalty_is_three_points_per_ppl_to_the_hundredth(fmt, points):
    # The "- X for Q4_K_M" of the utility line and --json's quant_penalty: POINTS_PER_PPL x quality.json's
    # perplexity increase, shown to the hundredth (Q8_0's 0.0078 shows as 0.01, not 0 or 0.008).
    assert quant_penalty(_plan("gemma-3-27b", fmt, 10)) == points


def test_terms_of_a_catalog_plan_above_the_floor():
    # plan.utility in --json, every key: gemma-3-27b's MMLU-Pro 67.5 (gemma3_report) - 0.53 for Q4_K_M; 13 tok/s is
    # 2.6x the 5 tok/s read floor: 2 x log2(2.6) = 2.757 -> 2.76 speed points; value 66.97 + 2.76.
    assert terms(_plan("gemma-3-27b", "Q4_K_M", 13.0, ctx=32768), make_utility(), 131072) == {
        "decode_tokens_per_s": 13.0, "speed_floor_tok_s": 5.0, "meets_speed_floor": True, "ctx": 32768, "wanted_ctx": 32768,
        "reaches_wanted_ctx": True, "engine": "llama.cpp", "native_engine": True, "model_strength": 67.5,
        "strength_source": "gemma3_report", "quant_penalty": 0.53, "quality_score": 66.97, "speed_points": 2.76, "value": 69.73}


def test_terms_of_a_model_outside_the_strength_table_below_the_floor():
    # A local model keeps the neutral strength 50 and says so; 3 tok/s is below the floor: no speed points (not
    # negative ones), and 8,192 of the model's 16,384 trained tokens does not reach the 32k wanted (capped at 16k).
    assert terms(_plan("./my-finetune", "Q3_K_M", 3.0, ctx=8192), make_utility(), 16384) == {
        "decode_tokens_per_s": 3.0, "speed_floor_tok_s": 5.0, "meets_speed_floor": False, "ctx": 8192, "wanted_ctx": 16384,
        "reaches_wanted_ctx": False, "engine": "llama.cpp", "native_engine": True, "model_strength": 50.0,
        "strength_source": "not in planner/data/strength.json (ranked by format only)", "quant_penalty": 1.97,
        "quality_score": 48.03, "speed_points": 0.0, "value": 48.03}


def test_terms_at_the_floor_and_at_the_wanted_context_meet_both():
    # Exactly 5 tok/s meets the read floor (no speed points: 2 x log2(1) = 0); exactly the wanted context reaches it.
    t = terms(_plan("gemma-4-e4b", "Q8_0", 5.0, ctx=4096, engine="litert-lm"), make_utility(phone=True, native=True), 32768)
    assert (t["meets_speed_floor"], t["speed_points"], t["wanted_ctx"], t["reaches_wanted_ctx"]) == (True, 0.0, 4096, True)
    assert (t["engine"], t["native_engine"], t["quality_score"], t["value"]) == ("litert-lm", True, 69.39, 69.39)


def test_speed_points_stop_at_eight_times_the_floor_and_follow_the_floor():
    # 100 tok/s counts as 40 (8 x the read floor): 2 x log2(8) = 6 points. Under --use batch (1 tok/s) 3 tok/s earns
    # 2 x log2(3) = 3.17 and 100 tok/s again 6. A plan without a speed estimate reads 0 tok/s and meets no floor.
    assert terms(_plan("./m", "bf16", 100.0), make_utility(), 32768)["speed_points"] == 6.0
    batch = make_utility(use="batch")
    assert terms(_plan("./m", "bf16", 3.0), batch, 32768)["speed_points"] == 3.17
    assert terms(_plan("./m", "bf16", 100.0), batch, 32768)["value"] == 56.0
    t = terms(_plan("./m", "bf16", None), batch, 32768)
    assert (t["decode_tokens_per_s"], t["meets_speed_floor"], t["speed_points"], t["value"]) == (0.0, False, 0.0, 50.0)


def test_a_zero_floor_gives_no_speed_points():
    # A Utility without a speed requirement (floor 0): every plan meets it and speed earns nothing (no log of 0).
    t = terms(_plan("./m", "bf16", 7.0), Utility(speed_floor=0.0), 32768)
    assert (t["meets_speed_floor"], t["speed_points"], t["value"]) == (True, 0.0, 50.0)


def test_make_utility_defaults_are_read_at_32k_by_quality():
    # recommend's "utility" block with no flags: --use read (5 tok/s), 32k wanted, quality priority, no engine preference.
    assert make_utility() == Utility(use="read", speed_floor=5.0, speed_floor_source="--use read", wanted_ctx=32768,
                                     ctx_max=False, priority="quality", native_engine=None)
    assert make_utility().to_dict()["wanted_ctx"] == 32768


def test_make_utility_use_min_speed_ctx_and_priority():
    assert make_utility(use="chat") == Utility(use="chat", speed_floor=10.0, speed_floor_source="--use chat")
    # --min-speed overrides the use's floor and is named as the floor's source, the use is still reported
    assert make_utility(use="batch", min_speed=12.5) == Utility(use="batch", speed_floor=12.5, speed_floor_source="--min-speed 12.5")
    u = make_utility(ctx=8192, ctx_max=True, priority="speed", default_ctx=131072)
    assert (u.wanted_ctx, u.ctx_max, u.priority) == (8192, True, "speed")
    assert u.to_dict()["wanted_ctx"] == "max" and u.wanted_for(65536) == 65536
    assert make_utility(default_ctx=131072).wanted_ctx == 131072


def test_make_utility_on_phones():
    # Phones want LiteRT-LM's 4,096-token bundles' context; the LiteRT-LM preference only when the engine was not pinned
    # (native=True), and never off a phone.
    assert make_utility(phone=True) == Utility(wanted_ctx=PHONE_CTX, native_engine=None)
    assert make_utility(phone=True, native=True, default_ctx=131072) == Utility(wanted_ctx=4096, native_engine="litert-lm")
    assert make_utility(native=True).native_engine is None
    assert make_utility(phone=True, ctx=16384).wanted_ctx == 16384


def _t(name, spd, value, ctx_ok=True, native=True, ctx=32768, floor=5.0):
    """A plan as rank sees it: its terms (rank reads only .utility and .ctx)."""
    t = {"native_engine": native, "meets_speed_floor": spd >= floor, "quality_score": value, "value": value,
         "reaches_wanted_ctx": ctx_ok, "decode_tokens_per_s": spd}
    return SimpleNamespace(model=name, utility=t, ctx=ctx)


def _order(plans, u):
    return [p.model for p in rank(plans, u)]


def test_rank_quality_band_speed_tolerance_and_tie_breaks():
    # --priority quality, read floor (cap 40 tok/s). The best value is 71.0, so the band of equal quality is 70.0..71.0
    # (F sits exactly on its edge and is in it); its fastest plan reads 40 tok/s, so 32 tok/s (80%) or more counts as
    # equally fast (E sits exactly on it). Equally fast plans rank by value to the tenth, then speed; slower plans in the
    # band by speed, then value; plans outside the band by value, then speed.
    plans = [_t("O", 45.0, 60.0), _t("O2", 10.0, 65.0), _t("O3", 12.0, 65.0), _t("B", 20.0, 71.0), _t("A2", 30.0, 70.2),
             _t("A", 30.0, 70.5), _t("F2", 35.0, 70.3), _t("F3", 36.0, 70.3), _t("F", 40.0, 70.0), _t("E", 32.0, 70.9)]
    u = make_utility()
    assert _order(plans, u) == ["E", "F3", "F2", "F", "A", "A2", "B", "O3", "O2", "O"]
    assert u.speed_floor_reached is True and u.quality_floor is None  # quality priority with the floor met: no quality floor


def test_rank_hundredths_of_a_point_do_not_outrank_speed():
    # Both above the 40 tok/s cap; 0.03 points (a cheaper KV cache) is below the tenth shown: the faster plan wins.
    assert _order([_t("exact", 45.0, 56.0), _t("kv-q8", 60.0, 55.97)], make_utility()) == ["kv-q8", "exact"]


def test_rank_below_floor_loses_to_a_weaker_plan_above_it():
    # 3 tok/s is not usable for reading: the weaker 8 tok/s plan is chosen; the wanted context comes before value.
    plans = [_t("slow-strong", 3.0, 70.0), _t("usable", 8.0, 61.36), _t("short", 20.0, 64.0, ctx_ok=False)]
    assert _order(plans, make_utility()) == ["usable", "short", "slow-strong"]


def test_rank_band_is_taken_among_plans_that_reach_the_wanted_context():
    # A stronger plan short of the context does not set the band: the two 32k plans are within a point, and the faster wins.
    plans = [_t("strong-short", 40.0, 70.0, ctx_ok=False), _t("slow", 20.0, 60.0), _t("fast", 40.0, 59.5)]
    assert _order(plans, make_utility()) == ["fast", "slow", "strong-short"]


def test_rank_no_plan_reaches_the_floor_closest_first_above_the_quality_floor():
    # Nothing reaches 500 tok/s: the fastest plan keeping 85% of the best quality (0.85 x 70.1 = 59.585, shown 59.58) wins;
    # the weak fast one goes after those above the floor.
    plans = [_t("strong", 3.0, 70.1, floor=500), _t("mid", 6.0, 60.0, floor=500), _t("weak-fast", 9.0, 50.0, floor=500)]
    u = make_utility(min_speed=500)
    assert _order(plans, u) == ["mid", "strong", "weak-fast"]
    assert u.speed_floor_reached is False and u.quality_floor == 59.58


def test_rank_speed_priority_keeps_plans_exactly_on_the_quality_floor():
    # --priority speed: floor 0.85 x 70 = 59.5; "edge" sits exactly on it and is the fastest: it wins. The quality
    # floor is taken from the plans above the speed floor only; plans below it come last.
    plans = [_t("best", 20.0, 70.0), _t("edge", 90.0, 59.5), _t("below-floor", 4.0, 80.0), _t("weak", 200.0, 50.0)]
    u = make_utility(priority="speed")
    assert _order(plans, u) == ["edge", "best", "weak", "below-floor"]
    assert u.quality_floor == 59.5


def test_rank_context_priority_puts_plans_below_the_speed_floor_last():
    plans = [_t("long-slow", 2.0, 70.0, ctx=131072), _t("mid", 40.0, 70.0, ctx=32768), _t("short", 90.0, 70.0, ctx=8192)]
    assert _order(plans, make_utility(priority="context")) == ["mid", "short", "long-slow"]


@pytest.mark.parametrize("best, floor", [(0.0, None), (-4.0, None), (0.5, 0.42)])
def test_rank_quality_floor_only_for_a_positive_best_score(best, floor):
    # 85% of a score at or below 0 would sit at or above the best plan itself: no floor then.
    u = make_utility(priority="speed")
    rank([_t("a", 20.0, best), _t("b", 10.0, best - 1)], u)
    assert u.quality_floor == floor


def test_rank_phone_prefers_the_native_engine_even_below_the_floor():
    # On a phone the LiteRT-LM bundle comes first; the floor counts as unreached when only llama.cpp reaches it,
    # so the quality floor is set and the JSON says speed_floor_reached false.
    plans = [_t("llama", 20.0, 60.0, native=False), _t("bundle", 3.0, 50.0)]
    u = make_utility(phone=True, native=True)
    assert _order(plans, u) == ["bundle", "llama"]
    assert u.speed_floor_reached is False and u.quality_floor == 42.5
