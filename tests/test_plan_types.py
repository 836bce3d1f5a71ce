"""The Plan is typed and frozen: a WeightFormat, not a string parsed again; a placement enum, not a search
of its notes; one JSON writer and reader (planner.types)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from planner.catalog import get_model
from planner.formats import parse_format
from planner.search import plan, recommend
from planner.types import Placement, Plan, RuntimeSettings, WeightFormat
from profiles.targets import load_target


def _plan(model="gemma-3-4b", quant="Q4_K_M", target="rtx4090", **settings):
    spec, _ = get_model(model)
    return plan(spec, parse_format(quant), RuntimeSettings(**settings), load_target(target))


def test_plan_is_frozen_and_carries_its_format():
    p = _plan()
    assert isinstance(p.fmt, WeightFormat) and p.fmt.kind == "gguf" and p.weight_format == "Q4_K_M"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.engine = "vllm"  # type: ignore[misc]
    q = p.noted("b").noted("a", first=True)
    assert q.notes == ("a", *p.notes, "b") and "b" not in p.notes  # p itself is unchanged


@pytest.mark.parametrize("model, quant, target, settings, placement, reason", [
    ("gemma-3-4b", "Q4_K_M", "rtx4090", {}, Placement.GPU, "fits the GPU whole"),
    ("gemma-3-4b", "Q4_K_M", "rtx4090", {"n_gpu_layers": 10}, Placement.PARTIAL, "-ngl 10 leaves layers on the CPU"),
    ("gemma-3-4b", "Q4_K_M", "rtx4090", {"n_gpu_layers": 34}, Placement.PARTIAL, "every repeating layer but not the output layer"),
    ("gemma-4-26b-a4b", "Q4_K_M", "rtx4090", {"experts_on_cpu": True}, Placement.EXPERTS_ON_CPU, "-ot exps=CPU"),
    ("gemma-3-4b", "Q4_K_M", "cpu-16gb", {"n_gpu_layers": 0}, Placement.CPU, "no accelerator"),
])
def test_placement(model, quant, target, settings, placement, reason):
    assert _plan(model, quant, target, **settings).placement == placement, reason


def test_recommend_marks_partial_offload_by_placement_not_notes():
    spec, _ = get_model("31b")
    rec = recommend(load_target("rtx4090"), models=[spec], formats=["Q8_0"])
    partial = [a.plan for a in rec.alternatives if a.plan.fits] + ([rec.plan] if rec.plan else [])
    assert any(p.placement == Placement.PARTIAL for p in partial)
    for p in partial:
        noted = any(n.startswith("partial offload") for n in p.notes)
        assert noted == (p.placement in (Placement.PARTIAL, Placement.EXPERTS_ON_CPU)), (p.settings.n_gpu_layers, p.notes)


@pytest.mark.parametrize("model, quant, engine, target", [
    ("gemma-3-4b", "Q4_K_M", "llama.cpp", "rtx4090"),
    ("gemma-3-12b", "gptq-int4-g32", "vllm", "l4"),
    ("gemma-3-4b", "bf16", "transformers", "rtx4090"),
])
def test_json_round_trip(model, quant, engine, target):
    spec, _ = get_model(model)
    p = plan(spec, parse_format(quant, engine), RuntimeSettings(engine=engine, n_ctx=8192), load_target(target)).noted("x")
    d = json.loads(json.dumps(p.to_dict()))
    back = Plan.from_dict(d)
    assert back.fmt == p.fmt and back.placement == p.placement
    assert back.to_dict() == d
    assert d["format"]["group_size"] == p.fmt.group_size and d["placement"] == p.placement.value


def test_from_dict_parses_the_name_and_never_trusts_kind_or_bits():
    d = _plan().to_dict()
    d["format"] = {"name": "Q4_K_M", "kind": "dense", "bits": 99}
    assert Plan.from_dict(d).fmt == parse_format("Q4_K_M")


@pytest.mark.parametrize("model, target, engine", [
    ("31b", "rtx4090", "llama.cpp"), ("12b", "l4", "vllm"), ("4b", "rtx4090", "transformers"), (None, "pixel-9", None),
    ("27b", "m4-max-128gb", "llama.cpp"), ("27b", "cluster-2x-dgx-spark", "llama.cpp"),
])
def test_the_recipe_recommend_shows_is_the_primary_of_all(model, target, engine):
    """recommend renders only the recipe it shows; it is the one render_all would have put first."""
    from planner.recipes import primary, render_all, render_primary

    hw = load_target(target)
    rec = recommend(hw, models=[get_model(model)[0]] if model else None, engine=engine)
    everything = render_all(rec.plan, hw)
    name, shown = render_primary(rec.plan, hw)
    assert shown.to_dict() == primary(everything).to_dict() and everything[name].to_dict() == shown.to_dict()
