"""Plan, produce, measure for GPTQ: ``gemma-plan quantize --format gptq``.

The planner's GPTQ weight model (packed int4/int8 + scales + zeros + g_idx, 16-bit embeddings) decides
whether bits x group size fits the target under the vLLM or transformers memory model; GPTQModel
produces the checkpoint (quantize.gptq); transformers reloads and measures it; the plan-driven launch
recipes land in recipe.json next to GPTQModel's own manifest.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from planner.errors import InvalidSettingsError
from planner.formats import parse_format
from planner.memory import DEFAULT_MARGIN
from planner.policy import check_slots, check_trained_max, planned_ctx
from planner.search import plan as make_plan
from planner.search import require_fit, vllm_tensor_parallel
from planner.types import ModelSpec, Plan, RuntimeSettings
from profiles.hardware import Hardware
from quantize.errors import OutputExistsError
from quantize.files import write_json
from quantize.pipeline import resolve_source, source_name

from profiles.units import GiB


@dataclass
class GPTQJob:
    source: Path
    spec: ModelSpec
    plan: Plan
    hardware: Hardware
    out_dir: Path
    bits: int
    group_size: int
    calib: Optional[str]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        p = self.plan
        per_dev = ", ".join(f"{d.device} {d.total_bytes / GiB:.2f} GiB" for d in p.memory.devices if d.total_bytes)
        return [f"model: {self.spec.name} (hf-dir: {self.source})",
                f"plan: {p.weight_format} (group {self.group_size}) on {p.engine} at {p.ctx:,} tokens: {per_dev} "
                f"({'fits' if p.fits else 'does not fit'} {p.target})",
                f"writes: {self.out_dir}/ (~{p.weight_file_bytes / GiB:.2f} GiB of weights), manifest.json, recipe.json",
                f"calibration: {self.calib or 'bundled sample text (quantize/data/calibration.txt)'}"] + [f"note: {n}" for n in self.notes]


def plan_gptq_job(
    model: str,
    hw: Hardware,
    *,
    bits: int = 4,
    group_size: int = 128,
    engine: str = "vllm",
    ctx: Optional[int] = None,
    ctx_max: bool = False,
    parallel: int = 1,
    out_dir: Optional[Path] = None,
    margin: int = DEFAULT_MARGIN,
    target: str = "",
    force: bool = False,
    calib: Optional[str] = None,
) -> GPTQJob:
    from planner.sources import load_model

    source, kind = resolve_source(model)
    if kind != "hf-dir":
        raise InvalidSettingsError(f"GPTQ quantizes Hugging Face checkpoints, not {source.name}", hint="pass the model's HF directory")
    spec, _ = load_model(str(source))
    spec = dataclasses.replace(spec, name=source_name(model, source))
    fmt = parse_format(f"gptq-int{bits}-g{group_size}" if group_size > 0 else f"gptq-int{bits}")
    check_trained_max(ctx, spec.name, spec.ctx_train)
    n_ctx = planned_ctx(ctx, ctx_max, spec.ctx_train)
    check_slots(n_ctx, parallel, given=ctx, is_max=ctx_max, ceiling=spec.ctx_train)
    s = RuntimeSettings(engine=engine, n_parallel=parallel, n_ctx=n_ctx)
    if engine == "vllm" and hw.devices:
        s = dataclasses.replace(s, tensor_parallel=vllm_tensor_parallel(spec, len(hw.devices)))
    p = require_fit(make_plan(spec, fmt, s, hw, margin=margin, target=target))
    out = Path(out_dir or "out").expanduser() / f"{spec.name}-{fmt.name}-g{group_size}"
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists")
    return GPTQJob(source, spec, p, hw, out, bits, group_size, calib)


def run_gptq_job(job: GPTQJob, *, force: bool = False, validate: bool = True,
                 progress: Optional[Callable[[str, float], None]] = None) -> dict:
    from planner.recipes import recipe_document
    from quantize.gptq import build_recipe, quantize_gptq, validate_gptq

    say = progress or (lambda stage, frac: None)
    say("quantize", 0.0)
    quantize_gptq(job.source, job.out_dir, bits=job.bits, group_size=job.group_size, calib=job.calib, force=force,
                  progress=lambda done, total: say("quantize", done / max(1, total)))
    say("quantize", 1.0)
    if validate:
        say("validate", 0.0)
        manifest = validate_gptq(job.out_dir, ref_dir=job.source)
        say("validate", 1.0)
    else:
        manifest = json.loads((job.out_dir / "manifest.json").read_text())
    manifest["plan"] = job.plan.to_dict()
    recipe = recipe_document(job.plan, job.hardware, str(job.out_dir.resolve()))
    recipe["gptq"] = build_recipe(job.out_dir, job.bits, job.group_size)
    write_json(job.out_dir / "recipe.json", recipe)
    write_json(job.out_dir / "manifest.json", manifest)
    manifest.setdefault("output", {}).setdefault("path", str(job.out_dir))
    return manifest
