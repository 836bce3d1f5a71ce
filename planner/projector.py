"""Memory of the vision projector (mmproj) that llama.cpp-based engines load beside a Gemma GGUF.

Pure arithmetic, no engine imported. Three parts, per image-capable model:

* **projector weights**: the mmproj file's tensors, with the types llama.cpp's converter (and
  ``quantize.mmproj``) gives them: 1-D tensors, norms, the patch and position embeddings F32, the input
  projection F16, every other matrix in the file's type (F16 by default). Computed from the tower's
  shapes, so it is exact for a file written that way (tests compare it with clip.cpp's own
  ``model size`` log line and with ``quantize.mmproj``'s plan).
* **encoder compute buffer**: what ``clip.cpp`` reserves for one image at the tower's input size
  (``reserve_compute_meta: CPU compute buffer size``), measured with the engine on towers of the real
  widths and image size (see ``ENCODER_COMPUTE``). ggml's graph allocator reuses each layer's buffers,
  so from two encoder layers on the reservation no longer grows with depth (measured: 1 layer 103.81 MiB,
  2 and 4 layers 121.25 MiB), and a shallow tower of the real width stands for the 27-layer one.
* **soft tokens**: each image occupies ``tokens_per_image`` positions of the context (Gemma 3: 256, plus
  its begin/end markers), so they count against ``n_ctx`` rather than adding memory; the text model's
  micro-batch must hold a whole image (llama.cpp decodes an image's tokens non-causally, in one ubatch).

Engines: llama.cpp (llama-server ``--mmproj``), llama-cpp-python (its mtmd chat handlers), Ollama and
LM Studio all run the projector through the same ``tools/mtmd`` code; Ollama and LM Studio load it
whenever the model ships one, llama.cpp and llama-cpp-python only when asked. The projector goes to the
first GPU when one is used (mtmd's ``use_gpu`` default), else to system RAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

F32, F16 = 4, 2
Q8_0_BYTES_PER_32 = 34
ENGINES_WITH_MMPROJ = ("llama.cpp", "llama-cpp-python", "ollama", "lmstudio")
LOADED_BY_DEFAULT = ("ollama", "lmstudio")
# llama.cpp b11312 (llama-cpp-python 0.3.36): clip.cpp names a gemma3na projector but builds no graph for it, and
# mtmd.cpp skips the audio encoder of a Gemma 3n mmproj ("we don't support audio for Gemma 3N")
GEMMA3N_AUDIO_NOTE = ("audio: llama.cpp does not run Gemma 3n's audio encoder (its clip.cpp has no gemma3na graph and "
                      "skips the audio tensors), so --audio plans nothing for it")


@dataclass(frozen=True)
class VisionTower:
    """A vision encoder's shape, as the mmproj file describes it to clip."""

    kind: str  # clip.projector_type
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    image_size: int
    patch_size: int
    tokens_per_image: int
    source: str
    head_dim: int = 0  # gemma4v: q/k norm width
    pos_table: int = 0  # gemma4v: rows of each of the two (x, y) position tables

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# Gemma 3 4B/12B/27B share one SigLIP-so400m tower (google/gemma-3-*-it config.json vision_config;
# /work/shared reference gemma_architectures.md section 1.2).
GEMMA3_SIGLIP = VisionTower("gemma3", n_embd=1152, n_ff=4304, n_layer=27, n_head=16, image_size=896, patch_size=14,
                            tokens_per_image=256, source="google/gemma-3-4b-it config.json vision_config")

# clip.cpp's compute buffer for one image on the CPU backend with flash attention on (mtmd's default
# "auto" turns it on there), in bytes, for a tower of two or more layers. Measured with llama-cpp-python
# 0.3.36 + libmtmd (quantize.llama_bins --mtmd) on Gemma 3 checkpoints with the real SigLIP widths
# (1152/4304/16 heads, 896 px, 14 px patches, 256 soft tokens) and 1 / 2 / 4 encoder layers:
#   PYTHONPATH=. python -m quantize.mmproj_measure --layers 1 2 4
# -> 103.81, 121.25, 121.25 MiB (the reserve_compute_meta log line, 0.01 MiB resolution).
# Without flash attention the 16 x 4096 x 4096 F32 attention scores (1 GiB) would come on top.
# Gemma 4 26B/31B (gemma4v): the same command with --gemma4v 16 (2 layers of the released widths, one
# 768 px image = the 256-token warmup size clip.cpp reserves for): 157,947,002 bytes (150.63 MiB);
# E2B/E4B's tower with --gemma4v 16 --small: 106,189,291 bytes (101.27 MiB). Keyed by (kind, width).
# Gemma 3n E2B/E4B (gemma3nv): the released MobileNetV5 (timm mobilenetv5_300m_enc, random weights) and one 768 px
# image, `PYTHONPATH=. python -m quantize.mmproj_measure --gemma3nv` (needs timm): 583,951,974 bytes (556.90 MiB),
# with clip's model size 570.07 MiB against 570.07 predicted (the image took 90 s to encode on 2 CPU cores).
ENCODER_COMPUTE: dict[tuple[str, int], int] = {("gemma3", 1152): 127_139_840, ("gemma4v", 1152): 157_947_002,
                                               ("gemma4v", 768): 106_189_291, ("gemma3nv", 2048): 583_951_974}


