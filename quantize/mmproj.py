"""The vision projector file (``mmproj``) llama.cpp's multimodal library loads next to a Gemma GGUF.

Written for Gemma 3 (SigLIP, below), Gemma 3n (MobileNetV5, gemma3nv, ``_plan_gemma3nv``), Gemma 4 (gemma4v,
``_plan_gemma4v``; on E2B/E4B with the audio conformer, gemma4a, ``_plan_gemma4a``, in the same file) and Gemma 4
unified (gemma4uv, ``_plan_gemma4uv``); Gemma 4 unified's audio embedder is not written, nor is Gemma 3n's audio
encoder, since the vendored clip.cpp skips it (no ``gemma3na`` graph).

Gemma 3 4B/12B/27B carry a SigLIP vision tower and a projector (RMS-normed average pooling to
``mm_tokens_per_image`` soft tokens, then a linear map into the text width). llama.cpp keeps them in a
separate GGUF of architecture ``clip`` that ``tools/mtmd`` (``clip.cpp``) reads; this module writes it
from the same Hugging Face checkpoint the text GGUF comes from, with the keys and tensor names of the
vendored llama.cpp (llama-cpp-python 0.3.36):

  * ``clip.projector_type = gemma3``, ``clip.has_vision_encoder``, ``clip.vision.{image_size, patch_size,
    embedding_length, feed_forward_length, block_count, attention.head_count, attention.layer_norm_epsilon,
    projection_dim, image_mean, image_std}``, ``clip.use_gelu`` and, when the tower's patch grid is not
    4x the soft-token grid, ``clip.vision.projector.scale_factor`` (``clip.cpp`` defaults it to 4 for Gemma 3);
  * ``v.patch_embd``, ``v.position_embd``, ``v.blk.N.{attn_q,attn_k,attn_v,attn_out,ln1,ln2,ffn_up,ffn_down}``,
    ``v.post_ln``, ``mm.input_projection``, ``mm.soft_emb_norm`` (its Gemma ``1 + w`` folded in);
  * types as llama.cpp's own converter chooses them (conversion/gemma.py ``Gemma3VisionModel``): 1-D tensors
    and norms F32, the patch and position embeddings F32, the input projection F16, every other matrix in the
    requested type (F16, BF16 or Q8_0; a Q8_0 row not a multiple of 32 falls back to F16).

The SigLIP attention-pooling head (``vision_tower...head.*``) is not used by Gemma 3 and is skipped, as
llama.cpp does. Tensors are read one at a time, so memory is bounded by the largest tensor.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import gguf
import numpy as np

from .convert import (_ST_DTYPES, _read_at, checkpoint_files, from_f32, open_source, read_config, safetensors_header,
                      source_fds, staged_gguf, to_f32)
from .errors import ConversionError, OutputExistsError, UnsupportedArchitectureError

log = logging.getLogger(__name__)

Q = gguf.GGMLQuantizationType
MMPROJ_TYPES: dict[str, tuple[gguf.LlamaFileType, gguf.GGMLQuantizationType]] = {
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, Q.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
}
# Gemma3ImageProcessor's defaults (SigLIP normalisation), used when preprocessor_config.json is absent
GEMMA3_IMAGE_MEAN = (0.5, 0.5, 0.5)
GEMMA3_IMAGE_STD = (0.5, 0.5, 0.5)
GEMMA3_DEFAULT_SCALE = 4  # clip.cpp: hparams.n_merge = 4 for PROJECTOR_TYPE_GEMMA3 unless the key says otherwise

# HF prefixes of the Gemma 3 vision tower across transformers versions -> the name gguf's map knows
_TOWER_PREFIXES = ("model.vision_tower.vision_model.", "vision_tower.vision_model.", "model.vision_tower.",
                   "vision_tower.")
_PROJ_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")


@dataclass
class ProjTensor:
    name: str
    shape: tuple[int, ...]  # numpy order
    qtype: gguf.GGMLQuantizationType
    src: str
    file: Path
    src_dtype: str
    offset: int
    add: float = 0.0
    reorder: tuple[Any, ...] | None = None  # how _load rearranges the source into the written layout

    @property
    def nbytes(self) -> int:
        if self.qtype == Q.Q8_0:
            block, size = gguf.GGML_QUANT_SIZES[Q.Q8_0]
            return int(np.prod(self.shape[:-1])) * (self.shape[-1] // block) * size
        return int(np.prod(self.shape)) * (4 if self.qtype == Q.F32 else 2)


@dataclass
class MmprojPlan:
    model_dir: Path
    outtype: str
    projector: str  # clip.projector_type
    hparams: dict[str, Any]
    tensors: list[ProjTensor]
    skipped: list[str]

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def params(self) -> int:
        return sum(int(np.prod(t.shape)) for t in self.tensors)


def _hf_name(hf: str) -> str | None:
    """A Gemma 3 tower/projector name in the form gguf's MMPROJ map reads; None for other tensors."""
    for p in _TOWER_PREFIXES:
        if hf.startswith(p):
            rest = hf[len(p):]
            return None if rest.startswith("head.") else "vision_tower.vision_model." + rest
    for p in _PROJ_PREFIXES:
        if hf.startswith(p):
            return "multi_modal_projector." + hf[len(p):].replace("_weight", ".weight")
    return None


