"""GGUF quant mixes against llama-quant.cpp's rules and llama.cpp's published sizes."""

import pytest

from planner.catalog import get_model
from planner.formats import gguf_tensor_types, parse_format, tensor_sizes, type_histogram, weight_bytes
from planner.types import LayerSpec, ModelSpec, MoESpec, TensorSpec

GiB = 1 << 30


def llama3_8b() -> ModelSpec:
    """Llama-3-8B's tensor inventory: the model llama.cpp's QUANT_OPTIONS sizes are quoted for."""
    ts = [TensorSpec("rope_freqs.weight", (64,), None, "F32"), TensorSpec("token_embd.weight", (128256, 4096), None, "F16"),
          TensorSpec("output_norm.weight", (4096,), None, "F32"), TensorSpec("output.weight", (128256, 4096), None, "F16")]
    for i in range(32):
        p = f"blk.{i}."
        ts += [TensorSpec(p + "attn_norm.weight", (4096,), i, "F32"), TensorSpec(p + "attn_q.weight", (4096, 4096), i, "F16"),
               TensorSpec(p + "attn_k.weight", (1024, 4096), i, "F16"), TensorSpec(p + "attn_v.weight", (1024, 4096), i, "F16"),
               TensorSpec(p + "attn_output.weight", (4096, 4096), i, "F16"), TensorSpec(p + "ffn_norm.weight", (4096,), i, "F32"),
               TensorSpec(p + "ffn_gate.weight", (14336, 4096), i, "F16"), TensorSpec(p + "ffn_up.weight", (14336, 4096), i, "F16"),
               TensorSpec(p + "ffn_down.weight", (4096, 14336), i, "F16")]
    layers = [LayerSpec(i, False, 32, 8, 128, 128, None, 14336) for i in range(32)]
    return ModelSpec("llama3-8b", "llama", "llama", 4096, 128256, 32, layers, 0, 8192, ts, tied_embeddings=False)


def test_q4_k_m_llama3_8b_exact():
    # engine_memory_accounting 2.3: 4,912,898,304 B = 4.58 GiB, 4.89 BPW (quantize.cpp "Q4_K_M 4.58G")
    assert weight_bytes(llama3_8b(), parse_format("Q4_K_M")) == 4_912_898_304


@pytest.mark.parametrize("ftype,gib", [("Q4_0", 4.34), ("Q4_K_S", 4.37), ("Q5_K_S", 5.21), ("Q5_K_M", 5.33), ("Q6_K", 6.14),
                                        ("Q8_0", 7.95), ("Q3_K_S", 3.41), ("Q3_K_M", 3.74), ("Q2_K", 2.96)])
def test_llama3_8b_sizes_match_quantize_cpp_table(ftype, gib):
    # tools/quantize/quantize.cpp QUANT_OPTIONS, rounded to 0.01 GiB there
    assert abs(weight_bytes(llama3_8b(), parse_format(ftype)) / GiB - gib) <= 0.011


def test_gemma3_27b_q4_k_m_mix():
    spec, _ = get_model("gemma-3-27b")
    types = dict((t.name, typ) for t, typ in gguf_tensor_types(spec, "Q4_K_M"))
    assert types["token_embd.weight"] == "Q6_K"  # tied: token_embd follows the output rule
    assert types["blk.0.attn_v.weight"] == "Q6_K" and types["blk.0.ffn_down.weight"] == "Q6_K"  # i < n/8
    assert types["blk.8.attn_v.weight"] == "Q4_K" and types["blk.9.attn_v.weight"] == "Q6_K"  # (i - n/8) % 3 == 2
    assert types["blk.61.ffn_down.weight"] == "Q6_K"  # i >= 7n/8
    assert types["blk.0.attn_norm.weight"] == "F32"  # 1-D stays as in the source
    hist = type_histogram(gguf_tensor_types(spec, "Q4_K_M"))
    assert hist == {"F32": 373, "Q4_K": 374, "Q6_K": 61}  # 30 attn_v + 30 ffn_down use_more_bits + token_embd


