"""The planner's vision projector memory (planner/projector.py) and the --vision flag."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.projector import ENCODER_COMPUTE, GEMMA3_SIGLIP, mmproj_weight_bytes


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_gemma3_weights_match_the_published_mmproj():
    # google/gemma-3-4b-it's mmproj F16 file is 851,251,424 bytes (reference gemma_architectures.md 1.2):
    # the tensors account for all but the GGUF header and metadata
    w = mmproj_weight_bytes(GEMMA3_SIGLIP, 2560, "f16")
    assert 0 < 851_251_424 - w < 64 * 1024


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_weights_equal_what_the_writer_plans(outtype, tiny_model):
    pytest.importorskip("torch")
    from quantize.mmproj import plan_mmproj

    tower = dataclasses.replace(GEMMA3_SIGLIP, n_embd=64, n_ff=128, n_layer=1, n_head=2, image_size=28)
    assert mmproj_weight_bytes(tower, 256, outtype) == plan_mmproj(tiny_model("gemma3"), outtype).tensor_bytes


def _plan(*extra):
    r = run("estimate", "--model", "gemma-3-27b", "--quant", "Q4_K_M", "--target", "rtx4090", "--ctx", "8192", "--json", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["plan"]


def test_vision_flag_puts_the_projector_on_the_gpu():
    off, on = _plan(), _plan("--vision")
    gpu_off, gpu_on = off["memory"]["devices"][0], on["memory"]["devices"][0]
    pm = gpu_on["detail"]["projector"]
    assert pm["compute_bytes"] == ENCODER_COMPUTE[("gemma3", 1152)] and pm["tokens_per_image"] == 256
    assert gpu_on["projector_bytes"] == pm["weights_bytes"] + pm["compute_bytes"]
    assert gpu_on["total_bytes"] - gpu_off["total_bytes"] == gpu_on["projector_bytes"]
    assert gpu_off["projector_bytes"] == 0 and any("separate mmproj" in n for n in off["notes"])
    assert any("256 tokens" in n for n in on["notes"])
    assert _plan("--no-vision")["memory"]["devices"][0]["projector_bytes"] == 0


def test_vision_on_a_text_only_model_changes_nothing():
    r = run("estimate", "--model", "gemma-3-1b", "--quant", "Q8_0", "--target", "rtx4090", "--ctx", "4096", "--vision", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["plan"]["memory"]["devices"][0]["projector_bytes"] == 0


@pytest.mark.parametrize("model, target, says", [
    ("gemma-3-270m", "pixel-9", "text only (gemma-3-270m has no vision or audio tower)"),
    ("gemma-3n-e2b", "pixel-9", "vision ~300M, audio ~300M params) are not counted"),
    ("gemma-3-270m", "galaxy-s24", "text only (gemma-3-270m has no vision or audio tower)"),
    ("gemma-4-e2b", "pixel-9", "vision ~150M, audio ~300M params) are not counted"),
    ("gemma-3n-e4b", "pixel-9", "text only is planned (vision ~300M, audio ~300M params not loaded; the vision projector"),
])
def test_phone_plans_state_the_modalities(model, target, says):
    r = run("recommend", "--model", model, "--target", target, "--json")
    assert r.exit_code == 0, r.output
    notes = [n for n in json.loads(r.output)["plan"]["notes"] if n.startswith("modalities:")]
    assert len(notes) == 1 and says in notes[0], notes


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_gemma4_vision_weights_equal_what_the_writer_plans(outtype, tiny_model):
    pytest.importorskip("torch")
    from planner.projector import GEMMA4_VISION_LARGE
    from quantize.mmproj import plan_mmproj

    tower = dataclasses.replace(GEMMA4_VISION_LARGE, n_embd=64, n_ff=128, n_layer=1, n_head=2, head_dim=32, pos_table=64)
    assert mmproj_weight_bytes(tower, 256, outtype) == plan_mmproj(tiny_model("gemma4"), outtype).tensor_bytes


def test_gemma4_31b_vision_plan():
    r = run("estimate", "--model", "gemma-4-31b", "--quant", "Q4_K_M", "--target", "rtx4090", "--ctx", "8192", "--vision", "--json")
    assert r.exit_code == 0, r.output
    pm = json.loads(r.output)["plan"]["memory"]["devices"][0]["detail"]["projector"]
    assert pm["kind"] == "gemma4v" and pm["compute_bytes"] == ENCODER_COMPUTE[("gemma4v", 1152)]
    assert 1.0 * 2**30 < pm["weights_bytes"] < 1.2 * 2**30  # ~550M params, mostly F16


def test_gemma4_e2b_vision_plan_on_a_phone_with_llama_cpp():
    """E2B with --vision planned for llama.cpp on a Pixel 9: the smaller gemma4v tower's weights and compute
    (measured at its widths) join the plan, and the modalities line says vision is planned, audio is not."""
    from planner.projector import GEMMA4_VISION_SMALL

    r = run("recommend", "--model", "gemma-4-e2b", "--target", "pixel-9", "--engine", "llama.cpp", "--vision", "--no-audio",
            "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)["plan"]
    pm = next(d["detail"]["projector"] for d in plan["memory"]["devices"] if "projector" in d["detail"])
    assert pm["compute_bytes"] == ENCODER_COMPUTE[("gemma4v", 768)]
    assert pm["weights_bytes"] == mmproj_weight_bytes(GEMMA4_VISION_SMALL, 1536, "f16")
    line = next(n for n in plan["notes"] if n.startswith("modalities:"))
    assert "text + vision planned" in line and "audio ~300M params not planned (--audio plans" in line


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_gemma4_audio_weights_equal_what_the_writer_plans(outtype, tiny_model):
    """The E2B/E4B conformer's bytes from its shapes equal the audio tensors quantize.mmproj writes."""
    pytest.importorskip("torch")
    from planner.projector import GEMMA4_AUDIO, audio_weight_bytes
    from quantize.mmproj import plan_mmproj

    tower = dataclasses.replace(GEMMA4_AUDIO, n_embd=64, n_layer=1, n_head=2, conv_channels=(128, 8), out_dim=48)
    plan = plan_mmproj(tiny_model("gemma4_audio"), outtype)
    audio = sum(t.nbytes for t in plan.tensors if t.name.startswith(("a.", "mm.a.")))
    assert audio > 0 and audio_weight_bytes(tower, 256, outtype) == audio
    vision_only = plan_mmproj(tiny_model("gemma4_audio"), outtype, audio=False)
    assert plan.tensor_bytes - vision_only.tensor_bytes == audio


