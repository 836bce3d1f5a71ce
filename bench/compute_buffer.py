"""Measure llama.cpp's compute buffer at real Gemma widths and compare with the planner.

    python bench/compute_buffer.py [--models gemma-3-1b,gemma-3-4b,gemma-3-27b] [--json FILE]

Writes 2-layer GGUFs (bench/fidelity.py write_width_gguf) with the real hidden size, heads, head size, FFN width and 262k vocabulary
(zero weights: buffer sizes do not depend on values; ~7 GB of disk for all three, deleted afterwards),
loads each in llama-cpp-python over a grid of n_ctx x n_ubatch x flash attention, parses
`sched_reserve: CPU compute buffer size` and prints measured vs predicted MiB. Needs the [gguf] extra.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from fidelity import width_spec, write_width_gguf  # same folder: the GGUF writer the fidelity bench uses

from planner.catalog import catalog_entries
from planner.memory import _llamacpp_compute_bytes, llamacpp_kv_layout
from planner.types import RuntimeSettings

LOAD = r"""
import llama_cpp, sys
a = sys.argv
llama_cpp.Llama(a[1], n_ctx=int(a[2]), n_batch=512, n_ubatch=int(a[3]), flash_attn=a[4] == "1", swa_full=False,
                n_gpu_layers=0, verbose=True)
"""
COMPUTE = re.compile(r"sched_reserve:\s+CPU compute buffer size =\s+([\d.]+) MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gemma-3-1b,gemma-3-4b,gemma-3-27b")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    entries = {e["name"]: e for e in catalog_entries()}
    rows = []
    print(f"{'widths':12} {'n_ctx':>6} {'ubatch':>6} {'FA':>3} {'measured MiB':>13} {'predicted MiB':>14} {'error MiB':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            entry = entries[name]
            path = write_width_gguf(entry, Path(tmp) / f"{name}.gguf", 2)
            _, spec = width_spec(entry, 2)
            for ctx in (512, 4096, 32768):
                for ub in (512, 128):
                    for fa in (True, False):
                        r = subprocess.run([sys.executable, "-c", LOAD, str(path), str(ctx), str(ub), "1" if fa else "0"],
                                           capture_output=True, text=True)
                        found = COMPUTE.findall(r.stderr)
                        measured = float(found[-1]) if found else float("nan")
                        s = RuntimeSettings(n_ctx=ctx, n_ubatch=ub, n_batch=512, flash_attn=fa)
                        pred = _llamacpp_compute_bytes(spec, s, llamacpp_kv_layout(spec, s)) / 2**20
                        rows.append(dict(widths=name, n_ctx=ctx, n_ubatch=ub, flash_attn=fa, measured_mib=measured, predicted_mib=round(pred, 2)))
                        print(f"{name:12} {ctx:6d} {ub:6d} {'on' if fa else 'off':>3} {measured:13.2f} {pred:14.2f} {pred - measured:10.2f}")
            path.unlink()
    errs = sorted(abs(r["predicted_mib"] - r["measured_mib"]) for r in rows)
    print(f"max |error| {errs[-1]:.2f} MiB, median {errs[len(errs) // 2]:.2f} MiB over {len(rows)} loads")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
