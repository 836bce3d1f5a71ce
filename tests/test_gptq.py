"""GPTQ quantize stage: calibration, checkpoint writing, and the real GPTQModel run on tiny Gemmas.

The slow tests quantize tiny random Gemma 3 and Gemma 4 checkpoints with GPTQModel on the CPU, reload
them with transformers (GPTQModel's torch kernel), generate, and require the planner's predicted
weight bytes to be within 1% of what the loaded model holds.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quantize.errors import OutputExistsError
from quantize.gptq import (
    GPTQError,
    build_recipe,
    calibration_windows,
    cpu_workers,
    quantized_modules,
    read_calibration_text,
)

# ---------------------------------------------------------------- pure parts


def test_importing_gptq_stays_light():
    code = "import sys, quantize.gptq; print(any(m in sys.modules for m in ('torch', 'transformers', 'gptqmodel')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("cores,workers,why", [
    (1, 2, "GPTQModel's loader pool asks for 2 workers; 1 fails"),
    (2, 2, "the 2-core CI machine"),
    (16, 8, "GPTQModel's own default: half the cores"),
    (64, 12, "GPTQModel caps its CPU pool at 12"),
])
def test_cpu_workers(cores, workers, why):
    assert cpu_workers(cores) == workers, why


@pytest.mark.parametrize("n_tokens,n,seq,expect_starts,why", [
    (100, 4, 11, [0, 30, 60, 90], "windows spread evenly over the text, overlapping nothing here"),
    (30, 4, 11, [0, 7, 13, 20], "a short text gives overlapping windows"),
    (8, 4, 11, [0], "a text shorter than one window is one sample"),
    (100, 1, 11, [0], "one sample starts at the beginning"),
    (25, 40, 11, list(range(16)), "more samples than distinct offsets: duplicates dropped"),
])
def test_calibration_windows(n_tokens, n, seq, expect_starts, why):
    ids = list(range(100, 100 + n_tokens))
    wins = calibration_windows(ids, n, seq, bos=2)
    assert [w[1] - 100 for w in wins] == expect_starts, why
    assert all(w[0] == 2 for w in wins)
    assert all(len(w) == min(seq, n_tokens + 1) for w in wins)


def test_bundled_calibration_text_is_shipped_and_long():
    docs, source, raw = read_calibration_text(None)
    assert source == "bundled:quantize/data/calibration.txt"
    assert len(docs) == 1 and len(raw) > 20_000
    assert "<start_of_turn>" in docs[0]  # chat turns in Gemma's format are part of the sample


def test_calibration_from_text_and_jsonl(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("plain text\n\nsecond paragraph\n")
    assert read_calibration_text(txt)[0] == ["plain text\n\nsecond paragraph\n"]
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n{"text": "  "}\n')
    assert read_calibration_text(jl)[0] == ["one", "two"]


@pytest.mark.parametrize("content,match", [
    ('{"text": "ok"}\n{"body": "no text"}\n', "line 2 has no string \"text\""),
    ('{"text": "ok"}\nnot json\n', "line 2 is not JSON"),
    ("   \n", "holds no text"),
])
def test_calibration_errors(tmp_path, content, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(GPTQError, match=match):
        read_calibration_text(p)


def test_calibration_missing_or_binary(tmp_path):
    with pytest.raises(GPTQError, match="not found"):
        read_calibration_text(tmp_path / "nope.txt")
    b = tmp_path / "b.txt"
    b.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(GPTQError, match="not UTF-8"):
        read_calibration_text(b)


def test_recipe_is_argv_and_a_safe_python_literal(tmp_path):
    hostile = tmp_path / "it's a \"dir\"; rm -rf ~ $(x)"
    r = build_recipe(hostile, 4, 128)
    path = str(hostile.resolve())
    assert r["vllm"]["argv"] == ["vllm", "serve", path, "--dtype", "bfloat16"]
    import shlex

    assert shlex.split(r["vllm"]["command"]) == r["vllm"]["argv"]
    code = r["transformers"]["python"]
    compile(code, "<recipe>", "exec")
    scope: dict = {}
    exec(code.split("\n")[3], scope)  # the `path = ...` line alone
    assert scope["path"] == path
    assert r["format"] == "gptq-int4"


def test_quantized_modules_reads_headers(tmp_path):
    from safetensors.numpy import save_file
    import numpy as np

    z = np.zeros((1,), dtype=np.int32)
    save_file({"model.language_model.layers.0.self_attn.q_proj.qweight": z,
               "model.language_model.layers.1.mlp.down_proj.qweight": z,
               "model.language_model.layers.1.mlp.down_proj.scales": z,
               "model.language_model.layers.0.router.proj.weight": z,
               "model.vision_tower.encoder.layers.0.mlp.fc1.weight": z}, str(tmp_path / "model.safetensors"))
    assert quantized_modules(tmp_path) == ("model.language_model.layers", ["mlp.down_proj", "self_attn.q_proj"])


@pytest.mark.parametrize("kw,match", [
    ({"bits": 3}, "bits must be one of"),
    ({"group_size": 100}, "multiple of 32"),
    ({"n_samples": 0}, "n_samples"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, kw, match):
    from quantize.gptq import quantize_gptq

    with pytest.raises(GPTQError, match=match):
        quantize_gptq(tmp_path / "src", tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_refusals_on_a_real_checkpoint(tiny_model, tmp_path):
    from quantize.gptq import quantize_gptq

    src = tiny_model("gemma3_text", dtype="bfloat16")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutputExistsError):
        quantize_gptq(src, out)
    with pytest.raises(GPTQError, match="is the source checkpoint"):
        quantize_gptq(src, src, force=True)
    q = tmp_path / "already"
    shutil.copytree(src, q)
    cfg = json.loads((q / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (q / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GPTQError, match="already quantized"):
        quantize_gptq(q, tmp_path / "out2")


def test_missing_backend_is_a_clear_error_and_writes_nothing(tiny_model, tmp_path, monkeypatch):
    from planner.errors import BackendUnavailableError
    from quantize.gptq import quantize_gptq

    monkeypatch.setitem(sys.modules, "gptqmodel", None)  # import gptqmodel -> ImportError
    with pytest.raises(BackendUnavailableError) as e:
        quantize_gptq(tiny_model("gemma3_text", dtype="bfloat16"), tmp_path / "out")
    assert "gemma-plan[gptq]" in e.value.hint
    assert list(tmp_path.iterdir()) == []


def test_calibration_uses_the_model_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    from quantize.gptq import build_calibration

    tok = AutoTokenizer.from_pretrained(tiny_model("gemma3_text", dtype="bfloat16"))
    cal = build_calibration(tok, None, n_samples=8, seq_len=64)
    assert len(cal.samples) == 8
    assert all(s["input_ids"][0] == tok.bos_token_id and len(s["input_ids"]) == 64 for s in cal.samples)
    assert cal.describe()["tokens"] == 8 * 64 and cal.text_tokens > 8 * 64
    assert tok.decode(cal.samples[0]["input_ids"][1:20]).startswith("The night sky")


# ---------------------------------------------------------------- GPTQModel end to end

# Small enough for a 2-core CI run: 16 windows of 128 tokens.
N_SAMPLES, SEQ_LEN = 16, 128


@pytest.fixture(scope="module")
def gptq_env():
    pytest.importorskip("gptqmodel", reason="gptqmodel is not installed (pip install 'gemma-plan[gptq]')")
    pytest.importorskip("optimum", reason="optimum is not installed (pip install 'gemma-plan[gptq]')")
    import torch._dynamo

    with pytest.MonkeyPatch.context() as mp:
        # Pack in Python: the native packer is JIT-compiled on first use (~95 s on 2 cores), which
        # buys nothing on tiny layers.
        mp.setenv("GPTQMODEL_DISABLE_PACK_EXT", "1")
        # GPTQModel's TorchLinear wraps its dequantize in torch.compile; inductor then compiles a
        # kernel per shape (~12 s per tiny model here). Eager runs the same arithmetic.
        mp.setattr(torch._dynamo.config, "disable", True)
        yield


@pytest.fixture(scope="module")
def gptq_root(tmp_path_factory):
    return tmp_path_factory.mktemp("gptq")


def _build(root: Path, family: str) -> Path:
    from quantize.tiny import build_tiny_model

    src = root / f"{family}-src"
    if not src.exists():
        build_tiny_model(src, family, dtype="bfloat16")
    return src


@pytest.fixture(scope="module")
def quantized(gptq_env, gptq_root):
    """quantized(family, bits=4, group_size=128) -> (source dir, checkpoint dir, manifest), cached."""
    from quantize.gptq import quantize_gptq, validate_gptq

    cache: dict = {}

    def get(family: str, bits: int = 4, group_size: int = 128):
        key = (family, bits, group_size)
        if key not in cache:
            src = _build(gptq_root, family)
            out = gptq_root / f"{family}-int{bits}-g{group_size}"
            seen: list[tuple[int, int]] = []
            quantize_gptq(src, out, bits=bits, group_size=group_size, n_samples=N_SAMPLES, seq_len=SEQ_LEN,
                          progress=lambda d, t: seen.append((d, t)))
            manifest = validate_gptq(out, n_tokens=6)
            cache[key] = (src, out, manifest, seen)
        return cache[key]

    return get


E2E = [
    ("gemma3_text", 4, 128, "Gemma 3 text model (Gemma3ForCausalLM)"),
    ("gemma4_text", 8, 64, "Gemma 4 dense (K=V, wider heads on the full layer) at 8 bits, group 64"),
    ("gemma3", 4, 128, "Gemma 3 multimodal wrapper: the vision tower stays bf16 and is counted apart"),
    ("gemma4_e", 4, 128, "Gemma 4 E-model: the per-layer gate/projection are quantized too"),
    ("gemma4_moe", 4, 128, "Gemma 4 MoE: fused experts and the router stay bf16"),
]


@pytest.mark.slow
@pytest.mark.parametrize("family,bits,group,why", E2E, ids=[f"{f}-int{b}-g{g}" for f, b, g, _ in E2E])
def test_gptq_end_to_end(quantized, family, bits, group, why):
    src, out, manifest, seen = quantized(family, bits, group)
    v = manifest["validation"]
    w = v["comparison"]["weights"]
    assert abs(w["error_pct"]) < 1.0, f"{why}: predicted {w['predicted_bytes']:,} vs measured {w['measured_bytes']:,}"
    assert v["within"] is True
    # Tighter: the checkpoint's tensors are byte-exact. What remains is runtime-only buffers (rotary
    # tables, the torch kernel's shift tables) against llama.cpp's rope_freqs, which the spec lists.
    from planner.formats import gptq_tensor_bytes
    from planner.sources import load_model

    rope = sum(gptq_tensor_bytes(t, bits, group) for t in load_model(str(src))[0].tensors if t.name.startswith("rope_freqs"))
    assert w["measured_bytes"] - v["measured"]["runtime_buffer_bytes"] == w["predicted_bytes"] - rope
    assert v["tokens_generated"] > 0 and v["kernel"] == "TorchLinear"
    ppl = v["perplexity"]
    assert math.isfinite(ppl["quantized"]) and math.isfinite(ppl["reference"])
    # A random model's perplexity is near its vocabulary size; quantization must not wreck it.
    assert 0.5 < ppl["ratio"] < 2.0
    if family == "gemma3":
        assert v["measured"]["tower_bytes"] > 0
    # the source's planner spec is what was predicted from, and the checkpoint says what it quantized
    assert v["prediction"]["spec_from"] == str(src.resolve())
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["bits"] == bits and cfg["group_size"] == group
    assert "self_attn.q_proj" in cfg["modules_in_block_to_quantize"][0]
    if family == "gemma4_moe":
        assert not any("router" in m or "experts" in m for m in cfg["modules_in_block_to_quantize"][0])
    # progress: 0, then once per decoder layer
    n_layers = json.loads((src / "config.json").read_text()).get("num_hidden_layers") or \
        json.loads((src / "config.json").read_text())["text_config"]["num_hidden_layers"]
    assert seen[0] == (0, n_layers) and seen[-1] == (n_layers, n_layers)


@pytest.mark.slow
def test_manifest_and_recipe(quantized):
    src, out, manifest, _ = quantized("gemma3_text")
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert manifest["schema"] == "gemma-plan.manifest/1" and manifest["kind"] == "gptq"
    assert set(manifest["source"]["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    from quantize.gptq import sha256_file

    assert manifest["source"]["files"]["model.safetensors"] == sha256_file(src / "model.safetensors")
    outf = manifest["output"]["files"]
    assert outf["model.safetensors"]["sha256"] == sha256_file(out / "model.safetensors")
    assert "manifest.json" not in outf and "recipe.json" not in outf
    assert (out / "tokenizer.model").exists()  # copied from the source: GPTQModel writes only tokenizer.json
    cal = manifest["calibration"]
    assert cal["source"].startswith("bundled:") and cal["samples"] == N_SAMPLES and cal["seq_len"] == SEQ_LEN
    q = manifest["quantization"]
    assert (q["bits"], q["group_size"], q["device"], q["format"]) == (4, 128, "cpu", "gptq-int4")
    assert q["cpu_workers"] >= 2
    assert manifest["versions"]["gptqmodel"].startswith("7.6")
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["vllm"]["argv"][:3] == ["vllm", "serve", str(out.resolve())]
    assert "--quantization" not in recipe["vllm"]["argv"] and recipe["vllm"]["argv"][3:] == ["--dtype", "bfloat16"]  # Marlin path in vLLM 0.33
    assert not list(out.parent.glob(".*.partial"))


@pytest.mark.slow
def test_force_replaces_output_and_custom_calibration_is_recorded(gptq_env, gptq_root, tmp_path):
    from quantize.gptq import quantize_gptq

    src = _build(gptq_root, "gemma3_text")
    calib = tmp_path / "calib.jsonl"
    calib.write_text("\n".join(json.dumps({"text": f"Record {i}: the quick brown fox jumps over the lazy dog. " * 8})
                               for i in range(6)) + "\n")
    out = tmp_path / "q"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert quantize_gptq(src, out, calib=calib, n_samples=4, seq_len=64, force=True) == out
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.jsonl", "q"]  # no temporary directory left
    m = json.loads((out / "manifest.json").read_text())
    assert m["calibration"]["source"] == str(calib) and m["calibration"]["documents"] == 6
    assert m["calibration"]["samples"] == 4 and m["validation"] is None


@pytest.mark.slow
def test_ctrl_c_leaves_nothing_and_keeps_the_old_output(quantized, gptq_root, tmp_path):
    from quantize.gptq import quantize_gptq

    src, done_out, _, _ = quantized("gemma3_text")
    out = tmp_path / "existing"
    shutil.copytree(done_out, out)
    before = sorted(p.name for p in out.iterdir())

    def interrupt(done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_gptq(src, out, force=True, n_samples=4, seq_len=64, progress=interrupt)
    assert sorted(p.name for p in out.iterdir()) == before  # force replaces only on success
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]  # no temporary directory left
