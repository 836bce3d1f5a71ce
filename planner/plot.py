"""Plots: memory vs context (stacked weights / KV / compute per KV type, the device budget as a line) and
predicted vs measured scatter for the fidelity results. matplotlib is imported here only ([plot] extra)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from planner.errors import BackendUnavailableError
from planner.memory import estimate_memory
from planner.policy import v_cache_allowed
from planner.types import ModelSpec, Plan
from profiles.hardware import Hardware

from profiles.units import GiB


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackendUnavailableError("plotting needs matplotlib", hint="pip install 'gemma-plan[plot]'") from None
    return plt


def context_points(spec: ModelSpec, limit: int) -> list[int]:
    pts, c = [], 512
    while c < limit:
        pts.append(c)
        c *= 2
    return pts + [limit]


def memory_vs_context(plan: Plan, spec: ModelSpec, hw: Hardware, path: str | Path, kv_types=("f16", "q8_0", "q4_0"),
                      margin: int = GiB) -> Path:
    """One panel per KV type: weights, KV and compute of the plan's busiest device against context."""
    plt = _pyplot()
    fmt = plan.fmt
    device = max(plan.memory.devices, key=lambda d: d.total_bytes).device
    kv_types = kv_types if plan.settings.engine == "llama.cpp" else (plan.settings.kv_cache_dtype,)
    fig, axes = plt.subplots(1, len(kv_types), figsize=(4.2 * len(kv_types), 3.6), sharey=True, squeeze=False)
    xs = context_points(spec, spec.ctx_train)
    for ax, kv in zip(axes[0], kv_types):
        rows = []
        for ctx in xs:
            s = dataclasses.replace(plan.settings, n_ctx=ctx, type_k=kv, type_v=kv)
            if not v_cache_allowed(plan.settings.engine, kv, s.flash_attn):
                continue
            mem = estimate_memory(spec, fmt, s, hw, margin)
            d = next((x for x in mem.devices if x.device == device), mem.devices[0])
            rows.append((ctx, d.weights_bytes / GiB, d.kv_bytes / GiB, (d.compute_bytes + d.output_bytes + d.overhead_bytes) / GiB,
                         (d.budget_bytes or 0) / GiB))
        if not rows:
            continue
        c, w, k, o, b = zip(*rows)
        ax.stackplot(c, w, k, o, labels=["weights", "KV cache", "compute + output + overhead"], alpha=0.85)
        ax.axhline(b[0], color="black", linestyle="--", linewidth=1, label=f"usable on {device}")
        ax.axvline(plan.ctx, color="gray", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_title(f"KV {kv}")
        ax.set_xlabel("context (tokens)")
    axes[0][0].set_ylabel("GiB")
    axes[0][0].legend(loc="upper left", fontsize=7)
    fig.suptitle(f"{spec.name} {plan.weight_format} on {plan.target} ({plan.engine})", fontsize=10)
    fig.tight_layout()
    import io

    from planner.outputs import write_file

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format=path.suffix[1:].lower() or "png")
    plt.close(fig)
    return write_file(path, buf.getvalue(), overwrite=True)  # a unique temp name, renamed: never through a link


def fidelity_scatter(rows: list[dict], path: str | Path) -> Path:
    """Predicted vs measured bytes per buffer kind, log-log, one marker per load."""
    plt = _pyplot()
    kinds = ("weights", "kv", "compute", "output")
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        pts = [(r["measured"][kind] / 2**20, r["predicted"][kind] / 2**20) for r in rows if r["measured"][kind] > 0]
        if not pts:
            continue
        m, p = zip(*pts)
        ax.scatter(m, p, s=8, alpha=0.6)
        lo, hi = min(m + p), max(m + p)
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(kind)
        ax.set_xlabel("measured MiB")
    axes[0][0].set_ylabel("predicted MiB")
    fig.suptitle("llama.cpp buffers: predicted vs measured", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