def test_gemma4_e2b_audio_rides_in_the_projector():
    """E2B's mmproj holds the audio conformer too and llama.cpp loads every encoder in it: with --vision the
    audio weights (from the conformer's shapes) and its measured compute join the same device; --no-audio
    drops exactly them; --audio with --no-vision is refused in one line."""
    from planner.projector import AUDIO_ENCODER_COMPUTE, GEMMA4_AUDIO, audio_weight_bytes

    def devs(*extra):
        r = run("estimate", "--model", "gemma-4-e2b", "--quant", "Q4_K_M", "--target", "rtx4090", "--ctx", "8192",
                "--json", *extra)
        assert r.exit_code == 0, r.output
        plan = json.loads(r.output)["plan"]
        return plan, next(d for d in plan["memory"]["devices"] if d["projector_bytes"])

    plan, both = devs("--vision")
    am = both["detail"]["audio_projector"]
    assert am["kind"] == "gemma4a" and am["compute_bytes"] == AUDIO_ENCODER_COMPUTE[("gemma4a", 1024)]
    assert am["weights_bytes"] == audio_weight_bytes(GEMMA4_AUDIO, 1536, "f16")
    assert any(n.startswith("audio: the mmproj's gemma4a encoder") for n in plan["notes"])
    _, vision = devs("--vision", "--no-audio")
    assert "audio_projector" not in vision["detail"]
    assert both["projector_bytes"] - vision["projector_bytes"] == am["weights_bytes"] + am["compute_bytes"]
    _, audio_alone = devs("--audio")  # llama.cpp: --audio loads the (shared) projector file
    assert audio_alone["projector_bytes"] == both["projector_bytes"]
    r = run("estimate", "--model", "gemma-4-e2b", "--quant", "Q4_K_M", "--target", "rtx4090", "--no-vision", "--audio")
    assert r.exit_code != 0 and "drop --no-vision" in r.output and "Traceback" not in r.output
    # a model without a modelled audio tower is unchanged by --audio
    assert _plan("--vision", "--audio")["memory"] == _plan("--vision")["memory"]


