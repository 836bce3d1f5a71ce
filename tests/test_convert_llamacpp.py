"""The converter is right when llama.cpp computes what transformers computes, not when the file loads.

For every tiny family the F32 GGUF's logits (llama.cpp, F32 KV cache) are compared with
transformers' F32 logits for the same token ids. Tolerance 0.01 absolute on logits whose spread is
about 0.8: ggml evaluates GELU through an F16 lookup table and accumulates in a different order, which
measured 0.001-0.003 here; a wrong hyperparameter, a missing +1 on a norm, a mis-ordered fused
gate/up or a wrong rope factor moves logits by 0.1 or more. Prompts are longer than the 16-token
sliding window, so the SWA masks and the SWA/full layout are exercised.

Gemma 3n is bounded at 0.1: 22 layers of AltUp predict/correct, LAuReL, GELU-gated per-layer inputs and
the activation-sparsity cut-off (mean + 1.645 std of each row) pass ggml's F16 GELU table and its
reduction order many more times; measured 0.057 (logit std 0.82), flat across positions (0.015-0.057 at
every position, none jumping at the 16-token window or at the KV-sharing layers 20-21). A missing AltUp
stack, a wrong sparsity scale or wrong KV reuse moves logits by whole units.

Gemma 4 unified (12B) is compared through its text decoder (`model.language_model` + `lm_head` + final
soft-cap), which is what the GGUF holds: 0.0014 measured. transformers 5.24's
Gemma4UnifiedForConditionalGeneration.forward returns different logits from that same decoder for a
text-only prompt past the sliding window (its masks are identical; the difference starts in layer 0 at
token 16), so the wrapper is not the reference here.
"""

from __future__ import annotations

import numpy as np
import pytest

from quantize.tiny import FAMILIES

# gemma3n (the multimodal wrapper) is left out of these sweeps: its text model is gemma3n_text's, which they cover,
# and the wrapper's 2048-wide checkpoint (the width llama.cpp's gemma3nv requires) is converted, quantized and its
# projector run by tests/test_quantize_pipeline.py and tests/test_mmproj.py instead
TEXT_FAMILIES = [f for f in FAMILIES if f != "gemma3n"]

PROMPT = "ka lo mi gem ma plan quant ize tok en shi po ru ta ne, the and of in to is. " * 2
TRICKY = [
    "hello  world", "ka lo\n\nmi", "  leading spaces", "trailing   ", "tabs\tand\nnewlines\n",
    "日本语 한 🙂 émoji ñø", "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "digits 1234567 3.14", "unseen chars: ЖЩ ∑ 𝄞", " ", "\n", "a<mask>b", "x" * 50,
]


TOLERANCE = {"gemma3n_text": 0.1}


def _hf_model(path, family):
    import torch
    import transformers

    cls = {"gemma3": transformers.Gemma3ForConditionalGeneration,
           "gemma4": transformers.Gemma4ForConditionalGeneration,
           "gemma4_audio": transformers.Gemma4ForConditionalGeneration,
           "gemma4_unified": transformers.Gemma4UnifiedForConditionalGeneration}.get(
        family, transformers.AutoModelForCausalLM)
    model = cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    if family != "gemma4_unified":
        return model

    def text_decoder(input_ids):  # see the module docstring
        hidden = model.model.language_model(input_ids=input_ids).last_hidden_state
        logits = model.lm_head(hidden)
        cap = model.config.get_text_config().final_logit_softcapping
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return type("Out", (), {"logits": logits})()

    return text_decoder


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_llama_cpp_logits_match_transformers(family, tiny_model, tiny_gguf, llama_cpp_module):
    import torch
    from transformers import AutoTokenizer

    from quantize.llamacpp import token_logits

    path = tiny_model(family)
    ids = AutoTokenizer.from_pretrained(path)(PROMPT).input_ids
    assert len(ids) > 32  # beyond the 16-token window
    with torch.no_grad():
        ref = _hf_model(path, family)(torch.tensor([ids])).logits[0].float().numpy()
    got = token_logits(tiny_gguf(family), ids)
    assert got.shape == ref.shape
    err = np.abs(got - ref).max()
    assert err < TOLERANCE.get(family, 0.01), f"max |logit difference| {err:.4f} (logit std {ref.std():.3f})"
    assert (got.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text", "gemma4_e", "gemma4_moe", "gemma3n_text", "gemma4_unified"])
def test_greedy_tokens_match_transformers(family, tiny_model, tiny_gguf, llama_cpp_module):
    """load_and_measure's greedy continuation equals transformers' while the choice is clear-cut
    (top-1 beats top-2 by > 0.05 in transformers); a near-tie may legitimately break either way."""
    import torch
    from transformers import AutoTokenizer

    from quantize.llamacpp import load_and_measure

    path = tiny_model(family)
    m = load_and_measure(tiny_gguf(family), n_ctx=256, n_batch=64, n_ubatch=64, flash_attn=False,
                         type_k="f32", type_v="f32", swa_full=False, prompt=PROMPT, n_tokens=6)
    assert m.prompt_tokens == AutoTokenizer.from_pretrained(path)(PROMPT).input_ids
    model = _hf_model(path, family)
    ids = list(m.prompt_tokens)
    checked = 0
    with torch.no_grad():
        for tok in m.generated_tokens:
            logits = model(torch.tensor([ids])).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            if float(top2[0] - top2[1]) <= 0.05:
                break
            assert tok == int(logits.argmax()), f"step {checked}"
            ids.append(tok)
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("family, spm", [("gemma3_text", True), ("gemma3_text", False), ("gemma4_text", True)])
def test_tokenizers_agree_on_tricky_strings(family, spm, tiny_model, tiny_gguf, llama_cpp_module):
    """HF tokenizer vs llama.cpp's, for the SentencePiece ("llama") and tokenizer.json ("gemma4") paths."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model(family, spm_tokenizer=spm))
    llm = llama_cpp_module.Llama(str(tiny_gguf(family, spm_tokenizer=spm)), vocab_only=True, verbose=False)
    for s in TRICKY:
        assert llm.tokenize(s.encode(), add_bos=True, special=True) == tok(s).input_ids, repr(s)
