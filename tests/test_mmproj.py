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


def _timm_or_skip():
    """transformers runs Gemma 3n's vision tower with timm, which imports torchvision: the package index's
    Linux torchvision wheels are CUDA builds whose ops do not load beside the CPU torch, so here and in CI timm
    is absent (`pip install timm` and a torchvision built for the installed torch make these tests run). The
    tiny checkpoint itself is written without timm (quantize.tiny._mobilenetv5_shapes)."""
    try:
        import timm  # noqa: F401
    except Exception as e:  # ImportError, or torchvision's RuntimeError when its ops do not match torch
        pytest.skip(f"timm is not importable ({type(e).__name__}: {str(e)[:120]}); Gemma 3n's vision tower needs it")


def _gemma3n_images():
    """Two 768 px images (the processor's size): a hashed pattern and smooth gradients."""
    rgb = ((np.arange(768 * 768 * 3) * 37) % 251).astype(np.uint8).reshape(768, 768, 3)
    y, x = np.mgrid[0:768, 0:768]
    return rgb, np.stack([x * 255 // 767, y * 255 // 767, (x + y) * 97 % 256], -1).astype(np.uint8)


def _gemma3n_mmproj(model_dir, outtype, tmp_path):
    """The gemma3nv file for the tiny checkpoint, with the types llama.cpp's converter gives each tensor."""
    from quantize.mmproj import write_mmproj

    path = write_mmproj(model_dir, tmp_path / f"mmproj-{outtype}.gguf", outtype)
    r = gguf.GGUFReader(path)
    assert r.fields["clip.vision.projector_type"].contents() == "gemma3nv"
    assert "clip.has_audio_encoder" not in r.fields  # llama.cpp has no Gemma 3n audio graph
    types = {t.name: t.tensor_type for t in r.tensors}
    Q = gguf.GGMLQuantizationType
    assert types["v.conv_stem.conv.weight"] == Q.F32 and types["v.blk.1.0.layer_scale.gamma"] == Q.F32
    assert types["v.blk.2.1.attn.query.proj.weight"] == Q.F16  # conv kernels: never BF16 (ggml's conv_2d aborts)
    assert types["mm.input_projection.weight"] == {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[outtype]
    return path


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_gemma3n_projector_runs_in_libmtmd(outtype, tiny_model, tiny_gguf, mtmd_ready, tmp_path):
    """Without timm: the tiny Gemma 3n checkpoint (its MobileNetV5 written from the block list) -> a gemma3nv
    file that libmtmd loads and runs on a 768 px image: 256 soft tokens of the text width (2048), finite, not
    one token repeated, and different for a different image. Measured (F16, std 1.00): the two images' soft
    tokens differ by 0.435 on average (4.50 at most); across the 256 positions a channel varies by 0.301 (std)."""
    from quantize.mmproj import encode_image, plan_mmproj

    model_dir = tiny_model("gemma3n")
    path = _gemma3n_mmproj(model_dir, outtype, tmp_path)
    assert gguf.GGUFReader(path).fields["clip.vision.image_size"].contents() == 768  # preprocessor_config.json
    text = tiny_gguf("gemma3n", outtype="f16")
    a, b = (encode_image(text, path, rgb) for rgb in _gemma3n_images())
    for enc in (a, b):
        assert enc.image_tokens == 256 and enc.embd.shape == (256, 2048) and enc.n_embd == 2048
        assert enc.embd_finite and np.isfinite(enc.embd).all() and len(enc.generated) == 3
        assert 0.5 < float(enc.embd.std()) < 2.0  # embed_vision's post-projection RMS norm: about 1
        assert float(enc.embd.std(axis=0).mean()) > 0.1  # the 16 x 16 grid is not one pooled value
    assert float(np.abs(a.embd - b.embd).mean()) > 0.1
    assert abs(a.clip_buffers["model"] - plan_mmproj(model_dir, outtype).tensor_bytes) <= 0.006 * 2**20


def test_gemma3n_checkpoint_without_timm_is_what_timm_builds(tiny_model, tmp_path):
    """The tiny checkpoint's MobileNetV5 is written from quantize.tiny's block list without timm; here timm
    builds Gemma3nForConditionalGeneration from that checkpoint's own config.json and saves it: every tensor
    name, shape and dtype and the config are the same, so the two cannot drift apart."""
    _timm_or_skip()
    import json

    import transformers
    from safetensors import safe_open

    model_dir = tiny_model("gemma3n")
    config = json.loads((model_dir / "config.json").read_text())
    m = transformers.Gemma3nForConditionalGeneration(transformers.AutoConfig.from_pretrained(model_dir))
    m.config.vision_config.model_args = config["vision_config"]["model_args"]  # timm writes layers into its copy
    m.save_pretrained(tmp_path / "timm")

    def header(d):
        with safe_open(str(d / "model.safetensors"), "np") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}

    ours, timms = header(model_dir), header(tmp_path / "timm")
    assert sum(k.startswith("model.vision_tower.timm_model.") for k in ours) == 76
    assert sorted(set(ours) ^ set(timms)) == [] and {k for k in ours if ours[k] != timms[k]} == set()
    assert json.loads((tmp_path / "timm" / "config.json").read_text()) == config


@pytest.mark.parametrize("outtype, bound", [("f16", 0.025), ("bf16", 0.04), ("q8_0", 0.12)])
def test_gemma3n_projector_encodes_like_transformers(outtype, bound, tiny_model, tiny_gguf, mtmd_ready, tmp_path):
    """Gemma 3n's MobileNetV5 (gemma3nv): the tiny tower has every block kind clip.cpp runs (edge residual,
    inverted residual in three shapes, attention with and without strided K/V), randomised norms and layer
    scales; a 768 px image (the processor's size) -> the 48 x 48 stage-2 grid pooled to 16 x 16 = 256 soft
    tokens of the text width (2048, which llama.cpp requires to equal the vision width). Measured max
    |difference| (std 1.00): F16 0.0073, BF16 0.0122, Q8_0 0.040 (only the embedder's two matrices are Q8_0;
    every convolution kernel stays F16); writing no layer scales moves them by 1.38."""
    _timm_or_skip()
    import torch
    import transformers

    from quantize.mmproj import encode_image, plan_mmproj

    model_dir = tiny_model("gemma3n")
    path = _gemma3n_mmproj(model_dir, outtype, tmp_path)
    rgb = _gemma3n_images()[0]
    enc = encode_image(tiny_gguf("gemma3n", outtype="f16"), path, rgb)
    assert enc.image_tokens == 256 and enc.n_embd == 2048 and enc.embd_finite and len(enc.generated) == 3
    assert abs(enc.clip_buffers["model"] - plan_mmproj(model_dir, outtype).tensor_bytes) <= 0.006 * 2**20
    m, info = transformers.Gemma3nForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32,
                                                                          output_loading_info=True)
    assert not any(info.values()), info  # the timm-free checkpoint fills every parameter of timm's tower
    m = m.eval()
    px = torch.tensor((rgb / 255.0).transpose(2, 0, 1)[None], dtype=torch.float32)  # rescale only: mean 0, std 1
    with torch.no_grad():
        ref = m.model.get_image_features(pixel_values=px).pooler_output[0].numpy()
    err = float(np.abs(enc.embd - ref).max())
    assert err < bound, f"max |soft token difference| {err:.4f} (std {ref.std():.3f})"


def _mobilenet_checkpoint(d, blocks=((0, 0, "conv_exp"), (1, 0, "dw_start.conv"), (2, 0, "pw_exp.conv"),
                                     (3, 0, "attn.query.proj")), vision=8, text=8, extra=None, config=None):
    """A header-valid Gemma 3n vision checkpoint (tiny zero tensors, no timm): what plan_mmproj reads."""
    from safetensors.numpy import save_file

    pre = "model.vision_tower.timm_model."
    t = {pre + "conv_stem.conv.weight": np.zeros((4, 3, 3, 3), np.float32), pre + "conv_stem.conv.bias": np.zeros(4, np.float32),
         pre + "msfa.ffn.pw_exp.conv.weight": np.zeros((4, 4, 1, 1), np.float32),
         pre + "msfa.ffn.pw_proj.conv.weight": np.zeros((vision, 4, 1, 1), np.float32),
         pre + "msfa.norm.weight": np.zeros(vision, np.float32),
         "model.embed_vision.embedding_projection.weight": np.zeros((text, vision), np.float32),
         "model.embed_vision.soft_embedding_norm.weight": np.zeros(vision, np.float32)}
    for st, b, kind in blocks:
        t[f"{pre}blocks.{st}.{b}.{kind}.weight"] = np.zeros((4, 4, 1, 1), np.float32)
        t[f"{pre}blocks.{st}.{b}.layer_scale.gamma"] = np.zeros(4, np.float32)
    t.update(extra or {})
    d.mkdir(parents=True, exist_ok=True)
    save_file(t, str(d / "model.safetensors"))
    cfg = {"model_type": "gemma3n", "vision_config": {"hidden_size": vision}, "text_config": {"hidden_size": text}}
    for k, v in (config or {}).items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    (d / "config.json").write_text(__import__("json").dumps(cfg))
    return d


def test_gemma3n_plan_keeps_clip_cpp_order_and_types(tmp_path):
    """Without timm: the double-indexed blocks in the order clip.cpp walks them (stage, then block number, not
    text order), the stem bias and layer scales as [1, C, 1, 1] F32, kernels F16 in a bf16 file."""
    from quantize.mmproj import plan_mmproj

    blocks = [(0, b, "conv_exp") for b in range(11)] + [(1, 0, "dw_start.conv"), (2, 0, "pw_exp.conv"),
                                                        (3, 0, "attn.query.proj")]
    plan = plan_mmproj(_mobilenet_checkpoint(tmp_path / "m", blocks), "bf16")
    order = [(int(t.name.split(".")[2]), int(t.name.split(".")[3])) for t in plan.tensors if t.name.startswith("v.blk.")]
    assert order == sorted(order) and order[-1] == (3, 0) and (0, 10) in order
    by = {t.name: t for t in plan.tensors}
    assert by["v.conv_stem.conv.bias"].shape == (1, 4, 1, 1) and by["v.conv_stem.conv.bias"].qtype == gguf.GGMLQuantizationType.F32
    assert by["v.blk.0.3.layer_scale.gamma"].shape == (1, 4, 1, 1)
    assert by["v.blk.0.0.conv_exp.weight"].qtype == gguf.GGMLQuantizationType.F16
    assert by["mm.input_projection.weight"].qtype == gguf.GGMLQuantizationType.BF16
    assert plan.hparams["image_size"] // plan.hparams["patch_size"] == 256  # clip.cpp's soft-token count


@pytest.mark.parametrize("case, match", [
    (dict(blocks=((0, 0, "conv_exp"), (1, 0, "dw_start.conv"), (2, 0, "pw_exp.conv"))), "exactly stages 0-3"),
    (dict(blocks=((0, 0, "conv_exp"), (1, 0, "dw_start.conv"), (2, 0, "pw_exp.conv"), (3, 0, "pw_exp.conv"),
                  (4, 0, "pw_exp.conv"))), "exactly stages 0-3"),
    (dict(blocks=((0, 0, "conv_exp"), (0, 2, "conv_exp"), (1, 0, "dw_start.conv"), (2, 0, "pw_exp.conv"),
                  (3, 0, "pw_exp.conv"))), "must be 0..N-1"),
    (dict(blocks=((0, 0, "conv_exp"), (1, 0, "dw_start.conv"), (2, 0, "pw_exp.conv"), (3, 0, "se.conv_reduce"))),
     "no mmproj name"),
    (dict(text=16), "llama.cpp's gemma3nv runs only when they are equal"),
    (dict(config={"vision_config": {"model_args": {"msfa_indices": [-3, -1]}}}), "fusion adapter"),
    (dict(config={"vision_soft_tokens_per_image": 64}), "always gives 16x16"),
])
def test_gemma3n_hostile_checkpoints_are_refused(case, match, tmp_path):
    from quantize.errors import ConversionError
    from quantize.mmproj import plan_mmproj

    with pytest.raises(ConversionError, match=match):
        plan_mmproj(_mobilenet_checkpoint(tmp_path / "m", **case))


@pytest.mark.parametrize("text, match", [("[1, 2]", "must be a JSON object"), ("{", "not valid JSON"),
                                         ("[" * 100_000, "not valid JSON"), (" " * (1 << 20) + "{}", "too large")])
def test_hostile_preprocessor_config_is_one_line(text, match, tmp_path):
    from quantize.errors import ConversionError
    from quantize.mmproj import plan_mmproj

    d = _mobilenet_checkpoint(tmp_path / "m")
    (d / "preprocessor_config.json").write_text(text)
    with pytest.raises(ConversionError, match=match):
        plan_mmproj(d)


def test_gemma3n_config_sections_must_be_objects(tmp_path):
    from quantize.errors import ConversionError
    from quantize.mmproj import plan_mmproj

    d = _mobilenet_checkpoint(tmp_path / "m")
    (d / "config.json").write_text('{"model_type": "gemma3n", "vision_config": [1], "text_config": {}}')
    with pytest.raises(ConversionError, match="must be objects"):
        plan_mmproj(d)


@pytest.mark.parametrize("size", [500, 0, 8192, "768"])
def test_gemma3n_image_size_is_bounded(size, tmp_path):
    from quantize.errors import ConversionError
    from quantize.mmproj import plan_mmproj

    d = _mobilenet_checkpoint(tmp_path / "m")
    (d / "preprocessor_config.json").write_text(__import__("json").dumps({"size": {"height": size, "width": size}}))
    with pytest.raises(ConversionError, match="multiple of 256"):
        plan_mmproj(d)
