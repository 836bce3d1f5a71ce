"""``gemma-plan detect``: what this machine has, as a table or ``--json``; ``--save NAME`` keeps it as a target.

The library call is ``profiles.detect.detect``; this module only parses flags and renders.
"""

from __future__ import annotations

import json
from typing import Optional

import click

from profiles.units import fmt_gib


@click.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: docs/detect.md).")
@click.option("--bench", is_flag=True, help="Also measure RAM bandwidth (a copy benchmark, a few seconds) and, with the "
              "[gguf] extra, llama.cpp's CPU decode and prefill on real-width slices of --bench-model (under a minute).")
@click.option("--bench-model", default=None, metavar="MODEL",
              help="With --bench: the catalog model whose widths the llama.cpp slices take (default gemma-3-1b).")
@click.option("--bench-quant", default=None, metavar="TYPES",
              help="With --bench: GGUF file types to measure, comma-separated (default Q4_K_M,Q8_0).")
@click.option("--model-dir", type=click.Path(file_okay=False), default=None,
              help="Where models will live; free disk is measured there (default: the Hugging Face cache).")
@click.option("--save", "save_name", metavar="NAME", default=None,
              help="Save this machine as a target profile, usable later as --target NAME.")
@click.option("--force", is_flag=True, help="With --save: replace an existing target of that name.")
def detect(as_json: bool, bench: bool, bench_model: Optional[str], bench_quant: Optional[str], model_dir: Optional[str],
           save_name: Optional[str], force: bool) -> None:
    """Detect accelerators, RAM, cgroup limit, CPU, OS and free disk of this machine."""
    from profiles.detect import detect as run_detect
    from profiles.errors import ProfileError
    from profiles.targets import save_target, target_save_path

    try:
        if save_name is not None:
            target_save_path(save_name, force)  # refuse before spending seconds on --bench
        if (bench_model or bench_quant) and not bench:
            raise click.UsageError("--bench-model and --bench-quant go with --bench")
        plan = _speed_bench_plan(bench_model, bench_quant) if bench else None
        report = _run_with_progress(run_detect, bench, model_dir)
        speed_note = _speed_bench(report, plan) if bench else None
        saved = save_target(report.hardware, save_name, force=force) if save_name is not None else None
    except ProfileError as e:
        raise click.ClickException(f"{e}; {e.hint}" if e.hint else str(e)) from None

    if as_json:
        data = report.to_dict()
        data["saved_to"] = str(saved) if saved else None
        data["speed_bench_note"] = speed_note
        click.echo(json.dumps(data, indent=2))
        return
    _render(report, saved)
    if bench:
        _render_speed(report.hardware, speed_note)


def _speed_bench_plan(model: Optional[str], quant: Optional[str]):
    """Check --bench-model / --bench-quant before any measuring: (model, ftypes)."""
    from quantize.llama_bench import BENCH_FTYPES, DEFAULT_FTYPES, DEFAULT_MODEL

    ftypes = tuple(q.strip().upper() for q in quant.split(",") if q.strip()) if quant else DEFAULT_FTYPES
    bad = [f for f in ftypes if f not in BENCH_FTYPES]
    if bad or not ftypes or len(ftypes) > 4:
        raise click.BadParameter(f"{quant!r}: give 1-4 of {', '.join(BENCH_FTYPES)}", param_hint="--bench-quant")
    name = model or DEFAULT_MODEL
    from planner.catalog import resolve_entry
    from planner.errors import PlanError

    try:
        entry, _ = resolve_entry(name)
    except PlanError as e:
        raise click.BadParameter(f"{e}; {e.hint}" if e.hint else str(e), param_hint="--bench-model") from None
    if entry.get("moe"):
        raise click.BadParameter(f"{entry['name']} is a mixture of experts; give a dense model of the same family",
                                 param_hint="--bench-model")
    return entry["name"], ftypes


