"""Rendering: rich tables for people, plain dicts for --json. Units appear only here (GiB = 2^30 bytes).

Every table is laid out for the terminal it prints to: names are never cut (no-wrap columns with their
full width as minimum), units sit in titles so headers stay short, and what does not fit 80 columns
(notes, per-buffer columns, reasons) moves onto its own line; wider terminals get it inline.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

from planner.catalog import active_params
from planner.types import Plan

from profiles.units import GiB, fmt_gib
ALTERNATIVES_SHOWN = 5  # recommend lists this many alternatives unless --all


def _console(**kw) -> Console:
    """A console per call: its width follows COLUMNS or the terminal at the time of printing. Styles come
    from our markup only: no automatic highlighting of numbers and paths, no :emoji: codes (a model or repo
    name is shown as written, and printing skips rich's regex passes)."""
    return Console(highlight=False, emoji=False, **kw)


def _table(**kw) -> Table:
    """A compact table: a rule under the header, no outer frame (two lines fewer than rich's default)."""
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, **kw)


def _name_column(t: Table, header: str, names) -> None:
    """A name column that is never wrapped or cut: its minimum width is its longest name."""
    t.add_column(header, no_wrap=True, min_width=max([len(header)] + [len(str(n)) for n in names]))


def _freeze(t: Table) -> Table:
    """Minimum widths from the content: a no-wrap column keeps its full width and a wrapping column its
    longest word, so a table too wide for the terminal wraps text at spaces instead of cutting names or
    numbers with an ellipsis."""
    for col in t.columns:
        cells = [c if isinstance(c, Text) else Text.from_markup(c, emoji=False) if isinstance(c, str) else Text(str(c)) for c in col.cells]
        if col.no_wrap:
            widest = max([c.cell_len for c in cells], default=0)
        else:
            widest = max([len(w) for c in cells for w in c.plain.split()], default=0)
        col.min_width = max(col.min_width or 0, len(str(col.header)) if col.no_wrap else 0, widest)
    return t


def _width(con: Console, renderable) -> int:
    """The width a renderable takes when nothing limits it (its natural width). A table made by _table() is
    added up from its cells (each column its widest line, header or minimum width, then a space of padding on
    each inner side and one for the separator: what rich's measurement gives for that layout, tested against
    it in tests/test_cli_output.py) instead of measured, which renders every cell."""
    if isinstance(renderable, Table) and _is_compact(renderable):
        cols = []
        for col in renderable.columns:
            cells = (c if isinstance(c, Text) else Text.from_markup(c, emoji=False) if isinstance(c, str) else Text(str(c))
                     for c in col.cells)
            widest = max((line.cell_len for c in cells for line in c.split("\n")), default=0)
            cols.append(max(col.min_width or 0, Text.from_markup(str(col.header), emoji=False).cell_len, widest))
        return sum(cols) + 3 * max(0, len(cols) - 1)
    return Measurement.get(con, con.options.update(max_width=10_000), renderable).maximum


def _is_compact(t: Table) -> bool:
    return t.box is box.SIMPLE_HEAD and not t.show_edge and not t.pad_edge and t.padding == (0, 1, 0, 1) and t.width is None \
        and not t.title and not t.caption


def _title(con: Console, text: str) -> None:
    """Table titles go on their own line: rich would wrap a title to the table's own (narrow) width."""
    con.print(f"[bold]{text}[/]", highlight=False)


def gib(n) -> str:
    return fmt_gib(n, 2, unit=False)


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


def _model_notes(m) -> str:
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
    return ", ".join(notes)


