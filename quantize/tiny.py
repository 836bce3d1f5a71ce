"""Tiny random Gemma checkpoints, built locally in seconds, for tests and benchmarks.

`build_tiny_model(out_dir, family, **overrides)` writes a Hugging Face directory (config.json,
safetensors weights, a SentencePiece tokenizer.model converted to tokenizer.json, a Gemma chat
template) that transformers loads and `quantize.convert` turns into a GGUF. Nothing is downloaded.

Default widths are multiples of 256 (hidden 256, ffn 512, 2 heads x 128) so that llama.cpp's
K-quant blocks (256 wide) are exercised for real instead of falling back to 32-wide types.
Overrides go into the text config, so a catalog model's real widths with few layers is e.g.
`build_tiny_model(d, "gemma3", hidden_size=2560, intermediate_size=10240, num_attention_heads=8,
num_key_value_heads=4, num_hidden_layers=2, vocab_size=262208)`.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

# family -> what it mimics. Keys are the public names accepted by build_tiny_model.
FAMILIES: dict[str, str] = {
    "gemma2": "Gemma 2 (Gemma2ForCausalLM): alternating sliding/full, attention and final softcapping",
    "gemma3_text": "Gemma 3 text-only (Gemma3ForCausalLM, model_type gemma3_text): QK-norm, 3:1 sliding, linear rope x8",
    "gemma3": "Gemma 3 multimodal wrapper (Gemma3ForConditionalGeneration) with a 1-layer SigLIP tower",
    "gemma4_text": "Gemma 4 dense, 31B-style: K=V on full layers, fewer and wider KV heads on full layers",
    "gemma4_e": "Gemma 4 E-model, E2B-style: per-layer embeddings, KV sharing, double-wide MLP on shared layers",
    "gemma4_moe": "Gemma 4 MoE, 26B-A4B-style: routed experts plus a shared dense MLP, K=V on full layers",
    "gemma4": "Gemma 4 multimodal wrapper (Gemma4ForConditionalGeneration) around the dense text model",
    "gemma4_audio": "Gemma 4 E2B/E4B-style wrapper (Gemma4ForConditionalGeneration) with a 1-layer vision tower and "
                    "a 1-layer audio conformer (128 mel bins, as the feature extractor and llama.cpp's gemma4a)",
    "gemma3n_text": "Gemma 3n text (Gemma3nForCausalLM): AltUp x4, LAuReL, activation sparsity on the first 10 "
                    "layers, per-layer embeddings, KV sharing from layer 20 (22 layers, as llama.cpp hard-codes)",
    "gemma3n": "Gemma 3n multimodal wrapper (Gemma3nForConditionalGeneration) around the gemma3n_text model: a "
               "MobileNetV5 vision tower of every block kind in 4 narrow stages (written without timm; loading it in "
               "transformers needs timm) and a 1-layer audio "
               "conformer",
    "gemma4_unified": "Gemma 4 12B-style unified (Gemma4UnifiedForConditionalGeneration): dense text model plus the "
                      "encoder-free patch/waveform embedders",
}

# llama.cpp's gemma3n graph fixes these (src/models/gemma3n.cpp, llama-hparams.h, models.h): KV is stored by
# the first 20 layers only, activation sparsity (0.95 quantile) covers the first 10, AltUp has 4 inputs and
# the per-layer input width is 256, LAuReL rank 64. The tiny model keeps them and is just deep enough (22
# layers) for two KV-sharing layers.
GEMMA3N_TINY_LAYERS = 22

# The tiny MobileNetV5 (timm's MobileNetV5Encoder as Gemma3nVisionConfig.model_args describes it, written without
# timm by _mobilenetv5_shapes): the released mobilenetv5_300m_enc's four stages with one or two blocks each instead
# of 3/5/37/39, narrow, but every block kind llama.cpp's graph (tools/mtmd/models/mobilenetv5.cpp) runs: edge
# residual (strided and residual), universal inverted residual (start + mid depthwise, start only, pointwise only)
# and multi-query attention with (stage 2) and without (stage 3) strided K/V. Each stage starts with stride 2, as
# llama.cpp assumes, and ends with a UIR block (timm reads a stage's output width from its last block, which an
# attention block lacks). The fusion adapter's output width (2048 = vision hidden_size) and the 16 x 16 soft-token
# grid are fixed by timm and llama.cpp, so the smallest image is 256 px (16 x 16 after the stem and three strided
# stages, 1/16).
GEMMA3N_TINY_MOBILENET = [
    [dict(block_type="er", out_chs=16, stride=2, exp_kernel_size=3, pw_kernel_size=1, exp_ratio=4.0),
     dict(block_type="er", out_chs=16, stride=1, exp_kernel_size=3, pw_kernel_size=1, exp_ratio=4.0)],
    [dict(block_type="uir", out_chs=24, stride=2, dw_kernel_size_start=3, dw_kernel_size_mid=5, exp_ratio=6.0),
     dict(block_type="uir", out_chs=24, stride=1, dw_kernel_size_start=5, dw_kernel_size_mid=0, exp_ratio=4.0)],
    [dict(block_type="uir", out_chs=32, stride=2, dw_kernel_size_start=5, dw_kernel_size_mid=5, exp_ratio=6.0),
     dict(block_type="mqa", out_chs=32, stride=1, dw_kernel_size=3, num_heads=2, key_dim=16, value_dim=16,
          kv_stride=2),
     dict(block_type="uir", out_chs=32, stride=1, dw_kernel_size_start=0, dw_kernel_size_mid=0, exp_ratio=2.0)],
    [dict(block_type="uir", out_chs=48, stride=2, dw_kernel_size_start=5, dw_kernel_size_mid=5, exp_ratio=6.0),
     dict(block_type="mqa", out_chs=48, stride=1, dw_kernel_size=3, num_heads=2, key_dim=16, value_dim=16,
          kv_stride=1),
     dict(block_type="uir", out_chs=48, stride=1, dw_kernel_size_start=0, dw_kernel_size_mid=0, exp_ratio=2.0)],
]
_MNV5_BLOCK_DEFAULTS = {"er": dict(act_layer=None, force_in_chs=0, se_ratio=0.0, noskip=False),
                        "uir": dict(act_layer=None, dw_kernel_size_end=0, se_ratio=0.0, noskip=False),
                        "mqa": dict(act_layer=None, noskip=False)}
GEMMA3N_TINY_IMAGE = 256
# The tiny Gemma 3n's preprocessor_config.json: a SigLIP image processor at 768 px that rescales to [0, 1] without
# normalising (mean 0, std 1, as llama.cpp's converter writes for gemma3nv) and 256 soft tokens; quantize.mmproj
# reads size and image_seq_length from it
GEMMA3N_IMAGE_PROCESSOR = dict(image_processor_type="SiglipImageProcessor", do_resize=True,
                               size={"height": 768, "width": 768}, resample=2, do_rescale=True,
                               rescale_factor=1 / 255, do_normalize=False, image_seq_length=256)

SPECIAL_PIECES = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}  # Gemma's ids
USER_PIECES = ["<mask>", "<start_of_turn>", "<end_of_turn>"]  # ids 4, 5, 6

# Gemma 2/3 chat format: system text is folded into the first user turn; the model role is "model".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] | trim + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if role == 'user' and ns.system %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

_SYLLABLES = [
    "ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "gem", "ma", "plan", "quant", "ize", "tok",
    "en", "the", "and", "of", "in", "to", "is", "ü", "é", "ñ", "ø", "日本", "语", "한", "🙂", "42", "7",
]


def _sliding(n_layers: int, period: int, force_last_full: bool = False) -> list[str]:
    """Layer types with one full-attention layer every `period` layers (Gemma's (i+1) % period rule)."""
    types = ["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(n_layers)]
    if force_last_full and types:
        types[-1] = "full_attention"
    return types


def _text_defaults(family: str) -> dict[str, Any]:
    common = dict(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_attention_heads=2,
        num_key_value_heads=1, head_dim=128, max_position_embeddings=8192, rms_norm_eps=1e-6,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
        initializer_range=0.05,
    )
    if family == "gemma2":
        return common | dict(
            num_hidden_layers=4, sliding_window=16, query_pre_attn_scalar=128,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, rope_theta=10000.0,
        )
    if family in ("gemma3_text", "gemma3"):
        return common | dict(
            num_hidden_layers=4, sliding_window=16, query_pre_attn_scalar=128, swa_period=4,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
            },
        )
    g4 = common | dict(
        sliding_window=16, final_logit_softcapping=30.0, hidden_size_per_layer_input=0,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                               "rope_theta": 1000000.0},
        },
    )
    if family in ("gemma4_text", "gemma4", "gemma4_audio"):
        return g4 | dict(num_hidden_layers=4, swa_period=4, attention_k_eq_v=True,
                         num_key_value_heads=2, num_global_key_value_heads=1, global_head_dim=256)
    if family == "gemma4_e":
        return g4 | dict(num_hidden_layers=6, swa_period=3, attention_k_eq_v=False, num_key_value_heads=1,
                         global_head_dim=256, hidden_size_per_layer_input=256, num_kv_shared_layers=3,
                         use_double_wide_mlp=True)
    if family in ("gemma3n_text", "gemma3n"):
        n = 22
        if family == "gemma3n":
            # llama.cpp's gemma3nv reports the projector's output width as the vision width (mm.input_projection's
            # ne[0], clip_n_mmproj_embd) and refuses a text model of another width: the released E2B/E4B have
            # 2048 for both, and so does the tiny wrapper (with a narrow FFN to stay small)
            common = common | dict(hidden_size=2048, intermediate_size=128)
        return common | dict(
            num_hidden_layers=n, swa_period=5, sliding_window=16, final_logit_softcapping=30.0,
            num_key_value_heads=1, hidden_size_per_layer_input=256, vocab_size_per_layer_input=1024,
            laurel_rank=64, altup_num_inputs=4, altup_active_idx=0, num_kv_shared_layers=n - 20,
            activation_sparsity_pattern=[0.95] * 10 + [0.0] * (n - 10),
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            },
        )
    if family == "gemma4_unified":
        return g4 | dict(num_hidden_layers=4, swa_period=4, attention_k_eq_v=False, num_key_value_heads=1,
                         global_head_dim=256)
    if family == "gemma4_moe":
        return g4 | dict(num_hidden_layers=4, swa_period=4, attention_k_eq_v=True, num_key_value_heads=2,
                         num_global_key_value_heads=1, global_head_dim=256, intermediate_size=256,
                         enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=256)
    raise ValueError(f"unknown tiny family {family!r}; known: {', '.join(FAMILIES)}")


