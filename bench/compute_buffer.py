"""Measure llama.cpp's compute buffer at real Gemma widths and compare with the planner.

    python bench/compute_buffer.py [--models 1b,4b,27b] [--keep]

Writes 2-layer Gemma 3 GGUFs with the real hidden size, heads, head size, FFN width and 262k vocabulary
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

import numpy as np

from planner.catalog import spec_from_config
from planner.memory import _llamacpp_compute_bytes, llamacpp_kv_layout
from planner.types import RuntimeSettings

# hidden, heads, KV heads, head size, FFN, vocab, window (gemma_architectures.md, Gemma 3 table)
WIDTHS = {"1b": (1152, 4, 1, 256, 6912, 262144, 512), "4b": (2560, 8, 4, 256, 10240, 262208, 1024),
          "27b": (5376, 32, 16, 128, 21504, 262208, 1024)}
LOAD = r"""
import llama_cpp, sys
a = sys.argv
llama_cpp.Llama(a[1], n_ctx=int(a[2]), n_batch=512, n_ubatch=int(a[3]), flash_attn=a[4] == "1", swa_full=False,
                n_gpu_layers=0, verbose=True)
"""
COMPUTE = re.compile(r"sched_reserve:\s+CPU compute buffer size =\s+([\d.]+) MiB")


def write_gguf(path: Path, H, nh, nkv, hd, F, V, swa) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_block_count(2)
    w.add_embedding_length(H)
    w.add_feed_forward_length(F)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_context_length(131072)
    w.add_sliding_window(swa)
    w.add_file_type(1)
    w.add_array("gemma3.attention.sliding_window_pattern", [True, False])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<pad>", "<eos>", "<bos>", "<unk>"] + [f"t{i}" for i in range(V - 4)])
    w.add_token_scores([0.0] * V)
    w.add_token_types([3, 3, 3, 2] + [1] * (V - 4))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_tensor("token_embd.weight", np.zeros((V, H), np.float16))
    w.add_tensor("output_norm.weight", np.ones(H, np.float32))
    for i in range(2):
        p = f"blk.{i}."
        for n, s in (("attn_q", (nh * hd, H)), ("attn_k", (nkv * hd, H)), ("attn_v", (nkv * hd, H)),
                     ("attn_output", (H, nh * hd)), ("ffn_gate", (F, H)), ("ffn_up", (F, H)), ("ffn_down", (H, F))):
            w.add_tensor(p + n + ".weight", np.zeros(s, np.float16))
        for n in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            w.add_tensor(p + n + ".weight", np.ones(H, np.float32))
        for n in ("attn_q_norm", "attn_k_norm"):
            w.add_tensor(p + n + ".weight", np.ones(hd, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="1b,4b,27b")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    rows = []
    print(f"{'widths':6} {'n_ctx':>6} {'ubatch':>6} {'FA':>3} {'measured MiB':>13} {'predicted MiB':>14} {'error MiB':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            H, nh, nkv, hd, F, V, swa = WIDTHS[name]
            path = Path(tmp) / f"{name}.gguf"
            write_gguf(path, H, nh, nkv, hd, F, V, swa)
            spec = spec_from_config(dict(model_type="gemma3_text", hidden_size=H, num_hidden_layers=2, num_attention_heads=nh,
                                         num_key_value_heads=nkv, head_dim=hd, intermediate_size=F, vocab_size=V,
                                         sliding_window=swa, layer_types="SF", max_position_embeddings=131072),
                                    name=name, source="bench")
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
                        print(f"{name:6} {ctx:6d} {ub:6d} {'on' if fa else 'off':>3} {measured:13.2f} {pred:14.2f} {pred - measured:10.2f}")
            path.unlink()
    errs = sorted(abs(r["predicted_mib"] - r["measured_mib"]) for r in rows)
    print(f"max |error| {errs[-1]:.2f} MiB, median {errs[len(errs) // 2]:.2f} MiB over {len(rows)} loads")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