def _mmproj_type(name: str, shape: tuple[int, ...], outq: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    if len(shape) <= 1 or name.endswith(("_norm.weight", ".bias")) or ".ln" in name or name.startswith("v.post_ln"):
        return Q.F32
    if name in ("v.patch_embd.weight", "v.position_embd.weight"):
        return Q.F32
    if name == "mm.input_projection.weight":
        return Q.F16
    if outq == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16
    return outq


def plan_mmproj(model_dir: str | Path, outtype: str = "f16", audio: bool = True) -> MmprojPlan:
    """Read config.json and safetensors headers; decide every mmproj key and tensor. No tensor data is read.

    audio: also write the audio encoder where the checkpoint has one llama.cpp runs (Gemma 4 E2B/E4B's
    conformer, into the same file as the vision tower)."""
    model_dir = Path(model_dir)
    if outtype not in MMPROJ_TYPES:
        raise ConversionError(f"mmproj type must be one of {', '.join(MMPROJ_TYPES)}, got {outtype!r}")
    config = read_config(model_dir)
    mt = config.get("model_type")
    if mt == "gemma4" and config.get("vision_config"):
        return _plan_gemma4v(model_dir, config, outtype, audio)
    if mt == "gemma4_unified" and config.get("vision_config"):
        return _plan_gemma4uv(model_dir, config, outtype)
    if mt == "gemma3n" and config.get("vision_config"):
        return _plan_gemma3nv(model_dir, config, outtype)
    if mt != "gemma3":
        raise UnsupportedArchitectureError(
            f"model_type {mt!r}: the projector writer covers Gemma 3's SigLIP tower (model_type gemma3); "
            + ("a text-only checkpoint has no vision tower" if mt in ("gemma3_text", "gemma2", "gemma4_text", "gemma3n_text")
               else "Gemma 3n's MobileNetV5 (gemma3n) and Gemma 4's (gemma4, gemma4_unified)"))
    vc = config.get("vision_config") or {}
    tc = config.get("text_config") or {}
    _positive_ints(vc, ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                        "patch_size"), "vision_config")
    n_embd_text = int(tc.get("hidden_size") or 2560)
    pre = _preprocessor(model_dir)
    tokens = int(pre.get("image_seq_length") or config.get("mm_tokens_per_image") or 256)
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ConversionError(f"mm_tokens_per_image={tokens} is not a square; Gemma 3 pools to a square grid")
    grid = vc["image_size"] // vc["patch_size"]
    if grid % side:
        raise ConversionError(f"the {grid}x{grid} patch grid does not pool evenly to {side}x{side} soft tokens")
    hp = dict(image_size=vc["image_size"], patch_size=vc["patch_size"], n_embd=vc["hidden_size"],
              n_ff=vc["intermediate_size"], n_layer=vc["num_hidden_layers"], n_head=vc["num_attention_heads"],
              eps=float(vc.get("layer_norm_eps") or 1e-6), proj_dim=n_embd_text, scale=grid // side,
              tokens_per_image=tokens, image_mean=list(pre.get("image_mean") or GEMMA3_IMAGE_MEAN),
              image_std=list(pre.get("image_std") or GEMMA3_IMAGE_STD))

    outq = MMPROJ_TYPES[outtype][1]
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, hp["n_layer"])

    def make(t: ProjTensor) -> ProjTensor:
        add = 1.0 if t.name == "mm.soft_emb_norm.weight" else 0.0  # Gemma3RMSNorm: x * (1 + w)
        return replace(t, qtype=_mmproj_type(t.name, t.shape, outq), add=add)

    tensors, skipped = _collect(model_dir, "vision", _TOWER_PREFIXES + _PROJ_PREFIXES,
                                lambda hf: tmap.get_name(_hf_name(hf), try_suffixes=(".weight", ".bias")), make,
                                skip=lambda hf: _hf_name(hf) is None)
    _require(tensors, ("v.patch_embd.weight", "v.position_embd.weight", "mm.input_projection.weight",
                       "mm.soft_emb_norm.weight"), "Gemma 3 vision")
    _block_order(tensors, "v.blk.")
    return MmprojPlan(model_dir, outtype, "gemma3", hp, tensors, skipped)


GEMMA4V_SCALAR_SUFFIXES = (".input_max", ".input_min", ".output_max", ".output_min")


def _gemma4_hparams(vc: dict[str, Any], tc: dict[str, Any], pre: dict[str, Any], **tower: Any) -> dict[str, Any]:
    """The vision keys Gemma 4 and Gemma 4 unified share (Gemma4ImageProcessor's defaults), plus the tower's own."""
    hp = dict(image_size=224, **tower, eps=float(vc.get("rms_norm_eps") or 1e-6),
              proj_dim=int(tc.get("hidden_size") or 0), scale=int(vc.get("pooling_kernel_size") or 3),
              tokens_per_image=int(pre.get("max_soft_tokens") or 280),
              image_mean=list(pre.get("image_mean") or (0.0, 0.0, 0.0)), image_std=list(pre.get("image_std") or (1.0, 1.0, 1.0)))
    if hp["proj_dim"] <= 0:
        raise ConversionError("config.json: text_config.hidden_size is missing")
    return hp