def print_models(specs) -> None:
    con = _console()

    def build(with_notes: bool) -> Table:
        t = _table()
        _name_column(t, "model", [m.name for m in specs])
        for col in ("params", "active", "context", "layers (S/F)", "KV layers"):
            t.add_column(col, justify="right", no_wrap=True)
        if with_notes:
            t.add_column("notes", min_width=20)
        for m in specs:
            n_s = sum(1 for lay in m.layers if lay.sliding)
            row = [m.name, f"{m.n_params_text / 1e9:.2f}", f"{active_params(m) / 1e9:.2f}", f"{m.ctx_train:,}",
                   f"{m.n_layers} ({n_s}/{m.n_layers - n_s})", str(len(m.kv_layers))]
            t.add_row(*row, *([_model_notes(m)] if with_notes else []))
        return _freeze(t)

    narrow = build(False)
    wide = con.width >= _width(con, narrow) + 3 + 40  # the notes column gets at least 40 characters
    _title(con, "Gemma catalog (params in billions; text weights, vision/audio towers apart)")
    con.print(build(True) if wide else narrow)
    if not wide:
        for m in specs:
            if _model_notes(m):
                con.print(Text.assemble((m.name, "bold"), ": ", _model_notes(m)))
    con.print("[dim]S/F: sliding-window/full-attention layers; KV layers: layers with own KV cache[/]")


def target_row(h) -> dict:
    return {
        "name": h.name,
        "kind": h.kind,
        "devices": [{"name": d.name, "memory_bytes": d.memory_bytes, "bandwidth_bytes_per_s": d.bandwidth_bytes_per_s,
                     "unified": d.unified, "backend": d.backend} for d in h.devices],
        "ram_bytes": h.ram_bytes,
        "source": h.source,
    }


def _same_or_sum(values: list[str]) -> str:
    """'24.00' for identical devices (the count is in the accelerator column), '24.00+12.00' otherwise."""
    return values[0] if len(set(values)) == 1 else "+".join(values)


def print_targets(hws) -> None:
    con = _console()
    t = _table()
    _name_column(t, "name", [h.name for h in hws])
    t.add_column("kind", no_wrap=True)
    t.add_column("accelerators", min_width=12)
    for col in ("memory", "GB/s", "RAM"):
        t.add_column(col, justify="right", no_wrap=True)
    for h in hws:
        devs = ", ".join(sorted({d.name for d in h.devices})) or "CPU only"
        if len(h.devices) > 1:
            devs = f"{len(h.devices)}x {devs}"
        mem = _same_or_sum([gib(d.memory_bytes) for d in h.devices]) if h.devices else "-"
        mem += "*" if h.unified else " "  # the space keeps the digits aligned with the starred rows
        bw = h.devices[0].bandwidth_bytes_per_s if h.devices else h.ram_bandwidth_bytes_per_s
        t.add_row(Text(h.name), Text(h.kind), Text(devs), mem, f"{bw / 1e9:.0f}" if bw else "-", gib(h.ram_bytes))
    _title(con, "Targets for --target NAME (memory and RAM in GiB, bandwidth in GB/s)")
    con.print(_freeze(t))
    con.print("[dim]* unified: the accelerator's memory is part of the RAM (what it may use of it)[/]")


def _bar(used: int, budget, width: int = 24) -> str:
    if not budget or budget <= 0:
        return ""
    frac = used / budget
    n = min(width, int(round(frac * width)))
    color = "green" if frac <= 0.9 else ("yellow" if frac <= 1.0 else "red")
    return f"[{color}]{'█' * n}[/]{'·' * (width - n)} {frac * 100:3.0f}%"


BAR_MIN, BAR_FULL, BAR_MAX = 8, 12, 24  # the bar's width: at least, with every buffer column, at most


