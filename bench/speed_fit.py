"""Fit the speed model's constants on published measurements, check them on rows kept out of the fit.

    python bench/speed_fit.py            # writes planner/data/speed.json, bench/results/speed_fit.json,
                                         # docs/speed_scatter.png; prints in-sample and held-out errors

Rows: bench/data/calibration_rows.json and bench/data/speed_rows_collected.json. Each row's split
("fit" / "held-out") is ``planner.speed.row_split``, a salted hash of the row's identity (source,
hardware, model, quant, backend, tests), fixed before any fitting and written into the rows files;
the fit reads only "fit" rows. Predictions go through ``planner.speed.row_parts`` / ``decode_time`` /
``prefill_time``, the functions plans use, with candidate constants set in ``planner.speed._OVERRIDE``.

What is fitted, in order, on the fit rows of llama.cpp unless said otherwise:
1. per device class: memory efficiency and per-layer fixed cost (a grid minimizing the mean |log error|;
   classes with fewer than 3 rows take the pooled GPU per-layer cost and the median efficiency ratio);
2. per backend group with 2+ rows: a factor (median measured/predicted);
3. per engine other than llama.cpp with 2+ rows: decode and prefill factors;
4. the MoE factor (median over the MoE rows);
5. per class: prefill efficiency (median measured/predicted at efficiency 1; dense rows);
6. the MoE prefill factor (median over the MoE rows with a prefill rate, on the dense rule of active parameters).
CPU arithmetic is a nominal per-core rate (the unit) times each CPU class's fitted scale; a machine
that ran detect --bench uses its own llama.cpp measurement instead. The error table is measured/predicted
on the held-out rows (10th/90th percentiles per class and pooled); the caps are the best measured
rates per class over all rows, with their sources.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import speed as S  # noqa: E402

ROW_FILES = [ROOT / "bench/data/calibration_rows.json", ROOT / "bench/data/speed_rows_collected.json"]
OUT_TABLE = ROOT / "planner/data/speed.json"
OUT_RESULTS = ROOT / "bench/results/speed_fit.json"
CPU_KERNELS = ROOT / "bench/results/cpu_kernels.json"
PLOT = ROOT / "docs/speed_scatter.png"

LABELS = {
    "consumer_gpu": "discrete GPU", "datacenter_gpu": "datacenter HBM GPU", "apple": "Apple silicon (Metal / MLX)",
    "apu": "unified-memory PC (Strix Halo, DGX Spark)", "sbc": "Jetson and other boards with a GPU", "cpu": "desktop / laptop CPU",
    "phone_cpu": "phone CPU", "phone": "phone GPU / NPU", "sbc_cpu": "single-board computer CPU",
}
CPU_CLASSES = S.CPU_CLASSES
ERA_GRID = [round(1.15 ** i, 3) for i in range(0, 11)]  # 1 .. 4 x a current build's per-layer cost
ARITH_GRID = [round(0.25 * 1.25 ** i, 3) for i in range(20)]  # 0.25 .. 17 x the CI machine's per-core rates


def load_rows() -> list[dict]:
    rows = []
    for f in ROW_FILES:
        data = json.loads(f.read_text())
        changed = False
        urls = {k: v.get("url") for k, v in data.get("sources", {}).items() if isinstance(v, dict)}
        for r in data["rows"]:
            r["_url"] = r.get("source_url") or urls.get(r.get("source")) or r.get("source")
            sp = S.row_split(r)
            if r.get("split") != sp:
                r["split"], changed = sp, True
            r["_file"] = f.name
            rows.append(r)
        if changed:  # record the split in the data (without the helper key)
            clean = copy.deepcopy(data)
            for r in clean["rows"]:
                r.pop("_file", None)
                r.pop("_url", None)
            clean.setdefault("split_rule", "planner.speed.row_split: sha256 of the row identity; about a third held out")
            f.write_text(json.dumps(clean, indent=1, ensure_ascii=False) + "\n")
    return rows


def base_table() -> dict:
    classes = {c: {"mem_eff": 0.7, "layer_s": 0.0, "pp_eff": 0.3, "pp_flops_per_byte": 50.0, "arith_scale": 1.0,
                   "label": LABELS[c], "n_fit": 0} for c in LABELS}
    return {
        "description": "Speed model constants (planner/speed.py), fitted by bench/speed_fit.py on the fit split of "
                       "bench/data/*.json; errors are measured/predicted on the held-out split.",
        "classes": classes, "backends": {}, "eras": {}, "engines": {}, "moe": {"factor": 1.0, "n_fit": 0},
        # nominal per-core rates (one 256-bit FMA unit at 3 GHz: 8 fp32 lanes x 2 x 3e9 = 48 GFLOP/s; decode ops
        # per weight divide the same rate); they set the unit only: each CPU class's arith_scale and pp_eff are fitted
        "cpu_kernels": {"ops_per_s_per_core": 48e9, "flops_per_core": 48e9,
                        "families": {"x86": {"decode": 1.0, "prefill": 1.0}, "arm": {"decode": 1.0, "prefill": 1.0}},
                        "source": "nominal 48 GFLOP/s per core, scaled per class by the fit"},
        "caps": {}, "errors": {},
    }


def _ratio_stats(ratios: list[float]) -> dict:
    r = sorted(ratios)

    def q(p):
        return r[min(len(r) - 1, max(0, int(round(p * (len(r) - 1)))))]

    return {"n": len(r), "p10_ratio": round(q(0.1), 3), "median_ratio": round(q(0.5), 3), "p90_ratio": round(q(0.9), 3)}


def _mean_abs_log(pairs) -> float:
    return statistics.fmean(abs(math.log(p / m)) for p, m in pairs) if pairs else 0.0


def fit(rows: list[dict]) -> tuple[dict, list[dict]]:
    table = base_table()
    S._OVERRIDE = table
    parts = {id(r): S.row_parts(r) for r in rows}
    usable = [r for r in rows if "skipped" not in parts[id(r)]]
    fit_rows = [r for r in usable if r["split"] == "fit"]

    def tg_pairs(rs):
        out = []
        for r in rs:
            if r.get("tg_tps"):
                p = S.predict_row(r, parts[id(r)])["tg"]
                if p > 0:
                    out.append((p, r["tg_tps"]))
        return out

    def pp_pairs(rs):
        out = []
        for r in rs:
            if r.get("pp_tps"):
                p = S.predict_row(r, parts[id(r)])["pp"]
                if p:
                    out.append((p, r["pp_tps"]))
        return out

    llama = [r for r in fit_rows if S.row_engine(r) == "llama.cpp" and not parts[id(r)]["moe"]]
    by_class: dict[str, list] = {}
    for r in llama:
        by_class.setdefault(parts[id(r)]["cls"], []).append(r)

    def fit_classes() -> None:
            # 1. pooled per-layer cost over GPU classes, then per class (efficiency, per-layer cost)
            effs = [x / 100 for x in range(20, 101, 2)]
            layer_grid = [x * 1e-6 for x in range(0, 161, 5)]
            gpu_rows = [r for c, rs in by_class.items() if c not in CPU_CLASSES for r in rs]
            best = (1e9, 0.0)
            for ls in layer_grid:
                err = 0.0
                for c, rs in by_class.items():
                    if c in CPU_CLASSES:
                        continue
                    table["classes"][c]["layer_s"] = ls
                    e = min((_try(table, c, eff, rs, tg_pairs), eff) for eff in effs)
                    table["classes"][c]["mem_eff"] = e[1]
                    err += e[0] * len(rs)
                if err < best[0]:
                    best = (err, ls)
            pooled_layer = best[1]
            for c in table["classes"]:
                rs = by_class.get(c, [])
                cls = table["classes"][c]
                cls["n_fit"] = len(rs)
                cls["layer_s"] = 0.0 if c in CPU_CLASSES else pooled_layer
                if not rs:
                    continue
                if c in CPU_CLASSES:  # memory efficiency and the scale of the per-core arithmetic rates
                    cand = min((_try(table, c, eff, rs, tg_pairs, None, a), eff, a) for eff in effs for a in ARITH_GRID)
                    cls["mem_eff"], cls["arith_scale"] = cand[1], cand[2]
                elif len(rs) >= 3 and len({round(parts[id(r)]["bytes_per_token"] / 1e9) for r in rs}) >= 2:
                    cand = min((_try(table, c, eff, rs, tg_pairs, ls), eff, ls) for eff in effs for ls in layer_grid)
                    cls["mem_eff"], cls["layer_s"] = cand[1], cand[2]
                else:
                    cand = min((_try(table, c, eff, rs, tg_pairs), eff) for eff in effs)
                    cls["mem_eff"] = cand[1]
            # classes without fit rows borrow the pooled efficiency of their kind
            pooled_gpu = statistics.median([table["classes"][c]["mem_eff"] for c in by_class if c not in CPU_CLASSES] or [0.7])
            pooled_cpu = statistics.median([table["classes"][c]["mem_eff"] for c in by_class if c in CPU_CLASSES] or [0.6])
            for c, cls in table["classes"].items():
                if not by_class.get(c):
                    cls["mem_eff"] = pooled_cpu if c in CPU_CLASSES else pooled_gpu
                    cls["borrowed"] = True


    for _pass in range(2):  # classes, then backend groups and build years, then classes again with those in place
        fit_classes()

        # 2. backend groups, 3. engines (decode)
        groups: dict[str, list] = {}
        for r in fit_rows:
            if S.row_engine(r) == "llama.cpp" and not parts[id(r)]["moe"]:
                groups.setdefault(S.backend_key(r.get("backend") or ""), []).append(r)
        for key, rs in groups.items():
            pairs = tg_pairs(rs)
            if key and key != "CPU" and len(pairs) >= 2:
                f = table["backends"].get(key, {}).get("factor", 1.0) * statistics.median(m / p for p, m in pairs)
                if abs(f - 1) > 0.05:
                    table["backends"][key] = {"factor": round(f, 3), "n_fit": len(pairs)}
                else:
                    table["backends"].pop(key, None)
        # build years (rows of 2023/2024 llama.cpp builds): their per-layer fixed cost relative to a current build's,
        # one factor per year over all GPU classes, chosen with the classes refitted for each candidate (the year and
        # a class's own per-layer cost are only told apart by classes with rows of both)
        if _pass == 0:
            gpu_llama = [r for r in llama if parts[id(r)]["cls"] not in CPU_CLASSES]
            later = None  # newest first: a year with fewer than 3 rows takes the next later year's factor
            for era in sorted({S.build_era(r.get("backend") or "") for r in gpu_llama} - {""}, reverse=True):
                n = sum(1 for r in gpu_llama if S.build_era(r.get("backend") or "") == era)
                if n < 3:
                    if later is not None:
                        table["eras"][era] = {"layer_factor": later, "n_fit": n, "borrowed": True}
                    continue
                scores = []
                for f in ERA_GRID:
                    table["eras"][era] = {"layer_factor": f, "n_fit": n}
                    fit_classes()
                    scores.append((_mean_abs_log(tg_pairs(gpu_llama)), f))
                later = min(scores)[1]
                table["eras"][era] = {"layer_factor": later, "n_fit": n}
    engines: dict[str, list] = {}
    for r in fit_rows:
        if S.row_engine(r) != "llama.cpp":
            engines.setdefault(S.engine_key(S.row_engine(r), parts[id(r)]["cls"] in CPU_CLASSES), []).append(r)
    for e, rs in engines.items():
        tp, pp = tg_pairs(rs), pp_pairs(rs)
        if len(tp) >= 2:
            table["engines"][e] = {"factor": round(statistics.median(m / p for p, m in tp), 3), "n_fit": len(tp)}
    # 4. MoE
    moe = tg_pairs([r for r in fit_rows if parts[id(r)]["moe"]])
    if moe:
        table["moe"] = {"factor": round(statistics.median(m / p for p, m in moe), 3), "n_fit": len(moe)}
    # 5. prefill: efficiency on the device's FLOPs where a row's device has a figure, else FLOP/s per byte/s
    pp_by_class: dict[str, list] = {}
    for r in fit_rows:
        if S.row_engine(r) == "llama.cpp" and r.get("pp_tps") and not parts[id(r)]["moe"]:
            pp_by_class.setdefault(parts[id(r)]["cls"], []).append(r)
    for c in table["classes"]:
        table["classes"][c]["pp_eff"] = 1.0
        table["classes"][c]["pp_flops_per_byte"] = 1.0
    eff_ratios, fpb_ratios = [], []
    for c, rs in pp_by_class.items():
        with_flops = [r for r in rs if parts[id(r)]["prefill"][0].flops]
        without = [r for r in rs if not parts[id(r)]["prefill"][0].flops]
        pairs = pp_pairs(with_flops)
        if pairs:
            table["classes"][c]["pp_eff"] = round(statistics.median(m / p for p, m in pairs), 4)
            table["classes"][c]["n_fit_prefill"] = len(pairs)
            eff_ratios.append(table["classes"][c]["pp_eff"])
        pairs = pp_pairs(without)
        if pairs:
            table["classes"][c]["pp_flops_per_byte"] = round(statistics.median(m / p for p, m in pairs), 3)
            table["classes"][c]["n_fit_prefill_bw"] = len(pairs)
            fpb_ratios.append(table["classes"][c]["pp_flops_per_byte"])
    for c, cls in table["classes"].items():
        if not cls.get("n_fit_prefill"):
            cls["pp_eff"] = round(statistics.median(eff_ratios), 4) if eff_ratios else 0.3
        if not cls.get("n_fit_prefill_bw"):
            cls["pp_flops_per_byte"] = round(statistics.median(fpb_ratios), 3) if fpb_ratios else 20.0
        if not cls.get("n_fit_prefill") and not cls.get("n_fit_prefill_bw"):
            cls["prefill_borrowed"] = True
    for e, rs in engines.items():
        pp = pp_pairs(rs)
        if len(pp) >= 2:
            table["engines"].setdefault(e, {"factor": 1.0, "n_fit": 0})["pp_factor"] = round(statistics.median(m / p for p, m in pp), 3)
    # 6. MoE prefill (llama.cpp rows): median measured/predicted over the dense rule on active parameters
    moe_pp = pp_pairs([r for r in fit_rows if parts[id(r)]["moe"] and S.row_engine(r) == "llama.cpp"])
    if len(moe_pp) >= 2:
        table["moe"]["pp_factor"] = round(statistics.median(m / p for p, m in moe_pp), 3)
        table["moe"]["n_fit_prefill"] = len(moe_pp)
    for c in table["classes"].values():
        c["mem_eff"] = round(c["mem_eff"], 3)
        c["layer_s"] = round(c["layer_s"], 7)

    # error table (held-out), caps (all rows), per-row results
    scored = [dict(S.score_row(r), split=r["split"], file=r["_file"]) for r in rows]
    table["errors"] = errors(scored)
    table["caps"] = caps(rows, parts)
    S._OVERRIDE = None
    return table, scored


def _try(table, c, eff, rs, tg_pairs, ls=None, arith=None) -> float:
    table["classes"][c]["mem_eff"] = eff
    if ls is not None:
        table["classes"][c]["layer_s"] = ls
    if arith is not None:
        table["classes"][c]["arith_scale"] = arith
    return _mean_abs_log(tg_pairs(rs))


def errors(scored: list[dict]) -> dict:
    out = {}
    for key, name in (("tg", "decode"), ("pp", "prefill")):
        held = [s for s in scored if s["split"] == "held-out" and s.get(f"predicted_{key}_tps") and s.get(f"measured_{key}_tps")]
        ratios = [s[f"measured_{key}_tps"] / s[f"predicted_{key}_tps"] for s in held]
        by = {}
        for s in held:
            by.setdefault(s["efficiency_class"], []).append(s[f"measured_{key}_tps"] / s[f"predicted_{key}_tps"])
        out[name] = {"all": _ratio_stats(ratios) if ratios else {"n": 0, "p10_ratio": 0.5, "median_ratio": 1.0, "p90_ratio": 1.5},
                     "by_class": {c: _ratio_stats(v) for c, v in sorted(by.items())}}
    return out


def caps(rows: list[dict], parts: dict) -> dict:
    out: dict = {}
    for r in rows:
        rp = parts[id(r)]
        cls = rp.get("cls") or r.get("device_class")
        if not cls:
            continue
        for key, kind in (("tg_tps", "decode"), ("pp_tps", "prefill")):
            v = r.get(key)
            if not v:
                continue
            cur = out.setdefault(cls, {}).get(kind)
            if cur is None or v > cur["tokens_per_s"]:
                out[cls][kind] = {"tokens_per_s": v, "model": r.get("model"), "hardware": r.get("hardware") or r.get("hardware_id"),
                                  "backend": r.get("backend"), "source": r.get("_url")}
    return out


def plot(scored: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    classes = sorted({s["efficiency_class"] for s in scored if "efficiency_class" in s})
    cmap = plt.get_cmap("tab10")
    for ax, key, title in ((axes[0], "tg", "decode tok/s"), (axes[1], "pp", "prefill tok/s")):
        for i, c in enumerate(classes):
            for split, marker in (("fit", "o"), ("held-out", "^")):
                pts = [(s[f"measured_{key}_tps"], s[f"predicted_{key}_tps"]) for s in scored
                       if s.get("efficiency_class") == c and s["split"] == split and s.get(f"predicted_{key}_tps") and s.get(f"measured_{key}_tps")]
                if pts:
                    ax.scatter(*zip(*pts), marker=marker, color=cmap(i % 10), label=f"{c} ({split})", s=28,
                               facecolors="none" if split == "held-out" else cmap(i % 10))
        lo, hi = ax.get_xlim()
        lo, hi = min(lo, ax.get_ylim()[0]), max(hi, ax.get_ylim()[1])
        ax.set_xscale("log")
        ax.set_yscale("log")
        xs = [max(lo, 0.5), hi]
        ax.plot(xs, xs, "k-", lw=0.8)
        ax.plot(xs, [x * 1.25 for x in xs], "k:", lw=0.6)
        ax.plot(xs, [x / 1.25 for x in xs], "k:", lw=0.6)
        ax.set_xlabel(f"measured {title}")
        ax.set_ylabel(f"predicted {title}")
        ax.set_title(f"{title}: circles fit, open triangles held out; dotted +-25%")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


CHECK = ROOT / "bench/results/speed_cpu_check.json"
ROWS_CMD = ("gemma-plan bench speed --rows bench/data/calibration_rows.json --rows bench/data/speed_rows_collected.json")


def markdown_section() -> list[str]:
    """docs/accuracy.md's speed sections, from bench/results/speed_fit.json and speed_cpu_check.json."""
    res = json.loads(OUT_RESULTS.read_text())
    table = json.loads(OUT_TABLE.read_text())
    sm = res["summary"]
    lines = ["## Speed against published measurements: fitted, then held out", "",
             "Rows: `bench/data/calibration_rows.json` (from the shared hardware reference) and "
             "`bench/data/speed_rows_collected.json` (collected for this model, each with its page). Each row's `split` is "
             "a salted hash of its identity (`planner.speed.row_split`, about a third held out), written into the files "
             "before fitting. `python bench/speed_fit.py` fits the constants of `planner/data/speed.json` on the fit rows "
             "only, through the same `decode_time`/`prefill_time` the plans use; then", "",
             f"    {ROWS_CMD} --split held-out", "",
             "scores the rows no constant was fitted on (`--split fit` the in-sample ones; the JSON output has both).", "",
             "| rows | decode n | decode median abs % | decode p90 % | prefill n | prefill median abs % | prefill p90 % |",
             "|---|---|---|---|---|---|---|"]
    for sp, name in (("fit", "in-sample (fit)"), ("held-out", "held-out")):
        t, p = sm[sp]["tg"], sm[sp]["pp"]
        lines.append(f"| {name} | {t['n']} | {t['median_abs_error_pct']} | {t['p90_abs_error_pct']} | {p['n']} | "
                     f"{p['median_abs_error_pct']} | {p['p90_abs_error_pct']} |")
    h = sm["held-out"]
    goals = [("decode median <= 10%", h["tg"]["median_abs_error_pct"] <= 10), ("decode p90 <= 25%", h["tg"]["p90_abs_error_pct"] <= 25),
             ("prefill median <= 25%", h["pp"]["median_abs_error_pct"] <= 25)]
    lines += ["", "Held-out against the goals: " + "; ".join(f"{g}: {'met' if ok else 'NOT met'}" for g, ok in goals) + ".", "",
              "By device class (held-out rows; in-sample in brackets):", "",
              "| class | decode n | decode median % | decode p90 % | prefill n | prefill median % | prefill p90 % |",
              "|---|---|---|---|---|---|---|"]
    classes = sorted(set(sm["held-out"]["tg"]["by_class"]) | set(sm["fit"]["tg"]["by_class"]))
    for c in classes:
        cells = []
        for key in ("tg", "pp"):
            ho = sm["held-out"][key]["by_class"].get(c, {})
            fi = sm["fit"][key]["by_class"].get(c, {})
            cells += [f"{ho.get('n', 0)} [{fi.get('n', 0)}]", f"{ho.get('median', '-')} [{fi.get('median', '-')}]",
                      f"{ho.get('p90', '-')} [{fi.get('p90', '-')}]"]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "![predicted vs measured by device class](speed_scatter.png)", "",
              "Every printed estimate carries the range these held-out rows give: the 10th to 90th percentile of "
              "measured/predicted for its class (all held-out rows where the class has fewer than 3), in "
              "`plan.speed.decode_range_tokens_per_s` / `prefill_range_tokens_per_s` (docs/json.md). No plan prints a "
              "rate above the best published measurement of its class (`caps` in speed.json, with the source of each; "
              "tests/test_speed_model.py checks every packaged target with every catalog model). Scoring rows does not "
              "apply the caps, which come from these same rows.", "",
              "Fitted constants (fit rows): " + "; ".join(
                  f"{c} memory efficiency {v['mem_eff']}, per-layer cost {v['layer_s'] * 1e6:.0f} us"
                  + (f", arithmetic x{v.get('arith_scale', 1)}" if c in CPU_CLASSES else "")
                  + (" (borrowed)" if v.get("borrowed") else "") for c, v in table["classes"].items()) + ".",
              "Backend factors: " + (", ".join(f"{k} {v['factor']} (n={v['n_fit']})" for k, v in table["backends"].items()) or "none") +
              "; engines: " + (", ".join(f"{k} {v['factor']} (prefill {v.get('pp_factor', 1.0)})" for k, v in table["engines"].items()) or "none") +
              f"; MoE decode {table['moe']['factor']} (n={table['moe']['n_fit']}), prefill {table['moe'].get('pp_factor', 1.0)} "
              f"(n={table['moe'].get('n_fit_prefill', 0)}); per-layer cost of older llama.cpp builds: " +
              (", ".join(f"{k} x{v['layer_factor']} (n={v['n_fit']}{', borrowed from the next year' if v.get('borrowed') else ''})"
                         for k, v in sorted(table.get("eras", {}).items())) or "none") + ".", "",
              "Weak spots: prefill on GPUs rests on the targets' FP16 figures: tensor rates for NVIDIA and AMD, for Apple "
              "GPU cores x 128 ALUs x 2 x clock (M5 Max: x4 for its GPU neural accelerators, Apple's figure; its core count "
              "and clock are UNVERIFIED). llama.cpp's quantized matmuls run on INT8 tensor cores with Ampere-style mma "
              "instructions: an H100 (sm_90) reaches about half the share of its FP16 figure that an A100 does (the held-out "
              "H100 SXM prefill is over-predicted about 2x; two H100 PCIe fit rows are too few to model it apart), and a "
              "power-limited workstation card (RTX 6000 Ada, 300 W) reaches less than its figure. Jetson, DGX Spark and "
              "phone GPUs have no FLOPs figure and use a FLOP/s-per-byte/s fit. The per-layer factor of 2023/2024 builds is "
              "one number across GPU classes; the MoE prefill factor rests on Strix Halo rows only; LiteRT-LM, MediaPipe "
              "and MLX have few rows each.", ""]
    runs = sorted(CHECK.parent.glob("speed_cpu_check_run*.json")) + ([CHECK] if CHECK.exists() else [])
    if runs:
        lines += ["## Speed on this machine's CPU, measured with llama.cpp", ""]
    busy, idle = [], []
    for n, path in enumerate(runs, 1):
        c = json.loads(path.read_text())
        loads = [x for r in c["rows"] for x in r["load_average"]]
        quiet = max(loads) <= c["threads"] + 0.5  # nothing but the check's own threads running
        (idle if quiet else busy).append(n)
        lines += [f"Run {n} of {len(runs)} (`{path.relative_to(ROOT)}`)" + (", with nothing else running on the machine" if quiet else "")
                  + ":", "",
                  "`python bench/speed_cpu.py check`: `gemma-plan detect --bench` measures llama.cpp (llama-cpp-python, CPU "
                  f"build, {c['threads']} threads) on zero-weight gemma-3-4b slices of 2 and 8 layers, Q4_K_M and Q8_0 "
                  f"({c['detect_bench_seconds']:.0f} s); then, for slices of other depths, "
                  "`gemma-plan estimate --model SLICE.gguf --target auto` (which reads that measurement) is compared with "
                  f"llama.cpp's own timing of the same file (medians of {c.get('repeats', 4)} {c.get('prompt_tokens', 128)}-token prompts and of the "
                  f"{c.get('repeats', 4) * c.get('decode_tokens', 16)} tokens decoded after them). The 1-minute load average "
                  "before and after each timing is shown.", "",
                  "| slice | file | basis | decode measured | decode predicted | error | prefill measured | prefill predicted | error | load |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| {r['model']} | {r['ftype']} | {r['basis']} | {r['measured_tg_tps']} | {r['predicted_tg_tps']} | "
                         f"{r['tg_error_pct']:+.1f}% | {r['measured_pp_tps']} | {r['predicted_pp_tps']} | {r['pp_error_pct']:+.1f}% | "
                         f"{r['load_average'][0]} -> {r['load_average'][1]} |")
        tg_ok = all(abs(r["tg_error_pct"]) <= 15 for r in c["rows"])
        pp_ok = all(abs(r["pp_error_pct"]) <= 15 for r in c["rows"])
        lines += ["", f"Within 15%: decode {'yes' if tg_ok else 'NO'}, prefill {'yes' if pp_ok else 'NO'}, at a load average of "
                  f"{min(loads):.1f}-{max(loads):.1f} on {c['threads']} cores.", ""]
    if busy:
        def listed(ns: list[int]) -> str:
            return " and ".join([", ".join(str(n) for n in ns[:-1]), str(ns[-1])] if len(ns) > 1 else [str(ns[0])])

        which = listed(busy)
        lines += [f"Run{'s' if len(busy) > 1 else ''} {which} ran while other jobs kept this machine above its core count. "
                  "llama.cpp's threads wait for one another at every operation, so with more runnable processes than cores "
                  "the time of a layer depends on who else runs that minute, and the per-layer time `detect --bench` measures "
                  "does not carry over to a run a few minutes later. "
                  + (f"Run{'s' if len(idle) > 1 else ''} {listed(idle)}, on the idle machine, answer"
                     f"{'' if len(idle) > 1 else 's'} the 15% question; " if idle else "The 15% goal is not shown here; ")
                  + "`detect --bench` prints the load average it measured at, so a user can see when to measure again.", ""]
    return lines


