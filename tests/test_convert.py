"""HF -> GGUF converter: pure hyperparameter reading, and GGUF files read back with gguf-py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from quantize import convert
from quantize.convert import convert_hf_to_gguf, plan_conversion, read_hparams
from quantize.errors import (
    ConversionError,
    OutputExistsError,
    UnsafeCheckpointError,
    UnsupportedArchitectureError,
)
from quantize.tiny import FAMILIES

# gemma3n (the multimodal wrapper) is left out of these sweeps: its text model is gemma3n_text's, which they cover,
# and the wrapper's 2048-wide checkpoint (the width llama.cpp's gemma3nv requires) is converted, quantized and its
# projector run by tests/test_quantize_pipeline.py and tests/test_mmproj.py instead
TEXT_FAMILIES = [f for f in FAMILIES if f != "gemma3n"]

G2, G3, G4 = gguf.MODEL_ARCH.GEMMA2, gguf.MODEL_ARCH.GEMMA3, gguf.MODEL_ARCH.GEMMA4

# ---------------------------------------------------------------------------------------------
# read_hparams: table of config.json shapes seen in the wild -> facts

GEMMA2_2B = dict(model_type="gemma2", num_hidden_layers=26, hidden_size=2304, intermediate_size=9216,
                 num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
                 final_logit_softcapping=30.0, attn_logit_softcapping=50.0, query_pre_attn_scalar=256,
                 max_position_embeddings=8192, rms_norm_eps=1e-6, vocab_size=256000)
# Gemma 3 4B as published: multimodal wrapper, legacy rope keys, several text fields left to defaults.
GEMMA3_4B = dict(model_type="gemma3", text_config=dict(
    model_type="gemma3_text", hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
    num_key_value_heads=4, sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0},
    rope_theta=1000000.0, rope_local_base_freq=10000.0, sliding_window_pattern=6))
# Gemma 4 31B with the keys of its first configs (global_head_dim, num_global_key_value_heads).
GEMMA4_31B = dict(model_type="gemma4", text_config=dict(
    model_type="gemma4_text", num_hidden_layers=60, hidden_size=5376, intermediate_size=21504,
    num_attention_heads=32, num_key_value_heads=16, num_global_key_value_heads=4, head_dim=256,
    global_head_dim=512, attention_k_eq_v=True, sliding_window=1024, hidden_size_per_layer_input=0,
    final_logit_softcapping=30.0, max_position_embeddings=262144, vocab_size=262144,
    layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 10,
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                     "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                        "rope_theta": 1000000.0}}))
# Gemma 4 E2B as transformers 5.24 saves it: per_layer_config instead of global_head_dim.
GEMMA4_E2B = dict(model_type="gemma4_text", num_hidden_layers=35, hidden_size=1536, intermediate_size=6144,
                  num_attention_heads=8, num_key_value_heads=1, head_dim=256, attention_k_eq_v=False,
                  sliding_window=512, hidden_size_per_layer_input=256, vocab_size_per_layer_input=262144,
                  vocab_size=262144, num_kv_shared_layers=20, use_double_wide_mlp=True,
                  layer_types=(["sliding_attention"] * 4 + ["full_attention"]) * 7,
                  per_layer_config={str(i): {"head_dim": 512} for i in range(4, 35, 5)},
                  max_position_embeddings=131072, rms_norm_eps=1e-6, final_logit_softcapping=30.0)


def test_gemma2_hparams_alternate_layers_and_softcaps():
    hp = read_hparams(GEMMA2_2B)
    assert hp.arch == G2 and hp.n_layer == 26
    assert hp.is_swa[:4] == (True, False, True, False)  # layer 0 sliding: (i+1) % 2
    assert hp.swa_layers == 13
    assert (hp.attn_softcap, hp.final_softcap) == (50.0, 30.0)
    assert hp.norm_shift == 1.0  # Gemma 2 RMSNorm is x*(1+w)


def test_gemma3_multimodal_legacy_keys_and_defaults():
    hp = read_hparams(GEMMA3_4B)
    assert hp.arch == G3 and hp.model_type == "gemma3" and hp.text_type == "gemma3_text"
    assert hp.n_head == 8 and hp.head_dim == 256  # not in the text_config: transformers defaults
    assert hp.swa_layers == 29 and [i for i, s in enumerate(hp.is_swa) if not s][:2] == [5, 11]
    assert hp.rope_scaling == ("linear", 8.0)
    assert (hp.rope_base, hp.rope_base_swa) == (1000000.0, 10000.0)
    assert hp.final_softcap is None and hp.n_ctx_train == 131072


def test_gemma4_31b_full_layers_have_fewer_wider_kv_heads():
    hp = read_hparams(GEMMA4_31B)
    assert hp.arch == G4
    assert (hp.head_dim, hp.head_dim_swa) == (512, 256)
    assert hp.n_head_kv[:6] == (16, 16, 16, 16, 16, 4)
    assert hp.n_rot == 512 and hp.n_rot_swa == 256
    # proportional rope: 0.25 * 512 / 2 = 64 rotated pairs, the other 192 get a huge divisor
    assert hp.rope_freqs is not None and hp.rope_freqs.count(1.0) == 64 and len(hp.rope_freqs) == 256
    assert hp.norm_shift == 0.0  # Gemma 4 RMSNorm is x*w


def test_gemma4_e2b_kv_sharing_ple_and_double_wide_mlp():
    hp = read_hparams(GEMMA4_E2B)
    assert hp.head_dim == 512  # from per_layer_config
    assert hp.n_head_kv == (1,) * 35  # k_eq_v off: full layers keep num_key_value_heads
    assert hp.n_kv_shared == 20 and hp.n_embd_per_layer == 256
    assert hp.n_ff[:15] == (6144,) * 15 and hp.n_ff[15:] == (12288,) * 20
    assert hp.swa_layers == 28


@pytest.mark.parametrize("config, match", [
    (dict(model_type="gemma"), "not supported yet"),
    (dict(model_type="llama"), "not a Gemma architecture"),
])
def test_unsupported_architectures(config, match):
    with pytest.raises(UnsupportedArchitectureError, match=match):
        read_hparams(config)


# google/gemma-3n-E2B-it text_config (the keys the converter reads)
GEMMA3N_E2B = dict(model_type="gemma3n", text_config=dict(
    model_type="gemma3n_text", num_hidden_layers=30, hidden_size=2048, intermediate_size=[8192] * 30,
    num_attention_heads=8, num_key_value_heads=2, head_dim=256, vocab_size=262400, vocab_size_per_layer_input=262144,
    hidden_size_per_layer_input=256, num_kv_shared_layers=10, laurel_rank=64, altup_num_inputs=4, altup_active_idx=0,
    sliding_window=512, activation_sparsity_pattern=[0.95] * 10 + [0.0] * 20, max_position_embeddings=32768, rms_norm_eps=1e-6,
    layer_types=(["sliding_attention"] * 4 + ["full_attention"]) * 6, final_logit_softcapping=30.0,
    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}))


def test_gemma3n_e2b_hparams():
    hp = read_hparams(GEMMA3N_E2B)
    assert hp.arch == gguf.MODEL_ARCH.GEMMA3N and hp.norm_shift == 0.0
    assert hp.n_kv_shared == 10 and hp.n_embd_per_layer == 256 and hp.n_ff == (8192,) * 30
    assert hp.altup_num_inputs == 4 and hp.swa_layers == 24
    assert hp.activation_sparsity_scale[:10] == pytest.approx((1.6448536,) * 10)  # Phi^-1(0.95), as models.h
    assert hp.activation_sparsity_scale[10:] == (0.0,) * 20
    assert (hp.rope_base, hp.rope_base_swa, hp.final_softcap) == (1e6, 1e4, 30.0)


@pytest.mark.parametrize("change, match", [
    (dict(laurel_rank=32), "laurel_rank=32"),
    (dict(hidden_size_per_layer_input=128), "hidden_size_per_layer_input=128"),
    (dict(num_kv_shared_layers=12), "exactly the first 20"),
    (dict(activation_sparsity_pattern=[0.9] * 10 + [0.0] * 20), "activation_sparsity_pattern"),
    (dict(altup_num_inputs=2), "altup_num_inputs=2"),
])
def test_gemma3n_outside_what_llama_cpp_hard_codes_is_refused(change, match):
    cfg = dict(GEMMA3N_E2B, text_config=dict(GEMMA3N_E2B["text_config"], **change))
    with pytest.raises(ConversionError, match=match):
        read_hparams(cfg)


def test_gemma4_unified_is_gemma4_without_ple():
    hp = read_hparams(dict(model_type="gemma4_unified", text_config=dict(
        model_type="gemma4_unified_text", num_hidden_layers=6, hidden_size=3840, num_attention_heads=16,
        num_key_value_heads=8, head_dim=256, global_head_dim=512, layer_types=["sliding_attention"] * 5 + ["full_attention"],
        rope_parameters={"full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})))
    assert hp.arch == gguf.MODEL_ARCH.GEMMA4 and hp.n_embd_per_layer == 0 and hp.n_expert == 0
    assert hp.head_dim == 512 and hp.head_dim_swa == 256 and hp.rope_freqs[:64] == (1.0,) * 64
    with pytest.raises(ConversionError, match="bidirectional"):
        read_hparams(dict(model_type="gemma4_unified", text_config=dict(
            model_type="gemma4_unified_text", hidden_size=256, num_hidden_layers=2, use_bidirectional_attention="all")))


def test_gemma3n_gguf_metadata_and_stacked_altup(tiny_gguf):
    r, f = _fields(tiny_gguf("gemma3n_text"))
    assert f["general.architecture"] == "gemma3n"
    assert f["gemma3n.altup.num_inputs"] == 4 and f["gemma3n.altup.active_idx"] == 0
    assert f["gemma3n.attention.shared_kv_layers"] == 2 and f["gemma3n.embedding_length_per_layer_input"] == 256
    assert f["gemma3n.activation_sparsity_scale"][:10] == pytest.approx([1.6448536] * 10)
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}
    assert shapes["altup_proj.weight"] == (256, 256, 3) and shapes["altup_unembd_proj.weight"] == (256, 256, 3)
    assert shapes["blk.21.attn_k.weight"] == (256, 128)  # zeros llama.cpp's loader requires, never read
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.altup_predict_coef.weight"] == gguf.GGMLQuantizationType.F32


def test_attention_scale_warning_names_llama_cpp_rule():
    # Gemma 3 27B widths with 2 layers: llama.cpp only uses n_embd/n_head at 62 layers.
    cfg = dict(model_type="gemma3_text", num_hidden_layers=2, hidden_size=5376, num_attention_heads=32,
               head_dim=128, query_pre_attn_scalar=168, sliding_window=1024)
    warning = convert.attention_scale_warning(read_hparams(cfg))
    assert warning and "1/sqrt(128)" in warning
    assert convert.attention_scale_warning(read_hparams(dict(cfg, num_hidden_layers=62))) is None
    assert convert.attention_scale_warning(read_hparams(GEMMA2_2B)) is None


# ---------------------------------------------------------------------------------------------
# converted files, read back


def _fields(path: Path) -> tuple[gguf.GGUFReader, dict]:
    r = gguf.GGUFReader(path)
    return r, {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}


def _text_config(model_dir: Path) -> dict:
    cfg = json.loads((model_dir / "config.json").read_text())
    return cfg.get("text_config", cfg)


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_family_converts_with_every_hparam(family, tiny_model, tiny_gguf):
    model_dir = tiny_model(family)
    path = tiny_gguf(family)
    plan = plan_conversion(model_dir, "f32")
    r, kv = _fields(path)
    tc = _text_config(model_dir)
    arch = {"gemma2": "gemma2", "gemma3_text": "gemma3", "gemma3": "gemma3", "gemma3n_text": "gemma3n"}.get(family, "gemma4")
    assert kv["general.architecture"] == arch
    assert len(r.tensors) == len(plan.tensors)
    assert kv[f"{arch}.block_count"] == tc["num_hidden_layers"]
    assert kv[f"{arch}.embedding_length"] == tc["hidden_size"]
    assert kv[f"{arch}.context_length"] == tc["max_position_embeddings"]
    assert kv[f"{arch}.attention.sliding_window"] == tc["sliding_window"]
    # written even when off: llama.cpp otherwise defaults the final soft-cap to 30
    assert kv[f"{arch}.final_logit_softcapping"] == (tc.get("final_logit_softcapping") or 0.0)
    # the SWA layout is written explicitly, one bool per layer, exactly as the config's layer_types
    assert kv[f"{arch}.attention.sliding_window_pattern"] == [t == "sliding_attention" for t in tc["layer_types"]]
    names = {t.name for t in r.tensors}
    assert "output.weight" not in names  # tied embeddings
    for t in r.tensors:
        if len(t.shape) == 1 or t.name.endswith("_norm.weight"):
            assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
    embd = next(t for t in r.tensors if t.name == "token_embd.weight")
    assert int(embd.shape[1]) == len(r.fields["tokenizer.ggml.tokens"].contents())
    assert r.fields["tokenizer.ggml.add_bos_token"].contents() is True
    assert "<start_of_turn>" in r.fields["tokenizer.chat_template"].contents()
    if arch == "gemma4":
        heads = [tc["num_key_value_heads"] if t == "sliding_attention" else
                 (tc.get("per_layer_config") or {}).get(str(i), {}).get("num_key_value_heads", tc["num_key_value_heads"])
                 for i, t in enumerate(tc["layer_types"])]
        assert kv["gemma4.attention.head_count_kv"] == heads
        assert kv["gemma4.attention.key_length_swa"] == tc["head_dim"]
        assert kv["gemma4.attention.shared_kv_layers"] == (tc.get("num_kv_shared_layers") or 0)
        assert kv["gemma4.embedding_length_per_layer_input"] == (tc.get("hidden_size_per_layer_input") or 0)
        assert "rope_freqs.weight" in names
    if family == "gemma2":
        assert kv["gemma2.attn_logit_softcapping"] == 50.0 and kv["gemma2.final_logit_softcapping"] == 30.0
    if family in ("gemma3", "gemma3_text"):
        assert kv["gemma3.rope.scaling.type"] == "linear" and kv["gemma3.rope.scaling.factor"] == 8.0
        assert kv["gemma3.rope.freq_base_swa"] == 10000.0


def test_gemma4_moe_and_ple_tensors(tiny_gguf):
    r, kv = _fields(tiny_gguf("gemma4_moe"))
    assert (kv["gemma4.expert_count"], kv["gemma4.expert_used_count"], kv["gemma4.expert_feed_forward_length"]) == (4, 2, 256)
    shapes = {t.name: [int(x) for x in t.shape] for t in r.tensors}
    assert shapes["blk.0.ffn_gate_up_exps.weight"] == [256, 512, 4]  # ggml order: n_embd, 2*n_ff_exp, n_expert
    assert shapes["blk.0.ffn_down_exps.weight"] == [256, 256, 4]
    assert shapes["blk.0.ffn_gate_inp.scale"] == [256] and shapes["blk.0.ffn_down_exps.scale"] == [4]
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.ffn_gate_inp.weight"] == gguf.GGMLQuantizationType.F32  # router stays F32
    assert "blk.3.attn_v.weight" not in shapes  # K=V on the full layer: no V projection

    r, kv = _fields(tiny_gguf("gemma4_e"))
    names = {t.name for t in r.tensors}
    assert {"per_layer_token_embd.weight", "per_layer_model_proj.weight", "blk.0.inp_gate.weight"} <= names
    assert "blk.3.attn_k.weight" not in names  # KV-shared layers carry no K/V weights
    assert kv["gemma4.feed_forward_length"] == [512, 512, 512, 1024, 1024, 1024]


@pytest.mark.parametrize("family, shift", [("gemma3_text", 1.0), ("gemma2", 1.0), ("gemma4_text", 0.0)])
def test_norm_weights_get_plus_one_only_where_llama_cpp_expects(family, shift, tiny_model, tiny_gguf):
    from safetensors import safe_open

    with safe_open(tiny_model(family) / "model.safetensors", framework="numpy") as s:
        src = {k: s.get_tensor(k) for k in s.keys() if "layers.0." in k and k.endswith("norm.weight")}
    r = gguf.GGUFReader(tiny_gguf(family))
    got = {t.name: np.asarray(t.data) for t in r.tensors}
    tmap = gguf.get_tensor_name_map({"gemma2": G2, "gemma3_text": G3, "gemma4_text": G4}[family], 8)
    assert src
    for hf, value in src.items():
        name = tmap.get_name(hf, try_suffixes=(".weight",))
        np.testing.assert_allclose(got[name], value + shift, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("outtype, qtype", [("f16", gguf.GGMLQuantizationType.F16),
                                            ("bf16", gguf.GGMLQuantizationType.BF16)])
def test_outtype_applies_to_matrices_only(outtype, qtype, tiny_gguf):
    r = gguf.GGUFReader(tiny_gguf("gemma3_text", outtype=outtype))
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["token_embd.weight"] == qtype and types["blk.0.attn_q.weight"] == qtype
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert r.fields["general.file_type"].contents() == int(convert.OUTTYPES[outtype][0])


def test_bf16_output_is_bit_exact(tiny_model, tiny_gguf):
    import torch
    from safetensors import safe_open

    with safe_open(tiny_model("gemma3_text") / "model.safetensors", framework="pt") as s:
        ref = s.get_tensor("model.layers.1.mlp.up_proj.weight").to(torch.bfloat16).view(torch.int16).numpy()
    r = gguf.GGUFReader(tiny_gguf("gemma3_text", outtype="bf16"))
    t = next(t for t in r.tensors if t.name == "blk.1.ffn_up.weight")
    assert np.array_equal(np.asarray(t.data).view(np.int16).reshape(ref.shape), ref)


def test_streaming_in_tiny_chunks_writes_identical_bytes(tiny_model, tmp_path, monkeypatch):
    model_dir = tiny_model("gemma4_e")
    a = convert_hf_to_gguf(model_dir, tmp_path / "a.gguf", outtype="f16")
    monkeypatch.setattr(convert, "CHUNK_BYTES", 4096)  # many chunks per tensor
    b = convert_hf_to_gguf(model_dir, tmp_path / "b.gguf", outtype="f16")
    assert a.read_bytes() == b.read_bytes()


def test_sharded_checkpoint_with_index(tiny_model, tmp_path):
    sharded = tiny_model("gemma3_text", max_shard_size="2MB")
    assert (sharded / "model.safetensors.index.json").is_file()
    whole = tiny_model("gemma3_text")
    ra = gguf.GGUFReader(convert_hf_to_gguf(sharded, tmp_path / "s.gguf"))
    rb = gguf.GGUFReader(convert_hf_to_gguf(whole, tmp_path / "w.gguf"))
    assert [t.name for t in ra.tensors] == [t.name for t in rb.tensors]
    for ta, tb in zip(ra.tensors, rb.tensors):
        assert np.array_equal(np.asarray(ta.data), np.asarray(tb.data)), ta.name


def test_tiny_builder_is_deterministic(tiny_model, tmp_path):
    from safetensors.numpy import load_file

    from quantize.tiny import build_tiny_model

    again = build_tiny_model(tmp_path / "again", "gemma2")
    a, b = load_file(tiny_model("gemma2") / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (again / "tokenizer.model").read_bytes() == (tiny_model("gemma2") / "tokenizer.model").read_bytes()


@pytest.mark.parametrize("family, spm, model", [
    ("gemma3_text", True, "llama"),  # SentencePiece model preferred for Gemma 2/3
    ("gemma3_text", False, "gemma4"),  # without it: tokenizer.json BPE
    ("gemma4_text", True, "gemma4"),  # Gemma 4 reads tokenizer.json like llama.cpp's converter
])
def test_tokenizer_source(family, spm, model, tiny_gguf):
    r = gguf.GGUFReader(tiny_gguf(family, spm_tokenizer=spm))
    assert r.fields["tokenizer.ggml.model"].contents() == model
    assert r.fields["tokenizer.ggml.bos_token_id"].contents() == 2
    assert r.fields["tokenizer.ggml.eos_token_id"].contents() == 1
    types = r.fields["tokenizer.ggml.token_type"].contents()
    assert types[2] == gguf.TokenType.CONTROL and gguf.TokenType.BYTE in types
    if model == "gemma4":
        assert len(r.fields["tokenizer.ggml.merges"].contents()) > 100


# ---------------------------------------------------------------------------------------------
# refusals and failures leave nothing behind


def _leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.endswith(".partial")]


def test_refuses_to_overwrite_without_force(tiny_model, tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        convert_hf_to_gguf(tiny_model("gemma2"), out)
    assert out.read_bytes() == b"keep me"
    convert_hf_to_gguf(tiny_model("gemma2"), out, force=True)
    assert out.read_bytes()[:4] == b"GGUF" and not _leftovers(tmp_path)


def test_refuses_pickle_checkpoints(tiny_model, tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    shutil.copy(tiny_model("gemma2") / "config.json", d)
    shutil.copy(tiny_model("gemma2") / "tokenizer.model", d)
    (d / "pytorch_model.bin").write_bytes(b"not unpickled, never opened")
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        convert_hf_to_gguf(d, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def _copy(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest)
    return dest


def test_missing_tokenizer_is_a_clear_error(tiny_model, tmp_path):
    d = _copy(tiny_model("gemma2"), tmp_path / "notok")
    for f in ("tokenizer.model", "tokenizer.json"):
        (d / f).unlink()
    with pytest.raises(ConversionError, match="no tokenizer"):
        convert_hf_to_gguf(d, tmp_path / "x.gguf")


def test_corrupt_safetensors_leaves_no_file(tiny_model, tmp_path):
    d = _copy(tiny_model("gemma2"), tmp_path / "corrupt")
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ConversionError, match="cannot read"):
        convert_hf_to_gguf(d, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() and not _leftovers(tmp_path)


def test_interrupted_conversion_removes_the_partial_file(tiny_model, tmp_path):
    def interrupt(done: int, total: int, name: str) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_hf_to_gguf(tiny_model("gemma3_text"), tmp_path / "x.gguf", progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_directory(tiny_model, tmp_path):
    with pytest.raises(ConversionError, match="does not exist"):
        convert_hf_to_gguf(tiny_model("gemma2"), tmp_path / "missing" / "x.gguf")


def test_unsupported_checkpoint_is_refused_before_reading_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma", "text_config": {}}))
    with pytest.raises(UnsupportedArchitectureError, match="not supported yet"):
        convert_hf_to_gguf(tmp_path, tmp_path / "x.gguf")


def test_truncated_safetensors_is_a_clear_error(tiny_model, tmp_path):
    d = _copy(tiny_model("gemma2"), tmp_path / "truncated")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError):
        convert_hf_to_gguf(d, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() and not _leftovers(tmp_path)
