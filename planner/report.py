"""Rendering: rich tables for people, plain dicts for --json. Units appear only here (GiB = 2^30 bytes)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from planner.catalog import active_params
from planner.types import Plan

GiB = 1 << 30
console = Console()


def gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def model_row(m) -> dict:
    return {
        "name": m.name,
        "family": m.family,
        "hf_repo": m.hf_repo,
        "params_text": m.n_params_text,
        "params_active": active_params(m),
        "params_vision_audio": m.vision_params + m.audio_params,
        "ctx_train": m.ctx_train,
        "layers": m.n_layers,
        "kv_layers": len(m.kv_layers),
        "sliding_layers": sum(1 for lay in m.layers if lay.sliding),
        "sliding_window": m.sliding_window,
        "moe": {"experts": m.moe.n_expert, "active": m.moe.n_expert_used} if m.moe else None,
        "ple_dim": m.ple_dim,
        "notes": m.notes,
        "sources": m.sources,
    }


def print_models(specs) -> None:
    t = Table(title="Gemma catalog (text weights; vision/audio towers listed apart)")
    for col in ("model", "params", "active", "context", "layers (S/F)", "KV layers", "notes"):
        t.add_column(col, justify="right" if col in ("params", "active", "context", "KV layers") else "left")
    for m in specs:
        n_s = sum(1 for lay in m.layers if lay.sliding)
        notes = []
        if m.moe:
            notes.append(f"MoE {m.moe.n_expert_used}/{m.moe.n_expert} experts")
        if m.ple_dim:
            notes.append(f"per-layer embeddings ({m.ple_dim}/layer)")
        if len(m.kv_layers) < m.n_layers:
            notes.append(f"KV shared by {m.n_layers - len(m.kv_layers)} layers")
        if m.vision_params:
            notes.append(f"+{m.vision_params / 1e6:.0f}M vision")
        if m.audio_params:
            notes.append(f"+{m.audio_params / 1e6:.0f}M audio")
        t.add_row(m.name, f"{m.n_params_text / 1e9:.2f}B", f"{active_params(m) / 1e9:.2f}B", f"{m.ctx_train:,}",
                  f"{m.n_layers} ({n_s}/{m.n_layers - n_s})", str(len(m.kv_layers)), ", ".join(notes))
    console.print(t)


def target_row(h) -> dict:
    return {
        "name": h.name,
        "kind": h.kind,
        "devices": [{"name": d.name, "memory_bytes": d.memory_bytes, "bandwidth_bytes_per_s": d.bandwidth_bytes_per_s,
                     "unified": d.unified, "backend": d.backend} for d in h.devices],
        "ram_bytes": h.ram_bytes,
        "source": h.source,
    }


def print_targets(hws) -> None:
    t = Table(title="Targets (use with --target NAME)")
    for col in ("name", "kind", "accelerators", "memory GiB", "bandwidth GB/s", "RAM GiB"):
        t.add_column(col)
    for h in hws:
        devs = ", ".join(sorted({d.name for d in h.devices})) or "CPU only"
        if len(h.devices) > 1:
            devs = f"{len(h.devices)}x {devs}"
        mem = "+".join(gib(d.memory_bytes) for d in h.devices) if h.devices else "-"
        bw = h.devices[0].bandwidth_bytes_per_s if h.devices else h.ram_bandwidth_bytes_per_s
        unified = " (unified)" if h.unified else ""
        t.add_row(h.name, h.kind, devs + unified, mem, f"{bw / 1e9:.0f}" if bw else "-", gib(h.ram_bytes))
    console.print(t)


def _bar(used: int, budget, width: int = 24) -> str:
    if not budget or budget <= 0:
        return ""
    frac = used / budget
    n = min(width, int(round(frac * width)))
    color = "green" if frac <= 0.9 else ("yellow" if frac <= 1.0 else "red")
    return f"[{color}]{'█' * n}[/]{'·' * (width - n)} {frac * 100:.0f}%"


def memory_table(p: Plan) -> Table:
    t = Table(title=f"memory per device (GiB) - {p.memory.engine_version}")
    for col in ("device", "weights", "KV", "compute", "output", "overhead", "total", "usable", "fill"):
        t.add_column(col, justify="right" if col not in ("device", "fill") else "left")
    for d in p.memory.devices:
        if not d.total_bytes and d.device != "CPU":
            continue
        t.add_row(d.device, gib(d.weights_bytes), gib(d.kv_bytes), gib(d.compute_bytes), gib(d.output_bytes),
                  gib(d.overhead_bytes), gib(d.total_bytes), gib(d.budget_bytes if (d.budget_bytes or 0) >= 0 else None),
                  _bar(d.total_bytes, d.budget_bytes))
    return t


def _summary(p: Plan) -> str:
    s = p.settings
    parts = [f"[bold]{p.model}[/] {p.weight_format} on {p.engine}", f"ctx {p.ctx:,}", f"{s.n_parallel} slot(s)"]
    if p.engine == "llama.cpp":
        parts.append(f"KV {s.type_k}/{s.type_v}")
        parts.append("flash-attn" if s.flash_attn else "no flash-attn")
        parts.append("all layers on GPU" if s.n_gpu_layers < 0 else f"-ngl {s.n_gpu_layers}")
        if s.experts_on_cpu:
            parts.append("experts on CPU")
    else:
        parts.append(f"KV {s.kv_cache_dtype}")
        if s.tensor_parallel > 1 or s.pipeline_parallel > 1:
            parts.append(f"TP={s.tensor_parallel} PP={s.pipeline_parallel}")
    return ", ".join(parts)


def print_plan(p: Plan, hw=None) -> None:
    verdict = "[green]fits[/]" if p.fits else "[red]does not fit[/]"
    console.print(f"{_summary(p)} on [bold]{p.target}[/]: {verdict}")
    console.print(memory_table(p))
    if p.speed:
        sp = p.speed
        console.print(f"speed: ~{sp.decode_tokens_per_s:.1f} tok/s decode, ~{sp.prefill_tokens_per_s:.0f} tok/s prefill, "
                      f"first token after {sp.time_to_first_token_s:.2f} s for {sp.prompt_tokens} prompt tokens")
        console.print(f"[dim]{sp.basis}; {sp.expected_error}[/]")
    console.print(f"weights file: {p.weight_file_bytes / GiB:.2f} GiB; quality: +{p.quality_loss:.3f} ppl at Llama-3-8B scale vs 16-bit")
    for n in p.notes + p.memory.notes:
        console.print(f"[dim]- {n}[/]")


def print_recommendation(rec, hw=None) -> None:
    for n in rec.notes:
        console.print(f"[dim]{n}[/]")
    if rec.plan is None:
        console.print("[red]No configuration fits this target.[/] Closest options:")
    else:
        print_plan(rec.plan, hw)
        if rec.max_context:
            t = Table(title=f"maximum context with {rec.plan.weight_format} ({rec.plan.settings.n_parallel} slot(s))")
            t.add_column("KV type")
            t.add_column("max context", justify="right")
            for k, v in rec.max_context.items():
                t.add_row(k, f"{v:,}" if v else "does not fit")
            console.print(t)
    if rec.alternatives:
        t = Table(title="alternatives")
        for col in ("model", "weights", "KV", "ctx", "total GiB", "tok/s", "why not"):
            t.add_column(col)
        for a in rec.alternatives[:15]:
            p = a.plan
            t.add_row(p.model, p.weight_format, p.settings.type_k if p.engine != "vllm" else p.settings.kv_cache_dtype,
                      f"{p.ctx:,}", gib(p.memory.total_bytes), f"{p.speed.decode_tokens_per_s:.1f}" if p.speed else "-", a.reason)
        console.print(t)
        if len(rec.alternatives) > 15:
            console.print(f"[dim]... {len(rec.alternatives) - 15} more with --json[/]")


def print_manifest(manifest: dict) -> None:
    out = manifest.get("output") or {}
    kind = manifest.get("file_type") or (manifest.get("quantization") or {}).get("method", "")
    size = f"{out['bytes'] / GiB:.3f} GiB, " if isinstance(out.get("bytes"), int) else ""
    console.print(f"[green]wrote[/] {out.get('path', '')} ({size}{kind})")
    v = manifest.get("validation") or {}
    if v.get("skipped"):
        console.print("[yellow]not validated[/] (--no-validate)")
    elif v:
        t = Table(title=f"predicted vs measured ({v.get('engine', '')}, {v.get('machine', '')})")
        for col in ("buffer", "predicted MiB", "measured MiB", "error %"):
            t.add_column(col, justify="left" if col == "buffer" else "right")
        for name, row in v.get("comparison", {}).items():
            err = row.get("error_pct")
            t.add_row(name, f"{row['predicted_bytes'] / 2**20:.2f}", f"{row['measured_bytes'] / 2**20:.2f}",
                      "-" if err is None else f"{err:+.2f}")
        console.print(t)
        if "tokens_generated" in v:
            console.print(f"generated {v['tokens_generated']} tokens: {v.get('generated_text', '')!r}")
    console.print("manifest.json and recipe.json written beside it")


def print_run_it(recipe, emitted=None) -> None:
    """The command that starts the plan, and where the other engines' recipes are."""
    if recipe is None:
        return
    console.print(f"[bold]run it[/] ({recipe.title}):")
    for line in recipe.shell_lines():
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    for n in recipe.notes[:2]:
        console.print(f"[dim]- {escape(n)}[/]")
    if emitted:
        console.print(f"[dim]recipes for every engine in {escape(emitted['dir'])} (recipe.json; check with gemma-plan validate)[/]")
    else:
        console.print("[dim]--emit DIR writes recipe.json and a runnable file for every engine (llama.cpp, llama-cpp-python, "
                      "Ollama, LM Studio, vLLM, transformers, MLX, LiteRT-LM, where they apply)[/]")