def test_q3_k_m_first_two_attn_v_get_q5_k():
    spec, _ = get_model("gemma-3-4b")  # hidden 2560: rows are whole K-quant blocks
    types = dict((t.name, typ) for t, typ in gguf_tensor_types(spec, "Q3_K_M"))
    assert types["blk.0.attn_v.weight"] == types["blk.1.attn_v.weight"] == "Q5_K"
    assert types["blk.2.attn_v.weight"] == "Q4_K"
    assert types["blk.0.attn_output.weight"] == "Q4_K"


def test_q2_k_attn_v_depends_on_gqa():
    e2b, _ = get_model("gemma-4-e2b")  # 8 heads / 1 KV head: n_gqa 8
    nine_b, _ = get_model("gemma-2-9b")  # 16 / 8: n_gqa 2
    assert dict((t.name, ty) for t, ty in gguf_tensor_types(e2b, "Q2_K"))["blk.3.attn_v.weight"] == "Q4_K"
    assert dict((t.name, ty) for t, ty in gguf_tensor_types(nine_b, "Q2_K"))["blk.3.attn_v.weight"] == "Q3_K"


def test_hidden_not_multiple_of_256_falls_back_to_32_blocks():
    # Gemma 3 1B: hidden 1152 = 4.5 x 256, so K-quant rows fall back (Q4_K -> Q5_0, Q6_K -> Q8_0)
    spec, _ = get_model("gemma-3-1b")
    types = dict((t.name, typ) for t, typ in gguf_tensor_types(spec, "Q4_K_M"))
    assert types["blk.1.attn_q.weight"] == "Q5_0" and types["blk.0.attn_v.weight"] == "Q8_0"
    assert types["blk.1.attn_output.weight"] == "Q4_K"  # its rows are 4 x 256 = 1024 wide
    assert types["token_embd.weight"] == "Q8_0"  # output rule: row % 256 != 0 -> Q8_0


def test_fallback_when_row_is_not_a_block_multiple():
    # Gemma 4 26B-A4B: expert rows are 704 wide (not a multiple of 256): Q4_K -> Q5_0, Q6_K -> Q8_0
    spec, _ = get_model("gemma-4-26b-a4b")
    types = dict((t.name, typ) for t, typ in gguf_tensor_types(spec, "Q4_K_M"))
    assert types["blk.0.ffn_down_exps.weight"] == "Q8_0"  # use_more_bits layer: Q6_K falls back to Q8_0
    assert types["blk.3.ffn_down_exps.weight"] == "Q5_0"  # Q4_K falls back to Q5_0
    assert types["blk.3.ffn_gate_up_exps.weight"] == "Q4_K"  # rows of 2816 = 11 x 256
    assert types["blk.3.ffn_gate_inp.weight"] == "F32"  # router is never quantized


def test_ple_tables_follow_output_rule_and_altup_not_quantized():
    e4b, _ = get_model("gemma-4-e4b")
    types = dict((t.name, typ) for t, typ in gguf_tensor_types(e4b, "Q4_K_M"))
    assert types["per_layer_token_embd.weight"] == "Q6_K"
    assert types["per_layer_model_proj.weight"] == "BF16"  # kept as in the source file
    n3, _ = get_model("gemma-3n-e2b")
    t3 = dict((t.name, typ) for t, typ in gguf_tensor_types(n3, "Q4_K_M"))
    assert t3["altup_proj.weight"] == "BF16" and t3["blk.0.laurel_l.weight"] == "BF16"


def test_dense_and_gptq_sizes():
    spec, _ = get_model("gemma-3-27b")
    assert weight_bytes(spec, parse_format("bf16", engine="vllm")) == 2 * spec.n_params_text
    gguf_bf16 = weight_bytes(spec, parse_format("BF16"))
    assert gguf_bf16 > 2 * spec.n_params_text  # the GGUF keeps 1-D tensors in F32
    gptq = weight_bytes(spec, parse_format("gptq-int4"))
    emb = spec.vocab * spec.hidden * 2
    # ~4.16 bits per quantized weight + 16-bit embeddings
    assert 4.1 < (gptq - emb) * 8 / (spec.n_params_text - spec.vocab * spec.hidden) < 4.25


