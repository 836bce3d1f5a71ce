"""Measure clip.cpp's memory for a Gemma 3 vision tower at the real widths, with the real engine.

    PYTHONPATH=. python -m quantize.mmproj_measure --layers 1 2 [--image-size 896] [--json]

Builds a random Gemma 3 checkpoint whose SigLIP tower has the released widths (hidden 1152, ffn 4304,
16 heads, 14 px patches, 256 soft tokens) and the given number of encoder layers (the 27 of the real
tower take ~850 MB; the buffers grow linearly with depth, so two depths give both coefficients), writes
its text GGUF and F16 mmproj, encodes one image through llama-cpp-python + libmtmd and prints what
clip.cpp logged: the projector's weight bytes and its compute buffer, next to planner.projector's
prediction of the weights. Needs torch, transformers and `python -m quantize.llama_bins --mtmd`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional


def _gemma4_checkpoint(d: Path, vision: Any, audio: Any, **token_ids: int) -> None:
    """Save a random bf16 Gemma 4 checkpoint in d around a 2-layer 256-wide text model with the given towers,
    then write its F16 text GGUF (text.gguf) and F16 projector (mmproj-f16.gguf) next to it."""
    import torch
    import transformers

    from .convert import convert_hf_to_gguf
    from .mmproj import write_mmproj
    from .tiny import _save_tokenizer

    text = transformers.Gemma4TextConfig(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_attention_heads=2, num_key_value_heads=1,
        head_dim=128, global_head_dim=256, num_hidden_layers=2, sliding_window=16, hidden_size_per_layer_input=0,
        layer_types=["sliding_attention", "full_attention"], pad_token_id=0, eos_token_id=1, bos_token_id=2)
    cfg = transformers.Gemma4Config(text_config=text, vision_config=vision, audio_config=audio, boi_token_id=1020,
                                    eoi_token_id=1021, image_token_id=1022, video_token_id=1023, **token_ids)
    torch.manual_seed(0)
    transformers.Gemma4ForConditionalGeneration(cfg).to(torch.bfloat16).save_pretrained(d)
    _save_tokenizer(d, 1024, 0, keep_spm=True)
    convert_hf_to_gguf(d, d / "text.gguf", "f16", force=True)
    write_mmproj(d, d / "mmproj-f16.gguf", "f16", force=True)


def measure_gemma4v(n_layer: int, side_tokens: int, work: Path, small: bool = False) -> dict:
    """Gemma 4 26B/31B vision widths (hidden 1152, ffn 4304, 16 heads of 72; ``small``: E2B/E4B's 768, 3072,
    12 heads of 64), 16 px patches pooled 3x3, one square image of side_tokens x side_tokens soft tokens."""
    import numpy as np
    import transformers

    from .mmproj import encode_image

    d = work / f"gemma4v-{'small' if small else 'large'}-{n_layer}-{side_tokens}"
    d.mkdir(parents=True, exist_ok=True)
    e, ff, heads, hd = (768, 3072, 12, 64) if small else (1152, 4304, 16, 72)
    vision = transformers.Gemma4VisionConfig(hidden_size=e, intermediate_size=ff, num_hidden_layers=n_layer,
                                             num_attention_heads=heads, num_key_value_heads=heads, head_dim=hd)
    _gemma4_checkpoint(d, vision, None)
    px = side_tokens * 48
    rgb = ((np.arange(px * px * 3) * 37) % 251).astype(np.uint8).reshape(px, px, 3)
    enc = encode_image(d / "text.gguf", d / "mmproj-f16.gguf", rgb, n_ctx=2048, n_tokens=1)
    grow = [int(float(x) * 2**20) for x in __import__("re").findall(r"reallocating \w+ buffer from size [\d.]+ MiB to ([\d.]+) MiB", enc.log)]
    return dict(family="gemma4v-small" if small else "gemma4v", n_layer=n_layer, image_px=px, image_tokens=enc.image_tokens,
                clip_model_bytes=enc.clip_buffers.get("model"), clip_compute_bytes=enc.clip_buffers.get("CPU compute"),
                compute_after_image_bytes=max(grow) if grow else None)


def measure_gemma4a(n_layer: int, seconds: list[float], work: Path) -> dict:
    """Gemma 4 E2B/E4B's audio conformer at the released widths (Gemma4AudioConfig's defaults: hidden 1024,
    8 heads, subsampling channels 128/32, output 1536, 128 mel bins) with n_layer layers, in an mmproj beside a
    1-layer 64-wide vision tower; one clip of each length encoded. clip.cpp reserves the audio encoder's compute
    buffer for a 3000-frame (30 s) warmup clip; a longer clip grows it."""
    import re

    import numpy as np
    import transformers

    from planner.projector import GEMMA4_AUDIO, audio_weight_bytes

    from .mmproj import encode_audio, plan_mmproj

    d = work / f"gemma4a-{n_layer}"
    d.mkdir(parents=True, exist_ok=True)
    vision = transformers.Gemma4VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=2, head_dim=32)
    audio = transformers.Gemma4AudioConfig(num_hidden_layers=n_layer)
    _gemma4_checkpoint(d, vision, audio, audio_token_id=1019, boa_token_id=1018, eoa_token_index=1017)
    planned = sum(t.nbytes for t in plan_mmproj(d, "f16").tensors if t.name.startswith(("a.", "mm.a.")))
    import dataclasses

    rows = []
    for sec in seconds:
        t = np.arange(int(16000 * sec)) / 16000
        pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        enc = encode_audio(d / "text.gguf", d / "mmproj-f16.gguf", pcm, n_ctx=4096, n_tokens=1)
        computes = [int(float(m) * 2**20) for m in re.findall(r"reserve_compute_meta:\s+\w+ compute buffer size =\s+([\d.]+) MiB", enc.log)]
        models = [int(float(m) * 2**20) for m in re.findall(r"load_hparams: model size:\s+([\d.]+) MiB", enc.log)]
        grow = [int(float(x) * 2**20) for x in re.findall(r"reallocating \w+ buffer from size [\d.]+ MiB to ([\d.]+) MiB", enc.log)]
        rows.append(dict(seconds=sec, audio_tokens=enc.image_tokens, clip_model_bytes=models, clip_compute_bytes=computes,
                         compute_after_clip_bytes=max(grow) if grow else None))
    return dict(family="gemma4a", n_layer=n_layer, planned_audio_tensor_bytes=planned,
                predicted_audio_weight_bytes=audio_weight_bytes(dataclasses.replace(GEMMA4_AUDIO, n_layer=n_layer), 256, "f16"),
                clips=rows)


def measure_gemma3nv(work: Path) -> dict:
    """Gemma 3n's released vision tower (timm's mobilenetv5_300m_enc at random weights, 128-row embedder) around
    the tiny 2048-wide gemma3n text model (llama.cpp needs the text width to equal the vision width): writes the
    F16 mmproj, encodes one 768 px image and returns clip's logged weights and compute reservation. Needs timm."""
    import numpy as np
    import torch
    import transformers

    from planner.projector import GEMMA3N_VISION, mmproj_weight_bytes

    from .convert import convert_hf_to_gguf
    from .mmproj import encode_image, write_mmproj
    from .tiny import _make_config, _save_tokenizer

    d = work / "gemma3nv"
    d.mkdir(parents=True, exist_ok=True)
    cfg = _make_config("gemma3n", {})
    cfg.vision_config.model_args = None  # the released block list, not the tiny one
    cfg.vision_config.vocab_size = 128
    torch.manual_seed(0)
    transformers.Gemma3nForConditionalGeneration(cfg).to(torch.bfloat16).save_pretrained(d)
    _save_tokenizer(d, cfg.text_config.vocab_size, 0, keep_spm=True)
    convert_hf_to_gguf(d, d / "text.gguf", "f16", force=True)
    write_mmproj(d, d / "mmproj-f16.gguf", "f16", force=True)
    rgb = ((np.arange(768 * 768 * 3) * 37) % 251).astype(np.uint8).reshape(768, 768, 3)
    enc = encode_image(d / "text.gguf", d / "mmproj-f16.gguf", rgb, n_ctx=512, n_tokens=1)
    return dict(family="gemma3nv", image_tokens=enc.image_tokens, clip_model_bytes=enc.clip_buffers.get("model"),
                clip_compute_bytes=enc.clip_buffers.get("CPU compute"),
                predicted_weight_bytes=mmproj_weight_bytes(GEMMA3N_VISION, 2048, "f16"))