def _plan_gemma4v(model_dir: Path, config: dict[str, Any], outtype: str, audio: bool = True) -> MmprojPlan:
    """Gemma 4's vision tower (gemma4v): what llama.cpp's Gemma4VisionAudioModel writes for vision.

    Renames model.vision_tower.encoder.* -> v.blk.*, the patch embedder's [n_embd, p*p*3] (HWC) matrix to a
    [n_embd, 3, p, p] convolution kernel, keeps the 2-D position table F32, and carries the clippable
    linears' input/output bounds as 1-element F32 tensors."""
    vc = config["vision_config"]
    _positive_ints(vc, ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size"),
                   "vision_config")
    hp = _gemma4_hparams(vc, config.get("text_config") or {}, _preprocessor(model_dir), patch_size=vc["patch_size"],
                         n_embd=vc["hidden_size"], n_ff=vc["intermediate_size"], n_layer=vc["num_hidden_layers"],
                         n_head=vc["num_attention_heads"])
    outq = MMPROJ_TYPES[outtype][1]
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, hp["n_layer"])

    def rename(hf: str) -> str | None:
        n = hf.replace("model.vision_tower.encoder.", "vision_model.model.").replace(".linear.weight", ".weight")
        if n.endswith(("layer_scalar", "position_embedding_table")):
            n += ".weight"
        return tmap.get_name(n, try_suffixes=(".weight", ".bias") + GEMMA4V_SCALAR_SUFFIXES)

    def make(t: ProjTensor) -> ProjTensor:
        name, shape = t.name, t.shape or (1,)  # scalars become 1-element tensors
        reorder = None
        if name == "v.patch_embd.weight":
            e, k3 = shape
            p = math.isqrt(k3 // 3)
            if 3 * p * p != k3:
                raise ConversionError(f"{t.src}: {k3} columns is not 3 x patch^2")
            shape, reorder = (e, 3, p, p), ("hwc_to_chw", p)
        if name == "v.position_embd.weight" or name.endswith(GEMMA4V_SCALAR_SUFFIXES) or len(shape) <= 1:
            qtype = Q.F32
        elif name == "v.patch_embd.weight":
            qtype = Q.F16 if outq == Q.F16 else Q.F32  # MmprojModel.tensor_force_quant
        elif name.endswith("_norm.weight") or name.endswith(".bias"):
            qtype = Q.F32
        else:
            qtype = _q8_fallback(shape, outq)  # unlike Gemma 3, llama.cpp does not force Gemma 4's input projection to F16
        return replace(t, shape=shape, qtype=qtype, reorder=reorder)

    tensors, skipped = _collect(model_dir, "vision", ("model.vision_tower.", "model.embed_vision."), rename, make)
    _require(tensors, ("v.patch_embd.weight", "v.position_embd.weight", "mm.input_projection.weight"), "Gemma 4 vision")
    _block_order(tensors, "v.blk.")
    if audio and config.get("audio_config"):
        # E2B/E4B: the audio conformer goes into the same file, as llama.cpp's converter writes it
        hp["audio"], audio_tensors = _plan_gemma4a(model_dir, config, outq)
        tensors += audio_tensors
    return MmprojPlan(model_dir, outtype, "gemma4v", hp, tensors, skipped)


GEMMA4A_MEL_BINS = 128  # Gemma4AudioFeatureExtractor.feature_size; llama.cpp's converter defaults input_feat_size to it
_SOFTPLUS = ("per_dim_key_scale", "per_dim_scale")  # stored through softplus, as llama.cpp's converter does


def _plan_gemma4a(model_dir: Path, config: dict[str, Any], outq: gguf.GGMLQuantizationType
                  ) -> tuple[dict[str, Any], list[ProjTensor]]:
    """Gemma 4 E2B/E4B's audio conformer (gemma4a) as llama.cpp's Gemma4VisionAudioModel writes it into the
    same mmproj as the vision tower: model.audio_tower.* -> a.* (the ClippableLinear's ``.linear`` dropped),
    per_dim_scale stored through softplus, the depthwise kernel [C, 1, K] as [C, K], the convolutions and
    the subsampler's input projection F32, the clip bounds as 1-element F32 tensors; embed_audio -> mm.a.*."""
    ac = config["audio_config"]
    tc = config.get("text_config") or {}
    _positive_ints(ac, ("hidden_size", "num_hidden_layers", "num_attention_heads"), "audio_config")
    hp = dict(n_embd=ac["hidden_size"], n_ff=4 * ac["hidden_size"], n_layer=ac["num_hidden_layers"],
              n_head=ac["num_attention_heads"], eps=float(ac.get("rms_norm_eps") or 1e-6),
              n_mel=int(ac.get("input_feat_size") or GEMMA4A_MEL_BINS), proj_dim=int(tc.get("hidden_size") or 0),
              out_dim=int(ac.get("output_proj_dims") or ac["hidden_size"]))
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, 128)  # the converter's map for two encoders

    def rename(hf: str) -> str | None:
        n = hf.replace("model.audio_tower.", "conformer.").replace(".linear.", ".")
        if n.endswith(_SOFTPLUS):
            n += ".weight"
        return tmap.get_name(n, try_suffixes=(".weight", ".bias") + GEMMA4V_SCALAR_SUFFIXES)

    def make(t: ProjTensor) -> ProjTensor:
        hf, shape = t.src, tuple(t.shape) or (1,)
        if "lconv1d.depthwise_conv1d" in hf and hf.endswith(".weight"):
            if len(shape) != 3 or shape[1] != 1:
                raise ConversionError(f"{hf}: shape {shape}, expected [channels, 1, kernel]")
            shape = (shape[0], shape[2])
        # Gemma4VisionAudioModel.tensor_force_quant: ".conv" or "_conv" in an audio name -> F32
        if len(shape) <= 1 or ".conv" in hf or "_conv" in hf or t.name.endswith(GEMMA4V_SCALAR_SUFFIXES):
            qtype = Q.F32
        else:
            qtype = _q8_fallback(shape, outq)
        return replace(t, shape=shape, qtype=qtype, reorder=("softplus",) if hf.endswith(_SOFTPLUS) else None)

    tensors, _ = _collect(model_dir, "audio", ("model.audio_tower.", "model.embed_audio."), rename, make)
    _require(tensors, ("a.conv1d.0.weight", "a.conv1d.1.weight", "a.input_projection.weight",
                       "mm.a.input_projection.weight"), "Gemma 4 audio")
    if hp["n_mel"] % 4 or (hp["n_mel"] // 4) * _conv_channels(tensors) != _in_proj_cols(tensors):
        raise ConversionError(f"the audio subsampler's projection does not take {hp['n_mel']} mel bins / 4 x channels;"
                              " set audio_config.input_feat_size to the feature extractor's feature_size")
    _block_order(tensors, "a.blk.")
    return hp, tensors


def _conv_channels(tensors: list[ProjTensor]) -> int:
    return next(t.shape[0] for t in tensors if t.name == "a.conv1d.1.weight")


def _in_proj_cols(tensors: list[ProjTensor]) -> int:
    return next(t.shape[-1] for t in tensors if t.name == "a.input_projection.weight")


def _hwc_to_chw(p: int) -> np.ndarray:
    """Column order that puts an HWC-flattened patch (HF) in ggml im2col's CHW order (llama.cpp's converter)."""
    i = np.arange(p * p * 3)
    ch, row, col = i // (p * p), (i % (p * p)) // p, i % p
    return row * p * 3 + col * 3 + ch


_G4UV = {"patch_dense.weight": "v.patch_embd.weight", "patch_dense.bias": "v.patch_embd.bias",
         "patch_ln1.weight": "v.patch_norm.1.weight", "patch_ln1.bias": "v.patch_norm.1.bias",
         "patch_ln2.weight": "v.patch_norm.2.weight", "patch_ln2.bias": "v.patch_norm.2.bias",
         "pos_norm.weight": "v.patch_norm.3.weight", "pos_norm.bias": "v.patch_norm.3.bias",
         "pos_embedding": "v.position_embd.weight"}


def _plan_gemma4uv(model_dir: Path, config: dict[str, Any], outtype: str) -> MmprojPlan:
    """Gemma 4 unified (12B)'s encoder-free vision embedder (gemma4uv): LayerNorm -> dense -> LayerNorm on
    raw merged patches, a factorised 2-D position table and a final projection, as llama.cpp's
    Gemma4UnifiedVisionAudioModel writes them (patch columns and the first norm reordered HWC -> CHW, the
    position table transposed to [2, rows, E]). The audio embedder is not written."""
    vc = config["vision_config"]
    patch = int(vc.get("patch_size") or 16)
    hp = _gemma4_hparams(vc, config.get("text_config") or {}, _preprocessor(model_dir), patch_size=patch,
                         n_embd=int(vc.get("mm_embed_dim") or 3840), n_ff=0, n_layer=0, n_head=0)
    p = patch * hp["scale"]
    outq = MMPROJ_TYPES[outtype][1]

    def rename(hf: str) -> str | None:
        if hf.startswith("model.vision_embedder."):
            return _G4UV.get(hf[len("model.vision_embedder."):])
        return "mm.input_projection.weight" if hf == "model.embed_vision.embedding_projection.weight" else None

    def make(t: ProjTensor) -> ProjTensor:
        name, shape = t.name, tuple(t.shape)
        reorder = None
        if name == "v.patch_embd.weight":
            if shape[1] != p * p * 3:
                raise ConversionError(f"{t.src}: {shape[1]} columns, expected {p}x{p}x3 for the merged patch")
            reorder = ("cols", _hwc_to_chw(p))
            qtype = Q.F16 if outq == Q.F16 else Q.F32  # MmprojModel.tensor_force_quant
        elif name == "v.patch_norm.1.weight" or name == "v.patch_norm.1.bias":
            reorder, qtype = ("rows", _hwc_to_chw(p)), Q.F32
        elif name == "v.position_embd.weight":
            reorder, shape = ("permute102", None), (shape[1], shape[0], shape[2])
            qtype = _q8_fallback(shape, outq)
        elif len(shape) <= 1:
            qtype = Q.F32
        else:
            qtype = _q8_fallback(shape, outq)
        return replace(t, shape=shape, qtype=qtype, reorder=reorder)

    tensors, _ = _collect(model_dir, "vision", ("model.vision_embedder.", "model.embed_vision.embedding_projection.weight"),
                          rename, make)
    _require(tensors, ("v.patch_embd.weight", "v.position_embd.weight", "mm.input_projection.weight",
                       "v.patch_norm.3.weight"), "Gemma 4 unified")
    tensors.sort(key=lambda t: t.name)
    return MmprojPlan(model_dir, outtype, "gemma4uv", hp, tensors, [])


# Gemma 3n's MobileNetV5 (gemma3nv): timm's block tensors as llama.cpp's Gemma3nVisionAudioModel maps them
# (model.vision_tower.timm_model.blocks.S.B.<suffix> -> v.blk.S.B.<suffix>); clip.cpp reads these suffixes only
GEMMA3N_BLOCK_SUFFIXES = frozenset((
    "conv_exp.weight", "bn1.weight", "conv_pwl.weight", "bn2.weight",  # edge residual (stage 0)
    "dw_start.conv.weight", "dw_start.bn.weight", "dw_mid.conv.weight", "dw_mid.bn.weight", "pw_exp.conv.weight",
    "pw_exp.bn.weight", "pw_proj.conv.weight", "pw_proj.bn.weight", "layer_scale.gamma",  # universal inverted residual
    "attn.query.proj.weight", "attn.key.proj.weight", "attn.value.proj.weight", "attn.output.proj.weight",
    "attn.key.down_conv.weight", "attn.key.norm.weight", "attn.value.down_conv.weight", "attn.value.norm.weight",
    "norm.weight",  # multi-query attention
))
GEMMA3N_STAGES = 4  # clip.cpp loads stages 0..3 and fuses the ends of stages 2 and 3 (timm's msfa_indices -2, -1)
GEMMA3N_MAX_BLOCKS = 256  # per stage; the released tower has 3, 5, 37, 39
GEMMA3N_OUT_GRID = 16  # both timm's adapter (msfa_output_resolution) and clip.cpp (target_out_res) pool to 16 x 16
GEMMA3N_MAX_IMAGE = 4096


def _plan_gemma3nv(model_dir: Path, config: dict[str, Any], outtype: str) -> MmprojPlan:
    """Gemma 3n's MobileNetV5 tower and its embedder (gemma3nv), as llama.cpp's Gemma3nVisionAudioModel writes
    them for vision: the stem, four stages of edge-residual / inverted-residual / multi-query-attention blocks
    (double-indexed v.blk.STAGE.BLOCK), the multi-scale fusion adapter and embed_vision -> mm.*. Convolution
    kernels keep their [out, in, kh, kw] layout; the stem bias and the layer scales become [1, C, 1, 1]. The
    audio encoder (gemma3na) is not written: the vendored clip.cpp skips it (mtmd.cpp: "we don't support audio
    for Gemma 3N") and has no graph for it.

    Types: the stem, norms and layer scales F32; mm.embedding and mm.input_projection in the file's type; every
    other convolution kernel F16 in an F16 or Q8_0 file (a Q8_0 row must be a multiple of 32 wide, a kernel row
    is 1, 3 or 5: the converter's fallback) and in a BF16 file too, where llama.cpp's converter writes BF16:
    ggml's CPU conv_2d takes F16 or F32 kernels only (GGML_ASSERT in ggml-cpu/ops.cpp conv_2d_impl)."""
    if not isinstance(config["vision_config"], dict) or not isinstance(config.get("text_config") or {}, dict):
        raise ConversionError("config.json: vision_config and text_config must be objects")
    vc = dict(config["vision_config"])
    vc.setdefault("hidden_size", 2048)  # Gemma3nVisionConfig's default: timm's fusion adapter outputs 2048 channels
    tc = config.get("text_config") or {}
    _positive_ints(vc, ("hidden_size",), "vision_config")
    _positive_ints(tc, ("hidden_size",), "text_config")
    if vc["hidden_size"] != tc["hidden_size"]:
        # clip.cpp takes the projector's output width from mm.input_projection's ne[0] (the vision width) and
        # mtmd refuses a text model of another width, while the graph itself outputs the text width
        raise ConversionError(f"vision hidden_size {vc['hidden_size']} != text hidden_size {tc['hidden_size']}: "
                              "llama.cpp's gemma3nv runs only when they are equal (2048 in the released E2B/E4B)")
    args = vc.get("model_args") or {}
    if not isinstance(args, dict):
        raise ConversionError("config.json: vision_config.model_args must be an object")
    if list(args.get("msfa_indices", (-2, -1))) != [-2, -1] or args.get("msfa_output_resolution", GEMMA3N_OUT_GRID) != GEMMA3N_OUT_GRID:
        raise ConversionError("vision_config.model_args changes the fusion adapter (msfa_indices, msfa_output_resolution);"
                              " llama.cpp fuses the last two stages into a fixed 16x16 grid")
    pre = _preprocessor(model_dir)
    size = pre.get("size") or {}
    image_size = size.get("height", 768) if isinstance(size, dict) else 768  # Gemma3nProcessor's SigLIP default
    tokens = pre.get("image_seq_length", config.get("vision_soft_tokens_per_image") or 256)
    if not isinstance(image_size, int) or not 0 < image_size <= GEMMA3N_MAX_IMAGE or image_size % (16 * GEMMA3N_OUT_GRID):
        raise ConversionError(f"image size {image_size!r}: llama.cpp's MobileNetV5 needs a multiple of 256 px up to "
                              f"{GEMMA3N_MAX_IMAGE} (the stage-2 grid, 1/16 of it, is average-pooled to 16x16)")
    if tokens != GEMMA3N_OUT_GRID ** 2:
        raise ConversionError(f"{tokens!r} soft tokens per image: llama.cpp's MobileNetV5 always gives 16x16 = 256")
    # as the converter: clip.cpp counts image_size / patch_size soft tokens for gemma3nv
    hp = dict(image_size=image_size, patch_size=image_size // tokens, n_embd=vc["hidden_size"], n_ff=4 * 2048,
              n_layer=128, n_head=8, eps=1e-6, proj_dim=tc["hidden_size"], tokens_per_image=tokens,
              image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0])  # the converter's (fixed) values
    outq = MMPROJ_TYPES[outtype][1]
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, 1)
    blk = "model.vision_tower.timm_model.blocks."

    def rename(hf: str) -> str | None:
        if hf.startswith(blk):
            parts = hf[len(blk):].split(".", 2)
            if (len(parts) == 3 and parts[0].isdecimal() and parts[1].isdecimal() and len(parts[0]) < 4
                    and len(parts[1]) < 4 and parts[2] in GEMMA3N_BLOCK_SUFFIXES):
                return f"v.blk.{int(parts[0])}.{int(parts[1])}.{parts[2]}"
            return None
        return tmap.get_name(hf, try_suffixes=(".weight", ".bias"))

    def make(t: ProjTensor) -> ProjTensor:
        name, shape = t.name, tuple(t.shape)
        if name in ("v.conv_stem.conv.bias",) or name.endswith(".layer_scale.gamma"):
            if len(shape) != 1:
                raise ConversionError(f"{t.src}: shape {shape}, expected one value per channel")
            shape = (1, shape[0], 1, 1)  # broadcast over [W, H, C, B]
        if len(shape) not in (1, 2, 4) or not all(0 < d <= 1 << 20 for d in shape):
            raise ConversionError(f"{t.src}: unexpected shape {shape}")
        if len(shape) == 1 or name.startswith("v.conv_stem.") or name.endswith(".gamma"):
            qtype = Q.F32
        elif len(shape) == 4:
            qtype = Q.F32 if outq == Q.F32 else Q.F16
        else:
            qtype = _q8_fallback(shape, outq)
        return replace(t, shape=shape, qtype=qtype)

    tensors, _ = _collect(model_dir, "vision", ("model.vision_tower.", "model.embed_vision."), rename, make)
    _require(tensors, ("v.conv_stem.conv.weight", "v.msfa.ffn.pw_exp.conv.weight", "v.msfa.ffn.pw_proj.conv.weight",
                       "v.msfa.norm.weight", "mm.input_projection.weight", "mm.soft_emb_norm.weight"), "Gemma 3n vision")
    _gemma3n_blocks(tensors)
    proj = next(t for t in tensors if t.name == "mm.input_projection.weight")
    if proj.shape != (tc["hidden_size"], vc["hidden_size"]):
        raise ConversionError(f"{proj.src}: shape {proj.shape}, expected [text, vision] = "
                              f"[{tc['hidden_size']}, {vc['hidden_size']}]")
    return MmprojPlan(model_dir, outtype, "gemma3nv", hp, tensors, [])