def test_unknown_format_lists_known():
    from planner.errors import UnknownFormatError

    with pytest.raises(UnknownFormatError, match="Q4_K_M"):
        parse_format("Q7_K")


# ---------------------------------------------------------------- every file type's mix, rule by rule
# Expected types are read off llama_tensor_get_type_impl (src/llama-quant.cpp, llama-cpp-python 0.3.36) by hand
# for small inventories whose rows are whole 256-blocks (so no fallback applies). With 16 layers:
# use_more_bits(i, 16) is i < 2 or i >= 14 or (i - 2) % 3 == 2, i.e. layers {0, 1, 4, 7, 10, 13, 14, 15};
# n_layer / 8 = 2 and n_layer / 16 = 1. What each pins: the type, and so the bytes, a user's GGUF of that
# file type really has, tensor by tensor.

MORE = {0, 1, 4, 7, 10, 13, 14, 15}


def toy(n_layers=16, n_head=8, n_head_kv=2, tied=False, n_expert=0, head_kvs=None, ffn_down_names=("ffn_down",)):
    """A Gemma-shaped inventory: hidden 256, head size 32, FFN 512; ``head_kvs`` gives per-layer KV heads."""
    hidden, hd, ff = 256, 32, 512
    ts = [TensorSpec("token_embd.weight", (512, hidden), None, "BF16"), TensorSpec("output_norm.weight", (hidden,), None, "F32")]
    if not tied:
        ts.append(TensorSpec("output.weight", (512, hidden), None, "BF16"))
    layers = []
    for i in range(n_layers):
        kv = head_kvs[i] if head_kvs else n_head_kv
        p = f"blk.{i}."
        ts += [TensorSpec(p + "attn_norm.weight", (hidden,), i, "F32"),
               TensorSpec(p + "attn_q.weight", (n_head * hd, hidden), i), TensorSpec(p + "attn_k.weight", (kv * hd, hidden), i),
               TensorSpec(p + "attn_v.weight", (kv * hd, hidden), i), TensorSpec(p + "attn_output.weight", (hidden, n_head * hd), i),
               TensorSpec(p + "ffn_gate.weight", (ff, hidden), i), TensorSpec(p + "ffn_up.weight", (ff, hidden), i)]
        ts += [TensorSpec(p + name + ".weight", (hidden, ff), i) for name in ffn_down_names]
        layers.append(LayerSpec(i, False, n_head, kv, hd, hd, None, ff))
    moe = MoESpec(n_expert, 2, ff) if n_expert else None
    return ModelSpec("toy", "gemma3", "gemma3", hidden, 512, n_layers, layers, 0, 4096, ts, tied_embeddings=tied, moe=moe)


def mix(spec, ftype, **kw):
    """{category: [type per layer]} for the repeating tensors, plus token_embd and output."""
    out: dict = {}
    for t, typ in gguf_tensor_types(spec, ftype, **kw):
        if t.layer is None:
            out[t.name.split(".")[0]] = typ
        else:
            out.setdefault(t.name.split(".")[2], []).append(typ)
    return out


def per_layer(default, special, layers=MORE, n=16):
    return [special if i in layers else default for i in range(n)]


