"""Planner latency and predicted numbers for every catalog model.

    python bench/planner_bench.py [--target rtx4090] [--startup-only] [--instructions]

Prints: the start-up cost of the command line (`gemma-plan recommend --model 31b --target rtx4090` in a fresh
process against a bare `python -c pass`, both measured in this run, best of --repeat), then the time
`recommend` takes per model in-process, then llama.cpp memory (GiB) and decode speed for each model at a
few GGUF types and contexts on the target. Numbers are predictions, not measurements.

--instructions adds the same comparison in instructions executed (valgrind's callgrind, when installed): unlike
time on a shared machine, the count does not move with what else runs, so it shows whether a change made the
start-up cheaper. Instructions are not time (a bare start-up spends more of its time waiting on memory), so the
5x limit stays a limit on time.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from planner.catalog import all_models
from planner.formats import parse_format
from planner.search import plan, recommend
from planner.types import RuntimeSettings
from profiles.targets import load_target

from profiles.units import GiB


ROOT = Path(__file__).resolve().parents[1]
STARTUP_LIMIT = 5.0  # recommend may cost at most this many bare interpreter starts (issue 13)


def _best(argv: list[str], repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time (user + system of the child) of ``repeat`` runs after one warm-up run.
    Bytecode is written and reused, as after `pip install` (which compiles it): PYTHONDONTWRITEBYTECODE would
    make every run recompile our modules. CPU time is what the process costs; on a shared machine wall time
    adds the wait for a core."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = cpu = float("inf")
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = min(wall, time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = min(cpu, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    return wall, cpu


def startup(repeat: int) -> float:
    """`gemma-plan recommend --model 31b --target rtx4090` against `python -c pass`, best of ``repeat`` each,
    the bare interpreter measured before and after so both see the same machine. Returns the CPU-time ratio."""
    bare = [sys.executable, "-c", "pass"]
    cmd = ["recommend", "--model", "31b", "--target", "rtx4090"]
    b1 = _best(bare, repeat)
    rec = _best([sys.executable, "-m", "planner.cli", *cmd], repeat)
    b2 = _best(bare, repeat)
    bare_wall, bare_cpu = min(b1[0], b2[0]), min(b1[1], b2[1])
    for what, r, b in (("wall", rec[0], bare_wall), ("CPU", rec[1], bare_cpu)):
        ratio = r / b
        print(f"start-up ({what} time, best of {repeat}): gemma-plan {' '.join(cmd)}: {r * 1e3:.0f} ms; python -c pass: "
              f"{b * 1e3:.0f} ms; ratio {ratio:.1f}x (limit {STARTUP_LIMIT:g}x: {'ok' if ratio <= STARTUP_LIMIT else 'OVER'})")
    return rec[1] / bare_cpu


def instructions(argv: list[str]) -> int:
    """Instructions one run of ``argv`` executes (callgrind's total), after a warm-up run that writes bytecode."""
    import re
    import shutil
    import tempfile

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    exe = shutil.which("valgrind")
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([exe, "--tool=callgrind", f"--callgrind-out-file={tmp}/out", *argv], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if not m:
        raise SystemExit("callgrind printed no instruction count")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="rtx4090")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--startup-only", action="store_true", help="only the start-up comparison")
    ap.add_argument("--instructions", action="store_true", help="also count instructions with valgrind (about 30 s)")
    args = ap.parse_args()
    ratio = startup(args.repeat)
    if args.instructions:
        import shutil

        if not shutil.which("valgrind"):
            raise SystemExit("--instructions needs valgrind (apt install valgrind)")
        # the interpreter itself, not a launcher script (pyenv's shims are shell scripts valgrind would count)
        py = os.path.realpath(sys.executable)
        bare = instructions([py, "-c", "pass"])
        rec = instructions([py, "-m", "planner.cli", "recommend", "--model", "31b", "--target", "rtx4090"])
        print(f"start-up (instructions, callgrind): recommend {rec / 1e6:.0f} M; python -c pass: {bare / 1e6:.0f} M; "
              f"ratio {rec / bare:.1f}x")
    if args.startup_only:
        sys.exit(0 if ratio <= STARTUP_LIMIT else 1)
    hw = load_target(args.target)
    print(f"target {args.target}; times are the best of {args.repeat} runs")
    print(f"{'model':18} {'recommend ms':>13}  chosen")
    t_all = time.perf_counter()
    rec = recommend(hw)
    print(f"{'(no model)':18} {(time.perf_counter() - t_all) * 1e3:13.0f}  {rec.plan.model if rec.plan else '-'} {rec.plan.weight_format if rec.plan else ''}")
    for spec in all_models():
        best = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            rec = recommend(hw, models=[spec])
            best = min(best, time.perf_counter() - t)
        p = rec.plan
        chosen = f"{p.weight_format} ctx {p.ctx} kv {p.settings.type_k} {p.speed.decode_tokens_per_s:.1f} tok/s" if p else "nothing fits"
        print(f"{spec.name:18} {best * 1e3:13.1f}  {chosen}")
    print()
    print(f"{'model':18} {'format':7} {'ctx':>7} {'total GiB':>10} {'KV GiB':>8} {'fits':>5} {'tok/s':>7}")
    for spec in all_models():
        for fmt in ("Q8_0", "Q4_K_M", "Q3_K_M"):
            for ctx in (4096, 32768, spec.ctx_train):
                if ctx > spec.ctx_train:
                    continue
                p = plan(spec, parse_format(fmt), RuntimeSettings(n_ctx=ctx), hw)
                print(f"{spec.name:18} {fmt:7} {ctx:7d} {p.memory.total_bytes / GiB:10.2f} {p.memory.kv_bytes / GiB:8.2f} "
                      f"{'yes' if p.fits else 'no':>5} {p.speed.decode_tokens_per_s:7.1f}")


if __name__ == "__main__":
    main()
