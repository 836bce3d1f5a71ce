"""This machine's CPU speed with the real engine: the per-core kernel table, and the end-to-end check.

    python bench/speed_cpu.py kernels   # llama.cpp rates per file type on gemma-3-1b slices, per core ->
                                        # bench/results/cpu_kernels.json (a report of this machine; the model's
                                        # defaults are nominal rates scaled by the fit on published CPU rows)
    python bench/speed_cpu.py check     # `gemma-plan detect --bench --bench-model gemma-3-4b` (slices of 2 and 8
                                        # layers), then for other slices of it (5 and 12 layers, Q4_K_M and Q8_0)
                                        # `gemma-plan estimate --target auto --model SLICE.gguf` against llama.cpp's
                                        # own measurement of the same file -> table + bench/results/speed_cpu_check.json

The machine may be shared: every timing is a median of repeats, the load average is printed with it.
Needs the [gguf] extra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quantize import llama_bench as LB  # noqa: E402

KERNEL_FTYPES = ["Q4_K_M", "Q8_0", "Q4_0", "Q6_K", "Q5_K_M", "F16"]
BENCH_MODEL = "gemma-3-4b"  # detect --bench measures slices of the model the plans are for (2 and 8 layers)
CHECK = [("gemma-3-4b", "Q4_K_M", 5), ("gemma-3-4b", "Q4_K_M", 12), ("gemma-3-4b", "Q8_0", 5)]


def kernels(args) -> None:
    import psutil

    threads = LB.default_threads(psutil.cpu_count(logical=False), psutil.cpu_count(logical=True))
    t0 = time.time()
    basis = LB.run_speed_bench("gemma-3-1b", args.ftypes.split(","), threads=threads, repeats=args.repeats)
    dec = {b.ftype: round(b.layer_decode_bytes_per_s / threads) for b in basis}
    pre = {b.ftype: round(b.prefill_flops_per_s / threads) for b in basis}
    out = {"source": f"llama.cpp (llama-cpp-python {__import__('llama_cpp').__version__}, AVX2 CPU build) per core on the "
                     f"{threads}-core CI machine, gemma-3-1b slices, bench/speed_cpu.py kernels",
           "threads": threads, "decode_bytes_per_s_per_core": dec, "prefill_flops_per_core": pre,
           "basis": [b.to_dict() for b in basis], "seconds": round(time.time() - t0, 1)}
    path = ROOT / "bench/results/cpu_kernels.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    for b in basis:
        print(f"{b.ftype:7s} layer {b.layer_decode_bytes_per_s / 1e9:6.2f} GB/s  output {b.output_decode_bytes_per_s / 1e9:6.2f} GB/s  "
              f"prefill {b.prefill_flops_per_s / 1e9:6.1f} GFLOP/s  (slices tg {b.decode_tps}, pp {b.prefill_tps}, load {b.load_average})")
    print(f"wrote {path}")


def _cli(*argv: str, env=None) -> str:
    r = subprocess.run([sys.executable, "-m", "planner.cli", *argv], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"gemma-plan {' '.join(argv)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def check(args) -> None:
    import psutil

    from planner.catalog import resolve_entry
    from quantize.slices import write_slice_gguf

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.time()
    _cli("detect", "--bench", "--bench-model", BENCH_MODEL, "--bench-quant", "Q4_K_M,Q8_0", env=env)
    bench_s = time.time() - t0
    print(f"detect --bench: {bench_s:.0f} s")
    threads = LB.default_threads(psutil.cpu_count(logical=False), psutil.cpu_count(logical=True))
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed-check-") as tmp:
        for name, ftype, layers in CHECK:
            entry, _ = resolve_entry(name)
            path, spec = write_slice_gguf(entry, ftype, Path(tmp) / f"{name}-{ftype}-{layers}.gguf", layers)
            est = json.loads(_cli("estimate", "--model", str(path), "--quant", ftype, "--target", "auto", "--ctx", "1024",
                                  "--json", env=env))
            sp = est["plan"]["speed"] if "plan" in est else est["speed"]
            load0 = os.getloadavg()[0]
            (pp, tg), = LB.time_slices([path], threads, repeats=args.repeats)
            load1 = os.getloadavg()[0]
            path.unlink()
            row = {"model": f"{name} ({spec.n_layers} layers)", "ftype": ftype, "basis": sp.get("basis_kind"),
                   "measured_tg_tps": round(tg, 2), "predicted_tg_tps": sp["decode_tokens_per_s"],
                   "tg_error_pct": round((sp["decode_tokens_per_s"] - tg) / tg * 100, 1),
                   "measured_pp_tps": round(pp, 1), "predicted_pp_tps": sp["prefill_tokens_per_s"],
                   "pp_error_pct": round((sp["prefill_tokens_per_s"] - pp) / pp * 100, 1), "load_average": [round(load0, 2), round(load1, 2)]}
            rows.append(row)
            print(f"{row['model']:26s} {ftype:6s} decode {tg:7.2f} measured {row['predicted_tg_tps']:7.2f} predicted ({row['tg_error_pct']:+.1f}%)   "
                  f"prefill {pp:7.1f} measured {row['predicted_pp_tps']:7.1f} predicted ({row['pp_error_pct']:+.1f}%)   load {row['load_average']}")
    out = ROOT / "bench/results/speed_cpu_check.json"
    out.write_text(json.dumps({"detect_bench_seconds": round(bench_s, 1), "threads": threads, "repeats": args.repeats or LB.REPEATS,
                               "decode_tokens": LB.DECODE, "prompt_tokens": LB.PROMPT, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kernels")
    k.add_argument("--ftypes", default=",".join(KERNEL_FTYPES))
    k.add_argument("--repeats", type=int, default=LB.REPEATS)
    c = sub.add_parser("check")
    c.add_argument("--repeats", type=int, default=LB.REPEATS)
    args = ap.parse_args()
    {"kernels": kernels, "check": check}[args.cmd](args)


if __name__ == "__main__":
    main()
