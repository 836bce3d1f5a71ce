"""The vLLM plan's KV numbers against vLLM 0.33's own KV planning code.

vLLM's grouping, block and concurrency functions (v1/core/kv_cache_planning.py, kv_cache_utils.py)
are pure Python; they run here on a CPU-only machine (VLLM_TARGET_DEVICE=cpu, installed from
.ci/vllm.txt). The layer specs are built from the catalog's raw model configs the way vLLM's Gemma
models build them (gemma3.py / gemma4.py: per-layer head size and KV heads, sliding window, KV-shared
layers without a cache), per pipeline stage with vLLM's get_pp_indices; the pool each worker offers
is the plan's. vLLM then groups the layers, sizes the blocks, checks the start-up condition and
reports the concurrency it would log, and the plan must agree exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from types import SimpleNamespace

import pytest

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

from planner.catalog import get_model  # noqa: E402
from planner.formats import parse_format  # noqa: E402
from planner.memory import DEFAULT_MARGIN  # noqa: E402
from planner.search import max_context, plan  # noqa: E402
from planner.types import RuntimeSettings  # noqa: E402
from profiles.targets import load_target  # noqa: E402

MODELS = ["gemma-3-4b", "gemma-3-12b", "gemma-3-27b", "gemma-4-e2b", "gemma-4-e4b", "gemma-4-12b", "gemma-4-26b-a4b", "gemma-4-31b"]
# (target, GPUs, tensor parallel, pipeline parallel)
LAYOUTS = [("l4", 1, 1, 1), ("a6000", 1, 1, 1), ("h100", 1, 1, 1), ("h100", 2, 2, 1), ("h100", 2, 1, 2),
           ("h100", 8, 8, 1), ("h100", 8, 4, 2)]


@pytest.fixture(scope="module")
def v():
    """vLLM's own modules (imported once: about 35 s)."""
    import torch
    from vllm.config import CacheConfig, ParallelConfig, SchedulerConfig, VllmConfig
    from vllm.distributed.utils import get_pp_indices
    from vllm.v1.core import kv_cache_planning as kp
    from vllm.v1.core.kv_cache_config_builder import get_kv_cache_config_builder
    from vllm.v1.core.kv_cache_utils import generate_scheduler_kv_cache_config, get_kv_cache_capacity
    from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec
    return SimpleNamespace(**locals())


def _entry(name: str) -> dict:
    data = json.loads((__import__("pathlib").Path(__file__).parents[1] / "planner/data/models.json").read_text())
    e = next(m for m in data["models"] if m["name"] == name)
    return e.get("text_config", e)


def vllm_config(v, s: RuntimeSettings, max_len: int):
    """A VllmConfig for the KV planning functions: vLLM's own cache, parallel and scheduler configs;
    max_concurrent_batches / max_in_flight_tokens evaluated by VllmConfig's own properties with the
    0.33 defaults (async scheduling on, the V2 model runner); layout LBNHC, the default preference of
    the attention backends Gemma runs on (v1/attention/backends/utils.py _DEFAULT_LAYOUT_PREFERENCE)."""
    cc = v.CacheConfig(block_size=16, cache_dtype="fp8" if s.kv_cache_dtype.startswith("fp8") else "auto")
    cc.kv_cache_layout = "LBNHC"
    pc = v.ParallelConfig(tensor_parallel_size=s.tensor_parallel, pipeline_parallel_size=s.pipeline_parallel)
    sc = v.SchedulerConfig(max_num_batched_tokens=s.max_num_batched_tokens, max_num_seqs=s.max_num_seqs,
                           max_model_len=max_len, is_encoder_decoder=False, async_scheduling=True)
    cfg = SimpleNamespace(
        cache_config=cc, parallel_config=pc, scheduler_config=sc,
        model_config=SimpleNamespace(max_model_len=max_len, original_max_model_len=max_len, supports_kv_cache_grouping=False),
        attention_config=SimpleNamespace(hisparse_config=None), speculative_config=None, diffusion_config=None,
        device_config=SimpleNamespace(device_type="cuda"), use_v2_model_runner=True, num_prefill_lookahead_tokens=0,
    )
    cfg.max_concurrent_batches = v.VllmConfig.max_concurrent_batches.fget(cfg)
    cfg.max_in_flight_tokens = v.VllmConfig.max_in_flight_tokens.fget(cfg)
    return cfg