def memory_table(p: Plan, width: int = 200) -> tuple[Table, bool]:
    """The per-device memory table for a terminal of ``width`` columns, and whether it shows every buffer.

    Narrow terminals get compute + output + overhead as one 'other' column; the fill bar takes the room left.
    """
    con = _console(width=width)
    devices = [d for d in p.memory.devices if d.total_bytes or d.device == "CPU"]
    vision = any(d.projector_bytes for d in devices)  # a "vision" column only when the projector is planned

    def build(full: bool, bar: int) -> Table:
        t = _table()
        # a device name wraps at its spaces (never mid-word) when even the narrow layout is too wide
        words = [w for d in devices for w in d.device.split()]
        t.add_column("device", min_width=max([6] + [len(w) for w in words]))
        parts = ("weights", "KV", "compute", "output", "overhead") if full else ("weights", "KV", "other")
        parts += ("vision",) if vision else ()
        for col in parts + ("total", "usable"):
            t.add_column(col, justify="right", no_wrap=True)
        if bar:
            t.add_column("fill", no_wrap=True)
        for d in devices:
            nums = [d.weights_bytes, d.kv_bytes]
            nums += [d.compute_bytes, d.output_bytes, d.overhead_bytes] if full else [d.compute_bytes + d.output_bytes + d.overhead_bytes]
            nums += [d.projector_bytes] if vision else []
            row = [Text(d.device)] + [gib(n) for n in nums]
            row += [gib(d.total_bytes), gib(d.budget_bytes if (d.budget_bytes or 0) >= 0 else None)]
            t.add_row(*row, *([_bar(d.total_bytes, d.budget_bytes, bar)] if bar else []))
        return _freeze(t)

    for full in (True, False):
        room = width - _width(con, build(full, 0)) - 3 - 5  # column gap, " 100%"
        if room >= (BAR_FULL if full else BAR_MIN):
            return build(full, min(BAR_MAX, room)), full
    return build(False, BAR_MIN), False


def _range(r, fmt: str) -> str:
    """' (expected 12.3-18.0)' from a [low, high] range; empty when there is none."""
    if not r or len(r) != 2:
        return ""
    return f" (expected {format(r[0], fmt)}-{format(r[1], fmt)})"


def _summary(p: Plan) -> str:
    s = p.settings
    parts = [f"{p.engine}", f"ctx {p.ctx:,}", f"{s.n_parallel} slot" + ("s" if s.n_parallel != 1 else "")]
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


def print_plan(p: Plan, hw=None, notes=()) -> None:
    """Does it fit (the verdict, then memory per device), how fast, then the notes."""
    con = _console()
    verdict = "[green]fits[/]" if p.fits else "[red]does not fit[/]"
    con.print(f"[bold]{escape(p.model)}[/] {p.weight_format} {verdict} [bold]{escape(p.target)}[/]: {_summary(p)}")
    for n in notes:
        con.print(f"[dim]{escape(n)}[/]")
    table, full = memory_table(p, con.width)
    _title(con, "memory per device (GiB)")
    con.print(table)
    legend = f"allocator of {p.memory.engine_version}"
    if not full:
        legend = "other = compute + output + overhead (each on a wider terminal); " + legend
    con.print(f"[dim]{escape(legend)}[/]")
    if p.speed:
        sp = p.speed
        at_ctx = (f"; ~{sp.decode_at_context_tokens_per_s:.1f} tok/s decode with the full {sp.context_tokens:,}-token context"
                  if sp.context_tokens and sp.context_tokens > sp.decode_depth_tokens else "")
        con.print(f"speed: ~{sp.decode_tokens_per_s:.1f} tok/s decode{_range(sp.decode_range_tokens_per_s, '.1f')}, "
                  f"~{sp.prefill_tokens_per_s:.0f} tok/s prefill{_range(sp.prefill_range_tokens_per_s, '.0f')}, "
                  f"first token after {sp.time_to_first_token_s:.2f} s for {sp.prompt_tokens} prompt tokens{at_ctx}")
        con.print(f"[dim]basis: {escape(sp.basis)}" + (f"; {escape('; '.join(sp.capped_by))}" if sp.capped_by else "") + "[/]")
    con.print(f"weights file: {p.weight_file_bytes / GiB:.2f} GiB; quality: +{p.quality_loss:.3f} ppl at Llama-3-8B scale vs 16-bit")
    for n in (*p.notes, *p.memory.notes):
        con.print(f"[dim]- {escape(n)}[/]")


