"""Launch recipes: one ``Plan`` rendered for every engine that can run it, with the same memory budget.

``render_all(plan, hw, model_ref)`` returns ``{name: Recipe}``; ``document`` wraps them with the plan
and the hardware into the ``recipe.json`` that ``gemma-plan validate`` reads; ``write_recipes``
(planner.recipes.emit) puts the document and every recipe's files in a directory. One module per
engine; each has ``recipe(ctx)`` (or several renderers) and, where the engine's command can be read
back, ``check(recipe, ctx)``, which lists every setting that differs from the plan.
"""

from __future__ import annotations

from typing import Callable, Optional

from planner.recipes.base import Context, ModelRef, Recipe, RecipeError, ShellVar, Step, resolve_model_ref
from planner.types import ModelSpec, Plan
from profiles.hardware import Hardware

__all__ = ["Context", "ModelRef", "Recipe", "RecipeError", "ShellVar", "Step", "render_all", "document", "recipe_document",
           "primary", "context_for", "check_recipe", "render_context", "SCHEMA"]

SCHEMA = "gemma-plan/recipe/1"


def _catalog_spec(name: str) -> Optional[ModelSpec]:
    from planner.catalog import get_model
    from planner.errors import PlanError

    try:
        return get_model(name)[0]
    except PlanError:
        return None


def context_for(plan: Plan, hw: Hardware, model_ref: Optional[str] = None, spec: Optional[ModelSpec] = None) -> Context:
    spec = spec or _catalog_spec(plan.model)
    return Context(plan, hw, resolve_model_ref(plan, spec, model_ref), spec)


def _is_phone(hw: Hardware) -> bool:
    return hw.kind == "phone" or any(d.device_class == "phone" for d in hw.devices)


def _is_apple(hw: Hardware) -> bool:
    return any(d.backend == "Metal" for d in hw.devices)


def render_all(plan: Plan, hw: Hardware, model_ref: Optional[str] = None, spec: Optional[ModelSpec] = None) -> dict[str, Recipe]:
    """Every engine's recipe for this plan (the engines that can run its weights on this hardware)."""
    return render_context(context_for(plan, hw, model_ref, spec))


def render_context(ctx: Context) -> dict[str, Recipe]:
    """render_all for a ready Context (``validate`` regenerates recipes from the plan, hardware and model
    reference stored in recipe.json this way)."""
    from planner.recipes import litert, llamacpp, llamacpp_python, lmstudio, mlx, ollama, transformers, vllm

    plan, hw = ctx.plan, ctx.hw
    out: dict[str, Recipe] = {}
    phone = _is_phone(hw)
    if plan.engine == "llama.cpp":
        out["llama-server"] = llamacpp.server(ctx)
        out["llama-cli"] = llamacpp.cli(ctx)
        if hw.is_cluster:
            out["llama-rpc"] = llamacpp.rpc(ctx)
        if not phone and not hw.is_cluster:  # Llama() has no RPC (0.3.36): it could not reach the other hosts
            out["llama-cpp-python"] = llamacpp_python.recipe(ctx)
        if not phone:
            out["ollama"] = ollama.recipe(ctx)
            out["lmstudio"] = lmstudio.recipe(ctx)
    elif plan.engine == "vllm":
        out["vllm"] = vllm.recipe(ctx)
        if plan.weight_format != "fp8" and plan.settings.tensor_parallel * plan.settings.pipeline_parallel == 1:
            out["transformers"] = transformers.recipe(ctx)
    elif plan.engine == "transformers":
        out["transformers"] = transformers.recipe(ctx)
    if _is_apple(hw) and plan.engine in ("llama.cpp", "transformers"):
        out["mlx"] = mlx.recipe(ctx)
    if phone:
        out["litert"] = litert.recipe(ctx)
    return out


def render_primary(plan: Plan, hw: Hardware, model_ref: Optional[str] = None,
                   spec: Optional[ModelSpec] = None) -> Optional[tuple[str, Recipe]]:
    """(name, recipe) of ``primary(render_all(...))`` without rendering the other engines' recipes (what
    recommend shows and its --json ``plan.launch`` names)."""
    ctx = context_for(plan, hw, model_ref, spec)
    if plan.engine == "llama.cpp":
        from planner.recipes import llamacpp

        return "llama-server", llamacpp.server(ctx)
    if plan.engine == "vllm":
        from planner.recipes import vllm

        return "vllm", vllm.recipe(ctx)
    if plan.engine == "transformers":
        from planner.recipes import transformers

        return "transformers", transformers.recipe(ctx)
    return named_primary(render_context(ctx))


def named_primary(recipes: dict[str, Recipe]) -> Optional[tuple[str, Recipe]]:
    """(name, recipe) of ``primary(recipes)``."""
    r = primary(recipes)
    return None if r is None else (next(k for k, v in recipes.items() if v is r), r)


def primary(recipes: dict[str, Recipe]) -> Optional[Recipe]:
    """The recipe to show first: llama-server, vLLM or transformers, whichever the plan's engine is."""
    for name in ("llama-server", "vllm", "transformers", "litert"):
        if name in recipes:
            return recipes[name]
    return next(iter(recipes.values()), None)


def document(plan: Plan, hw: Hardware, recipes: dict[str, Recipe], ctx: Context) -> dict:
    """The recipe.json object (docs/recipes.md): the plan, the hardware, the model and every recipe."""
    try:
        from importlib.metadata import version

        ver = version("gemma-plan")
    except Exception:  # not installed (running from a checkout)
        ver = "unknown"
    return {
        "schema": SCHEMA,
        "generated_by": f"gemma-plan {ver}",
        "model": {"name": plan.model, "ref": ctx.model.to_dict(), "ctx_train": ctx.spec.ctx_train if ctx.spec else None,
                  "source": ctx.spec.source if ctx.spec else ""},
        "target": {"name": plan.target, "hardware": hw.to_dict()},
        "plan": plan.to_dict(),
        "recipes": {k: r.to_dict() for k, r in recipes.items()},
    }


def recipe_document(plan: Plan, hw: Hardware, model_ref: Optional[str] = None, spec: Optional[ModelSpec] = None) -> dict:
    """render_all + document in one call: the recipe.json object for a plan and its model file."""
    ctx = context_for(plan, hw, model_ref, spec)
    return document(plan, hw, render_all(plan, hw, model_ref, ctx.spec), ctx)


def _checks() -> dict[str, Callable]:
    from planner.recipes import llamacpp, llamacpp_python, lmstudio, ollama, vllm

    return {"llama-server": llamacpp.check, "llama-cli": llamacpp.check, "llama-rpc": llamacpp.check,
            "llama-cpp-python": llamacpp_python.check, "ollama": ollama.check, "lmstudio": lmstudio.check, "vllm": vllm.check}


def check_recipe(name: str, recipe: Recipe, ctx: Context) -> Optional[list[str]]:
    """Differences between a recipe's commands/files and the plan; None when this engine is not read back."""
    fn = _checks().get(name)
    return None if fn is None else fn(recipe, ctx)
