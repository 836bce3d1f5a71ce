"""`gemma-plan quantize` end to end on tiny models: plan, convert, quantize, load, measure, manifest."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main

pytestmark = pytest.mark.slow


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("family,quant", [("gemma2", "Q4_K_M"), ("gemma3_text", "Q4_K_M"), ("gemma4_text", "Q5_K_M"),
                                           ("gemma4_e", "Q8_0"), ("gemma4_moe", "auto"), ("gemma3n_text", "Q8_0"),
                                           ("gemma4_unified", "Q4_K_M"), ("gemma3", "Q8_0")])
def test_quantize_end_to_end(tiny_model, llama_cpp_module, tmp_path, family, quant):
    out = tmp_path / "out"
    r = run("quantize", "--model", str(tiny_model(family)), "--target", "cpu-16gb", "--quant", quant, "--ctx", "4096",
            "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    manifest = json.loads(r.output[r.output.index("{"):])
    gguf_path = out / manifest["output"]["path"].split("/")[-1]
    assert gguf_path.exists() and (out / "recipe.json").exists() and (out / "manifest.json").exists()
    assert not list(out.glob(".*tmp"))  # the intermediate is gone
    assert manifest["tensor_types"] == manifest["tensor_types_predicted"]
    cmp = manifest["validation"]["comparison"]
    assert cmp["weights"]["predicted_bytes"] == cmp["weights"]["measured_bytes"]  # llama_model_size, exact
    assert cmp["kv"]["predicted_bytes"] == cmp["kv"]["measured_bytes"]
    assert abs(cmp["compute"]["error_pct"]) <= 10  # issue 4: compute buffer within 10%
    assert manifest["validation"]["tokens_generated"] > 0
    assert len(manifest["source"]["files"]["config.json"]) == 64  # sha256
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["plan"]["weight_format"] == manifest["file_type"]


def test_quantize_refuses_to_overwrite(tiny_model, llama_cpp_module, tmp_path):
    args = ["quantize", "--model", str(tiny_model("gemma3_text")), "--target", "cpu-16gb", "--quant", "Q8_0", "--ctx", "2048",
            "--out", str(tmp_path), "--no-validate"]
    assert run(*args).exit_code == 0
    again = run(*args)
    assert again.exit_code != 0 and "already exists" in again.output and "--force" in again.output
    assert run(*args, "--force").exit_code == 0


def test_quantize_from_a_gguf_skips_conversion(tiny_gguf, llama_cpp_module, tmp_path):
    src = tiny_gguf("gemma3_text", outtype="f16")
    r = run("quantize", "--model", str(src), "--target", "cpu-16gb", "--quant", "Q4_0", "--ctx", "2048", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert list(tmp_path.glob("*-Q4_0.gguf"))


def test_quantize_does_not_fit_is_one_line(tiny_model, tmp_path):
    r = run("quantize", "--model", str(tiny_model("gemma3_text")), "--target", "cpu-16gb", "--vram", "1MiB", "--ram", "1MiB",
            "--quant", "Q8_0", "--out", str(tmp_path))
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and len(errors) == 1, r.output
    assert errors[0] == ("Error: gemma3_text Q8_0 at 8192 tokens does not fit cpu-16gb: needs 0.5 GiB, 0.0 GiB usable on GPU (--vram); "
                         "try a smaller model, a lower-bit --quant, a shorter --ctx, or a quantized --kv-type")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_quantize_refuses_pickle_checkpoints(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "hidden_size": 256, "num_hidden_layers": 2,
                                                      "num_attention_heads": 2, "intermediate_size": 512, "vocab_size": 512}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    r = run("quantize", "--model", str(tmp_path), "--target", "cpu-16gb", "--quant", "Q8_0", "--out", str(tmp_path / "o"))
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert r.output.splitlines() == [f"Error: {tmp_path} holds only pickle .bin weights; gemma-plan reads safetensors only "
                                     "(convert them first); check the path; a GGUF must be a complete file and a HF "
                                     "directory needs config.json"]


def test_unknown_hub_id_offline_is_one_line(tmp_path):
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: the root conftest.py sets it (and an empty HF_HOME)
    # before anything imports the hub, so this run looks in an empty cache and never opens a socket
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE and not any(Path(constants.HF_HUB_CACHE).glob("models--*"))
    r = run("quantize", "--model", "google/gemma-3-270m-it", "--target", "cpu-16gb", "--out", str(tmp_path / "o"))
    assert r.exit_code == 1 and r.exception is not None and type(r.exception).__name__ == "SystemExit", r.output
    assert r.output.splitlines()[0] == (
        f"Error: google/gemma-3-270m-it is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is "
        "set: quantize needs its config, tokenizer and safetensors (~0.5 GB); where you have network run: hf download "
        "google/gemma-3-270m-it --include '*.json' '*.safetensors' 'tokenizer.model' '*.jinja'")
    assert not (tmp_path / "o").exists()


def test_quantize_gptq_end_to_end(tiny_model, tmp_path):
    pytest.importorskip("gptqmodel", reason="GPTQ needs the [gptq] extra")
    out = tmp_path / "out"
    r = run("quantize", "--format", "gptq", "--model", str(tiny_model("gemma3_text")), "--target", "l4", "--ctx", "4096",
            "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    ckpt = next(out.iterdir())
    manifest = json.loads((ckpt / "manifest.json").read_text())
    weights = manifest["validation"]["comparison"]["weights"]
    assert abs(weights["error_pct"]) < 1.0  # the bar: predicted vs measured weight bytes within 1%
    assert manifest["plan"]["weight_format"] == "gptq-int4" and manifest["plan"]["engine"] == "vllm"
    recipe = json.loads((ckpt / "recipe.json").read_text())
    assert recipe["gptq"]["vllm"]["argv"][:2] == ["vllm", "serve"] and "float16" not in recipe["gptq"]["vllm"]["argv"]


def test_not_enough_disk_is_refused_before_writing(tiny_model, tmp_path, monkeypatch):
    from collections import namedtuple

    import quantize.pipeline as pipeline

    usage = namedtuple("usage", "total used free")
    asked = []
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda p: asked.append(p) or usage(10 << 30, 10 << 30, 1 << 20))
    out = tmp_path / "out"
    r = run("quantize", "--model", str(tiny_model("gemma3_text")), "--target", "cpu-16gb", "--quant", "Q8_0", "--ctx", "2048",
            "--out", str(out))
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and asked, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {out} has 0.00 GiB free, the job needs 0.")
    assert errors[0].endswith(" GiB; free some disk space or choose an output directory on another disk")
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_directory_is_one_line(tiny_model, tmp_path):
    import os

    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")  # root ignores permissions: a file where the directory should be
        out = blocker / "out"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "out"
    r = run("quantize", "--model", str(tiny_model("gemma3_text")), "--target", "cpu-16gb", "--quant", "Q8_0", "--ctx", "2048",
            "--out", str(out))
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: cannot write to {out.parent}")
    assert errors[0].endswith("; choose another --out directory that you can write to")


def test_a_result_llama_cpp_cannot_load_leaves_nothing(tiny_model, llama_cpp_module, tmp_path, monkeypatch):
    import quantize.llamacpp as llamacpp
    from quantize.errors import QuantizationError

    def cannot_load(path, **kw):
        assert ".partial" in str(path.parent)  # validation runs on the private copy, before anything moves
        raise QuantizationError(f"llama.cpp could not load {path.name}")

    monkeypatch.setattr(llamacpp, "load_and_measure", cannot_load)
    out = tmp_path / "out"
    args = ["quantize", "--model", str(tiny_model("gemma3_text")), "--target", "cpu-16gb", "--quant", "Q8_0", "--ctx", "2048",
            "--out", str(out)]
    r = run(*args)
    assert r.exit_code == 1 and "could not load" in r.output
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no GGUF at the final name, no empty directory, no temp
    monkeypatch.undo()
    assert run(*args, "--no-validate").exit_code == 0  # the re-run is not refused
    assert sorted(p.name for p in out.iterdir()) == ["gemma3_text-Q8_0.gguf", "manifest.json", "recipe.json"]


@pytest.mark.parametrize("family, tokens", [("gemma3", 4), ("gemma4", 100), ("gemma4_unified", 100)])
def test_quantize_writes_and_runs_the_vision_projector(tiny_model, llama_cpp_module, tmp_path, family, tokens):
    from quantize.llama_bins import mtmd_lib

    if mtmd_lib() is None:
        if os.environ.get("GEMMA_PLAN_REQUIRE_LLAMA_BINS"):  # CI builds it: a skip there would hide a failure
            pytest.fail("libmtmd.so is not built: python -m quantize.llama_bins --mtmd")
        pytest.skip("libmtmd.so is not built: python -m quantize.llama_bins --mtmd")
    out = tmp_path / "out"
    r = run("quantize", "--model", str(tiny_model(family)), "--target", "cpu-16gb", "--quant", "Q8_0", "--ctx", "4096",
            "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    manifest = json.loads(r.output[r.output.index("{"):])
    mm = manifest["mmproj"]
    assert (out / mm["path"].split("/")[-1]).is_file() and mm["type"] == "f16"
    assert mm["predicted_weights_bytes"] == mm["tensor_bytes"]  # the plan counts exactly the tensors written
    v = mm["validation"]
    assert v["image_tokens"] == tokens and v["embd_finite"] and v["tokens_generated"] == 3
    assert abs(v["clip_weights_bytes"] - mm["tensor_bytes"]) <= 0.006 * 2**20  # clip's log: two decimals of MiB
    recipe = json.loads((out / "recipe.json").read_text())
    assert "--mmproj" in json.dumps(recipe) and mm["path"].split("/")[-1] in json.dumps(recipe)


def test_quantize_no_vision_and_text_only_vision(tiny_model, llama_cpp_module, tmp_path):
    args = ["quantize", "--target", "cpu-16gb", "--quant", "Q8_0", "--ctx", "2048", "--no-validate"]
    assert run(*args, "--model", str(tiny_model("gemma3")), "--out", str(tmp_path / "a"), "--no-vision").exit_code == 0
    assert not list((tmp_path / "a").glob("*mmproj*"))
    r = run(*args, "--model", str(tiny_model("gemma3_text")), "--out", str(tmp_path / "b"), "--vision")
    assert r.exit_code != 0 and "no vision tower" in r.output and "Traceback" not in r.output


def test_quantize_writes_and_runs_the_audio_encoder(tiny_model, llama_cpp_module, tmp_path):
    """Gemma 4 E2B/E4B-style checkpoint: the mmproj carries the audio conformer by default, the plan counts its
    tensors exactly, and validation encodes one second of audio (25 soft tokens) through it with libmtmd;
    --no-audio writes the vision projector alone, --audio on a checkpoint without the tower is refused."""
    from quantize.llama_bins import mtmd_lib

    if mtmd_lib() is None:
        if os.environ.get("GEMMA_PLAN_REQUIRE_LLAMA_BINS"):
            pytest.fail("libmtmd.so is not built: python -m quantize.llama_bins --mtmd")
        pytest.skip("libmtmd.so is not built: python -m quantize.llama_bins --mtmd")
    args = ["quantize", "--target", "cpu-16gb", "--quant", "Q8_0", "--ctx", "4096", "--json"]
    r = run(*args, "--model", str(tiny_model("gemma4_audio")), "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    mm = json.loads(r.output[r.output.index("{"):])["mmproj"]
    assert mm["audio"] and mm["predicted_weights_bytes"] + mm["predicted_audio_weights_bytes"] == mm["tensor_bytes"]
    a = mm["validation"]["audio"]
    assert a["audio_tokens"] == 25 and a["embd_finite"] and a["tokens_generated"] == 3 and a["clip_compute_bytes"] > 0
    assert mm["validation"]["image_tokens"] == 100
    r = run(*args, "--model", str(tiny_model("gemma4_audio")), "--out", str(tmp_path / "b"), "--no-audio", "--no-validate")
    assert r.exit_code == 0, r.output
    mm = json.loads(r.output[r.output.index("{"):])["mmproj"]
    assert "audio" not in mm and mm["predicted_weights_bytes"] == mm["tensor_bytes"]
    r = run(*args, "--model", str(tiny_model("gemma4")), "--out", str(tmp_path / "c"), "--audio", "--no-validate")
    assert r.exit_code != 0 and "no audio encoder" in r.output and "Traceback" not in r.output


def test_quantize_refuses_gemma3n_audio_in_one_line(tiny_model, tmp_path):
    """Gemma 3n: the projector holds the MobileNetV5 only (llama.cpp has no Gemma 3n audio graph), and --audio
    says so before any work is done."""
    r = run("quantize", "--target", "cpu-16gb", "--quant", "Q8_0", "--ctx", "2048", "--no-validate",
            "--model", str(tiny_model("gemma3n")), "--out", str(tmp_path / "a"), "--audio")
    assert r.exit_code != 0 and "does not run Gemma 3n's audio encoder" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").iterdir())


def test_quantize_writes_and_validates_the_gemma3n_projector(tiny_model, llama_cpp_module, tmp_path):
    """Gemma 3n: quantize writes the MobileNetV5 projector beside the GGUF, the plan counts its tensors exactly,
    and validation encodes one 768 px image into 256 soft tokens through libmtmd."""
    from quantize.llama_bins import mtmd_lib

    if mtmd_lib() is None:
        pytest.skip("libmtmd.so is not built: python -m quantize.llama_bins --mtmd")
    r = run("quantize", "--target", "cpu-16gb", "--quant", "Q8_0", "--ctx", "2048", "--json",
            "--model", str(tiny_model("gemma3n")), "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    mm = json.loads(r.output[r.output.index("{"):])["mmproj"]
    assert mm["projector"] == "gemma3nv" and "audio" not in mm and mm["predicted_weights_bytes"] == mm["tensor_bytes"]
    v = mm["validation"]
    assert v["image_px"] == 768 and v["image_tokens"] == 256 and v["embd_finite"] and v["tokens_generated"] == 3