def _make_config(family: str, overrides: dict[str, Any]):
    import transformers

    kw = _text_defaults(family)
    kw.update(overrides)
    n = kw["num_hidden_layers"]
    period = kw.pop("swa_period", None)
    if "layer_types" not in kw:
        if family == "gemma2":
            kw["layer_types"] = _sliding(n, 2)
        else:
            kw["layer_types"] = _sliding(n, period or 6, force_last_full=family.startswith("gemma4"))
    if family.startswith("gemma3n"):
        kw.pop("query_pre_attn_scalar", None)
    if family.startswith("gemma4") and family != "gemma4_unified" and "vocab_size_per_layer_input" not in kw:
        kw["vocab_size_per_layer_input"] = kw["vocab_size"]
    if family.startswith("gemma3n"):
        kw["vocab_size_per_layer_input"] = kw["vocab_size"]
        text = transformers.Gemma3nTextConfig(**kw)
        if family == "gemma3n_text":
            return text
        return _gemma3n_config(text)
    if family == "gemma4_unified":
        for k in ("hidden_size_per_layer_input", "vocab_size_per_layer_input"):
            kw.pop(k, None)
        text = transformers.Gemma4UnifiedTextConfig(**kw)
        vision = transformers.Gemma4UnifiedVisionConfig(patch_size=4, pooling_kernel_size=2,
                                                        mm_embed_dim=64, mm_posemb_size=32,
                                                        output_proj_dims=64)  # = mm_embed_dim: the embedder's input
        audio = transformers.Gemma4UnifiedAudioConfig(audio_embed_dim=64)
        v = kw["vocab_size"]
        return transformers.Gemma4UnifiedConfig(
            text_config=text, vision_config=vision, audio_config=audio, boi_token_id=v - 7, eoi_token_id=v - 6,
            image_token_id=v - 5, video_token_id=v - 4, boa_token_id=v - 3, eoa_token_index=v - 2,
            audio_token_id=v - 1)

    if family == "gemma2":
        return transformers.Gemma2Config(**kw)
    if family == "gemma3_text":
        return transformers.Gemma3TextConfig(**kw)
    if family in ("gemma4_text", "gemma4_e", "gemma4_moe"):
        return transformers.Gemma4TextConfig(**kw)
    if family == "gemma3":
        text = transformers.Gemma3TextConfig(**kw)
        vision = transformers.SiglipVisionConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
            image_size=28, patch_size=14,
        )
        # Image token ids must index the (tiny) embedding table.
        v = kw["vocab_size"]
        return transformers.Gemma3Config(
            text_config=text, vision_config=vision, mm_tokens_per_image=4,
            boi_token_index=v - 3, eoi_token_index=v - 2, image_token_index=v - 1,
        )
    if family in ("gemma4", "gemma4_audio"):
        text = transformers.Gemma4TextConfig(**kw)
        vision = transformers.Gemma4VisionConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, head_dim=32, position_embedding_size=64,
        )
        v = kw["vocab_size"]
        audio = None
        if family == "gemma4_audio":
            # the subsampler's projection reads (channels[0] // 4) * channels[1] inputs, which equals the
            # flattened (mel/4) x channels[1] only when channels[0] is the 128 mel bins, as in the released model
            audio = transformers.Gemma4AudioConfig(
                hidden_size=64, num_hidden_layers=1, num_attention_heads=2, subsampling_conv_channels=[128, 8],
                output_proj_dims=48,
            )
        # transformers masks the audio placeholder id out of the text embeddings: it must not be a piece the
        # logits-parity prompt uses (the tiny vocabulary's top ids are single characters: 1016 is '日')
        extra = dict(audio_token_id=v - 8, boa_token_id=v - 7, eoa_token_index=v - 6) if audio is not None else {}
        return transformers.Gemma4Config(
            text_config=text, vision_config=vision, audio_config=audio,
            boi_token_id=v - 4, eoi_token_id=v - 3, image_token_id=v - 2, video_token_id=v - 1, **extra,
        )
    raise ValueError(f"unknown tiny family {family!r}; known: {', '.join(FAMILIES)}")