# Gemma 4 26B-A4B / 31B vision tower (gemma4v in clip.cpp): google/gemma-4-31B-it config.json vision_config
# (reference gemma_architectures.md section 1.4: hidden 1152, inter 4304, 27 layers, 16 heads of 72) with
# Gemma4VisionConfig's defaults for the rest (16 px patches pooled 3x3, 10240-row position tables).
# Images are variable-sized: llama.cpp gives one 70..1120 soft tokens and reserves its compute buffer for
# a 256-token (768 px) warmup image, which is the size planned here.
GEMMA4_VISION_LARGE = VisionTower("gemma4v", n_embd=1152, n_ff=4304, n_layer=27, n_head=16, image_size=768, patch_size=16,
                                  tokens_per_image=256, source="google/gemma-4-31B-it config.json vision_config",
                                  head_dim=72, pos_table=10240)
# Gemma 4 E2B/E4B: the smaller tower (reference gemma_architectures.md 1.4: hidden 768, inter 3072, 16 layers,
# 12 heads, 16 px patches pooled 3x3), same clip.cpp graph and warmup size.
GEMMA4_VISION_SMALL = VisionTower("gemma4v", n_embd=768, n_ff=3072, n_layer=16, n_head=12, image_size=768, patch_size=16,
                                  tokens_per_image=256, source="google/gemma-4-E2B-it config.json vision_config",
                                  head_dim=64, pos_table=10240)

# Gemma 3n E2B/E4B: timm's mobilenetv5_300m_enc (timm 1.0.31 models/mobilenetv5.py, _gen_mobilenet_v5 arch_def, in
# its own block notation: er = edge residual, uir = universal inverted residual with a = start and k = middle
# depthwise kernel, mqa = multi-query attention with h heads of d, v = K/V stride; e = expansion, c = channels),
# stem 64, fusion adapter over the last two stages to 2048 channels on a 16 x 16 grid (256 soft tokens from a
# 768 px image). llama.cpp runs it as gemma3nv; its text width must equal the vision width (2048), which holds.
# n_ff and n_head are the (unused) values the converter writes; n_layer counts the blocks.
_MNV5_300M_S2 = (["uir_a5_k5_s2_e6_c640"] + ["uir_a5_k0_s1_e4_c640"] * 7 + ["uir_a0_k0_s1_e1_c640"]
                 + ["mqa_k3_h12_v2_d64_c640", "uir_a0_k0_s1_e2_c640"] * 14)
_MNV5_300M_S3 = ["uir_a5_k5_s2_e6_c1280"] + ["mqa_k3_h16_v1_d96_c1280", "uir_a0_k0_s1_e2_c1280"] * 19
MOBILENETV5_300M: tuple[tuple[str, ...], ...] = (
    ("er_k3_s2_e4_c128", "er_k3_s1_e4_c128", "er_k3_s1_e4_c128"),
    ("uir_a3_k5_s2_e6_c256", "uir_a5_k0_s1_e4_c256", "uir_a3_k0_s1_e4_c256", "uir_a5_k0_s1_e4_c256", "uir_a3_k0_s1_e4_c256"),
    tuple(_MNV5_300M_S2),
    tuple(_MNV5_300M_S3),
)
GEMMA3N_VISION = VisionTower("gemma3nv", n_embd=2048, n_ff=4 * 2048, n_layer=sum(len(s) for s in MOBILENETV5_300M), n_head=8,
                             image_size=768, patch_size=3, tokens_per_image=256,
                             source="google/gemma-3n-E4B-it config.json vision_config (timm mobilenetv5_300m_enc)")
GEMMA3N_VISION_VOCAB = 128  # embed_vision.embedding rows (Gemma3nVisionConfig.vocab_size), written as mm.embedding
TOWERS_BY_MODEL = {"gemma-4-31b": GEMMA4_VISION_LARGE, "gemma-4-26b-a4b": GEMMA4_VISION_LARGE,
                   "gemma-4-e2b": GEMMA4_VISION_SMALL, "gemma-4-e4b": GEMMA4_VISION_SMALL,
                   "gemma-3n-e2b": GEMMA3N_VISION, "gemma-3n-e4b": GEMMA3N_VISION}


