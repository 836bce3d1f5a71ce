"""Planning policy lives in the library (planner/policy.py), and the bugs found while moving it stay fixed."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from planner import policy
from planner.catalog import get_model
from planner.errors import InvalidSettingsError, UnknownFormatError
from planner.formats import DENSE_FORMATS, GGUF_FTYPES, GPTQ_FORMATS, parse_format, quality_loss
from planner.search import plan
from planner.types import RuntimeSettings
from profiles.targets import load_target
from profiles.units import GiB


def test_k_is_1024_for_context():
    assert policy.parse_ctx("32k") == (32768, False)
    assert policy.parse_ctx("128K") == (131072, False)
    assert policy.parse_ctx("4096") == (4096, False)
    assert policy.parse_ctx("max") == (None, True)
    with pytest.raises(InvalidSettingsError, match="not a number of tokens"):
        policy.parse_ctx("32kb")


def test_default_context_rule():
    assert policy.planned_ctx(None, False, 131072) == policy.DEFAULT_CTX == 32768
    assert policy.planned_ctx(None, False, 8192) == 8192  # the trained maximum if smaller
    assert policy.planned_ctx(None, True, 131072) == 131072
    assert policy.planned_ctx(4096, False, 131072) == 4096


def test_trained_maximum_is_checked_by_plan_and_policy():
    spec, _ = get_model("gemma-3-1b")
    with pytest.raises(InvalidSettingsError, match="trained maximum"):
        policy.check_trained_max(spec.ctx_train + 1, spec.name, spec.ctx_train)
    with pytest.raises(InvalidSettingsError, match="trained maximum"):
        plan(spec, parse_format("Q8_0"), RuntimeSettings(n_ctx=spec.ctx_train + 256), load_target("rtx4090"))


def test_quantized_v_needs_flash_attention_once():
    assert not policy.v_cache_allowed("llama.cpp", "q8_0", flash_attn=False)
    assert policy.v_cache_allowed("llama.cpp", "q8_0", flash_attn=True)
    assert policy.v_cache_allowed("llama.cpp", "f16", flash_attn=False)
    assert policy.v_cache_allowed("vllm", "fp8", flash_attn=False)  # vLLM has no such rule
    with pytest.raises(InvalidSettingsError, match="requires flash attention"):
        policy.check_kv_types("q8_0", "q8_0", flash_attn=False)
    policy.check_kv_types("q8_0", "f16", flash_attn=False)  # quantized K alone is fine


def test_overrides_from_python_leave_the_profile_alone():
    hw = load_target("rtx4090")
    before = hw.devices[0].memory_bytes
    big, note = policy.with_overrides(hw, vram="48GiB", ram=64 * GiB)
    assert big.devices[0].memory_bytes == 48 * GiB and big.ram_bytes == 64 * GiB
    assert "VRAM overridden to 48.0 GiB" in note and "RAM overridden to 64.0 GiB" in note
    assert hw.devices[0].memory_bytes == before  # a copy, not the cached profile
    cpu, _ = policy.with_overrides(load_target("cpu-16gb"), vram="8GiB")
    assert [d.memory_bytes for d in cpu.devices] == [8 * GiB]
    with pytest.raises(InvalidSettingsError, match="not a positive size"):
        policy.with_overrides(hw, vram="lots")


def test_every_format_has_a_quality_figure_and_unknown_ones_are_errors():
    for name in [*GGUF_FTYPES, *DENSE_FORMATS, *GPTQ_FORMATS]:
        assert quality_loss(parse_format(name).name) >= 0
    with pytest.raises(UnknownFormatError, match="no published quality figure"):
        quality_loss("Q7_K_X")


def test_vllm_plans_keep_the_margin():
    spec, _ = get_model("gemma-3-12b")
    hw = load_target("l4")
    s = RuntimeSettings(engine="vllm", n_ctx=32768)
    fmt = parse_format("gptq-int4", "vllm")
    loose = plan(spec, fmt, s, hw, margin=0)
    tight = plan(spec, fmt, s, hw, margin=20 * GiB)
    assert loose.fits and not tight.fits
    need = lambda p: p.memory.devices[0].detail["kv_needed_bytes"]  # noqa: E731
    assert need(tight) - need(loose) == 20 * GiB


def test_quantize_ctx_max_is_the_trained_maximum_for_gguf_and_gptq(tiny_model):
    from quantize.gptq_pipeline import plan_gptq_job
    from quantize.pipeline import plan_job

    src = str(tiny_model("gemma3_text"))
    hw = load_target("rtx4090")
    g = plan_job(src, hw, quant="Q8_0", ctx_max=True)
    q = plan_gptq_job(src, hw, ctx_max=True)
    assert g.plan.ctx == g.spec.ctx_train and q.plan.ctx == q.spec.ctx_train
    auto = plan_job(src, hw, quant="auto", ctx_max=True)
    assert auto.plan.ctx == auto.spec.ctx_train
    dflt = plan_job(src, hw, quant="Q8_0")
    assert dflt.plan.ctx == policy.planned_ctx(None, False, dflt.spec.ctx_train)
    with pytest.raises(InvalidSettingsError, match="trained maximum"):
        plan_gptq_job(src, hw, ctx=dflt.spec.ctx_train * 2)


def test_a_broken_command_is_not_hidden(monkeypatch):
    import click

    from planner import cli

    group = click.Group()
    monkeypatch.setitem(sys.modules, "planner.commands.detect", None)  # importing it now fails
    with pytest.raises(ImportError):
        cli._add_optional_commands(group)
    # a command whose optional dependency is missing is left out
    cli._add_optional_commands(group, {"planner.commands.detect": ("detect", ("planner",))})
    assert "detect" not in group.commands


def test_quantize_progress_moves_through_every_stage(tmp_path, monkeypatch):
    """run_job reports convert, quantize and validate from 0 to 1; quantize's byte counts become fractions."""
    from quantize import convert, llamacpp, pipeline

    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "hidden_size": 256, "num_hidden_layers": 2,
                                                 "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128,
                                                 "intermediate_size": 512, "vocab_size": 1024,
                                                 "max_position_embeddings": 8192}))
    job = pipeline.plan_job(str(src), load_target("rtx4090"), quant="Q4_K_M", ctx=4096, out_dir=tmp_path / "out")
    expected = job.plan.weight_file_bytes

    def fake_convert(source, out, *, outtype, force, progress):
        for i in range(4):
            progress(i, 4, f"t{i}")
        out.write_bytes(b"x")

    def fake_quantize(inp, out, ftype, *, nthreads, imatrix, force, progress):
        for written in (expected // 4, expected // 2, expected):
            progress(written)  # quantize_gguf reports one number: bytes written so far
        out.write_bytes(b"y")

    monkeypatch.setattr(convert, "convert_hf_to_gguf", fake_convert)
    monkeypatch.setattr(llamacpp, "quantize_gguf", fake_quantize)
    monkeypatch.setattr(pipeline, "validate_gguf", lambda job, built: {"ok": True})
    monkeypatch.setattr(pipeline, "build_manifest", lambda job, v, **kw: {"validation": v})
    monkeypatch.setattr(pipeline, "job_recipe_document", lambda job: {})
    seen: dict[str, list[float]] = {}
    pipeline.run_job(job, progress=lambda stage, frac: seen.setdefault(stage, []).append(frac))
    assert list(seen) == ["convert", "quantize", "validate"]
    for stage, fracs in seen.items():
        assert fracs[0] == 0.0 and fracs[-1] == 1.0 and fracs == sorted(fracs), (stage, fracs)
    assert 0.2 < seen["quantize"][1] < 0.3 and 0.45 < seen["quantize"][2] < 0.55  # bytes -> fraction of the planned file


def test_quantize_bar_completes_each_stage_in_the_cli(tmp_path, monkeypatch):
    """The rich bar the CLI draws: each stage's task ends completed (what a user sees move)."""
    import rich.progress

    from planner.cli import main
    from quantize import pipeline

    updates: list[tuple[str, float]] = []
    real_update = rich.progress.Progress.update

    def update(self, task_id, **kw):
        if "completed" in kw:
            updates.append((self._tasks[task_id].description, kw["completed"]))
        return real_update(self, task_id, **kw)

    monkeypatch.setattr(rich.progress.Progress, "update", update)

    def fake_run(job, *, force, validate, progress, imatrix=None, nthreads=None):
        for stage in ("convert", "quantize", "validate"):
            for f in (0.0, 0.5, 1.0):
                progress(stage, f)
        return {"schema": "x"}

    class Job:
        def describe(self):
            return []

    monkeypatch.setattr(pipeline, "run_job", fake_run)
    monkeypatch.setattr(pipeline, "plan_job", lambda *a, **kw: Job())
    r = CliRunner().invoke(main, ["quantize", "--model", str(tmp_path), "--target", "rtx4090", "--json"])
    assert r.exit_code == 0, r.output
    for stage in ("convert", "quantize", "validate"):
        assert [f for s, f in updates if s == stage] == [0.0, 0.5, 1.0]