def _gemma3n_blocks(tensors: list[ProjTensor]) -> None:
    """Check the MobileNetV5 blocks are what clip.cpp walks, then sort as it reads them (stage, block, name).

    clip.cpp loads stage 0..3 and, within a stage, block 0, 1, ... until one is missing, and gives each stage's
    first block stride 2: a stage beyond 3, a gap, an empty stage or a block without its first convolution would
    be silently dropped or mis-strided, so each is refused here."""
    blocks: dict[int, dict[int, set[str]]] = {}
    for t in tensors:
        if t.name.startswith("v.blk."):
            _, _, st, b, suffix = t.name.split(".", 4)
            blocks.setdefault(int(st), {}).setdefault(int(b), set()).add(suffix)
    if sorted(blocks) != list(range(GEMMA3N_STAGES)):
        raise ConversionError(f"the MobileNetV5 has stages {sorted(blocks)}; llama.cpp runs exactly stages 0-3")
    for st, stage in blocks.items():
        if sorted(stage) != list(range(len(stage))) or len(stage) > GEMMA3N_MAX_BLOCKS:
            raise ConversionError(f"MobileNetV5 stage {st}: blocks {sorted(stage)[:8]}... must be 0..N-1 "
                                  f"(N <= {GEMMA3N_MAX_BLOCKS}) for llama.cpp to load them all")
        for b, suffixes in stage.items():
            if not ({"conv_exp.weight", "dw_start.conv.weight", "pw_exp.conv.weight", "attn.query.proj.weight"} & suffixes):
                raise ConversionError(f"MobileNetV5 block {st}.{b} has none of the tensors llama.cpp recognises a block by")
    tensors.sort(key=lambda t: (1, int(t.name.split(".")[2]), int(t.name.split(".")[3]), t.name)
                 if t.name.startswith("v.blk.") else (0, 0, 0, t.name))


