"""LM Studio: ``lms import`` (or ``lms get``) and ``lms load`` with the plan's context and GPU share.

``lms load`` takes ``--context-length N`` and ``--gpu 0-1|off|max`` (lmstudio.ai/docs/cli/load). The
KV cache types, flash attention and parallel slots live in the model's load settings (the SDK's
``LLMLoadModelConfig``), not in CLI flags, so this recipe says which to set by hand and is marked as
not matching the plan unless the plan uses LM Studio's defaults for them.
"""

from __future__ import annotations

from pathlib import Path

from planner.recipes.base import Context, Recipe, Step, safe_name, shell_script
from planner.recipes.llamacpp import gpu_layers


def gpu_share(ctx: Context) -> str:
    ngl, _ = gpu_layers(ctx)
    total = ctx.n_layer + 1
    if ngl <= 0 or not ctx.hw.devices:
        return "off"
    if ngl >= total:
        return "max"
    return f"{ngl / total:.2f}"


def recipe(ctx: Context) -> Recipe:
    s = ctx.s
    key = safe_name(Path(ctx.model.value).stem)
    steps = []
    if ctx.model.kind in ("gguf-file", "placeholder-gguf"):
        steps.append(Step(["lms", "import", ctx.model.value], why="copy the GGUF into LM Studio's models folder"))
    else:
        steps.append(Step(["lms", "get", ctx.model.value], why="download the model"))
    load = Step(["lms", "load", key, "--context-length", str(s.n_ctx), "--gpu", gpu_share(ctx), "--identifier", key],
                why="load with the plan's context and GPU share")
    steps.append(load)
    notes = [f"`lms import` names the model after the file; if `lms ls` shows another key, use that in place of {key}",
             f"set in the model's load settings: flash attention {'on' if s.flash_attn else 'off'}, "
             f"K cache {s.type_k}, V cache {s.type_v}" + (f", {s.n_parallel} parallel requests" if s.n_parallel > 1 else "")]
    matches = s.type_k == "f16" and s.type_v == "f16" and s.n_parallel == 1 and not s.experts_on_cpu and not s.swa_full
    if s.experts_on_cpu:
        notes.append("MoE experts on the CPU: set 'number of layers for which to force MoE weights onto CPU' to all layers")
    if len(ctx.hw.devices) > 1:
        notes.append("LM Studio spreads layers over GPUs by its own strategy, not the plan's split")
        matches = False
    r = Recipe("lmstudio", "LM Studio (lms CLI)", steps, notes=notes,
               requirements=["LM Studio with the lms CLI (run `~/.lmstudio/bin/lms bootstrap` once)"],
               settings={"context_length": s.n_ctx, "gpu": gpu_share(ctx), "key": key}, matches_plan=matches,
               model_path=ctx.model.value if ctx.model.is_local else None)
    r.files["run-lmstudio.sh"] = shell_script(ctx, steps)
    r.executable.append("run-lmstudio.sh")
    return r


def parse_load(argv: list[str]) -> dict:
    """``lms load KEY --context-length N --gpu X --identifier NAME`` -> its settings."""
    if argv[:2] != ["lms", "load"] or len(argv) < 3:
        raise ValueError("not an `lms load` command")
    out: dict = {"key": argv[2]}
    names = {"--context-length": "context_length", "--gpu": "gpu", "--identifier": "identifier", "--ttl": "ttl"}
    i = 3
    while i < len(argv):
        if argv[i] not in names or i + 1 >= len(argv):
            raise ValueError(f"unexpected argument {argv[i]!r}")
        out[names[argv[i]]] = argv[i + 1]
        i += 2
    return out


def check(recipe: Recipe, ctx: Context) -> list[str]:
    loads = [s for s in recipe.steps if [str(a) for a in s.argv[:2]] == ["lms", "load"]]
    if not loads:
        return ["no `lms load` command"]
    try:
        got = parse_load([str(a) for a in loads[0].argv])
    except ValueError as exc:
        return [f"lms load: {exc}"]
    want = {"context_length": str(ctx.s.n_ctx), "gpu": gpu_share(ctx)}
    return [f"lms load: {k} is {got.get(k)!r}, the plan says {v!r}" for k, v in want.items() if got.get(k) != v]