def print_recommendation(rec, hw=None, limit: int | None = ALTERNATIVES_SHOWN) -> None:
    """The plan (does it fit, how fast), its maximum context per KV type, then the top alternatives with
    their reasons; ``limit=None`` lists every alternative. The command to run follows (print_run_it)."""
    con = _console()
    if rec.plan is None:
        for n in rec.notes:
            con.print(f"[dim]{escape(n)}[/]")
        target = rec.alternatives[0].plan.target if rec.alternatives else "this target"
        con.print(f"[red]No configuration fits {escape(target)}.[/] Closest options:")
    else:
        print_plan(rec.plan, hw, notes=rec.notes)
        if rec.max_context:
            t = _table()
            t.add_column("KV type", no_wrap=True)
            t.add_column("max context", justify="right", no_wrap=True)
            for k, v in rec.max_context.items():
                t.add_row(k, f"{v:,}" if v else "does not fit")
            n = rec.plan.settings.n_parallel
            _title(con, f"maximum context with {rec.plan.weight_format}, {n} slot" + ("s" if n != 1 else "") + " (tokens)")
            con.print(_freeze(t))
    print_alternatives(rec.alternatives, limit, con)


def print_alternatives(alternatives, limit: int | None = ALTERNATIVES_SHOWN, con: Console | None = None) -> None:
    """One row per alternative with its reason: beside it where the terminal is wide enough, else on the
    line under it."""
    if not alternatives:
        return
    con = con or _console()
    shown = alternatives if limit is None else alternatives[:limit]

    def build(with_reason: bool) -> Table:
        t = _table()
        _name_column(t, "model", [a.plan.model for a in shown])
        t.add_column("weights", no_wrap=True)
        t.add_column("KV", no_wrap=True)
        for col in ("ctx", "GiB", "tok/s"):
            t.add_column(col, justify="right", no_wrap=True)
        if with_reason:
            t.add_column("why not", no_wrap=True)
        for a in shown:
            p = a.plan
            row = [Text(p.model), p.weight_format, p.settings.type_k if p.engine != "vllm" else p.settings.kv_cache_dtype,
                   f"{p.ctx:,}", gib(p.memory.total_bytes), f"{p.speed.decode_tokens_per_s:.1f}" if p.speed else "-"]
            t.add_row(*row, *([escape(a.reason)] if with_reason else []))
        return _freeze(t)

    more = len(alternatives) - len(shown)
    _title(con, f"alternatives ({len(shown)} of {len(alternatives)}; --all lists every one)" if more else "alternatives")
    wide = build(True)
    if _width(con, wide) <= con.width:
        con.print(wide)
        return
    narrow = build(False)
    lines = con.render_lines(narrow, con.options, pad=False, new_lines=True)
    if len(lines) != 2 + len(shown):  # a row wrapped (a very narrow terminal): the table, then the reasons
        con.print(narrow)
        for i, a in enumerate(shown, 1):
            con.print(f"[dim]{i}. {escape(a.reason)}[/]")
        return
    con.print(Segments(lines[0] + lines[1]))
    for line, a in zip(lines[2:], shown):
        con.print(Segments(line))
        con.print(f"[dim]  {escape(a.reason)}[/]")


def print_manifest(manifest: dict) -> None:
    con = _console()
    out = manifest.get("output") or {}
    kind = manifest.get("file_type") or (manifest.get("quantization") or {}).get("method", "")
    size = f"{out['bytes'] / GiB:.3f} GiB, " if isinstance(out.get("bytes"), int) else ""
    con.print(f"[green]wrote[/] {escape(str(out.get('path', '')))} ({size}{escape(str(kind))})")
    v = manifest.get("validation") or {}
    if v.get("skipped"):
        con.print("[yellow]not validated[/] (--no-validate)")
    elif v:
        t = _table()
        t.add_column("buffer", no_wrap=True)
        for col in ("predicted", "measured", "error %"):
            t.add_column(col, justify="right", no_wrap=True)
        for name, row in v.get("comparison", {}).items():
            err = row.get("error_pct")
            t.add_row(escape(name), f"{row['predicted_bytes'] / 2**20:.2f}", f"{row['measured_bytes'] / 2**20:.2f}",
                      "-" if err is None else f"{err:+.2f}")
        _title(con, f"predicted vs measured, MiB ({escape(str(v.get('engine', '')))}, {escape(str(v.get('machine', '')))})")
        con.print(_freeze(t))
        if "tokens_generated" in v:
            con.print(f"generated {v['tokens_generated']} tokens: {v.get('generated_text', '')!r}", markup=False)
    con.print("manifest.json and recipe.json written beside it")