def _by_file(model_dir: Path) -> dict[Path, list[str]]:
    out: dict[Path, list[str]] = {}
    for k, f in checkpoint_files(model_dir).items():
        out.setdefault(f, []).append(k)
    return out


def _positive_ints(section: dict[str, Any], need: tuple[str, ...], where: str) -> None:
    missing = [k for k in need if not isinstance(section.get(k), int) or section.get(k) <= 0]
    if missing:
        raise ConversionError(f"config.json: {where} lacks positive integers for {', '.join(missing)}")


PREPROCESSOR_MAX_BYTES = 1 << 20


def _preprocessor(model_dir: Path) -> dict[str, Any]:
    """preprocessor_config.json, or {} where the checkpoint has none (the image processor's defaults apply);
    one that is too large, not JSON or not an object is a one-line ConversionError."""
    path = model_dir / "preprocessor_config.json"
    if not path.is_file():
        return {}
    if path.stat().st_size > PREPROCESSOR_MAX_BYTES:
        raise ConversionError(f"{path}: {path.stat().st_size:,} bytes is too large for a preprocessor config")
    try:
        pre = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:
        raise ConversionError(f"{path} is not valid JSON ({str(e)[:80] or 'too deeply nested'})") from None
    if not isinstance(pre, dict):
        raise ConversionError(f"{path} must be a JSON object, not {type(pre).__name__}")
    return pre


