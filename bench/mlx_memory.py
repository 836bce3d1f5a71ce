"""MLX memory, predicted (planner.mlx_memory) against what mlx-lm really holds, on tiny Gemma checkpoints.

    python bench/mlx_memory.py [--out bench/results/mlx_memory.json]

For each tiny family (quantize/tiny.py), bit width and token count: ``mlx_lm.convert`` the bf16
checkpoint (as run-mlx.sh does), ``mlx_lm.load`` it, sum ``nbytes`` of every parameter; then run a
prompt of ``tokens - 8`` tokens and 8 single-token steps through ``make_prompt_cache`` and sum the
caches' ``nbytes``. mx.get_active_memory is printed beside them (it also holds activations and
allocator slack). Needs the [engines] extra (mlx[cpu], mlx-lm) and the [gguf] extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = ["gemma3_text", "gemma3", "gemma4_text", "gemma4", "gemma4_e", "gemma4_moe"]
BITS = [None, 2, 3, 4, 5, 6, 8]
TOKENS = [8 + 8, 300, 1000]


def measure(root: Path, family: str, bits, tokens_list) -> list[dict]:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import convert, load
    from mlx_lm.models.cache import make_prompt_cache

    from planner.mlx_memory import mlx_kv_bytes, mlx_weight_bytes
    from planner.sources import load_model
    from quantize.tiny import build_tiny_model

    src = root / f"{family}-hf"
    if not src.exists():
        build_tiny_model(src, family, dtype="bfloat16")
    spec, _ = load_model(str(src))
    dst = root / f"{family}-mlx-{bits or 'bf16'}"
    kw = {"quantize": True, "q_bits": bits, "q_group_size": 64} if bits else {}
    convert(str(src), mlx_path=str(dst), dtype="bfloat16", **kw)
    model, _ = load(str(dst))
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    pred_w = mlx_weight_bytes(spec, bits, 64).total_bytes
    rows = []
    for tokens in tokens_list:
        cache = make_prompt_cache(model)
        mx.eval(model(mx.array([[5 + i % 200 for i in range(tokens - 8)]]), cache=cache))
        for _ in range(8):
            mx.eval(model(mx.array([[7]]), cache=cache))
        kv = sum(c.nbytes for c in cache)
        rows.append({"family": family, "bits": bits, "tokens": tokens, "weights": weights, "weights_pred": pred_w,
                     "kv": kv, "kv_pred": mlx_kv_bytes(spec, tokens, 1), "active_memory": mx.get_active_memory()})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "mlx_memory.json")
    a = ap.parse_args(argv)
    import mlx_lm

    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            for bits in BITS:
                rows += measure(Path(tmp), family, bits, TOKENS)
    exact_w = sum(r["weights"] == r["weights_pred"] for r in rows)
    exact_kv = sum(r["kv"] == r["kv_pred"] for r in rows)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"mlx_lm": mlx_lm.__version__, "seconds": round(time.time() - t0, 1), "rows": rows}, indent=1) + "\n")
    print("| family | bits | tokens | weights (mlx) | predicted | KV (mlx) | predicted |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['bits'] or 'bf16'} | {r['tokens']} | {r['weights']:,} | {r['weights_pred']:,} "
              f"| {r['kv']:,} | {r['kv_pred']:,} |")
    print(f"\n{len(rows)} rows: weights exact {exact_w}, KV exact {exact_kv} ({time.time() - t0:.0f} s, mlx-lm {mlx_lm.__version__})")
    return 0 if exact_w == exact_kv == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
