"""MLX memory, predicted (planner.mlx_memory) against what mlx-lm really holds, on tiny Gemma checkpoints.

    python bench/mlx_memory.py [--families gemma3_text,gemma4_e] [--bits none,4,8] [--tokens 300,1000]
                               [--out bench/results/mlx_memory.json]

For each tiny family (quantize/tiny.py), bit width and token count: load the bf16 checkpoint with
mlx-lm and quantize it as ``mlx_lm.convert`` does before saving (``utils.quantize_model``, group 64),
sum ``nbytes`` of every parameter; then run a prompt of ``tokens - 8`` tokens and 8 single-token steps
through ``make_prompt_cache`` and sum the caches' ``nbytes``. (tests/test_recipes_engines.py does the
same through the real ``mlx_lm.convert`` and a saved folder for 4 bits.) Needs the [engines] extra
(mlx[cpu], mlx-lm) and the [gguf] extra (torch, transformers, to build the checkpoints).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Gemma 3 laid out as Gemma 3 1B (one full layer in 6: mlx-lm reads sliding_window_pattern, default 6).
FAMILIES = {"gemma3_text": {"num_hidden_layers": 6, "swa_period": 6}, "gemma3": {"num_hidden_layers": 6, "swa_period": 6},
            "gemma4_text": {}, "gemma4": {}, "gemma4_e": {}, "gemma4_moe": {}}
BITS = [None, 2, 3, 4, 5, 6, 8]
TOKENS = [16, 300, 1000]


def as_published(src: Path) -> None:
    """config.json the way Google publishes it, which is what mlx-lm 0.32 reads: transformers 5.24 writes
    Gemma 4's global attention as per_layer_config (mlx-lm wants global_head_dim, num_global_key_value_heads),
    and mlx-lm's multimodal wrappers take the vocabulary from the top level (default: the real 262k)."""
    cfg = json.loads((src / "config.json").read_text())
    for c in (cfg, cfg.get("text_config") or {}):
        for over in c.pop("per_layer_config", {}).values():
            c["global_head_dim"] = over.get("head_dim", c["head_dim"])
            c["num_global_key_value_heads"] = over.get("num_key_value_heads", c["num_key_value_heads"])
    if "text_config" in cfg:
        cfg["vocab_size"] = cfg["text_config"]["vocab_size"]
    (src / "config.json").write_text(json.dumps(cfg))


def measure(root: Path, family: str, bits_list, tokens_list) -> list[dict]:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.utils import load_model, quantize_model

    from planner.mlx_memory import mlx_kv_bytes, mlx_weight_bytes
    from planner.sources import load_model as load_spec
    from quantize.tiny import build_tiny_model

    src = root / f"{family}-hf"
    build_tiny_model(src, family, dtype="bfloat16", **FAMILIES[family])
    as_published(src)
    spec, _ = load_spec(str(src))
    rows = []
    for bits in bits_list:
        # what mlx_lm.convert does before it saves: load, cast (the checkpoint is bf16 already), quantize
        model, config = load_model(src)
        if bits:
            model, config = quantize_model(model, config, 64, bits)
        weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        pred_w = mlx_weight_bytes(spec, bits, 64).total_bytes
        for tokens in tokens_list:
            row = {"family": family, "bits": bits, "tokens": tokens, "weights": weights, "weights_pred": pred_w,
                   "kv_pred": mlx_kv_bytes(spec, tokens, 1)}
            cache = make_prompt_cache(model)
            try:
                mx.eval(model(mx.array([[5 + i % 200 for i in range(tokens - 8)]]), cache=cache))
                for _ in range(8):
                    mx.eval(model(mx.array([[7]]), cache=cache))
                row["kv"] = sum(c.nbytes for c in cache)
            except RuntimeError as exc:  # MLX's CPU backend lacks some kernels (bf16 GatherMM for MoE)
                row["kv"], row["error"] = None, str(exc).splitlines()[0]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


RESULTS = Path(__file__).resolve().parent / "results" / "mlx_memory.json"