def _q8_fallback(shape: tuple[int, ...], outq: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    """outq, except F16 for a Q8_0 row that is not a whole number of blocks."""
    return Q.F16 if outq == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] else outq


def _collect(model_dir: Path, what: str, prefixes: tuple[str, ...], rename: Callable[[str], str | None],
             make: Callable[[ProjTensor], ProjTensor],
             skip: Callable[[str], bool] | None = None) -> tuple[list[ProjTensor], list[str]]:
    """Every checkpoint tensor whose name starts with one of prefixes, read from the safetensors headers only.

    skip(hf) true: a tensor of the tower llama.cpp leaves out (returned as the second list). rename(hf): its
    mmproj name, None where it has none (an error naming them all). make(base) -> the tensor to write: base
    is the source as stored (header shape, type still unset), the family sets the shape, type and reorder."""
    tensors: list[ProjTensor] = []
    skipped: list[str] = []
    unknown: list[str] = []
    for f, keys in _by_file(model_dir).items():
        header = safetensors_header(f)
        for hf in sorted(keys):
            if not hf.startswith(prefixes):
                continue
            if skip and skip(hf):
                skipped.append(hf)
                continue
            name = rename(hf)
            if name is None:
                unknown.append(hf)
                continue
            dtype, shape, start, _ = header[hf]
            if dtype not in _ST_DTYPES:
                raise ConversionError(f"{hf} is stored as {dtype}; only F32, F16 and BF16 checkpoints convert")
            tensors.append(make(ProjTensor(name, shape, Q.F32, hf, f, dtype, start)))
    if unknown:
        raise ConversionError(f"{len(unknown)} {what} tensors have no mmproj name: {', '.join(unknown[:5])}")
    return tensors, skipped


def _require(tensors: list[ProjTensor], required: tuple[str, ...], family: str) -> None:
    names = {t.name for t in tensors}
    for name in required:
        if name not in names:
            raise ConversionError(f"the checkpoint has no {name} (is this a {family} checkpoint?)")


def _block_order(tensors: list[ProjTensor], blk: str) -> None:
    """Sort in place: the tower's global tensors by name, then its blocks in layer order (as the converter)."""
    tensors.sort(key=lambda t: (0 if not t.name.startswith(blk) else 1,
                                int(t.name.split(".")[2]) if t.name.startswith(blk) else 0, t.name))


def _load(t: ProjTensor, fd: int) -> np.ndarray:
    src = _ST_DTYPES[t.src_dtype]
    n = int(np.prod(t.shape)) * src.itemsize
    buf = _read_at(fd, n, t.offset)
    if len(buf) != n:
        raise ConversionError(f"{t.src}: short read from {t.file.name} (file truncated?)")
    raw = np.frombuffer(buf, dtype=src)
    x = to_f32(raw, t.src_dtype, t.add)
    reorder = t.reorder
    if reorder and reorder[0] == "hwc_to_chw":
        p = reorder[1]
        x = x.reshape(t.shape[0], p, p, 3).transpose(0, 3, 1, 2)
    elif reorder and reorder[0] == "cols":
        x = x.reshape(t.shape)[:, reorder[1]]
    elif reorder and reorder[0] == "rows":
        x = x.reshape(t.shape)[reorder[1]]
    elif reorder and reorder[0] == "softplus":
        x = np.logaddexp(np.float32(0), x).astype(np.float32)  # torch.nn.functional.softplus
    elif reorder and reorder[0] == "permute102":
        x = x.reshape(t.shape[1], t.shape[0], t.shape[2]).transpose(1, 0, 2)
    x = np.ascontiguousarray(x.reshape(t.shape))
    if t.qtype == Q.Q8_0:
        return gguf.quants.quantize(x, Q.Q8_0)
    return from_f32(x, t.qtype, t.src, "write the projector as bf16")


