"""The planner's GPTQ byte model (planner.formats.gptq_tensor_bytes) against the layouts GPTQModel 7.6
writes and transformers/vLLM load. Pure arithmetic: no GPTQ backend needed. The end-to-end check
against a real reload is tests/test_gptq.py."""

from __future__ import annotations

import pytest

from planner.catalog import get_model
from planner.formats import gptq_tensor_bytes, parse_format, weight_bytes
from planner.types import TensorSpec

# (tensor, bits, group, bytes, why)
CASES = [
    (TensorSpec("blk.0.attn_q.weight", (256, 256), 0), 4, 128,
     32 * 256 * 4 + 2 * 32 * 4 + 2 * 256 * 2 + 256 * 4,
     "qweight int32[in/8, out] + qzeros int32[groups, out/8] + scales fp16[groups, out] + g_idx int32[in]"),
    (TensorSpec("blk.0.ffn_down.weight", (256, 512), 0), 4, 128,
     64 * 256 * 4 + 4 * 32 * 4 + 4 * 256 * 2 + 512 * 4,
     "down_proj: in = 512 gives 4 groups (tiny Gemma 3, read off the saved checkpoint)"),
    (TensorSpec("blk.0.attn_k.weight", (128, 256), 0), 8, 128,
     64 * 128 * 4 + 2 * 32 * 4 + 2 * 128 * 2 + 256 * 4,
     "8 bits: 4 values per int32 word"),
    (TensorSpec("blk.0.attn_q.weight", (256, 256), 0), 4, -1,
     32 * 256 * 4 + 1 * 32 * 4 + 1 * 256 * 2 + 256 * 4,
     "group -1: one group per row"),
    (TensorSpec("blk.0.attn_q.weight", (256, 320), 0), 4, 128,
     40 * 256 * 4 + 3 * 32 * 4 + 3 * 256 * 2 + 320 * 4,
     "a partial last group still gets a scale and a zero"),
    (TensorSpec("blk.2.inp_gate.weight", (256, 1536), 2), 4, 128,
     192 * 256 * 4 + 12 * 32 * 4 + 12 * 256 * 2 + 1536 * 4,
     "Gemma 3n/4 per-layer gate: GPTQModel's module_tree lists per_layer_input_gate"),
    (TensorSpec("blk.2.proj.weight", (1536, 256), 2), 4, 128,
     32 * 1536 * 4 + 2 * 192 * 4 + 2 * 1536 * 2 + 256 * 4,
     "Gemma 3n/4 per-layer projection (per_layer_projection)"),
    (TensorSpec("blk.0.ffn_gate_up_exps.weight", (4, 512, 256), 0), 4, 128, 4 * 512 * 256 * 2,
     "fused Gemma 4 experts stay bf16: GPTQModel 7.6's gemma4 module_tree does not list them"),
    (TensorSpec("blk.0.ffn_gate_inp.weight", (4, 256), 0, "F32"), 4, 128, 4 * 256 * 2,
     "the MoE router is a Linear GPTQModel leaves alone; loaded in the 16-bit model dtype"),
    (TensorSpec("per_layer_model_proj.weight", (1536, 256)), 4, 128, 1536 * 256 * 2,
     "the model-level PLE projection is not quantized (only the per-layer ones are)"),
    (TensorSpec("token_embd.weight", (1024, 256)), 4, 128, 1024 * 256 * 2,
     "embeddings (and the tied lm_head) stay 16-bit"),
    (TensorSpec("blk.0.attn_norm.weight", (256,), 0, "F32"), 4, 128, 256 * 2,
     "a norm is F32 in the inventory but loads in the model's 16-bit dtype"),
]


@pytest.mark.parametrize("t,bits,group,expected,why", CASES, ids=[c[0].name + f"-{c[1]}b-g{c[2]}" for c in CASES])
def test_gptq_tensor_bytes(t, bits, group, expected, why):
    assert gptq_tensor_bytes(t, bits, group) == expected, why


def test_gptq_int4_bits_per_weight_on_a_real_model():
    # Gemma 3 4B at g128: qweight 4 + (zeros 4 + scale 16) / 128 + g_idx 32 / out bits per weight.
    spec, _ = get_model("gemma-3-4b")
    emb = spec.vocab * spec.hidden * 2
    lin = sum(t.n_elements for t in spec.tensors if t.layer is not None and len(t.shape) == 2)
    bpw = (weight_bytes(spec, parse_format("gptq-int4")) - emb) * 8 / lin
    assert 4.15 < bpw < 4.25


def test_moe_experts_keep_16_bit():
    spec, _ = get_model("gemma-4-26b-a4b")
    exps = sum(t.n_elements for t in spec.tensors if "_exps" in t.name and len(t.shape) == 3)
    assert exps > 0
    q4 = weight_bytes(spec, parse_format("gptq-int4"))
    assert q4 > 2 * exps  # the experts alone, at 2 bytes each


def test_group_sizes_at_the_edges():
    # group <= 0 means one group over the whole input row (act-order-less per-channel GPTQ); group 1 is a scale
    # and a zero per input column. Bytes are whole integers (the plan prints them as such).
    t = TensorSpec("blk.0.attn_q.weight", (256, 256), 0)
    per_row = 32 * 256 * 4 + 1 * 32 * 4 + 1 * 256 * 2 + 256 * 4
    assert gptq_tensor_bytes(t, 4, 0) == gptq_tensor_bytes(t, 4, -1) == per_row
    assert gptq_tensor_bytes(t, 4, 1) == 32 * 256 * 4 + 256 * 32 * 4 + 256 * 256 * 2 + 256 * 4
    total = weight_bytes(get_model("gemma-3-4b")[0], parse_format("gptq-int4"))
    assert isinstance(total, int) and all(isinstance(gptq_tensor_bytes(t, b, 128), int) for b in (4, 8))


@pytest.mark.parametrize("t,quantized", [
    (TensorSpec("blk.0.attn_v.weight", (256, 256), 0), True),
    (TensorSpec("blk.0.ffn_gate.weight", (512, 256), 0), True),
    (TensorSpec("blk.0.ffn_gate_inp.weight", (4, 256), 0), False),  # the router reads as ffn_gate but stays
    (TensorSpec("blk.0.ffn_down_exps.weight", (4, 256, 512), 0), False),  # fused 3-D experts are not Linear modules
    (TensorSpec("blk.0.attn_q_norm.weight", (256,), 0), False),
    (TensorSpec("blk.3.inp_gate.weight", (256, 1536), 3), True),  # per-layer input gate (per_layer_input_gate)
    (TensorSpec("blk.3.proj.weight", (1536, 256), 3), True),  # per-layer projection (per_layer_projection)
    (TensorSpec("inp_gate.weight", (256, 1536)), False),  # outside a layer: not in the module tree
    (TensorSpec("blk.3.altup_proj.weight", (256, 256), 3), False),  # only the two names above, not any *proj
    (TensorSpec("token_embd.weight", (1024, 256)), False),
])
def test_which_tensors_gptq_quantizes(t, quantized):
    from planner.formats import gptq_quantized

    assert gptq_quantized(t) is quantized