# ftype -> (default, attn_v per layer, ffn_down per layer, attn_output) for toy() at n_gqa 4, no imatrix
MIX_GQA4 = {
    "Q8_0": ("Q8_0", ["Q8_0"] * 16, ["Q8_0"] * 16, "Q8_0"),
    "Q6_K": ("Q6_K", ["Q6_K"] * 16, ["Q6_K"] * 16, "Q6_K"),
    "Q5_K_M": ("Q5_K", per_layer("Q5_K", "Q6_K"), per_layer("Q5_K", "Q6_K"), "Q5_K"),
    "Q5_K_S": ("Q5_K", ["Q5_K"] * 16, ["Q5_K"] * 16, "Q5_K"),
    "Q5_1": ("Q5_1", ["Q5_1"] * 16, ["Q5_1"] * 16, "Q5_1"),
    "Q5_0": ("Q5_0", ["Q5_0"] * 16, ["Q5_0"] * 16, "Q5_0"),
    "Q4_K_M": ("Q4_K", per_layer("Q4_K", "Q6_K"), per_layer("Q4_K", "Q6_K"), "Q4_K"),
    "Q4_K_S": ("Q4_K", per_layer("Q4_K", "Q5_K", range(4)), per_layer("Q4_K", "Q5_K", range(2)), "Q4_K"),
    "Q4_1": ("Q4_1", ["Q4_1"] * 16, ["Q4_1"] * 16, "Q4_1"),
    "Q4_0": ("Q4_0", ["Q4_0"] * 16, ["Q4_0"] * 16, "Q4_0"),
    "IQ4_XS": ("IQ4_XS", ["Q5_K"] * 16, per_layer("IQ4_XS", "Q5_K", range(2)), "IQ4_XS"),
    "IQ4_NL": ("IQ4_NL", ["Q5_K"] * 16, per_layer("IQ4_NL", "Q5_K", range(2)), "IQ4_NL"),
    "Q3_K_L": ("Q3_K", ["Q5_K"] * 16, ["Q5_K"] * 16, "Q5_K"),
    "Q3_K_M": ("Q3_K", per_layer("Q4_K", "Q5_K", range(2)), per_layer("Q4_K", "Q5_K", range(1)), "Q4_K"),
    "Q3_K_S": ("Q3_K", ["Q3_K"] * 16, ["Q3_K"] * 16, "Q3_K"),
    "Q2_K": ("Q2_K", ["Q4_K"] * 16, ["Q3_K"] * 16, "Q3_K"),
    "Q2_K_S": ("Q2_K", ["Q4_K"] * 16, per_layer("Q2_K", "Q4_K", range(2)), "Q2_K"),
}


@pytest.mark.parametrize("ftype", sorted(MIX_GQA4))
def test_every_quantized_file_type_mix_at_gqa_4(ftype):
    default, attn_v, ffn_down, attn_output = MIX_GQA4[ftype]
    got = mix(toy(n_head=8, n_head_kv=2), ftype)  # n_gqa = 4: the boundary of the n_gqa >= 4 rules
    assert got["attn_v"] == attn_v
    assert got["ffn_down"] == ffn_down
    assert got["attn_output"] == [attn_output] * 16
    assert got["attn_q"] == got["attn_k"] == got["ffn_gate"] == got["ffn_up"] == [default] * 16
    assert got["token_embd"] == default  # not tied: the embedding keeps the file type's default
    assert got["output"] == ("Q8_0" if default == "Q8_0" else "Q6_K")  # output rule: Q6_K unless already Q8_0
    assert got["attn_norm"] == ["F32"] * 16 and got["output_norm"] == "F32"  # 1-D: kept as in the source


@pytest.mark.parametrize("ftype,attn_v", [("Q2_K", "Q3_K"), ("Q2_K_S", "Q2_K"), ("IQ4_XS", "IQ4_XS"), ("IQ4_NL", "IQ4_NL"),
                                          ("Q3_K_L", "Q5_K")])
def test_attn_v_below_gqa_4_keeps_fewer_bits(ftype, attn_v):
    # n_gqa 2 (8 heads, 4 KV heads): the n_gqa >= 4 upgrades of Q2_K, Q2_K_S and IQ4_* do not apply; Q3_K_L's does not ask
    assert mix(toy(n_head=8, n_head_kv=4), ftype)["attn_v"] == [attn_v] * 16


def test_gqa_is_read_off_the_first_layer():
    # hparams.n_gqa() is layer 0's ratio: layer 0 at 8/2 = 4 upgrades every attn_v for Q2_K_S, 8/4 = 2 on layer 0 none
    assert mix(toy(head_kvs=[2] + [4] * 15), "Q2_K_S")["attn_v"] == ["Q4_K"] * 16
    assert mix(toy(head_kvs=[4] + [2] * 15), "Q2_K_S")["attn_v"] == ["Q2_K"] * 16