def write_mmproj(model_dir: str | Path, out_path: str | Path, outtype: str = "f16", force: bool = False,
                 progress: Callable[[int, int, str], None] | None = None, audio: bool = True) -> Path:
    """Write the projector GGUF (vision, plus Gemma 4 E2B/E4B's audio encoder unless audio=False); returns
    out_path. Leaves no partial file behind."""
    out_path = Path(out_path)
    if out_path.exists() and not force:
        raise OutputExistsError(f"{out_path} already exists")
    plan = plan_mmproj(model_dir, outtype, audio=audio)
    hp = plan.hparams
    with staged_gguf(out_path, "clip", force) as w:
        w.add_type(gguf.GGUFType.MMPROJ)
        w.add_name(plan.model_dir.name + "-mmproj")
        w.add_file_type(int(MMPROJ_TYPES[outtype][0]))
        w.add_clip_has_vision_encoder(True)
        if plan.projector in ("gemma4v", "gemma4uv", "gemma3nv"):
            w.add_clip_vision_projector_type(plan.projector)  # as llama.cpp's Gemma4(Unified)VisionAudioModel
        else:
            w.add_clip_projector_type(plan.projector)
        w.add_vision_projection_dim(hp["proj_dim"])
        w.add_vision_image_size(hp["image_size"])
        w.add_vision_patch_size(hp["patch_size"])
        w.add_vision_embedding_length(hp["n_embd"])
        w.add_vision_feed_forward_length(hp["n_ff"])
        w.add_vision_block_count(hp["n_layer"])
        w.add_vision_head_count(hp["n_head"])
        w.add_vision_image_mean(hp["image_mean"])
        w.add_vision_image_std(hp["image_std"])
        w.add_vision_attention_layernorm_eps(hp["eps"])
        if plan.projector == "gemma3":
            w.add_vision_use_gelu(True)
            if hp["scale"] != GEMMA3_DEFAULT_SCALE:
                w.add_vision_projector_scale_factor(hp["scale"])
        elif plan.projector != "gemma3nv" and hp["scale"] != 3:  # clip.cpp: n_merge = 3 (pooling_kernel_size) for gemma4v unless the key says otherwise
            w.add_vision_projector_scale_factor(hp["scale"])
        if hp.get("audio"):
            a = hp["audio"]  # Gemma4VisionAudioModel / MmprojModel.set_gguf_parameters
            w.add_clip_has_audio_encoder(True)
            w.add_clip_audio_projector_type("gemma4a")
            w.add_audio_projection_dim(a["proj_dim"])
            w.add_audio_embedding_length(a["n_embd"])
            w.add_audio_feed_forward_length(a["n_ff"])
            w.add_audio_block_count(a["n_layer"])
            w.add_audio_head_count(a["n_head"])
            w.add_audio_num_mel_bins(a["n_mel"])
            w.add_audio_attention_layernorm_eps(a["eps"])
        for t in plan.tensors:
            if t.qtype == Q.Q8_0:
                shape = gguf.quant_shape_to_byte_shape(t.shape, Q.Q8_0)
                w.add_tensor_info(t.name, shape, np.dtype(np.uint8), t.nbytes, raw_dtype=Q.Q8_0)
            else:
                np_dtype = {Q.F32: np.float32, Q.F16: np.float16, Q.BF16: np.uint16}[t.qtype]
                w.add_tensor_info(t.name, t.shape, np.dtype(np_dtype), t.nbytes,
                                  raw_dtype=Q.BF16 if t.qtype == Q.BF16 else None)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        fout = w.fout[0]  # type: ignore[index]
        done = 0
        with source_fds() as fds:
            for t in plan.tensors:
                data = _load(t, open_source(fds, t.file))
                if data.nbytes != t.nbytes:
                    raise ConversionError(f"{t.name}: {data.nbytes} bytes, planned {t.nbytes}")
                w.write_padding(fout, fout.tell())
                data.tofile(fout)
                w.write_padding(fout, data.nbytes)
                done += data.nbytes
                if progress:
                    progress(done, plan.tensor_bytes, t.name)
    return out_path


# ---------------------------------------------------------------------------------------------
# proof with the engine: llama-cpp-python + the libmtmd.so built by quantize.llama_bins --mtmd


@dataclass
class ImageEncode:
    """What llama.cpp's multimodal library did with one image."""

    image_tokens: int  # soft tokens the image occupies in the context
    n_embd: int  # width of each soft token (the text model's)
    embd_finite: bool
    embd_std: float
    embd: np.ndarray  # (image_tokens, n_embd) as the encoder produced them
    clip_buffers: dict[str, int]  # clip's own log: "model" (the whole file), "<backend> compute", "audio <backend> compute" -> bytes (0.01 MiB steps)
    generated: list[int]
    log: str


def _mtmd_module():
    """llama_cpp.mtmd_cpp loaded with the libmtmd.so built for the pinned llama-cpp-python."""
    from .llama_bins import mtmd_lib

    lib = mtmd_lib()
    if lib is None:
        raise ConversionError("llama.cpp's multimodal library is not built: run `python -m quantize.llama_bins --mtmd`")
    os.environ.setdefault("MTMD_CPP_LIB", str(lib.parent))
    import llama_cpp.mtmd_cpp as mtmd_cpp  # noqa: E402  (reads MTMD_CPP_LIB at import)

    return mtmd_cpp


# clip.cpp's own log lines (load_hparams / reserve_compute_meta), two decimals of MiB
_CLIP_MODEL = __import__("re").compile(r"load_hparams: model size:\s+([\d.]+) MiB")
_CLIP_WARMUP = __import__("re").compile(r"warmup with (image|audio) size")
_CLIP_COMPUTE = __import__("re").compile(r"reserve_compute_meta:\s+(\w+) compute buffer size =\s+([\d.]+) MiB")


