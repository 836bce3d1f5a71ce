"""Where a recipe's model file comes from, said in one line (and the command that makes it when it does not exist).

``gemma-plan quantize`` writes ``OUT/<model>-<type>.gguf`` (quantize.pipeline) and refuses an ``OUT``
that already holds a recipe.json, so the command writes into ``./quantized`` and moves the GGUF to the
name the recipes load.
"""

from __future__ import annotations

import shlex

from planner.recipes.base import Context, comment, safe_name

QUANTIZE_OUT = "quantized"


def quantize_command(ctx: Context) -> list[str]:
    """The ``gemma-plan quantize`` argv that produces this plan's GGUF (same model, target, type, context, slots)."""
    p, s = ctx.plan, ctx.s
    argv = ["gemma-plan", "quantize", "-m", ctx.model.hf_repo or p.model, "-t", p.target, "-q", p.weight_format,
            "--ctx", str(s.n_ctx), "-np", str(s.n_parallel)]
    if s.type_k == s.type_v and s.type_k != "f16":
        argv += ["--kv-type", s.type_k]
    return argv + ["--out", QUANTIZE_OUT]


def model_origin(ctx: Context) -> str:
    """One printable line: the file, and where it comes from."""
    ref = ctx.model
    if ref.kind == "placeholder-gguf":
        made = f"{QUANTIZE_OUT}/{safe_name(ctx.spec.name if ctx.spec else ctx.plan.model)}-{ctx.plan.weight_format}.gguf"
        line = (f"model: {ref.value} does not exist yet; make it here with: {shlex.join(quantize_command(ctx))} "
                f"&& mv {shlex.quote(made)} {shlex.quote(ref.value)}")
    elif ref.kind == "gguf-file":
        line = f"model: {ref.value} (the GGUF this plan was made for" + (f", from {ref.hf_repo})" if ref.hf_repo else ")")
    elif ref.kind == "hf-dir":
        line = f"model: the Hugging Face checkpoint in {ref.value}"
    elif ref.kind == "hub":
        line = f"model: {ref.value} from the Hugging Face hub (downloaded on first use)"
    else:
        line = f"model: {ref.value} does not exist yet (a local directory you provide)"
    return comment(line)