@pytest.mark.parametrize("ftype,ffn_down", [("Q4_0", per_layer("Q4_0", "Q4_1", range(2))), ("Q5_0", per_layer("Q5_0", "Q5_1", range(2))),
                                            ("IQ4_XS", ["IQ4_XS"] * 16), ("IQ4_NL", ["IQ4_NL"] * 16),
                                            ("Q4_K_M", per_layer("Q4_K", "Q6_K"))])
def test_importance_matrix_changes_only_the_ffn_down_guards(ftype, ffn_down):
    # with --imatrix: Q4_0/Q5_0 guard the first n/8 ffn_down with Q4_1/Q5_1; IQ4_* drop their Q5_K guard; Q4_K_M is unchanged
    spec = toy()
    assert mix(spec, ftype, imatrix=True)["ffn_down"] == ffn_down
    assert mix(spec, "Q4_0")["ffn_down"] == ["Q4_0"] * 16  # the same spec without one (also: the memo keeps them apart)


def test_eight_expert_models_bump_attention():
    # n_expert == 8 (Mixtral-style): attn_v and attn_k go to Q8_0 for every quantized type; attn_output to Q5_K
    # for the low-bit types listed in llama-quant.cpp, and nothing else for the rest (Q3_K_L keeps Q3_K there)
    spec = toy(n_expert=8)
    for ftype, attn_output in [("Q2_K", "Q5_K"), ("Q3_K_S", "Q5_K"), ("Q3_K_M", "Q5_K"), ("IQ4_NL", "Q5_K"), ("Q4_K_S", "Q5_K"),
                               ("Q4_K_M", "Q5_K"), ("IQ4_XS", "Q5_K"), ("Q3_K_L", "Q3_K"), ("Q5_K_M", "Q5_K"), ("Q6_K", "Q6_K")]:
        got = mix(spec, ftype)
        assert got["attn_v"] == got["attn_k"] == ["Q8_0"] * 16, ftype
        assert got["attn_output"] == [attn_output] * 16, ftype
    nine = mix(toy(n_expert=9), "Q4_K_M")  # any other expert count: the dense rules
    assert nine["attn_v"] == per_layer("Q4_K", "Q6_K") and nine["attn_k"] == ["Q4_K"] * 16 and nine["attn_output"] == ["Q4_K"] * 16


def test_moe_ffn_down_layer_comes_from_the_name():
    # n_expert > 1: layer_info parses "blk.N." (the shared MLP and the expert stack both count as ffn_down, so the
    # running counter would run twice as fast); a single "expert" (n_expert 1) uses the counter as a dense model does
    names = ("ffn_down", "ffn_down_exps")
    by_name = mix(toy(n_expert=2, ffn_down_names=names), "Q4_K_M")
    assert by_name["ffn_down"] == by_name["ffn_down_exps"] == per_layer("Q4_K", "Q6_K")
    counted = mix(toy(n_expert=1, ffn_down_names=names), "Q4_K_M")  # counter 2i (shared), 2i + 1 (experts), of n 16
    assert counted["ffn_down"] == ["Q6_K" if 2 * i in MORE or 2 * i >= 14 else "Q4_K" for i in range(16)]
    assert counted["ffn_down_exps"] == ["Q6_K" if 2 * i + 1 in MORE or 2 * i + 1 >= 14 else "Q4_K" for i in range(16)]


def test_tied_embedding_follows_the_output_rule_and_untied_keeps_the_default():
    assert mix(toy(tied=True), "Q4_K_S")["token_embd"] == "Q6_K"
    assert mix(toy(tied=True), "Q8_0")["token_embd"] == "Q8_0"
    assert mix(toy(tied=False), "Q4_K_S")["token_embd"] == "Q4_K"