def _gemma3n_model_args() -> dict[str, Any]:
    """timm.create_model's arguments for the tiny MobileNetV5, fresh each call: timm's builder writes into the
    block dicts it is given (activation layers), which would no longer serialise to config.json."""
    return dict(block_args=[[dict(_MNV5_BLOCK_DEFAULTS[b["block_type"]], **b) for b in stage]
                            for stage in GEMMA3N_TINY_MOBILENET], stem_size=16)


def _make_divisible(v: float, divisor: int = 8) -> int:
    """timm's make_divisible (layers/helpers.py): round to a multiple of 8, never more than 10% down."""
    n = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return n + divisor if n < 0.9 * v else n


MOBILENETV5_FUSED_WIDTH = 2048  # timm's MobileNetV5Encoder.num_features, fixed: the fusion adapter's output


def _mobilenetv5_shapes(model_args: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor name (under timm_model.) -> shape of timm's MobileNetV5Encoder built from `model_args` (block_args,
    stem_size), derived without timm. Layout from timm 1.0.31: models/mobilenetv5.py (MobileNetV5Encoder: a 3x3
    stride-2 stem conv with bias and an RMS norm; MobileNetV5MultiScaleFusionAdapter: an expand-2 inverted
    residual without layer scale over the concatenated ends of the last two stages, to 2048 channels, then an RMS
    norm) and models/_efficientnet_blocks.py (EdgeResidual: conv_exp k x k to make_divisible(in * e), bn1,
    conv_pwl 1x1, bn2; UniversalInvertedResidual: optional depthwise dw_start on the input, pw_exp to
    make_divisible(in * e), optional depthwise dw_mid, pw_proj, layer_scale; MobileAttention: norm, query /
    key / value / output 1x1 projections of num_heads x key_dim, key_dim, value_dim and out channels, depthwise
    down_conv + norm on K and V when kv_stride > 1, layer_scale). Every RMS norm has a weight and no bias; no conv
    but the stem's has a bias. These are the names llama.cpp's converter (convert_hf_to_gguf.py,
    Gemma3nVisionAudioModel) maps to v.* and clip.cpp's MobileNetV5 graph (tools/mtmd/models/mobilenetv5.cpp)
    reads. Blocks this layout does not cover (squeeze-excite, a UIR end depthwise) are refused."""
    out: dict[str, tuple[int, ...]] = {}
    stem = _make_divisible(model_args["stem_size"])
    out["conv_stem.conv.weight"] = (stem, 3, 3, 3)
    out["conv_stem.conv.bias"] = (stem,)
    out["conv_stem.bn.weight"] = (stem,)
    cin, ends = stem, []
    for s, stage in enumerate(model_args["block_args"]):
        for b, blk in enumerate(stage):
            kind, c = blk["block_type"], _make_divisible(blk["out_chs"])
            pre = f"blocks.{s}.{b}."
            if blk.get("se_ratio") or blk.get("dw_kernel_size_end") or kind not in ("er", "uir", "mqa"):
                raise ValueError(f"MobileNetV5 block {s}.{b} ({kind}): only er, uir and mqa blocks without "
                                 "squeeze-excite or end depthwise are laid out here")
            if kind == "er":
                mid = _make_divisible((blk.get("force_in_chs") or cin) * blk["exp_ratio"])
                k, pw = blk["exp_kernel_size"], blk.get("pw_kernel_size", 1)
                out |= {pre + "conv_exp.weight": (mid, cin, k, k), pre + "bn1.weight": (mid,),
                        pre + "conv_pwl.weight": (c, mid, pw, pw), pre + "bn2.weight": (c,)}
            elif kind == "uir":
                mid = _make_divisible(cin * blk["exp_ratio"])
                if blk.get("dw_kernel_size_start"):
                    k = blk["dw_kernel_size_start"]
                    out |= {pre + "dw_start.conv.weight": (cin, 1, k, k), pre + "dw_start.bn.weight": (cin,)}
                out |= {pre + "pw_exp.conv.weight": (mid, cin, 1, 1), pre + "pw_exp.bn.weight": (mid,)}
                if blk.get("dw_kernel_size_mid"):
                    k = blk["dw_kernel_size_mid"]
                    out |= {pre + "dw_mid.conv.weight": (mid, 1, k, k), pre + "dw_mid.bn.weight": (mid,)}
                out |= {pre + "pw_proj.conv.weight": (c, mid, 1, 1), pre + "pw_proj.bn.weight": (c,),
                        pre + "layer_scale.gamma": (c,)}
            else:
                h, dk, dv, a = blk["num_heads"], blk["key_dim"], blk["value_dim"], pre + "attn."
                out[pre + "norm.weight"] = (cin,)
                out[a + "query.proj.weight"] = (h * dk, cin, 1, 1)
                if blk.get("kv_stride", 1) > 1:
                    k = blk["dw_kernel_size"]
                    for kv in ("key", "value"):
                        out |= {a + kv + ".down_conv.weight": (cin, 1, k, k), a + kv + ".norm.weight": (cin,)}
                out |= {a + "key.proj.weight": (dk, cin, 1, 1), a + "value.proj.weight": (dv, cin, 1, 1),
                        a + "output.proj.weight": (c, h * dv, 1, 1), pre + "layer_scale.gamma": (c,)}
            cin = c
        ends.append(cin)
    fused, mid, width = sum(ends[-2:]), _make_divisible(2.0 * sum(ends[-2:])), MOBILENETV5_FUSED_WIDTH
    out |= {"msfa.ffn.pw_exp.conv.weight": (mid, fused, 1, 1), "msfa.ffn.pw_exp.bn.weight": (mid,),
            "msfa.ffn.pw_proj.conv.weight": (width, mid, 1, 1), "msfa.ffn.pw_proj.bn.weight": (width,),
            "msfa.norm.weight": (width,)}
    return out


def _mobilenetv5_module(model_args: dict[str, Any]):
    """The tower's tensors as a module tree (vision_tower.timm_model.<name>), initialised as timm + transformers
    leave them: kernels N(0, 0.02) (transformers' _init_weights re-draws timm's convolutions), the stem bias 0,
    norm weights 1, layer scales 1e-5 (mobilenetv5_300m_enc's layer_scale_init_value); _randomise then spreads
    the norms and layer scales as for the timm-built tower."""
    import torch

    root = torch.nn.Module()
    for name, shape in _mobilenetv5_shapes(model_args).items():
        mod = root
        *path, leaf = ("timm_model." + name).split(".")
        for part in path:
            if part not in mod._modules:
                mod.add_module(part, torch.nn.Module())
            mod = mod._modules[part]
        if leaf == "gamma":
            value = torch.full(shape, 1e-5)
        elif len(shape) == 1:
            value = torch.zeros(shape) if name == "conv_stem.conv.bias" else torch.ones(shape)
        else:
            value = 0.02 * torch.randn(shape)
        mod.register_parameter(leaf, torch.nn.Parameter(value))
    return root


def _gemma3n_without_timm(config):
    """Gemma3nForConditionalGeneration's module tree with the MobileNetV5 as plain tensors (_mobilenetv5_module)
    instead of transformers' TimmWrapperModel, which needs timm (and through it torchvision) even to be built. Every
    other part is transformers' own, so save_pretrained writes the same names, shapes and dtypes as the real
    class (tests/test_mmproj.py compares them where timm imports)."""
    import torch
    import transformers
    from transformers.models.gemma3n import modeling_gemma3n as g3n

    class Gemma3nWithoutTimm(g3n.Gemma3nPreTrainedModel, transformers.GenerationMixin):
        _tied_weights_keys = dict(g3n.Gemma3nForConditionalGeneration._tied_weights_keys)

        def __init__(self, config):
            super().__init__(config)
            self.model = torch.nn.Module()
            self.model.vision_tower = _mobilenetv5_module(config.vision_config.model_args)
            self.model.language_model = transformers.AutoModel.from_config(config.text_config)
            self.model.audio_tower = transformers.AutoModel.from_config(config.audio_config)
            self.model.embed_vision = g3n.Gemma3nMultimodalEmbedder(config.vision_config, config.text_config)
            self.model.embed_audio = g3n.Gemma3nMultimodalEmbedder(config.audio_config, config.text_config)
            self.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
            self.post_init()

    return Gemma3nWithoutTimm(config)


def _gemma3n_config(text):
    """Gemma3nConfig around `text` with the tiny MobileNetV5 (GEMMA3N_TINY_MOBILENET) and a 1-layer audio
    conformer. The vision and audio hard-token tables (128 rows each in the release) are 8 rows at the top of the
    tiny vocabulary; the image/audio placeholder ids below them."""
    import transformers

    v = text.vocab_size
    vision = transformers.Gemma3nVisionConfig(
        architecture="mobilenetv5_300m_enc", model_args=_gemma3n_model_args(),
        vocab_size=8, vocab_offset=v - 16, num_labels=0)
    audio = transformers.Gemma3nAudioConfig(
        vocab_size=8, vocab_offset=v - 8, hidden_size=64, conf_num_hidden_layers=1, conf_num_attention_heads=2,
        sscp_conv_channel_size=[8, 8])
    return transformers.Gemma3nConfig(
        text_config=text, vision_config=vision, audio_config=audio, boi_token_id=v - 24, eoi_token_id=v - 23,
        image_token_id=v - 22, boa_token_id=v - 21, eoa_token_id=v - 20, audio_token_id=v - 19)


def _corpus(seed: int, n_lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))
                 for _ in range(rng.randint(3, 12))]
        sep = rng.choice([" ", " ", " ", "  ", "\t"])
        lines.append(sep.join(words) + rng.choice([".", "!", "?", ",", "", " :)"]))
    return lines


def train_tokenizer(out_dir: Path, vocab_size: int, seed: int = 0) -> Path:
    """Train a Gemma-style SentencePiece BPE model (byte fallback, no dummy prefix, identity
    normalisation, split digits) and write it as out_dir/tokenizer.model.

    vocab_size above what the small corpus supports is reached by appending UNUSED pieces
    `<unusedN>`, as real Gemma vocabularies carry reserved slots.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    trained = min(vocab_size, 1024)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(seed)), model_writer=buf, model_type="bpe",
        vocab_size=trained, byte_fallback=True, character_coverage=1.0, num_threads=1,
        split_digits=True, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=USER_PIECES, minloglevel=2,
    )
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(buf.getvalue())
    for i in range(len(proto.pieces), vocab_size):
        p = proto.pieces.add()
        p.piece, p.score, p.type = f"<unused{i}>", -1e9, sp_pb2.ModelProto.SentencePiece.UNUSED
    path = Path(out_dir) / "tokenizer.model"
    path.write_bytes(proto.SerializeToString())
    return path