def print_emit_plan(files) -> None:
    console.print(f"writing {len(files)} files:")
    for f in files:
        console.print(f"  {escape(str(f.path))} ({f.nbytes:,} bytes{', executable' if f.executable else ''})", highlight=False)


_STATUS = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]", "skip": "[dim]skip[/]", "info": "[cyan]info[/]"}


def print_validation(v) -> None:
    t = Table(title=f"validate {escape(v.recipe)} against {escape(v.target)}")
    t.add_column("check")
    t.add_column("result")
    t.add_column("detail", overflow="fold")
    for c in v.checks:
        t.add_row(escape(c.name), _STATUS.get(c.status, c.status), escape(c.detail))
    console.print(t)
    for d in v.diffs:  # unified diffs: regenerated from the plan vs what the folder / recipe.json holds
        console.print(f"[bold]{escape(d['file'])}[/] differs from the plan:")
        console.print(d["diff"], markup=False, highlight=False, soft_wrap=True, end="")
    console.print("[green]recipe is consistent with its plan[/]" if v.ok else "[red]some checks failed[/]")


def print_speed_scores(result: dict) -> None:
    t = Table(title="decode tokens/s: predicted vs measured")
    for col in ("model", "quant", "hardware", "class", "predicted", "measured", "error %", "pp pred", "pp meas"):
        t.add_column(col, justify="right" if col in ("predicted", "measured", "error %", "pp pred", "pp meas") else "left")
    for r in result["rows"]:
        if "skipped" in r:
            t.add_row(str(r["model"]), str(r["quant"]), str(r["hardware"]), "-", "-", str(r.get("measured_tg_tps")), f"skipped: {r['skipped']}", "", "")
            continue
        t.add_row(str(r["model"]), str(r["quant"]), str(r["hardware"]), r["efficiency_class"], f"{r['predicted_tg_tps']:.1f}",
                  str(r.get("measured_tg_tps")), f"{r.get('tg_error_pct', 0):+.0f}", str(r.get("predicted_pp_tps", "")),
                  str(r.get("measured_pp_tps") or ""))
    console.print(t)
    for key, label in (("tg", "decode"), ("pp", "prefill")):
        s = result["summary"][key]
        console.print(f"{label}: {s['n']} rows, median |error| {s['median_abs_error_pct']}%, 90th percentile {s['p90_abs_error_pct']}%")