def test_float_files_keep_1d_tensors_and_the_router_in_f32():
    spec = toy(n_expert=2, ffn_down_names=("ffn_down", "ffn_gate_inp"))
    for ftype in ("F16", "BF16", "F32"):
        got = mix(spec, ftype)
        assert got["attn_q"] == [ftype] * 16 and got["token_embd"] == ftype and got["output"] == ftype
        assert got["attn_norm"] == ["F32"] * 16 and got["ffn_gate_inp"] == ["F32"] * 16


def test_a_layerless_inventory_plans_without_error():
    # a tensors-only inventory (no attention layers known): n_gqa is taken as 1
    spec = ModelSpec("emb", "gemma3", "gemma3", 256, 512, 0, (), 0, 4096, (TensorSpec("token_embd.weight", (512, 256)),))
    assert gguf_tensor_types(spec, "Q2_K") == [(spec.tensors[0], "Q6_K")]


def test_tensors_llama_cpp_never_quantizes_keep_their_source_type():
    # tensor_allows_quantization: names with _norm.weight (whatever the shape), the router, altup, laurel and the
    # model-level PLE projection keep the type they have in the source file; a 2-D tensor of an unknown source
    # dtype is written as F16, a 1-D one as F32; a GGUF source's quantized type is kept as it is
    ts = (TensorSpec("blk.0.attn_q_norm.weight", (4, 256), 0, "BF16"), TensorSpec("blk.0.ffn_gate_inp.weight", (4, 256), 0, "F32"),
          TensorSpec("per_layer_model_proj.weight", (256, 256), None, "F8_E4M3"), TensorSpec("altup_proj.weight", (256,), None, "I8"),
          TensorSpec("blk.0.laurel_l.weight", (256, 256), 0, "Q8_0"), TensorSpec("blk.0.laurel_r.weight", (256, 256), 0, "bf16"),
          TensorSpec("blk.0.attn_q.weight", (256, 256), 0, "F8_E4M3"))
    spec = ModelSpec("src", "gemma3", "gemma3", 256, 512, 1, (LayerSpec(0, False, 8, 2, 32, 32, None, 512),), 0, 4096, ts)
    assert [typ for _, typ in gguf_tensor_types(spec, "Q4_K_M")] == ["BF16", "F32", "F16", "F32", "Q8_0", "BF16", "Q4_K"]


def test_use_more_bits_boundaries():
    from planner.formats import _use_more_bits

    # n 34: n/8 = 4, 7n/8 = 29 (integer division, as in C++): layer 29 is in the last eighth although 29 < 29.75
    assert [i for i in range(34) if _use_more_bits(i, 34)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 29, 30, 31, 32, 33]
    # n 144: n/8 = 18; layers 16 and 17 are in the first eighth (not n/9 = 16)
    assert _use_more_bits(16, 144) and _use_more_bits(17, 144) and not _use_more_bits(18, 144)


@pytest.mark.parametrize("ncols,typ,expected", [(704, "Q4_K", "Q5_0"), (704, "Q6_K", "Q8_0"), (704, "Q5_K", "Q5_1"),
                                                (704, "Q2_K", "Q4_0"), (704, "Q3_K", "Q4_0"), (704, "IQ4_XS", "IQ4_NL"),
                                                (768, "Q4_K", "Q4_K"), (48, "Q4_K", "F16"), (48, "Q8_0", "F16"), (64, "Q8_0", "Q8_0")])
def test_type_fallback_for_rows_that_are_not_whole_blocks(ncols, typ, expected):
    # tensor_type_fallback: a 256-block type on a row that is not a multiple of 256 falls back to its 32-block
    # partner, and to F16 when even 32 does not divide the row
    from planner.formats import _fallback_row

    assert _fallback_row(ncols, typ) == expected