def layer_specs(v, name: str, s: RuntimeSettings) -> list[dict]:
    """Per pipeline stage: {layer name: KVCacheSpec} as vLLM's Gemma attention layers report them."""
    import torch
    c = _entry(name)
    types = c["layer_types"]
    L = int(c["num_hidden_layers"])
    types = [("sliding" if t == "S" else "full") for t in types] if isinstance(types, str) else \
        [("sliding" if "sliding" in t else "full") for t in types]
    gemma4 = str(c.get("model_type", "")).startswith("gemma4")
    n_shared = int(c.get("num_kv_shared_layers") or 0) if gemma4 else 0
    first_shared = L - n_shared
    dtype = torch.float8_e4m3fn if s.kv_cache_dtype.startswith("fp8") else torch.bfloat16
    tp = s.tensor_parallel
    specs = {}
    for i in range(L):
        if i >= first_shared:
            continue  # kv_sharing_target_layer_name: reads an earlier layer's cache, no spec of its own
        full = types[i] == "full"
        heads, hd = int(c["num_key_value_heads"]), int(c["head_dim"])
        if gemma4 and full:
            # Gemma4TextConfig.per_layer_config: global_head_dim, and the global KV heads with attention_k_eq_v
            hd = int(c.get("global_head_dim") or hd)
            if c.get("attention_k_eq_v"):
                heads = int(c.get("num_global_key_value_heads") or heads)
        kw = dict(block_size=16, num_kv_heads=max(1, heads // tp), head_size=hd, dtype=dtype)
        specs[f"model.layers.{i}.self_attn.attn"] = (v.FullAttentionSpec(**kw) if full
                                                     else v.SlidingWindowSpec(sliding_window=int(c["sliding_window"]), **kw))
    out = []
    for p in range(s.pipeline_parallel):
        start, end = v.get_pp_indices(L, p, s.pipeline_parallel)
        out.append({k: sp for k, sp in specs.items() if start <= int(k.split(".")[2]) < end})
    return out


def vllm_kv(v, name: str, s: RuntimeSettings, available: list[int]) -> dict:
    """What vLLM computes for these specs and per-worker pools (get_kv_cache_configs and the capacity it logs);
    max_model_len: vLLM's estimate of the longest request the pools hold, searched up to the trained maximum
    (the search vLLM runs for its error message and for --max-model-len auto)."""
    try:
        return _vllm_kv(v, name, s, available)
    except ValueError as exc:  # raised while planning, before the start-up check
        return {"accepts": False, "error": str(exc), "groups": None, "max_model_len": 0}


def _vllm_kv(v, name: str, s: RuntimeSettings, available: list[int]) -> dict:
    cfg = vllm_config(v, s, s.n_ctx)
    cfg_max = vllm_config(v, s, get_model(name)[0].ctx_train)
    per_stage = layer_specs(v, name, s)
    workers = [per_stage[i // s.tensor_parallel] for i in range(len(available))]
    groups = v.kp.get_global_kv_cache_groups(cfg, workers)
    out = {"groups": [(type(g.kv_cache_spec).__name__, g.kv_cache_spec.block_size, len(g.layer_names)) for g in groups]}
    builder = v.get_kv_cache_config_builder(cfg)
    projected = [v.kp._project_kv_cache_groups_to_worker(groups, w) for w in workers]
    est = []
    for g, a in zip(projected, available):
        check = a - v.kp._pool_bytes_per_block_from_builder(builder, cfg, g)
        est.append(v.kp._estimate_max_model_len_from_groups(builder, cfg_max, g, check) if check > 0 else 0)
    out["max_model_len"] = min(est)
    try:
        configs = v.kp.get_kv_cache_configs(cfg, workers, available, groups)
    except ValueError as exc:
        out["accepts"] = False
        out["error"] = str(exc)
        return out
    sched = v.generate_scheduler_kv_cache_config(configs)
    tokens, conc = v.get_kv_cache_capacity(cfg, sched)
    out.update(accepts=True, num_blocks=configs[0].num_blocks, tokens=tokens, concurrency=conc,
               blocks_per_request=sum(-(-g.kv_cache_spec.max_memory_usage_bytes(cfg) // g.kv_cache_spec.page_size_bytes)
                                      for g in sched.kv_cache_groups))
    return out


def _hw(target: str, n: int):
    hw = load_target(target)
    return dataclasses.replace(hw, devices=[hw.devices[0]] * n, name=f"{n}x-{target}" if n > 1 else hw.name)


def _compare(v, name, fmt, s, hw):
    spec = get_model(name)[0]
    p = plan(spec, parse_format(fmt, "vllm"), s, hw, with_speed=False)
    assert not p.fits or p.memory.kv_cells["vllm_accepts"]
    gpus = p.memory.devices
    available = [max(0, d.detail["available_kv_bytes"]) for d in gpus]
    got = vllm_kv(v, name, s, available)
    kv = p.memory.kv_cells
    if got["groups"] is not None:
        assert [(g["type"], g["block_size"], g["layers"]) for g in kv["groups"]] == \
            [("sliding" if t == "SlidingWindowSpec" else "full", b, n) for t, b, n in got["groups"]]
    assert kv["max_model_len"] == got["max_model_len"], (name, hw.name, s.n_ctx)
    assert kv["vllm_accepts"] == got["accepts"], (name, hw.name, s.n_ctx, got.get("error"))
    if got["accepts"]:
        assert kv["num_blocks"] == got["num_blocks"]
        assert kv["blocks_per_request"] == got["blocks_per_request"]
        assert kv["kv_cache_tokens"] == got["tokens"]
        assert kv["max_concurrency"] == round(got["concurrency"], 4)
    else:
        assert not p.fits
        m = re.search(r"estimated maximum model length is (\d+)", got["error"])
        if m:  # vLLM searches up to the requested length there
            assert int(m.group(1)) == min(kv["max_model_len"], s.n_ctx)
    return p, got


@pytest.mark.parametrize("target,n,tp,pp", LAYOUTS)
def test_plan_kv_equals_vllm_kv_planning(v, target, n, tp, pp):
    hw = _hw(target, n)
    for name in MODELS:
        spec = get_model(name)[0]
        if spec.layers[0].n_head % tp:
            continue
        for fmt in ("bf16", "gptq-int4"):
            s = RuntimeSettings(engine="vllm", tensor_parallel=tp, pipeline_parallel=pp, kv_cache_dtype="auto",
                                n_ctx=min(32768, spec.ctx_train))
            s = dataclasses.replace(s, type_k="auto", type_v="auto")
            p, got = _compare(v, name, fmt, s, hw)
            # the longest context the planner offers (with its default margin) is one vLLM starts with;
            # a plan that fits is never one vLLM refuses
            best = max_context(spec, parse_format(fmt, "vllm"), s, hw, DEFAULT_MARGIN)
            if best:
                pb, gb = _compare(v, name, fmt, dataclasses.replace(s, n_ctx=best), hw)
                assert pb.fits and gb["accepts"]
            over = p.memory.kv_cells["max_model_len"] + 1
            if over <= spec.ctx_train and p.memory.kv_cells["max_model_len"]:
                p2, got2 = _compare(v, name, fmt, dataclasses.replace(s, n_ctx=over), hw)
                assert not got2["accepts"] and not p2.fits


def test_fp8_kv_and_long_context(v):
    hw = _hw("h100", 1)
    for name in ("gemma-3-27b", "gemma-4-31b"):
        spec = get_model(name)[0]
        s = RuntimeSettings(engine="vllm", kv_cache_dtype="fp8", n_ctx=spec.ctx_train)
        _compare(v, name, "bf16", s, hw)


def test_gemma3_27b_groups_pad_to_six_sliding_groups(v):
    """52 sliding layers with 10 full ones: group size 10, six sliding groups (8 padding slots)."""
    spec = get_model("gemma-3-27b")[0]
    s = RuntimeSettings(engine="vllm", n_ctx=32768)
    p = plan(spec, parse_format("bf16", "vllm"), s, _hw("h100", 1), with_speed=False)
    groups = p.memory.kv_cells["groups"]
    assert [g["type"] for g in groups].count("sliding") == 6 and [g["type"] for g in groups].count("full") == 1
    assert max(g["layers"] for g in groups) == 10
    got = vllm_kv(v, "gemma-3-27b", s, [p.memory.devices[0].detail["available_kv_bytes"]])
    assert len(got["groups"]) == 7