def _save_tokenizer(out_dir: Path, vocab_size: int, seed: int, keep_spm: bool) -> None:
    from transformers import GemmaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        train_tokenizer(Path(tmp), vocab_size, seed)
        # GemmaTokenizer converts the SentencePiece model into a tokenizers BPE (tokenizer.json).
        tok = GemmaTokenizer.from_pretrained(tmp, add_bos_token=True, add_eos_token=False)
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(out_dir)
        if keep_spm:
            shutil.copy(Path(tmp) / "tokenizer.model", Path(out_dir) / "tokenizer.model")
    # Recorded so that loaders that only read tokenizer_config.json see the template too.
    cfg_path = Path(out_dir) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("chat_template", CHAT_TEMPLATE)
    cfg.pop("vocab_file", None)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _randomise(model, family: str, seed: int) -> None:
    """Perturb what default init leaves constant (norm weights, scalars), so that a converter that
    forgets Gemma's +1 on norms, a scale or a per-expert factor produces visibly different logits."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    gemma4 = family.startswith("gemma4") or family.startswith("gemma3n")  # x*w norms, no 1/sqrt(d) on q.k
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mm_input_projection" in name or "mm_soft_emb_norm" in name:
                # Gemma 3's projector starts at zero (weight) and at the x*(1+0) norm: randomised, a projector
                # file whose matrix is transposed or whose norm lacks the +1 gives other soft tokens
                p.copy_(0.05 * torch.randn(p.shape, generator=g) if "projection" in name
                        else 0.2 * torch.randn(p.shape, generator=g))
                continue
            if ".timm_model." in name or "embed_vision.soft_embedding_norm" in name:
                # MobileNetV5's RMS norms start at 1 and its layer scales at 1e-5, which would leave every
                # residual block close to the identity: a projector file that dropped a block, a norm or a
                # layer scale would then still match
                if name.endswith("layer_scale.gamma"):
                    p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
                elif name.endswith(("bn.weight", "bn1.weight", "bn2.weight", "norm.weight")):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                continue
            if "vision" in name or "multi_modal" in name or "embed_vision" in name or "embed_audio" in name:
                continue
            if ".altup." in name:
                # AltUp's coefficients and output scale start at zero: without this its predict/correct
                # mixing would be the identity and a mis-ordered coefficient matrix would go unseen.
                scale = 1.0 if name.endswith("correct_output_scale") else 0.0
                p.copy_(scale + 0.2 * torch.randn(p.shape, generator=g))
                continue
            if name.endswith("norm.weight") or "layernorm" in name:
                base = 1.0 if gemma4 else 0.0  # Gemma 4 norms are x*w, Gemma 2/3 x*(1+w)
                if gemma4 and name.endswith(("q_norm.weight", "k_norm.weight")):
                    # Gemma 4 does not scale q.k by 1/sqrt(d); trained q/k norms keep scores moderate.
                    # Random unit norms would make softmax so sharp that f16 rounding flips it.
                    base = p.shape[0] ** -0.25
                p.copy_(base * (1.0 + 0.2 * torch.randn(p.shape, generator=g)) if gemma4
                        else base + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("router.scale") or name.endswith("per_expert_scale"):
                p.copy_(1.0 + 0.3 * torch.rand(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif "audio_tower." in name and name.endswith(("input_max", "output_max")):
                # the conformer's clipped linears: finite bounds that bite, so a projector file that loses
                # them (llama.cpp clamps before and after each matmul) gives other soft tokens
                b.copy_(torch.tensor(0.6 + 0.4 * torch.rand((), generator=g).item()))
            elif "audio_tower." in name and name.endswith(("input_min", "output_min")):
                b.copy_(torch.tensor(-0.6 - 0.4 * torch.rand((), generator=g).item()))
        for name, p in model.named_parameters():
            if "audio_tower." in name and name.endswith("per_dim_scale"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))  # stored through softplus by the converter


def build_tiny_model(
    out_dir: str | Path,
    family: str,
    *,
    seed: int = 0,
    dtype: str = "float32",
    max_shard_size: str | int | None = None,
    spm_tokenizer: bool = True,
    **overrides: Any,
) -> Path:
    """Build a random Gemma checkpoint of `family` (see FAMILIES) in out_dir and return its path.

    overrides: text-config fields (hidden_size, num_hidden_layers, layer_types, sliding_window,
    vocab_size...), plus `swa_period` (one full layer every N) for Gemma 3/4.
    dtype: "float32" (exact logit comparisons) or "bfloat16" (the size of a real checkpoint).
    max_shard_size: e.g. "2MB" to write sharded safetensors with model.safetensors.index.json.
    spm_tokenizer: also write tokenizer.model (real Gemma 2/3 repos ship it; the converter
    prefers it); without it only tokenizer.json is written.
    Deterministic for a given seed.
    """
    import torch
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; known: {', '.join(FAMILIES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = _make_config(family, dict(overrides))
    text_cfg = config.get_text_config()

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))  # initialise in the target dtype: half the memory for bf16
    try:
        if family in ("gemma3", "gemma3n", "gemma4", "gemma4_audio", "gemma4_unified"):
            if family == "gemma3n":
                model = _gemma3n_without_timm(config)
            else:
                cls = getattr(transformers, {"gemma3": "Gemma3ForConditionalGeneration",
                                             "gemma4": "Gemma4ForConditionalGeneration",
                                             "gemma4_audio": "Gemma4ForConditionalGeneration",
                                             "gemma4_unified": "Gemma4UnifiedForConditionalGeneration"}[family])
                model = cls(config)
        else:
            model = transformers.AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    _randomise(model, family, seed)
    model = model.to(getattr(torch, dtype)).eval()
    save_kw: dict[str, Any] = {}
    if max_shard_size is not None:
        save_kw["max_shard_size"] = max_shard_size
    model.save_pretrained(out, **save_kw)
    if family == "gemma3n":  # save_pretrained names the class it saved; the checkpoint is the real class's
        model.config.architectures = ["Gemma3nForConditionalGeneration"]
        model.config.save_pretrained(out)
        (out / "preprocessor_config.json").write_text(json.dumps(GEMMA3N_IMAGE_PROCESSOR, indent=2) + "\n")
    model.generation_config.save_pretrained(out)
    _save_tokenizer(out, text_cfg.vocab_size, seed, keep_spm=spm_tokenizer)
    return out