def test_gguf_source_keeps_its_own_sizes_only_at_its_own_type():
    # a GGUF read from disk carries every tensor's bytes: planned at its own file type those are the answer
    # (a mix made with --tensor-type overrides is not recomputed); at another type the rules decide
    ts = (TensorSpec("token_embd.weight", (512, 256), None, "Q8_0", 512 * 8 * 34), TensorSpec("blk.0.attn_q.weight", (256, 256), 0, "Q8_0", 999))
    spec = ModelSpec("g", "gemma3", "gemma3", 256, 512, 1, (LayerSpec(0, False, 8, 2, 32, 32, None, 512),), 0, 4096, ts,
                     gguf_file_type="q8_0")
    assert [b for _, b in tensor_sizes(spec, parse_format("Q8_0"))] == [512 * 8 * 34, 999]
    assert [b for _, b in tensor_sizes(spec, parse_format("Q4_K_M"))] == [512 * 210, 256 * 144]  # Q6_K (tied), Q4_K
    partial = ModelSpec("g", "gemma3", "gemma3", 256, 512, 1, spec.layers, 0, 4096, (ts[0], TensorSpec("x.weight", (256, 256))),
                        gguf_file_type="Q8_0")
    assert [b for _, b in tensor_sizes(partial, parse_format("Q8_0"))] == [512 * 8 * 34, 256 * 8 * 34]  # a size missing: computed


def test_dense_sizes_per_tensor_and_fp8_keeps_non_linears_16_bit():
    # vLLM fp8: projections (attention, MLP, experts) 1 byte per weight; embeddings, norms and the MoE router 2
    spec = toy(n_layers=1, n_expert=2, ffn_down_names=("ffn_down", "ffn_gate_inp"))
    fp8 = {t.name: b for t, b in tensor_sizes(spec, parse_format("fp8"))}
    assert fp8["token_embd.weight"] == 512 * 256 * 2 and fp8["output_norm.weight"] == 256 * 2
    assert fp8["blk.0.attn_q.weight"] == 256 * 256 and fp8["blk.0.ffn_down.weight"] == 256 * 512
    assert fp8["blk.0.ffn_gate_inp.weight"] == 256 * 512 * 2
    bf16 = {t.name: b for t, b in tensor_sizes(spec, parse_format("bf16", "vllm"))}
    assert bf16["blk.0.attn_q.weight"] == 256 * 256 * 2 and bf16["output_norm.weight"] == 256 * 2
    f32 = weight_bytes(spec, parse_format("f32"))
    assert f32 == 4 * spec.n_params_text and isinstance(f32, int)


def test_tensor_bytes_of_a_3d_expert_stack():
    from planner.formats import tensor_bytes

    # every leading dimension multiplies the rows: 4 experts x 8 rows x (256 / 32 blocks of 34 bytes)
    assert tensor_bytes("Q8_0", (4, 8, 256)) == 4 * 8 * 8 * 34


def test_quality_loss_lookup():
    from planner.errors import UnknownFormatError
    from planner.formats import quality_loss

    # planner/data/quality.json: GGUF types under their upper-case names, dense/GPTQ under lower-case ones
    assert quality_loss("Q4_K_M") == quality_loss("q4_k_m") == 0.1754
    assert quality_loss("fp8") == 0.01 and quality_loss("gptq-int4") == 0.27
    with pytest.raises(UnknownFormatError, match="no published quality figure"):
        quality_loss("Q7_K")


def test_first_eighth_and_sixteenth_are_integer_divisions():
    # llama.cpp compares i_layer < n_layer/8 (and /16) in integer arithmetic: with 34 layers the first eighth is
    # layers 0-3 (34/8 = 4) and the first sixteenth layers 0-1 (34/16 = 2); layer 4 (resp. 2) is already outside
    spec = toy(n_layers=34)
    first4 = range(4)
    assert mix(spec, "Q2_K_S")["ffn_down"] == per_layer("Q2_K", "Q4_K", first4, 34)
    assert mix(spec, "IQ4_XS")["ffn_down"] == per_layer("IQ4_XS", "Q5_K", first4, 34)
    assert mix(spec, "Q4_K_S")["ffn_down"] == per_layer("Q4_K", "Q5_K", first4, 34)
    assert mix(spec, "Q4_0", imatrix=True)["ffn_down"] == per_layer("Q4_0", "Q4_1", first4, 34)
    assert mix(spec, "Q3_K_M")["ffn_down"] == per_layer("Q4_K", "Q5_K", range(2), 34)
