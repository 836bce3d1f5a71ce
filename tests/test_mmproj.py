"""The Gemma 3 vision projector file, loaded and run by llama.cpp's multimodal library.

Needs llama-cpp-python and libmtmd.so built for it (`python -m quantize.llama_bins --mtmd`, about 130 s
on 2 cores: only tools/mtmd is compiled, linked against the wheel's own libllama/libggml). The tiny
Gemma 3's SigLIP tower (1 layer, 28 px, 14 px patches) and projector (randomised, 4 soft tokens) encode
one image; the soft tokens are compared with transformers' `get_image_features` for the same pixels.
Measured max |difference| (soft-token std 0.39): F16 0.0010, BF16 0.0090, Q8_0 0.017. A transposed
projection, a missing +1 on the soft-embedding norm or a wrong pooling factor changes them by the
order of their own size.
"""

from __future__ import annotations

import os

import gguf
import numpy as np
import pytest

BOUND = {"f16": 0.005, "bf16": 0.03, "q8_0": 0.05}


@pytest.fixture(scope="module")
def mtmd_ready(llama_cpp_module):
    from quantize.llama_bins import mtmd_lib

    if mtmd_lib() is None:
        if os.environ.get("GEMMA_PLAN_REQUIRE_LLAMA_BINS"):  # CI builds it: a skip there would hide a failure
            pytest.fail("libmtmd.so is not built: python -m quantize.llama_bins --mtmd")
        pytest.skip("libmtmd.so is not built: python -m quantize.llama_bins --mtmd")


def _image():
    return ((np.arange(28 * 28 * 3) * 37) % 251).astype(np.uint8).reshape(28, 28, 3)


def _reference(model_dir, rgb):
    import torch
    import transformers

    m = transformers.Gemma3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    px = torch.tensor(((rgb / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None], dtype=torch.float32)
    with torch.no_grad():
        out = m.model.get_image_features(pixel_values=px)
    out = getattr(out, "pooler_output", out)
    return (out[0] if isinstance(out, (list, tuple)) else out).reshape(-1, m.config.text_config.hidden_size).numpy()


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_projector_encodes_like_transformers(outtype, tiny_model, tiny_gguf, mtmd_ready, tmp_path):
    from quantize.mmproj import encode_image, plan_mmproj, write_mmproj

    model_dir = tiny_model("gemma3")
    path = write_mmproj(model_dir, tmp_path / f"mmproj-{outtype}.gguf", outtype)
    r = gguf.GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "clip"
    assert r.fields["clip.projector_type"].contents() == "gemma3"
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["mm.input_projection.weight"] == gguf.GGMLQuantizationType.F16  # as llama.cpp's converter forces
    assert types["v.patch_embd.weight"] == gguf.GGMLQuantizationType.F32
    want = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
            "q8_0": gguf.GGMLQuantizationType.Q8_0}[outtype]
    assert types["v.blk.0.ffn_up.weight"] == want

    rgb = _image()
    enc = encode_image(tiny_gguf("gemma3", outtype="f16"), path, rgb)
    assert enc.image_tokens == 4 and enc.n_embd == 256  # mm_tokens_per_image, text width
    assert enc.embd_finite and len(enc.generated) == 3
    err = float(np.abs(enc.embd - _reference(model_dir, rgb)).max())
    assert err < BOUND[outtype], f"max |soft token difference| {err:.4f}"
    # clip's own accounting of the weights it loaded equals the planned tensor bytes (log has 0.01 MiB steps)
    plan = plan_mmproj(model_dir, outtype)
    assert abs(enc.clip_buffers["model"] - plan.tensor_bytes) <= 0.006 * 2**20
    assert enc.clip_buffers["CPU compute"] > 0


def test_text_only_and_other_families_are_refused(tiny_model):
    from quantize.errors import UnsupportedArchitectureError
    from quantize.mmproj import plan_mmproj

    with pytest.raises(UnsupportedArchitectureError, match="no vision tower"):
        plan_mmproj(tiny_model("gemma3_text"))


