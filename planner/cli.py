"""gemma-plan command line: a thin shell over the library (parse, call one function, render).

Heavy modules (torch, transformers, llama_cpp) are imported only inside the commands that need them.
"""

from __future__ import annotations

import gc

# A command runs for a fraction of a second and allocates mostly long-lived objects (modules, the catalog's tensor
# tables, memo entries) with almost no reference cycles; the default first-generation threshold (700 allocations)
# has the collector re-scan them 88 times in one `recommend --model 31b --target rtx4090`. Collect rarely instead:
# long commands (quantize, validate --run) free their large buffers by reference counting either way.
gc.set_threshold(100_000, 20, 20)

import dataclasses  # noqa: E402 (after the collector setting, so the imports below run under it)
import json
import os
import sys
from typing import Optional

import click

from planner.errors import InvalidSettingsError, PlanError
from planner.policy import parse_size  # noqa: F401  (sizes are parsed by the library; tests import it from here)
from profiles import bounds as B

DEBUG_ENV = "GEMMA_PLAN_DEBUG"


# ---------------------------------------------------------------- errors: one line, next step, no traceback


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except Exception as exc:  # mapped to one line; GEMMA_PLAN_DEBUG=1 shows the traceback
            if os.environ.get(DEBUG_ENV):
                raise
            raise click.ClickException(_one_line(exc)) from None


def _one_line(exc: Exception) -> str:
    hint = getattr(exc, "hint", "")
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    known = isinstance(exc, PlanError) or type(exc).__module__.startswith("profiles") or type(exc).__module__.startswith("quantize")
    if not known:
        msg = f"{type(exc).__name__}: {msg} (set {DEBUG_ENV}=1 for the traceback)"
    return f"{msg}; {hint}" if hint else msg




# ---------------------------------------------------------------- shared option handling


def resolve_model(query: str):
    """Catalog name/alias, a local HF directory, or a .gguf file -> (ModelSpec, note)."""
    from planner import sources

    return sources.load_model(query)


def resolve_target(name: Optional[str], vram: Optional[str], ram: Optional[str]):
    """--target NAME|FILE|auto plus --vram/--ram overrides -> (Hardware, note)."""
    from planner.policy import with_overrides

    note = ""
    if not name or name == "auto":
        from profiles.detect import detect_hardware

        hw = detect_hardware()
        note = f"planning for this machine ({hw.name}, detected): free memory now, with the safety margin"
        from profiles.speed_basis import apply_measured

        if apply_measured(hw):
            note += "; speed from this machine's llama.cpp rates measured by detect --bench"
    else:
        from profiles.targets import load_target

        hw = load_target(name)
    hw, onote = with_overrides(hw, vram or None, ram or None)
    return hw, "; ".join(n for n in (note, onote) if n)


VLLM_KV_TYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")  # vLLM's --kv-cache-dtype choices for these GPUs


def _kv_pair(kv: Optional[str], engine: str = "llama.cpp") -> Optional[tuple[str, str]]:
    if kv is None:
        return None
    from planner.policy import KV_TYPES

    k, _, v = kv.strip().lower().partition("/")
    pair = (k, v or k)
    if engine == "vllm":
        if pair[0] != pair[1] or pair[0] not in VLLM_KV_TYPES:
            raise InvalidSettingsError(f"--kv-type {kv} is not a vLLM KV cache type",
                                       hint=f"vLLM takes one of {', '.join(VLLM_KV_TYPES)} for K and V together")
    elif engine == "transformers":
        if pair[0] != pair[1] or pair[0] not in ("f16", "bf16"):
            raise InvalidSettingsError(f"--kv-type {kv}: transformers keeps the cache in the model dtype", hint="drop --kv-type or pass f16")
    elif not all(t in KV_TYPES for t in pair):
        raise InvalidSettingsError(f"--kv-type {kv} is not a llama.cpp KV cache type",
                                   hint=f"use one of {', '.join(KV_TYPES)}, or K/V like q8_0/f16")
    return pair


def _ctx(value: Optional[str]) -> tuple[Optional[int], bool]:
    """'32768', '32k' (k = 1024: 32768 tokens) or 'max' -> (tokens, is_max)."""
    from planner.policy import parse_ctx

    return parse_ctx(value)


def _positive(name: str, value: Optional[int], hi: int = 1 << 31) -> None:
    if value is not None and not 1 <= value <= hi:
        raise InvalidSettingsError(f"{name} must be a positive integer up to {hi:,}, got {value}", hint=f"pass {name} 1 or more")


def _slots(n_ctx: int, parallel: int, *, given: Optional[int], is_max: bool = False, ceiling: int = 0) -> None:
    from planner.policy import check_slots

    check_slots(n_ctx, parallel, given=given, is_max=is_max, ceiling=ceiling)