def _shell_words(line: str) -> list[str] | None:
    """Split shell text at unquoted spaces, keeping each word's quoting as written (shlex either strips
    quotes or, in non-POSIX mode, splits ``"${A}"'x'`` apart). None if a quote is left open."""
    words, cur, quote, escaped = [], "", "", False
    for c in line:
        if escaped:
            cur, escaped = cur + c, False
        elif c == "\\" and quote != "'":
            cur, escaped = cur + c, True
        elif quote:
            cur += c
            quote = "" if c == quote else quote
        elif c in "'\"":
            cur, quote = cur + c, c
        elif c == " ":
            if cur:
                words.append(cur)
            cur = ""
        else:
            cur += c
    if quote or escaped:
        return None
    return words + ([cur] if cur else [])


def shell_wrap(line: str, width: int, indent: str = "  ") -> list[str]:
    """A shell command broken at word boundaries into lines of at most ``width`` ending in `` \\``, so it can
    still be copied whole; an option stays with its value. A word longer than the width is never split."""
    words = _shell_words(line)
    if not words or " ".join(words) != line:
        return [indent + line]
    groups: list[str] = []
    for w in words:
        if groups and groups[-1].startswith("-") and " " not in groups[-1] and not w.startswith("-"):
            groups[-1] += " " + w
        else:
            groups.append(w)
    out, cur = [], ""
    for g in groups:
        room = width - 2 - len(indent) * (2 if out else 1)  # 2: the " \\" that ends a continued line
        if cur and len(cur) + 1 + len(g) > room:
            out.append(cur)
            cur = g
        else:
            cur = f"{cur} {g}" if cur else g
    out.append(cur)
    return [(indent if i == 0 else indent * 2) + part + (" \\" if i < len(out) - 1 else "") for i, part in enumerate(out)]


def print_lines(lines) -> None:
    """Plain text lines wrapped to the terminal; a continuation keeps the line's indent plus two spaces."""
    import textwrap

    width = _console().width
    for line in lines:
        lead = " " * (len(line) - len(line.lstrip()))
        wrapped = textwrap.wrap(line, width, subsequent_indent=lead + "  ", break_long_words=False, break_on_hyphens=False)
        print("\n".join(wrapped) or line)


def print_run_it(recipe, emitted=None) -> None:
    """The command that starts the plan, last so it stays on screen; before it, where the other engines'
    recipes are."""
    if recipe is None:
        return
    con = _console()
    con.print(f"[bold]run it[/] ({escape(recipe.title)}):")
    for n in recipe.notes[:2]:
        con.print(f"[dim]- {escape(n)}[/]")
    if emitted:
        con.print(f"[dim]- recipes for every engine in {escape(emitted['dir'])} (recipe.json; check with gemma-plan validate)[/]")
    else:
        con.print("[dim]- --emit DIR writes recipe.json and a runnable file per engine[/]")
    lines = recipe.shell_lines()
    from planner.recipes.base import ShellVar

    script = next((n for n in recipe.files if n.endswith(".sh")), None)
    if script and any(isinstance(a, ShellVar) for st in recipe.steps for a in st.argv):
        # the steps use a variable that the recipe's script sets (the downloaded bundle's name): pasted alone
        # they would not run, so the script is what to run
        where = emitted["dir"] if emitted else "DIR"
        if not emitted:
            con.print(f"[dim]- its commands need the script's own variables: write it with --emit DIR, then[/]")
        lines = [f"sh {shlex.quote(str(Path(where) / script)) if emitted else 'DIR/' + script}"]
    for line in lines:
        for part in shell_wrap(line, con.width):
            con.print(part, markup=False, highlight=False, soft_wrap=True)