def encode_image(text_gguf: str | Path, mmproj: str | Path, rgb: np.ndarray, prompt: str = "Describe: ",
                 n_ctx: int = 512, n_tokens: int = 3) -> ImageEncode:
    """Load the text GGUF and the projector with llama.cpp, put one image (H x W x 3 uint8) in a prompt,
    encode it, decode the whole prompt and generate n_tokens greedily."""
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ConversionError(f"image must be H x W x 3 uint8, got shape {img.shape}")
    return _encode(text_gguf, mmproj, img, "image", prompt, n_ctx, n_tokens)


def encode_audio(text_gguf: str | Path, mmproj: str | Path, pcm: np.ndarray, prompt: str = "Transcribe: ",
                 n_ctx: int = 512, n_tokens: int = 3) -> ImageEncode:
    """As encode_image for one mono clip of float samples at the projector's rate (16 kHz for Gemma 4):
    llama.cpp computes the mel features itself (mtmd-audio), runs the audio encoder and returns its soft
    tokens (``image_tokens`` counts them)."""
    x = np.ascontiguousarray(pcm, dtype=np.float32)
    if x.ndim != 1 or not x.size:
        raise ConversionError(f"audio must be a 1-D array of samples, got shape {x.shape}")
    return _encode(text_gguf, mmproj, x, "audio", prompt, n_ctx, n_tokens)


def _encode(text_gguf: str | Path, mmproj: str | Path, media: np.ndarray, kind: str, prompt: str,
            n_ctx: int, n_tokens: int) -> ImageEncode:
    import ctypes

    import llama_cpp

    mtmd_cpp = _mtmd_module()
    img = media
    chunks_log: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):  # noqa: ARG001
        chunks_log.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_log_set(capture, ctypes.c_void_p(0))
    llm = llama_cpp.Llama(str(text_gguf), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_gpu_layers=0, verbose=False)
    mctx = None
    chunks = None
    bitmap = None
    try:
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.n_threads = max(1, min(4, os.cpu_count() or 1))
        params.print_timings = False
        mctx = mtmd_cpp.mtmd_init_from_file(str(mmproj).encode(), llm.model, params)
        if not mctx:
            raise ConversionError(f"llama.cpp could not load {Path(mmproj).name}: {''.join(chunks_log)[-600:]}")
        if kind == "image":
            if not mtmd_cpp.mtmd_support_vision(mctx):
                raise ConversionError(f"{Path(mmproj).name} loaded but reports no vision support")
            h, w = img.shape[:2]
            bitmap = mtmd_cpp.mtmd_bitmap_init(w, h, (ctypes.c_uint8 * img.nbytes).from_buffer_copy(img.tobytes()))
        else:
            if not mtmd_cpp.mtmd_support_audio(mctx):
                raise ConversionError(f"{Path(mmproj).name} loaded but reports no audio support")
            bitmap = mtmd_cpp.mtmd_bitmap_init_from_audio(
                img.size, (ctypes.c_float * img.size).from_buffer_copy(img.tobytes()))
        marker = mtmd_cpp.mtmd_default_marker().decode()
        text = f"{prompt}{marker}\n".encode()
        inp = mtmd_cpp.mtmd_input_text()
        inp.text, inp.text_len, inp.add_special, inp.parse_special = text, len(text), True, True
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        arr = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
        rc = mtmd_cpp.mtmd_tokenize(mctx, chunks, ctypes.byref(inp), arr, 1)
        if rc != 0:
            raise ConversionError(f"mtmd_tokenize failed ({rc})")
        image_tokens, n_embd, finite, std, emb = 0, 0, False, 0.0, np.zeros(0, np.float32)
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            ch = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            want = mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE if kind == "image" else mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_AUDIO
            if mtmd_cpp.mtmd_input_chunk_get_type(ch) == want:
                image_tokens = int(mtmd_cpp.mtmd_input_chunk_get_n_tokens(ch))
                if mtmd_cpp.mtmd_encode_chunk(mctx, ch) != 0:
                    raise ConversionError("mtmd_encode_chunk failed")
                n_embd = int(llama_cpp.llama_model_n_embd(llm.model))
                out = mtmd_cpp.mtmd_get_output_embd(mctx)
                emb = np.ctypeslib.as_array(out, shape=(image_tokens * n_embd,)).copy()
                finite, std = bool(np.isfinite(emb).all()), float(emb.std())
        if not image_tokens:
            raise ConversionError(f"the prompt produced no {kind} chunk")
        n_past = llama_cpp.llama_pos(0)
        rc = mtmd_cpp.mtmd_helper_eval_chunks(mctx, llm.ctx, chunks, 0, 0, n_ctx, True, ctypes.byref(n_past))
        if rc != 0:
            raise ConversionError(f"evaluating the prompt with the {kind} failed ({rc})")
        generated: list[int] = []
        pos = n_past.value
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
        for _ in range(n_tokens):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            tok = int(logits.argmax())
            generated.append(tok)
            batch = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(tok), 1)
            if llama_cpp.llama_decode(llm.ctx, batch) != 0:
                raise ConversionError(f"decoding after the {kind} failed")
            pos += 1
        log = "".join(chunks_log)
        bufs = {"model": int(float(m.group(1)) * 2**20) for m in _CLIP_MODEL.finditer(log)}
        # a file with both encoders logs one reservation each, after its "warmup with image/audio size" line:
        # the image encoder's keep their plain key, the audio encoder's are prefixed "audio "
        modality = "image"
        for line in log.splitlines():
            if _CLIP_WARMUP.search(line):
                modality = _CLIP_WARMUP.search(line).group(1)
            m = _CLIP_COMPUTE.search(line)
            if m:
                bufs[("audio " if modality == "audio" else "") + f"{m.group(1)} compute"] = int(float(m.group(2)) * 2**20)
        return ImageEncode(image_tokens, n_embd, finite, std, emb.reshape(image_tokens, n_embd), bufs, generated, log)
    finally:
        if chunks is not None:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
        if bitmap is not None:
            mtmd_cpp.mtmd_bitmap_free(bitmap)
        if mctx:
            mtmd_cpp.mtmd_free(mctx)
        llm.close()
        llama_cpp.llama_log_set(llama_cpp.llama_log_callback(0), ctypes.c_void_p(0))