def splice_docs(path: Path = ROOT / "docs/accuracy.md") -> None:
    """Replace the speed sections of docs/accuracy.md (from the first '## Speed' heading to the next other heading)."""
    text = path.read_text().split("\n")
    start = next(i for i, l in enumerate(text) if l.startswith("## Speed"))
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ") and not text[i].startswith("## Speed")), len(text))
    path.write_text("\n".join(text[:start] + markdown_section() + text[end:]))


def main() -> None:
    rows = load_rows()
    table, scored = fit(rows)
    OUT_TABLE.write_text(json.dumps(table, indent=1) + "\n")
    S._packaged_table.cache_clear()
    OUT_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    summary = {sp: S._summary([s for s in scored if s["split"] == sp]) for sp in ("fit", "held-out")}
    OUT_RESULTS.write_text(json.dumps({"summary": summary, "rows": scored}, indent=1) + "\n")
    for sp in ("fit", "held-out"):
        for key, name in (("tg", "decode"), ("pp", "prefill")):
            s = summary[sp][key]
            print(f"{sp:8s} {name:7s}: n={s['n']:3d} median |err| {s['median_abs_error_pct']}% p90 {s['p90_abs_error_pct']}%")
    try:
        plot(scored, PLOT)
        print(f"plot: {PLOT}")
    except ImportError:
        print("matplotlib missing: no plot (pip install -e .[plot])")
    if "--docs" in sys.argv:
        splice_docs()
        print("docs/accuracy.md speed sections rewritten")


if __name__ == "__main__":
    main()