def tower_for(family: str, has_vision: bool, name: str = "") -> Optional[VisionTower]:
    """The vision tower llama.cpp's mtmd runs for this model, or None (text-only, or not modelled)."""
    if not has_vision:
        return None
    if family == "gemma3":
        return GEMMA3_SIGLIP
    return TOWERS_BY_MODEL.get(name)


def _q(rows: int, cols: int, t: str) -> int:
    if t == "q8_0" and cols % 32 == 0:
        return rows * cols // 32 * Q8_0_BYTES_PER_32
    if t == "f32":
        return rows * cols * F32
    return rows * cols * F16  # f16, bf16, and q8_0's F16 fallback


def mmproj_weight_bytes(tower: VisionTower, proj_dim: int, outtype: str = "f16") -> int:
    """Bytes of the mmproj tensors (no GGUF header), as quantize.mmproj writes them."""
    if outtype not in ("f16", "bf16", "q8_0", "f32"):
        raise ValueError(f"mmproj type {outtype!r}")
    if tower.kind == "gemma4v":
        return _gemma4v_weight_bytes(tower, proj_dim, outtype)
    if tower.kind == "gemma3nv":
        return mobilenetv5_weight_bytes(MOBILENETV5_300M, 64, proj_dim, outtype, n_embd=tower.n_embd)
    if tower.kind != "gemma3":
        raise ValueError(f"projector {tower.kind!r} is not modelled")
    E, FF = tower.n_embd, tower.n_ff
    total = 3 * tower.patch_size ** 2 * E * F32 + E * F32  # patch embedding (F32) + bias
    total += tower.n_patches * E * F32  # position embedding (F32)
    per_layer = 4 * _q(E, E, outtype) + 4 * E * F32  # q, k, v, out + biases
    per_layer += _q(FF, E, outtype) + FF * F32 + _q(E, FF, outtype) + E * F32  # ffn up/down + biases
    per_layer += 4 * E * F32  # ln1, ln2 (weight, bias)
    total += tower.n_layer * per_layer
    total += 2 * E * F32  # post layer norm
    total += E * proj_dim * F16 + E * F32  # mm.input_projection (always F16) + soft_emb_norm
    return total


def _gemma4v_weight_bytes(tower: VisionTower, proj_dim: int, outtype: str) -> int:
    """Gemma 4 vision: no biases, gated MLP, q/k RMS norms, four RMS norms per layer, a 2 x rows x E position
    table (F32), the patch kernel F16 in an F16 file else F32, the input projection in the file's type."""
    E, FF = tower.n_embd, tower.n_ff
    total = 3 * tower.patch_size ** 2 * E * (F16 if outtype == "f16" else F32)
    total += 2 * tower.pos_table * E * F32
    per_layer = 4 * _q(E, E, outtype) + 2 * _q(FF, E, outtype) + _q(E, FF, outtype)
    per_layer += 2 * tower.head_dim * F32 + 4 * E * F32
    total += tower.n_layer * per_layer
    total += _q(proj_dim, E, outtype)
    return total


def _mnv5_block(spec: str) -> dict[str, object]:
    """One block of timm's MobileNetV5 notation ("uir_a5_k0_s1_e4_c640") as {kind, a, k, s, e, c, h, d, v}."""
    kind, *fields = spec.split("_")
    out: dict[str, object] = {"kind": kind, "a": 0, "k": 0, "v": 1}
    for f in fields:
        out[f[0]] = float(f[1:]) if f[0] == "e" else int(f[1:])
    return out