def markdown_section(paths=None) -> list[str]:
    """The "MLX" section of docs/accuracy.md (bench/fidelity.py writes it with the rest), from the saved runs
    (bench/results/mlx_memory*.json)."""
    paths = sorted(RESULTS.parent.glob("mlx_memory*.json")) if paths is None else paths
    runs = [json.loads(Path(p).read_text()) for p in paths]
    if not runs:
        return []
    lines = ["## MLX", "",
             f"`planner/mlx_memory.py` against mlx-lm {runs[0]['mlx_lm']} (the Linux CPU wheels of MLX). Weights: the "
             "`nbytes` of every parameter after mlx-lm's own load and quantization (group 64; 16 = unquantized bf16); "
             "KV: the `nbytes` of `make_prompt_cache` after a prompt and 8 decoded tokens. "
             "`tests/test_recipes_engines.py` checks the same equality after the real `mlx_lm.convert` of `run-mlx.sh` "
             "(4 bits, 512 tokens) for a tiny Gemma 3 and Gemma 4, then serves them.", ""]
    bad = []
    for data, path in zip(runs, paths):
        rows = data["rows"]
        ran = [r for r in rows if r["kv"] is not None]
        ew = sum(r["weights"] == r["weights_pred"] for r in rows)
        ek = sum(r["kv"] == r["kv_pred"] for r in ran)
        fams = sorted({r["family"] for r in rows})
        bits = sorted({r["bits"] or 16 for r in rows})
        toks = sorted({r["tokens"] for r in rows})
        skipped = sorted({f"{r['family']} {r['bits'] or 16}-bit ({r['error']})" for r in rows if r["kv"] is None})
        lines.append(f"- `{data.get('command', 'python bench/mlx_memory.py')}` ({data['seconds'] / 60:.1f} min, "
                     f"`{Path(path).relative_to(RESULTS.parents[2]) if Path(path).is_absolute() else path}`): {len(rows)} rows "
                     f"({', '.join(fams)}; bits {', '.join(map(str, bits))}; {', '.join(map(str, toks))} tokens), weights exact "
                     f"in {ew}, KV exact in {ek} of the {len(ran)} that ran"
                     + (f"; not run on MLX's CPU backend: {'; '.join(skipped)}" if skipped else "") + ".")
        bad += [r for r in rows if r["weights"] != r["weights_pred"] or (r["kv"] is not None and r["kv"] != r["kv_pred"])]
    lines.append("")
    if bad:
        lines += ["| family | bits | tokens | weights (mlx) | predicted | KV (mlx) | predicted |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['family']} | {r['bits'] or 16} | {r['tokens']} | {r['weights']:,} | {r['weights_pred']:,} | "
                  f"{r['kv']:,} | {r['kv_pred']:,} |" for r in bad] + [""]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES), help="default: all")
    ap.add_argument("--bits", default=",".join(str(b or "none") for b in BITS), help="'none' = unquantized bf16")
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    families = a.families.split(",")
    bits = [None if b == "none" else int(b) for b in a.bits.split(",")]
    tokens = [int(t) for t in a.tokens.split(",")]
    import mlx_lm

    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            rows += measure(Path(tmp), family, bits, tokens)
    exact_w = sum(r["weights"] == r["weights_pred"] for r in rows)
    ran = [r for r in rows if r["kv"] is not None]
    exact_kv = sum(r["kv"] == r["kv_pred"] for r in ran)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"mlx_lm": mlx_lm.__version__, "command": "python bench/mlx_memory.py " + " ".join(argv or sys.argv[1:]),
                                 "seconds": round(time.time() - t0, 1), "rows": rows}, indent=1) + "\n")
    print("| family | bits | tokens | weights (mlx) | predicted | KV (mlx) | predicted |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['bits'] or 'bf16'} | {r['tokens']} | {r['weights']:,} | {r['weights_pred']:,} "
              f"| {r['kv'] if r['kv'] is None else format(r['kv'], ',')} | {r['kv_pred']:,} |")
    print(f"\n{len(rows)} rows: weights exact {exact_w}, KV exact {exact_kv} of {len(ran)} run "
          f"({time.time() - t0:.0f} s, mlx-lm {mlx_lm.__version__})")
    return 0 if exact_w == len(rows) and exact_kv == len(ran) else 1


if __name__ == "__main__":
    sys.exit(main())