def _path_option(name: str, value: Optional[str]) -> None:
    """An output path given on the command line: not empty, no control characters."""
    if value is None:
        return
    if not value.strip():
        raise InvalidSettingsError(f"{name} is empty", hint=f"give {name} a path, e.g. {name} ./out")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidSettingsError(f"{name} {value!r} has control characters", hint="choose a path without newlines or tabs")


ENGINE_CHOICE = click.Choice(["llama.cpp", "vllm", "transformers"])
PRIORITY_CHOICE = click.Choice(["quality", "speed", "context"])


def common_options(f):
    opts = [
        click.option("--target", "-t", help="target profile name or .toml file, or 'auto' (this machine)"),
        click.option("--vram", help="override memory per accelerator, e.g. 24GiB"),
        click.option("--ram", help="override system RAM, e.g. 64GiB"),
        click.option("--ctx", help="context length in tokens (all slots): 32768, 32k (= 32,768) or 'max'"),
        click.option("--parallel", "-np", type=int, default=1, show_default=True, help="parallel sequences / slots"),
        click.option("--kv-type", help="KV cache type: f16, q8_0, q4_0 ... or K/V like q8_0/f16 (vLLM: auto, fp8)"),
        click.option("--engine", type=ENGINE_CHOICE, default="llama.cpp", show_default=True),
        click.option("--margin", help="memory kept free on every device (default 1GiB)"),
        click.option("--ubatch", type=int, default=512, show_default=True, help="llama.cpp n_ubatch"),
        click.option("--no-flash-attn", is_flag=True, help="llama.cpp: flash attention off"),
        click.option("--swa-full", is_flag=True, help="llama.cpp: full-size KV for sliding-window layers"),
        click.option("--vision/--no-vision", "vision", default=None,
                     help="plan the vision projector (mmproj weights + encoder compute); default: on for Ollama and "
                          "LM Studio, which load it, off for llama.cpp / llama-cpp-python"),
        click.option("--audio/--no-audio", "audio", default=None,
                     help="plan the audio encoder Gemma 4 E2B/E4B carry in the same mmproj (weights + encoder compute); "
                          "default: with the vision projector, since llama.cpp loads every encoder the file holds"),
        click.option("--json", "as_json", is_flag=True, help="machine-readable output (docs/json.md)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _engine_version(engine: str, value: Optional[str]) -> str:
    if value is None:
        return ""
    if engine != "llama.cpp":
        raise InvalidSettingsError(f"--engine-version names a llama.cpp build; the plan is for {engine}",
                                   hint="drop --engine-version, or add --engine llama.cpp")
    from planner.llama_versions import BUILDS, parse_build

    try:
        return parse_build(value)[0].name
    except ValueError:
        raise InvalidSettingsError(f"--engine-version: '{value}' is not a llama.cpp release tag",
                                   hint=f"use a tag like {', '.join(BUILDS)} (bNNNN), or 'vendored'") from None


def _settings(engine, parallel, ubatch, no_flash_attn, swa_full, kv, engine_version=None, vision=None, audio=None):
    from planner.types import RuntimeSettings

    _positive("--parallel", parallel, B.MAX_PARALLEL)
    _positive("--ubatch", ubatch, B.MAX_UBATCH)
    s = RuntimeSettings(engine=engine, n_parallel=parallel, n_ubatch=ubatch, flash_attn=not no_flash_attn, swa_full=swa_full,
                        engine_version=_engine_version(engine, engine_version), vision=vision, audio=audio)
    if kv:
        if engine == "vllm":
            s = dataclasses.replace(s, kv_cache_dtype=kv[0])
        s = dataclasses.replace(s, type_k=kv[0], type_v=kv[1])
    return s


def _margin(margin: Optional[str]) -> int:
    from planner.memory import DEFAULT_MARGIN
    from planner.policy import parse_margin

    return parse_margin(margin, DEFAULT_MARGIN)


def _emit(obj: dict) -> None:
    click.echo(json.dumps(obj, indent=2))


# ---------------------------------------------------------------- commands


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gemma-plan")
def main():
    """Which Gemma, at which precision, with how much context, on which engine, fits this machine."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def models(as_json):
    """List the Gemma catalog."""
    from planner import report
    from planner.catalog import all_models

    specs = all_models()
    if as_json:
        _emit({"models": [report.model_row(m) for m in specs]})
    else:
        report.print_models(specs)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def targets(as_json):
    """List the target hardware profiles (packaged and your own)."""
    from planner import report

    from profiles.targets import list_targets

    hws = list_targets()
    if as_json:
        _emit({"targets": [report.target_row(h) for h in hws]})
    else:
        report.print_targets(hws)


@main.command()
@click.option("--model", "-m", required=True, help="catalog name (31b, gemma-3-27b ...), HF directory or .gguf file")
@click.option("--quant", "-q", help="weight format: Q4_K_M, Q8_0 ..., bf16, f16, fp8, gptq-int4 (a .gguf model: its own type)")
@click.option("--ngl", type=int, default=-1, show_default=True, help="llama.cpp GPU layers (-1 = all)")
@click.option("--experts-on-cpu", is_flag=True, help="llama.cpp: keep MoE expert tensors on the CPU")
@click.option("--tp", type=int, default=1, help="vLLM tensor parallel size")
@click.option("--pp", type=int, default=1, help="vLLM pipeline parallel size")
@click.option("--engine-version", "engine_version", default=None, metavar="BUILD",
              help="llama.cpp release the plan models, e.g. b11312 (default: the newest verified, planner/llama_versions.py)")
@common_options
def estimate(model, quant, ngl, experts_on_cpu, tp, pp, engine_version, target, vram, ram, ctx, parallel, kv_type, engine, margin,
             ubatch, no_flash_attn, swa_full, vision, audio, as_json):
    """Memory per device, speed and fit of one configuration."""
    from planner import report
    from planner.formats import parse_format
    from planner.policy import planned_ctx
    from planner.search import plan

    n_ctx, is_max = _ctx(ctx)
    kv = _kv_pair(kv_type, engine)
    _positive("--tp", tp, B.MAX_DEVICES)
    _positive("--pp", pp, B.MAX_DEVICES)
    if not -1 <= ngl <= B.MAX_LAYERS + 1:
        raise InvalidSettingsError(f"--ngl must be -1 (all) or 0..{B.MAX_LAYERS + 1:,}, got {ngl}", hint="pass --ngl -1 to offload every layer")
    spec, mnote = resolve_model(model)
    quant = _gguf_quant(spec, quant, engine, model)
    if quant is None:
        raise InvalidSettingsError(f"--quant is needed for {model} (only a .gguf file planned for llama.cpp brings its own)",
                                   hint="add e.g. --quant Q4_K_M, or let gemma-plan recommend choose one")
    fmt = parse_format(quant, engine)
    hw, tnote = resolve_target(target, vram, ram)
    s = _settings(engine, parallel, ubatch, no_flash_attn, swa_full, kv, engine_version, vision, audio)
    s = dataclasses.replace(s, n_gpu_layers=ngl if hw.devices else 0, experts_on_cpu=experts_on_cpu,
                            tensor_parallel=tp, pipeline_parallel=pp,
                            n_ctx=planned_ctx(n_ctx, is_max, spec.ctx_train))
    _slots(s.n_ctx, parallel, given=n_ctx, is_max=is_max, ceiling=spec.ctx_train)
    p = plan(spec, fmt, s, hw, margin=_margin(margin), target=target or hw.name)
    p = p.noted(*(n for n in (tnote, mnote) if n), first=True)
    art, anotes = _plan_artifact(p, spec)  # the published file, with the hub's exact size when cached (no network)
    p = dataclasses.replace(p, artifact=art).noted(*anotes)
    if as_json:
        _emit({"plan": p.to_dict()})
    else:
        report.print_plan(p, hw)


@main.command()
@click.option("--model", "-m", help="catalog name, HF directory or .gguf file (default: the best Gemma for the target)")
@click.option("--quant", "-q", help="pin the weight format (Q4_K_M, bf16, fp8, gptq-int4 ...; a .gguf model: its own type)")
@click.option("--priority", type=PRIORITY_CHOICE, default="quality", show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="draw memory vs context for the plan (PNG)")
@click.option("--emit", "emit_dir", type=click.Path(file_okay=False), help="write recipe.json and a runnable file per engine into DIR")
@click.option("--force", is_flag=True, help="with --emit or --fetch: overwrite files that exist")
@click.option("--resolve", is_flag=True,
              help="ask the hub for the published file's exact size and sha256 (one HEAD request; kept in $HF_HOME/gemma-plan)")
@click.option("--fetch", "fetch_it", is_flag=True,
              help="then download the published file as gemma-plan fetch does (into --emit DIR, else here)")
@click.option("--use", "use", type=click.Choice(["read", "chat", "batch"]), default="read", show_default=True,
              help="sets the usable-speed floor: read 5 tok/s, chat 10, batch 1")
@click.option("--min-speed", type=float, help="usable-speed floor in decode tok/s (overrides --use)")
@click.option("--explain", is_flag=True, help="print the utility's terms for the chosen plan and the runner-up")
@click.option("--all", "show_all", is_flag=True, help="list every alternative, not only the top 5")
@click.option("--engine-version", "engine_version", default=None, metavar="BUILD",
              help="llama.cpp release the plan models, e.g. b11312 (default: the newest verified, planner/llama_versions.py)")
@common_options
def recommend(model, quant, priority, plot_path, emit_dir, force, resolve, fetch_it, use, min_speed, explain, show_all, engine_version,
              target, vram, ram, ctx, parallel, kv_type, engine, margin, ubatch, no_flash_attn, swa_full, vision, audio, as_json):
    """Search models x formats x KV types x context x GPU layers for the plan a person would pick (README: Utility)."""
    from planner import report
    from planner.policy import DEFAULT_CTX, check_trained_max, planned_ctx
    from planner.search import recommend as do_recommend

    _path_option("--emit", emit_dir)
    _path_option("--plot", plot_path)
    n_ctx, is_max = _ctx(ctx)
    kv = _kv_pair(kv_type, engine)
    _positive("--parallel", parallel, B.MAX_PARALLEL)
    notes = []
    specs = None
    if model:
        spec, mnote = resolve_model(model)
        specs = [spec]
        if mnote:
            notes.append(mnote)
        quant = _gguf_quant(spec, quant, engine, model)
    elif quant:
        _runnable(quant, engine)
    hw, tnote = resolve_target(target, vram, ram)
    if tnote:
        notes.append(tnote)
    if specs:
        check_trained_max(n_ctx, specs[0].name, specs[0].ctx_train)
    _slots(planned_ctx(n_ctx, is_max, specs[0].ctx_train) if specs else (n_ctx or DEFAULT_CTX), parallel, given=n_ctx,
           is_max=is_max, ceiling=specs[0].ctx_train if specs else 0)
    base = _settings(engine, parallel, ubatch, no_flash_attn, swa_full, kv, engine_version, vision, audio)
    # --engine not given: the engine the target really uses (LiteRT-LM bundles on phones)
    pinned = click.get_current_context().get_parameter_source("engine") != click.core.ParameterSource.DEFAULT
    rec = do_recommend(hw, models=specs, formats=[quant] if quant else None, engine=engine if pinned else None, ctx=n_ctx,
                       ctx_max=is_max, parallel=parallel, kv_types=[kv] if kv else None, priority=priority, margin=_margin(margin),
                       base=base, target=target or hw.name, use=use, min_speed=min_speed)
    rec.notes[:0] = notes
    _attach_artifact(rec, specs[0] if specs else None, resolve=resolve)
    run_it, emitted = _recipes_for(rec, hw, specs, emit_dir, force, as_json)
    if as_json:
        out = rec.to_dict()
        if out.get("plan") is not None:
            out["plan"]["launch"] = _launch(run_it)
        if emitted is not None:
            out["emitted"] = emitted
        if fetch_it and rec.plan is not None:
            out["fetched"] = _fetch_plan_artifact(rec.plan, emit_dir, force, as_json)
        _emit(out)
    else:
        report.print_recommendation(rec, hw, limit=None if show_all else report.ALTERNATIVES_SHOWN)
        if explain:
            from planner.utility import explain_lines

            report.print_lines(explain_lines(rec))
        if run_it:
            report.print_run_it(run_it[1], emitted)
        if fetch_it and rec.plan is not None:
            _fetch_plan_artifact(rec.plan, emit_dir, force, as_json)
    if plot_path and rec.plan is not None:
        from planner.catalog import get_model
        from planner.plot import memory_vs_context

        spec = specs[0] if specs else get_model(rec.plan.model)[0]
        written = memory_vs_context(rec.plan, spec, hw, plot_path, margin=_margin(margin))
        if not as_json:
            click.echo(f"plot: {written}", err=True)
    if rec.plan is None:
        sys.exit(3)


def _attach_artifact(rec, spec, resolve: bool = False) -> None:
    """recommend: plan.artifact and its notes (_plan_artifact)."""
    if rec.plan is None:
        return
    art, notes = _plan_artifact(rec.plan, spec, resolve)
    if art is not None or notes:
        rec.plan = dataclasses.replace(rec.plan, artifact=art)
        rec.notes.extend(notes)


def _plan_artifact(p, spec, resolve: bool = False) -> tuple[Optional[dict], list[str]]:
    """plan.artifact: the file the plan loads, and notes. A model read from a file or a hub header is that file (exact
    bytes); a catalog model gets the best published file of the chosen format (planner/artifacts.py), with its exact
    size and sha256 when the hub reported them before (cached under $HF_HOME/gemma-plan; no network) or, with
    ``resolve``, now (one HEAD request; a failure leaves the published size and says so in one note)."""
    if spec is not None and spec.source.startswith("hf-gguf:"):
        from planner.hub import artifact_for

        remote = artifact_for(spec)
        if remote:
            return dict(remote), []
    if spec is not None and spec.source.startswith("gguf:"):
        return {"source": "local", "kind": "gguf", "repo": None, "tag": None, "file": spec.source[5:],
                "quant": spec.gguf_file_type, "bytes": spec.gguf_file_bytes, "size_exact": True, "sha256": None,
                "size_source": "local file", "fetch": [], "weights_basis": "header"}, []
    if spec is not None and spec.source != "catalog":
        return None, []
    from planner import hub
    from planner.artifacts import choose

    if not resolve:  # what the hub reported earlier (--resolve, fetch, a header read), from the cache only
        return choose(p.model, p.weight_format, p.engine, p.weight_file_bytes, exact=hub.cached_file_meta)
    art, notes = choose(p.model, p.weight_format, p.engine, p.weight_file_bytes, hint=False)
    if art and art["source"] == "huggingface" and art.get("file"):
        try:
            meta = hub.resolve_file_meta(art["repo"], art["file"])
        except PlanError as exc:
            notes.insert(1, f"--resolve: {_one_line(exc)}; the plan still stands with the published size "
                            f"({art.get('size_published') or 'none published'})")
        else:
            art, notes = choose(p.model, p.weight_format, p.engine, p.weight_file_bytes,
                                exact=lambda repo, file: meta if (repo, file) == (meta["repo"], meta["file"]) else None)
    elif art:
        notes.insert(1, f"--resolve: {art.get('tag') or art.get('repo')} is not one file on the Hugging Face hub; "
                        "there is no single size to read")
    return art, notes


def _launch(named) -> Optional[dict]:
    """The chosen engine's launch command (the primary recipe's last step) for ``plan.launch`` in --json."""
    if not named:
        return None
    name, r = named
    if r is None or not r.steps:
        return None
    return {"recipe": name, "argv": [str(a) for a in r.steps[-1].argv], "env": {**r.env, **r.steps[-1].env}}


def _runnable(quant: str, engine: str):
    """--quant must name a format the chosen engine runs; say which ones it does."""
    from planner.formats import parse_format
    from planner.search import DENSE_LADDER, GGUF_LADDER

    fmt = parse_format(quant, engine)
    if engine not in fmt.engines:
        ours = ", ".join(DENSE_LADDER.get(engine, GGUF_LADDER))
        kind = "a GGUF type" if fmt.kind == "gguf" else f"a {fmt.kind} format"
        raise InvalidSettingsError(f"--quant {quant} is {kind}, which {engine} does not run",
                                   hint=f"use --engine llama.cpp for GGUF files, or one of {ours} with --engine {engine}")
    return fmt


def _gguf_quant(spec, quant: Optional[str], engine: str, model: str) -> Optional[str]:
    """A .gguf model is one file of one type: plan that type, and refuse a --quant or an engine that would need another file."""
    if quant:
        _runnable(quant, engine)
    if not spec.gguf_file_type:
        return quant
    if engine != "llama.cpp":
        raise InvalidSettingsError(f"{model} is a GGUF file, which {engine} does not run here",
                                   hint="use --engine llama.cpp, or pass the Hugging Face checkpoint directory for vLLM/transformers")
    if spec.gguf_file_type == "GGUF":
        raise InvalidSettingsError(f"{model}: its general.file_type is not one gemma-plan knows",
                                   hint="re-convert the file, or plan from the Hugging Face checkpoint")
    if quant and quant.strip().upper().replace("-", "_") != spec.gguf_file_type:
        raise InvalidSettingsError(f"{model} is {spec.gguf_file_type}; --quant {quant} would need another file",
                                   hint=f"drop --quant to plan this file, or make one: gemma-plan quantize --model {model} --quant {quant}")
    return spec.gguf_file_type


def _recipes_for(rec, hw, specs, emit_dir, force, as_json):
    """The recipe to show (the plan's engine's), and with --emit every engine's recipe written to the directory
    (refused before anything is written if a file exists and --force is off). Returns (recipe to show, emitted)."""
    if rec.plan is None:
        if emit_dir:
            rec.notes.append(f"nothing fits, so nothing was written to {emit_dir}")
        return None, None
    from pathlib import Path

    from planner.catalog import all_models
    from planner.recipes import context_for, document, named_primary, render_all, render_primary

    spec = next((m for m in (specs or all_models()) if m.name == rec.plan.model), None)
    if not emit_dir:
        return render_primary(rec.plan, hw, None, spec), None
    rctx = context_for(rec.plan, hw, None, spec)
    recipes = render_all(rec.plan, hw, None, rctx.spec)
    from planner.recipes.emit import plan_files, write_files

    files = plan_files(Path(emit_dir), document(rec.plan, hw, recipes, rctx), recipes, force=force)
    if not as_json:
        from planner import report

        report.print_emit_plan(files)
    written = write_files(files, force=force)
    return named_primary(recipes), {"dir": str(Path(emit_dir)), "files": [str(p) for p in written]}


@main.command()
@click.argument("recipe", type=click.Path())
@click.option("--target", "-t", help="check against this target profile or .toml instead of this machine")
@click.option("--vram", help="override memory per accelerator, e.g. 24GiB")
@click.option("--ram", help="override system RAM, e.g. 64GiB")
@click.option("--run", is_flag=True, help="GGUF recipes: load the model with llama-cpp-python, then serve one request")
@click.option("--no-serve", is_flag=True, help="with --run: measure only, skip the server round trip")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="seconds the server may take to start and answer")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (docs/recipes.md)")
def validate(recipe, target, vram, ram, run, no_serve, timeout, as_json):
    """Re-check a recipe.json against its plan, the model file and the hardware (exit 4 if a check fails)."""
    from planner import report

    if run:  # the measuring half lives with the engines (quantize/measure.py)
        from quantize.measure import validate as do_validate
    else:
        from planner.validate import validate as do_validate
    if not 0 < timeout <= 86400:
        raise InvalidSettingsError(f"--timeout must be 0..86400 seconds, got {timeout}", hint="pass --timeout 180")
    hw, note = resolve_target(target, vram, ram)
    v = do_validate(recipe, hw=hw, hw_note=note, run=run, serve=not no_serve, timeout=timeout)
    if as_json:
        _emit(v.to_dict())
    else:
        report.print_validation(v)
    if not v.ok:
        sys.exit(4)


@main.command()
@click.option("--model", "-m", help="HF directory, hub id / catalog name (from the HF cache), or a .gguf file "
              "(default: the model recommend picks for --target)")
@click.option("--from-recipe", "from_recipe", type=click.Path(dir_okay=False),
              help="produce exactly the GGUF a recipe.json names (its model, type, context and target)")
@click.option("--target", "-t", help="target profile name or .toml file, or 'auto' (this machine)")
@click.option("--format", "fmt", type=click.Choice(["gguf", "gptq"]), default="gguf", show_default=True)
@click.option("--quant", "-q", default="auto", show_default=True, help="GGUF file type (Q4_K_M ...) or auto: the best that fits")
@click.option("--ctx", help="context the artifact must fit: 32768, 32k (= 32,768) or 'max' (default: 32768 or the trained maximum if smaller)")
@click.option("--parallel", "-np", type=int, default=1, show_default=True)
@click.option("--kv-type", help="KV cache type the plan assumes (f16, q8_0 ...)")
@click.option("--vram", help="override memory per accelerator, e.g. 24GiB")
@click.option("--ram", help="override system RAM")
@click.option("--margin", help="memory kept free on every device (default 1GiB)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True)
@click.option("--imatrix", type=click.Path(exists=True, dir_okay=False), help="importance matrix for llama.cpp quantization")
@click.option("--threads", type=int, help="quantization threads (default: all cores)")
@click.option("--bits", type=click.Choice(["4", "8"]), default="4", show_default=True, help="GPTQ bits")
@click.option("--group-size", type=int, default=128, show_default=True, help="GPTQ group size")
@click.option("--calib", type=click.Path(exists=True, dir_okay=False), help="GPTQ calibration text or JSONL")
@click.option("--engine", type=click.Choice(["vllm", "transformers"]), default="vllm", show_default=True, help="GPTQ: engine to plan for")
@click.option("--vision/--no-vision", "vision", default=None,
              help="GGUF: also write the vision projector (mmproj) beside the model; default: when the checkpoint has one")
@click.option("--audio/--no-audio", "audio", default=None,
              help="GGUF: also write Gemma 4 E2B/E4B's audio encoder into the projector; default: when the checkpoint has one")
@click.option("--mmproj-type", type=click.Choice(["f16", "bf16", "q8_0"]), default="f16", show_default=True,
              help="type of the projector's matrices")
@click.option("--no-validate", is_flag=True, help="skip loading and measuring the result")
@click.option("--force", is_flag=True, help="overwrite existing outputs")
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def quantize(model, from_recipe, target, fmt, quant, ctx, parallel, kv_type, vram, ram, margin, out_dir, imatrix, threads, bits,
             group_size, calib, engine, vision, mmproj_type, audio, no_validate, force, as_json):
    """Produce the artifact that fits the target, then load it and measure it."""
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    picked = None
    if from_recipe:
        if model:
            raise InvalidSettingsError("--from-recipe names the model itself", hint="drop --model, or drop --from-recipe")
        model, quant, ctx, parallel, kv_type, target, out_name = _recipe_job(from_recipe, target)
        fmt = "gguf"
    elif not model:
        model, picked = _pick_model(target, vram, ram, fmt, engine, ctx, parallel, margin)
        click.echo(picked, err=True)
    if not from_recipe:
        out_name = None

    _positive("--parallel", parallel, B.MAX_PARALLEL)
    _positive("--threads", threads, B.MAX_CORES)
    _positive("--group-size", group_size, 1 << 16)
    _path_option("--out", out_dir)
    n_ctx, is_max = _ctx(ctx)  # slots are checked by plan_job / plan_gptq_job, which know the trained maximum
    kv = _kv_pair(kv_type, "llama.cpp" if fmt == "gguf" else engine)
    hw, tnote = resolve_target(target, vram, ram)
    console = Console(stderr=True)
    if tnote:
        console.print(f"[dim]{tnote}[/]")
    if fmt == "gptq":
        from quantize.gptq_pipeline import plan_gptq_job, run_gptq_job

        job = plan_gptq_job(model, hw, bits=int(bits), group_size=group_size, engine=engine, ctx=n_ctx, ctx_max=is_max, parallel=parallel,
                            out_dir=Path(out_dir), margin=_margin(margin), target=target or hw.name, force=force, calib=calib)
        run = run_gptq_job
    else:
        from quantize.pipeline import plan_job, run_job

        job = plan_job(model, hw, quant=quant, ctx=n_ctx, ctx_max=is_max, parallel=parallel, kv=kv, out_dir=Path(out_dir),
                       margin=_margin(margin), target=target or hw.name, force=force, out_name=out_name, vision=vision,
                       mmproj_type=mmproj_type, audio=audio)
        run = run_job
    for line in job.describe():
        console.print(line)
    with Progress(TextColumn("{task.description:10}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict = {}

        def progress(stage: str, frac: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=1.0)
            bar.update(tasks[stage], completed=min(1.0, frac))

        kwargs = dict(force=force, validate=not no_validate, progress=progress)
        if fmt == "gguf":
            kwargs.update(imatrix=imatrix, nthreads=threads)
        manifest = run(job, **kwargs)
    if as_json:
        _emit(manifest)
        return
    from planner import report

    report.print_manifest(manifest)


def _pick_model(target, vram, ram, fmt, engine, ctx, parallel, margin) -> tuple[str, str]:
    """No --model: the model recommend picks for the target (the same search, on the engine the artifact is for)."""
    from planner.search import recommend as do_recommend

    if not target and not vram:
        raise InvalidSettingsError("quantize needs --model or --target", hint="e.g. gemma-plan quantize --target rtx4090")
    hw, _ = resolve_target(target, vram, ram)
    n_ctx, _max = _ctx(ctx)
    rec = do_recommend(hw, engine="llama.cpp" if fmt == "gguf" else engine, ctx=n_ctx, parallel=parallel, margin=_margin(margin),
                       target=target or hw.name, formats=["gptq-int4"] if fmt == "gptq" else None)
    if rec.plan is None:
        from planner.errors import DoesNotFitError

        raise DoesNotFitError(f"no Gemma fits {target or hw.name} as {fmt}", hint="pass --model and a smaller --ctx, or another --target")
    return rec.plan.model, (f"no --model given: producing {rec.plan.model}, the model `gemma-plan recommend --target "
                            f"{target or hw.name}` picks ({rec.plan.weight_format})")


def _recipe_job(path, target):
    """The quantize arguments that reproduce the GGUF a recipe.json loads: its model, file type, context, slots, KV
    types and target; the output file is the name the recipe loads."""
    import re
    from pathlib import Path

    from planner.validate import load_document, read_document

    doc, rpath = load_document(path)
    plan, _recorded, _ref = read_document(doc, rpath)
    if plan.engine != "llama.cpp":
        raise InvalidSettingsError(f"{rpath} is a {plan.engine} recipe; --from-recipe makes GGUF files",
                                   hint="use --format gptq --model ... for vLLM/transformers checkpoints")
    s = plan.settings
    kv = s.type_k if s.type_k == s.type_v else f"{s.type_k}/{s.type_v}"
    name = Path((_ref or {}).get("value", "")).name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.gguf", name):
        raise InvalidSettingsError(f"{rpath}: model.ref names {name!r}, not a .gguf file name", hint="regenerate the recipe with recommend --emit")
    return plan.model, plan.weight_format, str(s.n_ctx), s.n_parallel, kv, target or plan.target, name


@main.command()
@click.argument("plan", type=click.Path(exists=True, dir_okay=False))
@click.option("--dir", "dest_dir", type=click.Path(file_okay=False),
              help="where the file goes (default: the recipe's directory, or here for a recommend --json file)")
@click.option("--force", is_flag=True, help="replace a different file of the same name")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def fetch(plan, dest_dir, force, as_json):
    """Download the published file a recipe.json or recommend --json names (resumable, sha256-checked);
    for Ollama and LM Studio artifacts and whole repositories (MLX, GPTQ), print the command that gets them."""
    from pathlib import Path

    from planner.fetch import read_artifact

    _path_option("--dir", dest_dir)
    art, home = read_artifact(plan)
    result = _fetch_artifact(art, Path(dest_dir) if dest_dir else home, force, as_json)
    if as_json:
        _emit(result)


def _fetch_plan_artifact(plan, emit_dir, force: bool, as_json: bool) -> dict:
    """recommend --fetch: the plan's artifact, checked as a saved plan's would be, fetched by _fetch_artifact
    into the --emit directory (where the scripts look for it) or the current one."""
    from pathlib import Path

    from planner.fetch import FetchError, check_artifact

    if not plan.artifact:
        raise FetchError(f"the plan names no published {plan.weight_format} file of {plan.model} to fetch",
                         hint="make it with gemma-plan quantize (the recipe's quantize command)")
    art = check_artifact(dict(plan.artifact), "plan.artifact")
    return _fetch_artifact(art, Path(emit_dir) if emit_dir else Path.cwd(), force, as_json)


def _fetch_artifact(art: dict, target, force: bool, as_json: bool) -> dict:
    """The one download path of ``fetch`` and ``recommend --fetch`` (planner.fetch.fetch, with a progress bar on
    stderr); a tool-managed artifact (Ollama, LM Studio) or a whole repository gets its command printed, not run.
    Returns what ``fetch --json`` prints."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from planner.fetch import command_for
    from planner.fetch import fetch as do_fetch

    cmd = command_for(art)
    if cmd:
        import shlex

        if not as_json:
            click.echo(shlex.join(cmd))
        return {"artifact": art, "command": cmd}
    console = Console(stderr=True)
    if not as_json:
        console.print(f"fetch {art['repo']}/{art.get('file') or '(' + str(art.get('quant')) + ')'} into {target}")
    with Progress(TextColumn("{task.description:9}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"), console=console,
                  transient=True) as bar:
        tasks: dict = {}

        def progress(stage: str, frac: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=1.0)
            bar.update(tasks[stage], completed=min(1.0, frac))

        result = do_fetch(art, target, force=force, progress=progress)
    if not as_json:
        click.echo(f"{result['status']}: {result['path']} ({result['bytes']:,} bytes, sha256 {result['sha256']})")
    return result


@main.group()
def bench():
    """Score the planner against measurements."""


@bench.command("speed")
@click.option("--rows", "rows_files", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="JSON list of rows (or {'rows': [...]}) in the calibration_benchmarks format; repeat to score several files")
@click.option("--split", type=click.Choice(["all", "fit", "held-out"]), default="all", show_default=True,
              help="score only the rows of this split (a row's 'split' field, else planner.speed.row_split)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def bench_speed(rows_files, split, as_json):
    """Predicted vs measured decode (and prefill) tokens/s for every row of a measurements file."""
    from planner import report
    from planner.speed import check_rows, score_rows

    all_rows: list = []
    for rows_file in rows_files:
        try:
            with open(rows_file, "rb") as f:
                data = json.loads(f.read(B.MAX_JSON_BYTES + 1))
        except (ValueError, RecursionError) as exc:
            raise InvalidSettingsError(f"{rows_file} is not JSON ({exc})", hint="give a JSON list of rows") from None
        rows = data.get("rows", data.get("calibration_benchmarks")) if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InvalidSettingsError(f"{rows_file} holds no list of rows", hint="give a JSON list of objects with model, quant, tg_tps ...")
        check_rows(rows, rows_file)
        all_rows += rows
    result = score_rows(all_rows, split=split)
    if as_json:
        _emit(result)
    else:
        report.print_speed_scores(result)


# command module -> (click command's name in it, third-party packages it may lack: then the command is left out)
OPTIONAL_COMMANDS = {"planner.commands.detect": ("detect", ())}


def _add_optional_commands(group=None, commands=None):
    """Add each command whose module imports; a missing optional dependency leaves the command out, any other
    ImportError (a broken command) propagates."""
    import importlib

    for module, (attr, optional) in (commands or OPTIONAL_COMMANDS).items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in optional:
                continue
            raise
        (group or main).add_command(getattr(mod, attr))


_add_optional_commands()

if __name__ == "__main__":
    main()