def measure(n_layer: int, image_size: int, work: Path) -> dict:
    import dataclasses

    import numpy as np
    import torch
    import transformers

    from planner.projector import GEMMA3_SIGLIP, mmproj_weight_bytes

    from .convert import convert_hf_to_gguf
    from .mmproj import encode_image, write_mmproj
    from .tiny import _save_tokenizer

    d = work / f"siglip-{n_layer}-{image_size}"
    d.mkdir(parents=True, exist_ok=True)
    text = transformers.Gemma3TextConfig(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_attention_heads=2, num_key_value_heads=1,
        head_dim=128, num_hidden_layers=2, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
        pad_token_id=0, eos_token_id=1, bos_token_id=2)
    t = GEMMA3_SIGLIP
    vision = transformers.SiglipVisionConfig(hidden_size=t.n_embd, intermediate_size=t.n_ff, num_hidden_layers=n_layer,
                                             num_attention_heads=t.n_head, image_size=image_size, patch_size=t.patch_size)
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=t.tokens_per_image,
                                    boi_token_index=1021, eoi_token_index=1022, image_token_index=1023)
    torch.manual_seed(0)
    transformers.Gemma3ForConditionalGeneration(cfg).to(torch.bfloat16).save_pretrained(d)
    _save_tokenizer(d, 1024, 0, keep_spm=True)
    convert_hf_to_gguf(d, d / "text.gguf", "f16", force=True)
    write_mmproj(d, d / "mmproj-f16.gguf", "f16", force=True)
    rgb = ((np.arange(image_size * image_size * 3) * 37) % 251).astype(np.uint8).reshape(image_size, image_size, 3)
    enc = encode_image(d / "text.gguf", d / "mmproj-f16.gguf", rgb, n_ctx=512, n_tokens=1)
    tower = dataclasses.replace(t, n_layer=n_layer, image_size=image_size)
    return dict(n_layer=n_layer, image_size=image_size, image_tokens=enc.image_tokens,
                clip_model_bytes=enc.clip_buffers.get("model"), clip_compute_bytes=enc.clip_buffers.get("CPU compute"),
                predicted_weight_bytes=mmproj_weight_bytes(tower, 256, "f16"))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quantize.mmproj_measure", description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--image-size", type=int, default=896)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--gemma4v", type=int, nargs="*", metavar="SIDE",
                    help="measure Gemma 4's vision tower (2 layers) instead, one image of SIDE x SIDE soft tokens each")
    ap.add_argument("--small", action="store_true", help="with --gemma4v: the E2B/E4B tower's widths")
    ap.add_argument("--gemma4a", type=float, nargs="*", metavar="SECONDS",
                    help="measure Gemma 4 E2B/E4B's audio conformer (--layers deep) instead, one clip of each length")
    ap.add_argument("--gemma3nv", action="store_true",
                    help="measure Gemma 3n's MobileNetV5 (the released tower, one 768 px image) instead; needs timm")
    args = ap.parse_args(argv)
    if args.gemma3nv:
        with tempfile.TemporaryDirectory(prefix="mmproj-measure-") as tmp:
            print(json.dumps(measure_gemma3nv(Path(tmp)), indent=2))
        return 0
    if args.gemma4a:
        with tempfile.TemporaryDirectory(prefix="mmproj-measure-") as tmp:
            rows = [measure_gemma4a(n, args.gemma4a, Path(tmp)) for n in args.layers]
        print(json.dumps(rows, indent=2))
        return 0
    if args.gemma4v:
        with tempfile.TemporaryDirectory(prefix="mmproj-measure-") as tmp:
            rows = [measure_gemma4v(2, side, Path(tmp), small=args.small) for side in args.gemma4v]
        print(json.dumps(rows, indent=2))
        return 0
    if any(n < 1 or n > 27 for n in args.layers) or not 14 <= args.image_size <= 1792 or args.image_size % 14:
        ap.error("--layers must be 1..27 and --image-size a multiple of 14 in 14..1792")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmproj-measure-") as tmp:
        for n in args.layers:
            rows.append(measure(n, args.image_size, Path(tmp)))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"layers {r['n_layer']:2d}  image {r['image_size']} px  tokens {r['image_tokens']}  "
                  f"weights {r['clip_model_bytes'] / 2**20:8.2f} MiB (predicted {r['predicted_weight_bytes'] / 2**20:8.2f})  "
                  f"compute {r['clip_compute_bytes'] / 2**20:8.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