def _divisible(v: float, div: int = 8) -> int:
    """timm's make_divisible (round_channels): channel counts rounded to a multiple of 8, never 10% down."""
    n = max(div, int(v + div / 2) // div * div)
    return n + div if n < 0.9 * v else n


def mobilenetv5_weight_bytes(stages: tuple[tuple[str, ...], ...], stem: int, proj_dim: int, outtype: str = "f16",
                             n_embd: int = 2048, vocab: int = GEMMA3N_VISION_VOCAB) -> int:
    """Bytes of a Gemma 3n (gemma3nv) mmproj's tensors as quantize.mmproj writes them: the stem, norms and layer
    scales F32, every other convolution kernel F16 (F32 in an F32 file; llama.cpp's Q8_0 falls back to F16 for
    rows of 1, 3 or 5, and a BF16 kernel would abort ggml's CPU conv_2d), mm.embedding and mm.input_projection
    in the file's type. Shapes follow timm's MobileNetV5 blocks (EdgeResidual, UniversalInvertedResidual,
    MobileAttention) and its fusion adapter (an expand-2 inverted residual over the last two stages)."""
    k4 = F32 if outtype == "f32" else F16
    total = (stem * 3 * 9 + 2 * stem) * F32  # stem conv, bias, norm
    cin, ends = stem, []
    for stage in stages:
        for spec in stage:
            b = _mnv5_block(spec)
            c = int(b["c"])
            if b["kind"] == "er":
                mid = _divisible(cin * b["e"])
                total += (mid * cin * b["k"] ** 2 + c * mid) * k4 + (mid + c) * F32
            elif b["kind"] == "uir":
                mid = _divisible(cin * b["e"])
                if b["a"]:
                    total += cin * b["a"] ** 2 * k4 + cin * F32
                total += (mid * cin + c * mid) * k4 + (mid + c + c) * F32  # pw_exp, pw_proj, their norms, layer scale
                if b["k"]:
                    total += mid * b["k"] ** 2 * k4 + mid * F32
            else:  # mqa
                h, d = int(b["h"]), int(b["d"])
                total += (h * d * cin + 2 * d * cin + c * h * d) * k4 + (cin + c) * F32  # q, k, v, out; norm, layer scale
                if b["v"] > 1:
                    total += 2 * (cin * b["k"] ** 2 * k4 + cin * F32)  # K and V down-convolutions and their norms
            cin = c
        ends.append(cin)
    fused = sum(ends[-2:])
    total += (2 * fused * fused + n_embd * 2 * fused) * k4 + (2 * fused + 2 * n_embd) * F32  # fusion adapter
    total += _q(vocab, n_embd, outtype) + _q(proj_dim, n_embd, outtype) + 2 * n_embd * F32  # embedder
    return total


def encoder_compute_bytes(tower: VisionTower) -> Optional[int]:
    """clip's compute reservation for the tower's planned image, where it was measured (see ENCODER_COMPUTE)."""
    if tower.n_layer < 2:
        return None  # measured at depth >= 2 only
    released = {("gemma3", 1152): GEMMA3_SIGLIP, ("gemma4v", 1152): GEMMA4_VISION_LARGE, ("gemma4v", 768): GEMMA4_VISION_SMALL,
                ("gemma3nv", 2048): GEMMA3N_VISION}
    ref = released.get((tower.kind, tower.n_embd))
    if ref is None or (tower.n_ff, tower.n_head, tower.image_size, tower.patch_size) != (ref.n_ff, ref.n_head, ref.image_size, ref.patch_size):
        return None  # measured for the released towers only
    return ENCODER_COMPUTE.get((tower.kind, tower.n_embd))


@dataclass
class ProjectorMemory:
    """What an mmproj costs when loaded: weights, the encoder's compute buffer, soft tokens per image."""

    kind: str
    file_type: str
    weights_bytes: int
    compute_bytes: int
    tokens_per_image: int
    image_size: int
    source: str
    path: Optional[str] = None  # the mmproj file, when one was written for this plan

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def projector_memory(family: str, has_vision: bool, proj_dim: int, outtype: str = "f16",
                     name: str = "") -> Optional[ProjectorMemory]:
    tower = tower_for(family, has_vision, name)
    if tower is None:
        return None
    compute = encoder_compute_bytes(tower)
    return ProjectorMemory(kind=tower.kind, file_type=outtype, weights_bytes=mmproj_weight_bytes(tower, proj_dim, outtype),
                           compute_bytes=compute or 0, tokens_per_image=tower.tokens_per_image,
                           image_size=tower.image_size, source=tower.source)


# ---------------------------------------------------------------------------------------------
# audio: Gemma 4 E2B/E4B's conformer (gemma4a), written into the same mmproj as the vision tower


@dataclass(frozen=True)
class AudioTower:
    """An audio encoder's shape, as the mmproj file describes it to clip."""

    kind: str  # clip.audio.projector_type
    n_embd: int
    n_layer: int
    n_head: int
    conv_channels: tuple[int, int]  # the two stride-2 subsampling convolutions
    out_dim: int  # output_proj_dims: the width the audio embedder projects from
    n_mel: int
    conv_kernel: int
    warmup_seconds: float  # clip.cpp reserves the encoder's compute for a 3000-frame (10 ms) warmup clip
    tokens_per_second: int  # 100 mel frames / s, / 4 by the two stride-2 convolutions
    source: str


# google/gemma-4-E2B-it and -E4B-it config.json audio_config = Gemma4AudioConfig's defaults (reference
# gemma_architectures.md: ~300M conformer, hidden 1024, 12 layers, 8 heads); 128 mel bins from the feature
# extractor (feature_size), as llama.cpp's converter assumes.
GEMMA4_AUDIO = AudioTower("gemma4a", n_embd=1024, n_layer=12, n_head=8, conv_channels=(128, 32), out_dim=1536,
                          n_mel=128, conv_kernel=5, warmup_seconds=30.0, tokens_per_second=25,
                          source="google/gemma-4-E2B-it config.json audio_config")
AUDIO_TOWERS_BY_MODEL = {"gemma-4-e2b": GEMMA4_AUDIO, "gemma-4-e4b": GEMMA4_AUDIO}
# clip.cpp's compute reservation for the audio encoder (CPU, the 3000-frame warmup clip; mtmd cuts longer audio
# into 30 s slices, so it never grows), measured at the released widths with 1, 2 and 4 conformer layers:
#   PYTHONPATH=. python -m quantize.mmproj_measure --gemma4a 1 40 --layers 1 2 4
# -> 106,105,405 bytes (101.19 MiB) at every depth (the subsampling convolutions over 3000 x 128 mel frames
# dominate; a 64-wide tower reserves 101.15 MiB). Keyed by (kind, width).
AUDIO_ENCODER_COMPUTE: dict[tuple[str, int], int] = {("gemma4a", 1024): 106_105_405}


def audio_encoder_compute_bytes(tower: AudioTower) -> Optional[int]:
    ref = GEMMA4_AUDIO
    if (tower.kind, tower.n_embd, tower.n_mel, tower.conv_channels) != (ref.kind, ref.n_embd, ref.n_mel, ref.conv_channels):
        return None  # measured for the released tower only
    return AUDIO_ENCODER_COMPUTE.get((tower.kind, tower.n_embd))


def audio_projector_memory(name: str, has_audio: bool, proj_dim: int, outtype: str = "f16") -> Optional[dict]:
    """The audio encoder's part of the mmproj: weights, compute reservation, tokens per 30 s slice."""
    tower = audio_tower_for(name, has_audio)
    if tower is None:
        return None
    return dict(kind=tower.kind, file_type=outtype, weights_bytes=audio_weight_bytes(tower, proj_dim, outtype),
                compute_bytes=audio_encoder_compute_bytes(tower) or 0, tokens_per_second=tower.tokens_per_second,
                slice_seconds=tower.warmup_seconds, source=tower.source)


def audio_tower_for(name: str, has_audio: bool) -> Optional[AudioTower]:
    """The audio encoder llama.cpp's mtmd runs for this model, or None (no tower, or not modelled)."""
    return AUDIO_TOWERS_BY_MODEL.get(name) if has_audio else None


def audio_weight_bytes(tower: AudioTower, proj_dim: int, outtype: str = "f16") -> int:
    """Bytes of the audio encoder's tensors in the mmproj, as quantize.mmproj (and llama.cpp's converter)
    writes them: the convolutions, the subsampler's input projection, norms, per-dim scales and the clip
    bounds (1-element) F32, every other matrix in the file's type (Q8_0 rows not a multiple of 32 in F16)."""
    if outtype not in ("f16", "bf16", "q8_0", "f32"):
        raise ValueError(f"mmproj type {outtype!r}")
    E, (c0, c1) = tower.n_embd, tower.conv_channels
    total = (c0 * 9 + c0 + c1 * c0 * 9 + c1) * F32  # two 3x3 convolutions (no bias) and their norms
    total += E * (c0 // 4) * c1 * F32  # subsampler input projection (F32: "_conv" in its name)
    per_layer = 5 * _q(E, E, outtype)  # q, k, v, out, relative-position k
    per_layer += 2 * (_q(4 * E, E, outtype) + _q(E, 4 * E, outtype))  # two half-step FFNs
    per_layer += _q(2 * E, E, outtype) + _q(E, E, outtype)  # light conv: pointwise in (GLU) and out
    per_layer += E * tower.conv_kernel * F32  # depthwise kernel
    per_layer += 9 * E * F32 + (E // tower.n_head) * F32  # nine RMS norms, per-dim scale
    per_layer += 40 * F32  # clip bounds: 4 each on q, k, v, out, four FFN and two light-conv linears
    total += tower.n_layer * per_layer
    total += _q(tower.out_dim, E, outtype) + tower.out_dim * F32  # output projection + bias
    total += _q(proj_dim, tower.out_dim, outtype)  # mm.a.input_projection
    return total
