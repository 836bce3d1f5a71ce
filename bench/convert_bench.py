"""Conversion memory and throughput, quantization overhead.

    python bench/convert_bench.py [--hidden 2048 --layers 4 --vocab 262144]

Builds a random bf16 Gemma 3 checkpoint (default ~1.4 GB: real 262k vocabulary) with quantize.tiny, then
- converts it to a BF16 GGUF in a child process and reports its peak RSS against the largest tensor;
- compares conversion throughput with a plain copy of the same safetensors bytes;
- times quantize.llamacpp.quantize_gguf against calling llama_cpp.llama_model_quantize directly.
Needs the [gguf] extra.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# VmHWM (this process's own peak RSS): getrusage's ru_maxrss keeps the parent's high-water mark across exec.
HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024"
CHILD = r"""
import json, sys, time
from quantize.convert import convert_hf_to_gguf
t = time.perf_counter()
convert_hf_to_gguf(sys.argv[1], sys.argv[2], outtype="bf16")
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss": %s}))
""" % HWM
BASELINE = r"""
import json
import quantize.convert, gguf, numpy
print(json.dumps({"peak_rss": %s}))
""" % HWM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=262144)
    ap.add_argument("--ftype", default="Q4_K_M")
    args = ap.parse_args()
    from planner.sources import read_safetensors_header
    from quantize.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        model = build_tiny_model(tmp / "model", "gemma3_text", dtype="bfloat16", hidden_size=args.hidden,
                                 intermediate_size=4 * args.hidden, num_hidden_layers=args.layers, vocab_size=args.vocab,
                                 num_attention_heads=8, num_key_value_heads=4, head_dim=256)
        files = sorted(model.glob("*.safetensors"))
        size = sum(f.stat().st_size for f in files)
        largest = max(_nbytes(v) for f in files for v in read_safetensors_header(f).values())
        print(f"checkpoint: {size / 2**30:.2f} GiB in {len(files)} file(s), largest tensor {largest / 2**20:.0f} MiB "
              f"(built in {time.perf_counter() - t:.0f} s)")

        base = json.loads(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, cwd=ROOT, check=True).stdout)
        out = tmp / "model.bf16.gguf"
        r = subprocess.run([sys.executable, "-c", CHILD, str(model), str(out)], capture_output=True, text=True, cwd=ROOT, check=True)
        conv = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"convert: {conv['seconds']:.1f} s, {size / conv['seconds'] / 2**20:.0f} MiB/s; peak RSS {conv['peak_rss'] / 2**20:.0f} MiB "
              f"= interpreter+imports {base['peak_rss'] / 2**20:.0f} MiB + {(conv['peak_rss'] - base['peak_rss']) / 2**20:.0f} MiB "
              f"(largest tensor {largest / 2**20:.0f} MiB, checkpoint {size / 2**20:.0f} MiB)")

        t = time.perf_counter()
        for i, f in enumerate(files):
            shutil.copyfile(f, tmp / f"copy{i}.bin")
        copy_s = time.perf_counter() - t
        print(f"plain copy of the same bytes: {copy_s:.1f} s, {size / copy_s / 2**20:.0f} MiB/s "
              f"(conversion takes {conv['seconds'] / copy_s:.1f}x the copy)")

        import llama_cpp

        from planner.formats import LLAMA_FTYPE_IDS
        from quantize.llamacpp import quantize_gguf

        t = time.perf_counter()
        quantize_gguf(out, tmp / "ours.gguf", args.ftype)
        ours = time.perf_counter() - t
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = LLAMA_FTYPE_IDS[args.ftype]
        t = time.perf_counter()
        rc = llama_cpp.llama_model_quantize(str(out).encode(), str(tmp / "direct.gguf").encode(), params)
        direct = time.perf_counter() - t
        print(f"quantize {args.ftype}: quantize_gguf {ours:.1f} s, llama_model_quantize directly {direct:.1f} s (rc {rc}); "
              f"overhead {ours - direct:+.1f} s")


def _nbytes(info: dict) -> int:
    n = {"BF16": 2, "F16": 2, "F32": 4}.get(info["dtype"], 4)
    for d in info["shape"]:
        n *= d
    return n


if __name__ == "__main__":
    main()
