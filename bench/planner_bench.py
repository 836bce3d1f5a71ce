"""Planner latency and predicted numbers for every catalog model.

    python bench/planner_bench.py [--target rtx4090] [--startup-only]

Prints: the start-up cost of the command line (`gemma-plan recommend --model 31b --target rtx4090` in a fresh
process against a bare `python -c pass`, both measured in this run, best of --repeat), then the time
`recommend` takes per model in-process, then llama.cpp memory (GiB) and decode speed for each model at a
few GGUF types and contexts on the target. Numbers are predictions, not measurements.
"""

from __future__ import annotations

import argparse
import os
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


def _best(argv: list[str], repeat: int) -> float:
    """Best wall time of ``repeat`` runs after one warm-up run. Bytecode is written and reused, as after
    `pip install` (which compiles it): PYTHONDONTWRITEBYTECODE would make every run recompile our modules."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
    return best


def startup(repeat: int) -> float:
    """Seconds of `gemma-plan recommend --model 31b --target rtx4090` and of `python -c pass`, best of ``repeat``
    each, interleaved so both see the same machine load. Returns the ratio."""
    bare = _best([sys.executable, "-c", "pass"], repeat)
    cmd = ["recommend", "--model", "31b", "--target", "rtx4090"]
    rec = _best([sys.executable, "-m", "planner.cli", *cmd], repeat)
    bare = min(bare, _best([sys.executable, "-c", "pass"], repeat))
    ratio = rec / bare
    print(f"start-up: gemma-plan {' '.join(cmd)}: {rec * 1e3:.0f} ms; python -c pass: {bare * 1e3:.0f} ms; "
          f"ratio {ratio:.1f}x (limit {STARTUP_LIMIT:g}x: {'ok' if ratio <= STARTUP_LIMIT else 'OVER'})")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="rtx4090")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--startup-only", action="store_true", help="only the start-up comparison")
    args = ap.parse_args()
    ratio = startup(args.repeat)
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