def print_emit_plan(files) -> None:
    _console().print(f"writing {len(files)} files:")
    for f in files:
        _console().print(f"  {escape(str(f.path))} ({f.nbytes:,} bytes{', executable' if f.executable else ''})", highlight=False)


_STATUS = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]", "skip": "[dim]skip[/]", "info": "[cyan]info[/]"}


def print_validation(v) -> None:
    con = _console()
    t = _table()
    t.add_column("check", no_wrap=True)
    t.add_column("result", no_wrap=True)
    t.add_column("detail", overflow="fold")  # words wrap; only a path longer than the column is folded
    for c in v.checks:
        t.add_row(escape(c.name), _STATUS.get(c.status, c.status), escape(c.detail))
    _title(con, f"validate {escape(v.recipe)} against {escape(v.target)}")
    con.print(_freeze(t))
    for d in v.diffs:  # unified diffs: regenerated from the plan vs what the folder / recipe.json holds
        con.print(f"[bold]{escape(d['file'])}[/] differs from the plan:")
        con.print(d["diff"], markup=False, highlight=False, soft_wrap=True, end="")
    con.print("[green]recipe is consistent with its plan[/]" if v.ok else "[red]some checks failed[/]")


def _num(v, fmt: str = ".1f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else ("" if v is None else str(v))


def print_speed_scores(result: dict) -> None:
    con = _console()

    def build(full: bool) -> Table:
        t = _table()
        for col in ("model", "quant", "hardware"):  # free text from the measurements: wraps, folds a very long word
            t.add_column(col, overflow="fold")
        if full:
            t.add_column("class", no_wrap=True)
        for col in ("pred", "meas", "err %") + (("pp pred", "pp meas") if full else ()):
            t.add_column(col, justify="right", no_wrap=True)
        for r in result["rows"]:
            head = [Text(str(r[k])) for k in ("model", "quant", "hardware")] + ([Text("-" if "skipped" in r else str(r["efficiency_class"]))] if full else [])
            if "skipped" in r:  # the reason is listed under the table
                t.add_row(*head, "-", _num(r.get("measured_tg_tps")), "skip", *(["", ""] if full else []))
                continue
            t.add_row(*head, _num(r["predicted_tg_tps"]), _num(r.get("measured_tg_tps")), f"{r.get('tg_error_pct', 0):+.0f}",
                      *([_num(r.get("predicted_pp_tps"), ".0f"), _num(r.get("measured_pp_tps") or None, ".0f")] if full else []))
        _freeze(t)
        for col in t.columns[:3]:
            col.min_width = min(col.min_width, 12)
        return t

    t = build(True)
    full = _width(con, t) <= con.width
    _title(con, "decode tokens/s, predicted (pred) vs measured (meas)" + ("; prefill: pp" if full else ""))
    con.print(t if full else build(False))
    for r in result["rows"]:
        if "skipped" in r:
            con.print(f"[dim]skipped {escape(str(r['model']))} {escape(str(r['quant']))} on {escape(str(r['hardware']))}: "
                      f"{escape(str(r['skipped']))}[/]")
    split = result.get("split", "all")
    for key, label in (("tg", "decode"), ("pp", "prefill")):
        s = result["summary"][key]
        _console().print(f"{label}{'' if split == 'all' else f' ({split} rows)'}: {s['n']} rows, median |error| "
                         f"{s['median_abs_error_pct']}%, 90th percentile {s['p90_abs_error_pct']}%")
    if split == "all":
        for sp, name in (("fit", "in-sample (fit rows)"), ("held-out", "held-out rows")):
            by = result.get("summary_by_split", {}).get(sp)
            if by and (by["tg"]["n"] or by["pp"]["n"]):
                _console().print(f"{name}: decode median {by['tg']['median_abs_error_pct']}% p90 {by['tg']['p90_abs_error_pct']}% "
                                 f"(n={by['tg']['n']}); prefill median {by['pp']['median_abs_error_pct']}% p90 "
                                 f"{by['pp']['p90_abs_error_pct']}% (n={by['pp']['n']})")
