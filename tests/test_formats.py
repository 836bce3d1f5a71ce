"""GGUF quant mixes against llama-quant.cpp's rules and llama.cpp's published sizes."""

import pytest

from planner.catalog import get_model
from planner.formats import gguf_tensor_types, parse_format, type_histogram, weight_bytes
from planner.types import LayerSpec, ModelSpec, TensorSpec

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