def _patches(rgb, patch=16):
    """Gemma4ImageProcessor's patchify (convert_image_to_patches), without its torchvision import."""
    import torch

    img = torch.tensor(rgb.transpose(2, 0, 1) / 255.0, dtype=torch.float32)
    c, h, w = img.shape
    x = img.reshape(c, h // patch, patch, w // patch, patch).permute(1, 3, 2, 4, 0).reshape((h // patch) * (w // patch), -1)
    grid = torch.meshgrid(torch.arange(w // patch), torch.arange(h // patch), indexing="xy")
    return x[None], torch.stack(grid, dim=-1).reshape(-1, 2)[None]


@pytest.mark.parametrize("outtype, bound", [("f16", 0.008), ("bf16", 0.01), ("q8_0", 0.02)])
def test_gemma4_projector_encodes_like_transformers(outtype, bound, tiny_model, tiny_gguf, mtmd_ready, tmp_path):
    """Gemma 4's vision tower (gemma4v: 2-D rope, pooled 3x3, no patch bias), 480 px -> 10 x 10 soft tokens.
    Measured max |difference| (std 0.164): F16 0.0016, BF16 0.0020, Q8_0 0.0038; the HWC -> CHW reorder of
    the patch kernel is what a mistake would break first."""
    import torch
    import transformers

    from quantize.mmproj import encode_image, write_mmproj

    model_dir = tiny_model("gemma4")
    path = write_mmproj(model_dir, tmp_path / f"mmproj-{outtype}.gguf", outtype)
    r = gguf.GGUFReader(path)
    assert r.fields["clip.vision.projector_type"].contents() == "gemma4v"
    rgb = ((np.arange(480 * 480 * 3) * 37) % 251).astype(np.uint8).reshape(480, 480, 3)
    enc = encode_image(tiny_gguf("gemma4", outtype="f16"), path, rgb)
    assert enc.image_tokens == 100 and len(enc.generated) == 3
    m = transformers.Gemma4ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = m.model.get_image_features(*_patches(rgb)).pooler_output[0].numpy()
    err = float(np.abs(enc.embd - ref).max())
    assert err < bound, f"max |soft token difference| {err:.4f}"


def test_gemma4_unified_projector_encodes_like_transformers(tiny_model, tiny_gguf, mtmd_ready, tmp_path):
    """Gemma 4 unified (12B)'s encoder-free embedder (gemma4uv): 80 px with 8 px merged patches -> 100 soft
    tokens. Measured max |difference| 0.00034 at std 0.160 (F16); the HWC -> CHW column and norm reorder and
    the transposed position table are what a mistake would break."""
    import torch
    import transformers

    from quantize.mmproj import encode_image, write_mmproj

    model_dir = tiny_model("gemma4_unified")
    path = write_mmproj(model_dir, tmp_path / "mmproj-f16.gguf", "f16")
    assert gguf.GGUFReader(path).fields["clip.vision.projector_type"].contents() == "gemma4uv"
    rgb = ((np.arange(80 * 80 * 3) * 37) % 251).astype(np.uint8).reshape(80, 80, 3)
    enc = encode_image(tiny_gguf("gemma4_unified", outtype="f16"), path, rgb)
    assert enc.image_tokens == 100 and len(enc.generated) == 3
    m = transformers.Gemma4UnifiedForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = m.model.get_image_features(*_patches(rgb, patch=8)).pooler_output[0].numpy()
    err = float(np.abs(enc.embd - ref).max())
    assert err < 0.005, f"max |soft token difference| {err:.4f}"


def _clip(seconds=1.0):
    """A deterministic 16 kHz test clip: two tones, one of them swelling."""
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1234 * t) * np.linspace(0, 1, t.size)
            ).astype(np.float32)


@pytest.mark.parametrize("outtype, bound", [("f16", 0.015), ("bf16", 0.02), ("q8_0", 0.03)])
def test_gemma4_audio_projector_encodes_like_transformers(outtype, bound, tiny_model, tiny_gguf, mtmd_ready, tmp_path):
    """Gemma 4 E2B/E4B's audio conformer (gemma4a) in the same mmproj as the vision tower: llama.cpp computes
    the mel features from the raw samples itself, so this covers its preprocessing too. One second at 16 kHz
    -> 25 soft tokens (two stride-2 convolutions over 10 ms frames). The tiny conformer's clipped linears have
    bounds that bite (dropping them moves the soft tokens by 0.27) and a random per-dim scale (stored through
    softplus). Measured max |difference| (std 0.142): F16 0.0068, BF16 0.0074, Q8_0 0.0106."""
    import torch
    import transformers

    from quantize.mmproj import encode_audio, plan_mmproj, write_mmproj

    model_dir = tiny_model("gemma4_audio")
    path = write_mmproj(model_dir, tmp_path / f"mmproj-{outtype}.gguf", outtype)
    f = gguf.GGUFReader(path).fields
    assert f["clip.audio.projector_type"].contents() == "gemma4a" and f["clip.has_audio_encoder"].contents()
    assert f["clip.vision.projector_type"].contents() == "gemma4v"
    assert f["clip.audio.num_mel_bins"].contents() == 128
    assert not any(t.name.startswith("a.") for t in plan_mmproj(model_dir, outtype, audio=False).tensors)
    pcm = _clip()
    enc = encode_audio(tiny_gguf("gemma4_audio", outtype="f16"), path, pcm)
    assert enc.image_tokens == 25 and enc.n_embd == 256 and enc.embd_finite and len(enc.generated) == 3
    # both encoders loaded: the vision one reserves first, the audio one for its 3000-frame warmup clip
    assert enc.clip_buffers["CPU compute"] < 50 * 2**20 < enc.clip_buffers["audio CPU compute"]
    feats = transformers.Gemma4AudioFeatureExtractor()([pcm], sampling_rate=16000, return_tensors="pt")
    m = transformers.Gemma4ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = m.model.get_audio_features(feats["input_features"], feats["input_features_mask"])
    ref = out.pooler_output[0][out.attention_mask[0].bool()].numpy()
    assert ref.shape == enc.embd.shape
    err = float(np.abs(enc.embd - ref).max())
    assert err < bound, f"max |soft token difference| {err:.4f} (std {ref.std():.3f})"


def test_gemma4_audio_without_tower_is_vision_only(tiny_model, tmp_path):
    """A Gemma 4 checkpoint without an audio tower (26B/31B) gets no audio keys; audio=False drops it on E-models."""
    from quantize.mmproj import write_mmproj

    path = write_mmproj(tiny_model("gemma4_audio"), tmp_path / "v.gguf", "f16", audio=False)
    f = gguf.GGUFReader(path).fields
    assert "clip.has_audio_encoder" not in f and f["clip.vision.projector_type"].contents() == "gemma4v"
    assert not any(t.name.startswith(("a.", "mm.a.")) for t in gguf.GGUFReader(path).tensors)