def _speed_bench(report, plan) -> str:
    """llama.cpp on slices of the model: the measured rates go into the hardware (saved with --save and
    kept for --target auto). Returns a line saying what happened."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama.cpp speed not measured: llama-cpp-python is not installed (pip install 'gemma-plan[gguf]')"
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from profiles.speed_basis import save_measured
    from quantize.llama_bench import default_threads, run_speed_bench

    hw = report.hardware
    model, ftypes = plan
    threads = default_threads(hw.cpu.cores_physical, hw.cpu.cores_logical)
    with Progress(TextColumn(f"llama.cpp on {model} slices ({', '.join(ftypes)}, {threads} threads)"), BarColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("speed", total=1.0)
        basis = run_speed_bench(model, ftypes, threads=threads, progress=lambda f: progress.update(task, completed=f))
    hw.speed_basis = [b.to_dict() for b in basis]
    where = save_measured(hw)
    return f"llama.cpp CPU rates measured for {', '.join(ftypes)} on {model} slices; kept for --target auto in {where}"


def _render_speed(hw, note: Optional[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if hw.speed_basis:
        t = Table(title="llama.cpp on this CPU (measured; used by --target auto and saved targets)", title_justify="left")
        for col in ("file type", "threads", "layer decode GB/s", "output GB/s", "prefill GFLOP/s", "slice tok/s (tg, pp)", "load avg"):
            t.add_column(col, justify="left" if col == "file type" else "right")
        for b in hw.speed_basis:
            t.add_row(b["ftype"], str(b["threads"]), f"{b['layer_decode_bytes_per_s'] / 1e9:.1f}", f"{b['output_decode_bytes_per_s'] / 1e9:.1f}",
                      f"{b['prefill_flops_per_s'] / 1e9:.0f}",
                      " / ".join(f"{tg:.1f}, {pp:.0f}" for tg, pp in zip(b.get("decode_tps", []), b.get("prefill_tps", []))),
                      " -> ".join(f"{x:.1f}" for x in b.get("load_average", [])))
        console.print(t)
    if note:
        console.print(f"[dim]{note}[/]", highlight=False)


def _run_with_progress(run_detect, bench: bool, model_dir: Optional[str]):
    if not bench:
        return run_detect(bench=False, model_dir=model_dir)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("measuring RAM bandwidth"), BarColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("bench", total=1.0)
        return run_detect(bench=True, model_dir=model_dir,
                          progress=lambda f: progress.update(task, completed=f))


def _gib(n: Optional[int]) -> str:
    return fmt_gib(n, 1, unit=False)


def _gbs(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / 1e9:.0f}" if n >= 100e9 else f"{n / 1e9:.1f}"


def _render(report, saved) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    hw = report.hardware
    if hw.devices:
        from rich.measure import Measurement

        def table(with_unified: bool) -> Table:
            t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
            cols = [("#", "right"), ("device", "left"), ("backend", "left"), ("total", "right"), ("free", "right"),
                    ("GB/s", "right"), ("TFLOPS", "right")] + ([("unified", "left")] if with_unified else []) + [("CC", "left")]
            words = [w for d in hw.devices for w in (d.name + (f" [{d.partition}]" if d.partition else "")).split()]
            for col, just in cols:
                # the device name wraps at its spaces only (never mid-word); every other column keeps its width
                t.add_column(col, justify=just, no_wrap=col != "device",
                             min_width=max([len(col)] + [len(w) for w in words]) if col == "device" else None)
            for i, d in enumerate(hw.devices):
                row = [str(d.index if d.index is not None else i), Text(d.name + (f" [{d.partition}]" if d.partition else "")),
                       d.backend, _gib(d.memory_bytes), _gib(d.free_bytes), _gbs(d.bandwidth_bytes_per_s),
                       "-" if d.fp16_flops is None else f"{d.fp16_flops / 1e12:.0f}"]
                t.add_row(*row, *(["yes" if d.unified else "no"] if with_unified else []), d.compute_capability or "-")
            return t

        t = table(True)
        if Measurement.get(console, console.options.update(max_width=10_000), t).maximum > console.width:
            t = table(False)  # narrow terminal: unified memory is said in the per-device line below instead
        details = []
        for i, d in enumerate(hw.devices):
            idx = str(d.index if d.index is not None else i)
            extra = [f"PCIe gen{d.pcie_gen} x{d.pcie_width}"] if d.pcie_gen and d.pcie_width else []
            if d.unified:
                extra.append(f"shares {_gib(d.total_bytes)} GiB of physical memory with the CPU" if d.total_bytes else "unified memory")
            extra += [d.notes] if d.notes else []
            if extra:
                details.append(f"  {idx}: " + "; ".join(extra))
        # the title on its own line: rich wraps a table's title to the (narrower) table width
        console.print("[italic]Accelerators (memory in GiB, bandwidth in GB/s, dense FP16 tensor TFLOPS)[/]")
        console.print(t)
        for line in details:
            console.print(line, highlight=False)
    else:
        console.print("[bold]No accelerator found[/bold]: plans for this machine run on the CPU.")

    m = Table(title="Machine", title_justify="left", show_header=False)
    m.add_column("what", style="bold")
    m.add_column("value", overflow="fold")
    m.add_row("RAM", f"{_gib(hw.ram_bytes)} GiB total, {_gib(hw.ram_free_bytes)} GiB available")
    limit = report.memory_limit
    m.add_row("memory limit", "none (cgroup)" if limit.limit_bytes is None else
              f"{_gib(limit.limit_bytes)} GiB (cgroup v{limit.version}: {limit.file})")
    if hw.ram_bandwidth_bytes_per_s:
        m.add_row("RAM bandwidth", f"{_gbs(hw.ram_bandwidth_bytes_per_s)} GB/s ({hw.ram_bandwidth_source})")
    else:
        m.add_row("RAM bandwidth", "unknown (run detect --bench to measure it)")
    cpu = hw.cpu
    m.add_row("CPU", f"{cpu.name}, {cpu.cores_physical or '?'} cores / {cpu.cores_logical or '?'} threads"
              + (f", {cpu.arch}" if cpu.arch else ""))
    m.add_row("ISA flags", ", ".join(cpu.flags) or "-")
    s = report.system
    m.add_row("OS", " ".join(x for x in (s.os, s.os_version, f"(kernel {s.kernel})" if s.kernel else "") if x))
    m.add_row("WSL", f"yes (WSL{s.wsl_version})" if s.wsl else "no")
    m.add_row("container", s.container or "no")
    if s.board:
        m.add_row("board", s.board)
    if report.disk:
        m.add_row("disk free", f"{_gib(report.disk.free_bytes)} GiB at {report.disk.checked}"
                  + ("" if report.disk.checked == report.disk.path else f" (for {report.disk.path})"))
    if hw.hardware_ids:
        m.add_row("catalog ids", ", ".join(hw.hardware_ids))
    m.add_row("detected in", f"{report.elapsed_s:.2f} s")
    console.print(m)

    if report.ignored_devices:
        console.print("[bold]Not used for planning:[/bold]")
        for line in report.ignored_devices:
            console.print(f"  - {line}")
    if report.could_not_read:
        console.print("[bold]Could not read:[/bold]")
        for line in report.could_not_read:
            console.print(f"  - {line}")
    if saved:
        console.print(f"Saved as target [bold]{saved.stem}[/bold] ({saved}); use it with --target {saved.stem}")