def test_gemma3n_vision_weights_and_audio_note():
    """Gemma 3n E4B with --vision: the MobileNetV5's mmproj bytes from timm's block list (mobilenetv5_300m_enc)
    with the writer's types join the plan, with the encoder compute measured for the released tower (557 MiB). --audio adds nothing
    (llama.cpp has no Gemma 3n audio graph) and says so in one line."""
    from planner.projector import GEMMA3N_AUDIO_NOTE, GEMMA3N_VISION, MOBILENETV5_300M, encoder_compute_bytes

    # timm 1.0.31's mobilenetv5_300m_enc state dict (294,126,912 parameters) with the writer's types: kernels
    # F16, the stem, norms and layer scales F32, plus the 128-row embedder and the 2048 x 2048 projection (F16)
    assert [len(s) for s in MOBILENETV5_300M] == [3, 5, 37, 39]
    assert mmproj_weight_bytes(GEMMA3N_VISION, 2048, "f16") == 597_757_440

    def plan(*extra):
        r = run("estimate", "--model", "gemma-3n-e4b", "--quant", "Q4_K_M", "--target", "rtx4090", "--ctx", "8192",
                "--json", *extra)
        assert r.exit_code == 0, r.output
        return json.loads(r.output)["plan"]

    vision = plan("--vision")
    pm = next(d["detail"]["projector"] for d in vision["memory"]["devices"] if "projector" in d["detail"])
    assert pm["kind"] == "gemma3nv" and pm["weights_bytes"] == 597_757_440 and pm["tokens_per_image"] == 256
    assert pm["compute_bytes"] == encoder_compute_bytes(GEMMA3N_VISION) == ENCODER_COMPUTE[("gemma3nv", 2048)]
    both = plan("--vision", "--audio")
    assert both["memory"] == vision["memory"] and GEMMA3N_AUDIO_NOTE in both["notes"]
    assert GEMMA3N_AUDIO_NOTE not in vision["notes"]
    r = run("recommend", "--model", "gemma-3n-e4b", "--target", "rtx4090", "--engine", "llama.cpp", "--vision", "--json")
    assert r.exit_code == 0, r.output
    line = next(n for n in json.loads(r.output)["plan"]["notes"] if n.startswith("modalities:"))
    assert "projector gemma3nv" in line and "llama.cpp has no Gemma 3n audio encoder" in line


def _notation(block: dict) -> str:
    """quantize.tiny's block dicts in timm's notation, as planner.projector reads it."""
    kind = block["block_type"]
    if kind == "er":
        return f"er_k{block['exp_kernel_size']}_s{block['stride']}_e{block['exp_ratio']}_c{block['out_chs']}"
    if kind == "uir":
        return (f"uir_a{block['dw_kernel_size_start']}_k{block['dw_kernel_size_mid']}_s{block['stride']}"
                f"_e{block['exp_ratio']}_c{block['out_chs']}")
    return (f"mqa_k{block['dw_kernel_size']}_h{block['num_heads']}_v{block['kv_stride']}_d{block['key_dim']}"
            f"_c{block['out_chs']}")


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_gemma3n_weights_equal_what_the_writer_plans(outtype, tiny_model):
    """The MobileNetV5 bytes from the block list equal what quantize.mmproj plans for the tiny tower (written
    without timm, its layout checked against timm's in tests/test_mmproj.py; the released tower's figure above
    was checked against timm's state dict)."""
    pytest.importorskip("torch")
    from planner.projector import mobilenetv5_weight_bytes
    from quantize.mmproj import plan_mmproj
    from quantize.tiny import GEMMA3N_TINY_MOBILENET

    stages = tuple(tuple(_notation(b) for b in stage) for stage in GEMMA3N_TINY_MOBILENET)
    assert mobilenetv5_weight_bytes(stages, 16, 2048, outtype, vocab=8) == plan_mmproj(tiny_model("gemma3n"), outtype).tensor_bytes
