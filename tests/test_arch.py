"""planner/arch.py: each Gemma rule once, and every reader (catalog, config.json, GGUF, converter, llama.cpp
KV reader) agreeing with it."""

from __future__ import annotations

import dataclasses

import pytest

from planner import arch
from planner.catalog import get_model
from planner.errors import UnsupportedArchitectureError
from planner.sources import load_model

F = arch.FAMILIES


@pytest.mark.parametrize("family, n, cfg, full_layers, reason", [
    ("gemma2", 6, {}, [1, 3, 5], "Gemma 2 alternates, layer 0 sliding"),
    ("gemma3", 12, {}, [5, 11], "Gemma 3: every 6th layer is full"),
    ("gemma3", 4, {"sliding_window_pattern": 2}, [1, 3], "the config's period wins"),
    ("gemma3n", 10, {}, [4, 9], "Gemma 3n: 4 sliding : 1 full"),
    ("gemma4", 8, {}, [5, 7], "Gemma 4: every 6th, and the last layer forced full"),
    ("gemma4", 4, {"layer_types": "SFSS"}, [1], "explicit layer_types are taken as written"),
    ("gemma3", 3, {"sliding_window": 0}, [0, 1, 2], "no sliding window: no sliding layers"),
])
def test_layer_types(family, n, cfg, full_layers, reason):
    swa = arch.layer_types(cfg, n, F[family])
    assert [i for i, s in enumerate(swa) if not s] == full_layers, reason


def test_kv_sharing_of_gemma4_e2b_and_gemma3n():
    # Gemma 4 E2B: 35 layers, the last 20 reuse layer 13 (sliding) or 14 (full): llama_model::create_memory
    e2b, _ = get_model("gemma-4-e2b")
    shared = [(lay.index, lay.kv_shared_from) for lay in e2b.layers if lay.kv_shared_from is not None]
    assert [i for i, _ in shared] == list(range(15, 35))
    assert {src for _, src in shared} == {13, 14}
    assert all(src == (13 if e2b.layers[i].sliding else 14) for i, src in shared)
    # Gemma 3n: llama.cpp keeps the first 20 layers KV-storing whatever num_kv_shared_layers says
    n3, _ = get_model("gemma-3n-e4b")
    assert [lay.has_kv for lay in n3.layers] == [i < 20 for i in range(n3.n_layers)]


def test_spec_is_frozen():
    spec, _ = get_model("gemma-3-4b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.ctx_train = 1  # type: ignore[misc]
    assert isinstance(spec.layers, tuple) and isinstance(spec.tensors, tuple)
    renamed = dataclasses.replace(spec, name="x")
    assert renamed.name == "x" and spec.name == "gemma-3-4b" and renamed.tensors is spec.tensors


def test_config_defaults_fill_a_published_gemma3_config():
    # gemma-3-4b's config.json leaves num_attention_heads and head_dim to Gemma3TextConfig's defaults
    cfg = dict(model_type="gemma3", text_config=dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240,
                                                   num_hidden_layers=34, num_key_value_heads=4, sliding_window=1024))
    spec = arch.spec_from_hf_config(cfg, name="g3", source="test", fill_defaults=True)
    assert spec.layers[0].n_head == 8 and spec.layers[0].head_dim_k == 256 and spec.vocab == 262208
    assert spec.ctx_train == 131072
    with pytest.raises(UnsupportedArchitectureError, match="missing num_hidden_layers"):
        arch.spec_from_hf_config({"model_type": "gemma3_text", "hidden_size": 64}, name="x", source="t", fill_defaults=True)


def test_converter_and_planner_read_the_same_layers():
    """quantize.convert.read_hparams and the planner's reader agree on every per-layer fact of each catalog model."""
    from quantize.convert import read_hparams

    for name in ("gemma-2-9b", "gemma-3-27b", "gemma-4-e2b", "gemma-4-31b", "gemma-4-26b-a4b"):
        spec, _ = get_model(name)
        entry = next(e for e in __import__("planner.catalog", fromlist=["x"]).catalog_entries() if e["name"] == name)
        cfg = {k: v for k, v in entry.items() if k not in ("moe",)}
        if entry.get("moe"):
            cfg.update(entry["moe"], enable_moe_block=True)
        cfg["max_position_embeddings"] = spec.ctx_train
        cfg["model_type"] = {"gemma3": "gemma3", "gemma4": "gemma4_text"}.get(spec.family, spec.family)
        cfg["layer_types"] = ["sliding_attention" if lay.sliding else "full_attention" for lay in spec.layers]
        if isinstance(cfg.get("intermediate_size"), list):
            cfg["intermediate_size"] = cfg["intermediate_size"][0]
            cfg["use_double_wide_mlp"] = True
        hp = read_hparams(cfg)
        assert hp.is_swa == tuple(lay.sliding for lay in spec.layers), name
        assert hp.n_head_kv == tuple(lay.n_head_kv for lay in spec.layers), name
        assert tuple(hp.head_dim_swa if s else hp.head_dim for s in hp.is_swa) == tuple(lay.head_dim_k for lay in spec.layers), name
        assert hp.n_ff == tuple(lay.n_ff for lay in spec.layers), name
        assert hp.n_kv_shared == sum(1 for lay in spec.layers if not lay.has_kv), name
        assert (hp.n_expert, hp.n_expert_used) == ((spec.moe.n_expert, spec.moe.n_expert_used) if spec.moe else (0, 0)), name


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text", "gemma4_text", "gemma4_e", "gemma4_moe"])
def test_gguf_reader_agrees_with_config_reader(tiny_model, tiny_gguf, family):
    """The same checkpoint read as config.json and as the GGUF our converter wrote: same layers, same KV layout."""
    from quantize.llamacpp import KVLayout, kv_layout_from_gguf

    hf, _ = load_model(str(tiny_model(family)))
    path = tiny_gguf(family)
    gg, _ = load_model(str(path))
    assert gg.layers == hf.layers
    assert (gg.moe, gg.ple_dim, gg.sliding_window, gg.ctx_train) == (hf.moe, hf.ple_dim, hf.sliding_window, hf.ctx_train)
    assert kv_layout_from_gguf(path) == KVLayout.from_spec(hf)
