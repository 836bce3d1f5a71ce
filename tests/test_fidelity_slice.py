"""A slice of the fidelity grid (bench/fidelity.py) as assertions: a change to the memory model that
drifts from what llama.cpp really allocates fails here. Weights and KV must be exact (the bar is 1%),
the compute buffer within 10%. The allocator replay behind bench/trace_compute.py must reproduce
llama.cpp's own compute-buffer size, or the traces it prints would be fiction."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

pytest.importorskip("llama_cpp")

FAMILIES = ["gemma2", "gemma3_text", "gemma4_text", "gemma4_e", "gemma4_moe"]
SETTINGS = [
    dict(n_ctx=4096, n_parallel=1, type_k="f16", type_v="f16", flash_attn=True, swa_full=False, n_ubatch=512),
    dict(n_ctx=4096, n_parallel=4, type_k="q8_0", type_v="q8_0", flash_attn=True, swa_full=True, n_ubatch=128),
    dict(n_ctx=32768, n_parallel=1, type_k="f16", type_v="f16", flash_attn=False, swa_full=False, n_ubatch=512),
]


@pytest.fixture(scope="module")
def hw():
    from profiles.hardware import CPU, Hardware

    return Hardware("test host", [], 16 << 30, CPU(cores_physical=2, cores_logical=2, arch="x86_64"))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"ctx{s['n_ctx']}-np{s['n_parallel']}-{s['type_k']}-fa{int(s['flash_attn'])}")
def test_planner_matches_llamacpp(family, settings, tiny_gguf, hw):
    from bench.fidelity import measure_row
    from planner.types import RuntimeSettings

    s = RuntimeSettings(**settings, n_batch=512)
    row = measure_row(tiny_gguf(family, "f16"), s, hw, {"part": "ci", "model": family})
    m, p = row["measured"], row["predicted"]
    assert p["weights"] == m["weights"]
    assert p["kv"] == m["kv"]
    assert abs(p["compute"] - m["compute"]) <= 0.10 * m["compute"], (m["compute"], p["compute"])


@pytest.mark.parametrize("family,settings", [
    ("gemma3_text", SETTINGS[0]), ("gemma4_e", SETTINGS[1]), ("gemma4_moe", SETTINGS[2]), ("gemma2", SETTINGS[2]),
])
def test_allocator_replay_reproduces_llamacpp(family, settings, tiny_gguf):
    from bench.trace_compute import peak_report, replay, reserve_graph

    s = dict(settings)
    nodes, leafs, seen, reported = reserve_graph(
        tiny_gguf(family, "f16"), n_ctx=s["n_ctx"], n_ubatch=s["n_ubatch"], n_seq=s["n_parallel"],
        flash_attn=s["flash_attn"], type_k=s["type_k"], type_v=s["type_v"], swa_full=s["swa_full"])
    size, placements = replay(nodes, leafs, seen)
    assert reported > 0
    assert abs(size - reported) < 0.006 * 2**20  # llama.cpp logs the size to 0.01 MiB
    # no two tensors alive after the same node overlap (a parent reused in place ends where its child starts)
    for i in range(len(nodes)):
        alive = sorted((p.offset, p.offset + p.size) for p in placements if p.first <= i < p.last and p.size)
        assert all(a[1] <= b[0] for a, b in zip(alive, alive[1:]))
    assert "matches llama.cpp" in peak_report(nodes, placements, size, reported, 5)


def test_replay_allocator_merges_freed_blocks():
    from bench.trace_compute import Allocator

    a = Allocator(alignment=32)
    x, y, z = a.alloc(100), a.alloc(64), a.alloc(32)
    assert (x, y, z) == (0, 128, 192)
    a.free(x, 100)
    a.free(y, 64)  # merges with the block before it
    assert a.alloc(190) == 0  # fits the merged 192-byte hole, best fit over the open end
    assert a.alloc(1) == 224
    assert a.max_size == 256
