"""Every hostile input of issue #12 gets one line naming the source, the field, the value and the fix, and the
exit code the CLI promises; the bounds of profiles/bounds.py hold for flags, target files, config.json,
safetensors and GGUF headers, recipe.json and bench rows."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from planner.cli import main

F16_GGUF_ARGS: dict = {}


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def first_line(r) -> str:
    """The error's line (exactly one), else the first line of the output."""
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) <= 1, r.output
    return errors[0] if errors else next((line for line in r.output.splitlines() if line.strip()), "")


@pytest.fixture(autouse=True)
def user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


# ---------------------------------------------------------------- builders of hostile files


def write_gguf(path, *, arch="gemma3", block_count=2, ctx=8192, alignment=None, ftype=1, n_layers_tensors=2):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(block_count)
    w.add_context_length(ctx)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_key_length(32)
    w.add_value_length(32)
    w.add_file_type(ftype)
    if alignment is not None:
        w.add_uint32("general.alignment", alignment)
    w.add_tensor("token_embd.weight", np.zeros((256, 64), dtype=np.float16))
    for i in range(n_layers_tensors):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((64, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def nested_gguf(path, depth=500):
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    kv = s("general.architecture") + struct.pack("<I", 8) + s("gemma3")
    elem = struct.pack("<I", 4) + struct.pack("<Q", 0)
    for _ in range(depth - 1):
        elem = struct.pack("<I", 9) + struct.pack("<Q", 1) + elem
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv + s("x") + struct.pack("<I", 9) + elem
    path.write_bytes(data + b"\0" * 64)
    return path


GEMMA3 = {"model_type": "gemma3_text", "hidden_size": 1152, "intermediate_size": 6912, "num_hidden_layers": 26,
          "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
          "max_position_embeddings": 32768, "sliding_window": 512}


def hf_dir(root, name, config, header=None, body=0):
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if header is not None:
        blob = json.dumps(header).encode()
        with open(d / "model.safetensors", "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(8 + len(blob) + body)  # sparse
    return d


def target_file(root, name, device_extra):
    p = root / f"{name}.toml"
    p.write_text('name = "t"\nkind = "desktop"\nsource = "test"\nram_gib = 64\n[[devices]]\nname = "g"\nvendor = "nvidia"\n'
                 'backend = "CUDA"\n' + device_extra)
    return p


# ---------------------------------------------------------------- command-line flags

M = ["--model", "27b", "--target", "rtx4090"]
E = ["estimate", "--model", "27b", "--quant", "Q4_K_M", "--target", "rtx4090"]

FLAGS = [
    # (args, exit code, first line) -- one reason per case in the id
    pytest.param([*E, "--tp", "-2"], 1, "Error: --tp must be a positive integer up to 1,024, got -2; pass --tp 1 or more", id="tp-negative"),
    pytest.param([*E, "--tp", "0"], 1, "Error: --tp must be a positive integer up to 1,024, got 0; pass --tp 1 or more", id="tp-zero"),
    pytest.param([*E, "--pp", "-1"], 1, "Error: --pp must be a positive integer up to 1,024, got -1; pass --pp 1 or more", id="pp-negative"),
    pytest.param([*E, "--pp", "0"], 1, "Error: --pp must be a positive integer up to 1,024, got 0; pass --pp 1 or more", id="pp-zero"),
    pytest.param(["recommend", *M, "--ctx", "1024", "--parallel", "4096"], 1,
                 "Error: --ctx 1024 over --parallel 4096 leaves 0.2 tokens per slot (at least 256); lower --parallel to 4 "
                 "or less", id="quarter-token-slots"),  # 1,048,576 tokens would be above the trained maximum: no fix
    pytest.param(["recommend", *M, "--parallel", "4096"], 1,
                 "Error: --ctx default (32,768 tokens) over --parallel 4096 leaves 8.0 tokens per slot (at least 256); "
                 "lower --parallel to 128 or less", id="default-ctx-tiny-slots"),
    pytest.param(["recommend", *M, "--ctx", "max", "--parallel", "4096"], 1,
                 "Error: --ctx max (131,072 tokens) over --parallel 4096 leaves 32.0 tokens per slot (at least 256); "
                 "lower --parallel to 512 or less", id="max-ctx-tiny-slots"),
    pytest.param(["recommend", *M, "--ctx", "8192", "--parallel", "64"], 1,
                 "Error: --ctx 8192 over --parallel 64 leaves 128.0 tokens per slot (at least 256); raise --ctx to 16384 "
                 "or more, or lower --parallel to 32 or less", id="raise-ctx-when-it-can"),
    pytest.param(["recommend", *M, "--ctx", "1k1"], 1,
                 "Error: --ctx '1k1' is not a number of tokens; use --ctx 32768, --ctx 32k (= 32,768) or --ctx max", id="ctx-1k1"),
    pytest.param(["recommend", *M, "--ctx", "99999999999"], 1,
                 "Error: --ctx '99999999999' is not a number of tokens; use --ctx 32768, --ctx 32k (= 32,768) or --ctx max",
                 id="ctx-too-long"),
    pytest.param(["recommend", *M, "--ctx", "20000k"], 1,
                 "Error: --ctx 20000k must be a positive number of tokens, at most 16,777,216; use --ctx 32768 or --ctx max",
                 id="ctx-above-bound"),
    pytest.param(["recommend", *M, "--emit", ""], 1, "Error: --emit is empty; give --emit a path, e.g. --emit ./out", id="emit-empty"),
    pytest.param(["recommend", *M, "--emit", "a\nb"], 1,
                 "Error: --emit 'a\\nb' has control characters; choose a path without newlines or tabs", id="emit-newline"),
    pytest.param(["recommend", *M, "--plot", ""], 1, "Error: --plot is empty; give --plot a path, e.g. --plot ./out", id="plot-empty"),
    pytest.param(["recommend", *M, "--engine", "vllm", "--kv-type", "q4_0"], 1,
                 "Error: --kv-type q4_0 is not a vLLM KV cache type; vLLM takes one of auto, fp8, fp8_e4m3, fp8_e5m2 for K and V together",
                 id="vllm-kv-q4_0"),
    pytest.param(["recommend", *M, "--kv-type", "q3_k"], 1,
                 "Error: --kv-type q3_k is not a llama.cpp KV cache type; use one of f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0, "
                 "iq4_nl, or K/V like q8_0/f16", id="llamacpp-kv-unknown"),
    pytest.param(["recommend", *M, "--engine", "vllm", "--quant", "Q4_K_M"], 1,
                 "Error: --quant Q4_K_M is a GGUF type, which vllm does not run; use --engine llama.cpp for GGUF files, "
                 "or one of bf16, fp8, gptq-int8, gptq-int4 with --engine vllm", id="vllm-gguf-quant"),
    pytest.param(["recommend", "--target", "rtx4090", "--engine", "vllm", "--quant", "Q4_K_M"], 1,
                 "Error: --quant Q4_K_M is a GGUF type, which vllm does not run; use --engine llama.cpp for GGUF files, "
                 "or one of bf16, fp8, gptq-int8, gptq-int4 with --engine vllm", id="vllm-gguf-quant-no-model"),
    pytest.param([*E, "--vram", "2000000TiB"], 1,
                 "Error: --vram '2000000TiB' is outside 1 byte..1 PiB; write it like 24GiB, 24GB or 512MiB", id="vram-above-pib"),
    pytest.param([*E, "--ngl", "-5"], 1, "Error: --ngl must be -1 (all) or 0..4,097, got -5; pass --ngl -1 to offload every layer",
                 id="ngl-negative"),
    pytest.param([*E, "--ubatch", "0"], 1, "Error: --ubatch must be a positive integer up to 65,536, got 0; pass --ubatch 1 or more",
                 id="ubatch-zero"),
    pytest.param(["detect", "--save", ""], 1,
                 "Error: --save: name: '' is not a target name; use letters, digits, '.', '_' or '-' (at most 64, starting with a "
                 "letter or digit), e.g. --save my-desktop", id="save-empty"),
    pytest.param(["detect", "--save", "name\n"], 1,
                 "Error: --save: name: 'name\\n' is not a target name; use letters, digits, '.', '_' or '-' (at most 64, starting "
                 "with a letter or digit), e.g. --save my-desktop", id="save-newline"),
    pytest.param(["detect", "--save", "../x"], 1,
                 "Error: --save: name: '../x' is not a target name; use letters, digits, '.', '_' or '-' (at most 64, starting "
                 "with a letter or digit), e.g. --save my-desktop", id="save-path-separator"),
    pytest.param(["quantize", "--model", "./nope-dir", "--target", "rtx4090"], 1,
                 "Error: ./nope-dir does not exist; check the path: pass a Hugging Face checkpoint directory or a .gguf file",
                 id="quantize-missing-dir"),
    pytest.param(["validate", "x", "--timeout", "-1"], 1, "Error: --timeout must be 0..86400 seconds, got -1.0; pass --timeout 180",
                 id="validate-timeout"),
]


@pytest.mark.parametrize("args,code,line", FLAGS)
def test_bad_flag_is_one_line(args, code, line, tmp_path):
    r = run(*args)
    assert r.exit_code == code, r.output
    assert first_line(r) == line
    # an unhandled exception would be in r.exception (click's runner never prints the traceback)
    assert isinstance(r.exception, SystemExit) and "DEBUG" not in r.output
    assert not list(tmp_path.glob("*")) or all(p.name == "config" for p in tmp_path.iterdir())  # nothing written


def test_emit_into_proc_is_one_line():
    r = run("recommend", *M, "--emit", "/proc/x")
    assert r.exit_code == 1
    assert first_line(r).startswith("Error: cannot write to /proc/x: ") and first_line(r).endswith(
        "; choose another --emit directory that you can write to")


def test_32k_means_32768_and_max_works():
    r = run("recommend", *M, "--ctx", "32k", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["plan"]["ctx"] == 32768  # k = 1024 for context (documented in --help)
    r = run("recommend", *M, "--ctx", "32768", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["plan"]["ctx"] == 32768
    r = run("recommend", *M, "--ctx", "max", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["plan"]["ctx"] > 0


# ---------------------------------------------------------------- model files


def _cases_models(root):
    big = 262144 * 1152 * 2
    return [
        (hf_dir(root, "cfg_list", [1, 2]), f"Error: {root}/cfg_list/config.json: config = 'list' is not a JSON object; "
         'config.json must be an object like {"model_type": "gemma3", ...}'),
        (hf_dir(root, "cfg_str_hidden", dict(GEMMA3, hidden_size="1152")), f"Error: {root}/cfg_str_hidden/config.json: hidden_size = "
         "'1152' is not an integer; correct config.json (it should match the model's published config)"),
        (hf_dir(root, "cfg_neg_hidden", dict(GEMMA3, hidden_size=-5)), f"Error: {root}/cfg_neg_hidden/config.json: hidden_size = -5 "
         "is outside 1..131,072; correct config.json (it should match the model's published config)"),
        (hf_dir(root, "cfg_neg_window", dict(GEMMA3, sliding_window=-1)), f"Error: {root}/cfg_neg_window/config.json: sliding_window "
         "= -1 is outside 0..16,777,216; correct config.json (it should match the model's published config)"),
        (hf_dir(root, "cfg_zero_heads", dict(GEMMA3, num_attention_heads=0)), f"Error: {root}/cfg_zero_heads/config.json: "
         "num_attention_heads = 0 is outside 1..1,024; correct config.json (it should match the model's published config)"),
        (hf_dir(root, "cfg_1e9_layers", dict(GEMMA3, num_hidden_layers=10**9)), f"Error: {root}/cfg_1e9_layers/config.json: "
         "num_hidden_layers = 1000000000 is outside 1..4,096; correct config.json (it should match the model's published config)"),
        (hf_dir(root, "cfg_deep", "[" * 100000 + "]" * 100000), f"Error: {root}/cfg_deep/config.json: not valid JSON (maximum recursion "
         "depth exceeded while decoding a JSON array from a unicode stri); check the path; a GGUF must be a complete file and a HF "
         "directory needs config.json"),
        (hf_dir(root, "st_list", GEMMA3, [1, 2]), f"Error: {root}/st_list/model.safetensors: safetensors header is a JSON list, not an "
         "object of tensors; check the path; a GGUF must be a complete file and a HF directory needs config.json"),
        (hf_dir(root, "st_no_dtype", GEMMA3, {"model.embed_tokens.weight": {"shape": [4, 4], "data_offsets": [0, 32]}}, 32),
         f"Error: {root}/st_no_dtype/model.safetensors: tensor 'model.embed_tokens.weight' dtype = None is not a safetensors dtype "
         "(BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64); the file is damaged: "
         "download it again or re-save it with safetensors"),
        (hf_dir(root, "st_str_shape", GEMMA3, {"model.embed_tokens.weight": {"dtype": "BF16", "shape": "4,4", "data_offsets": [0, 32]}},
                32), f"Error: {root}/st_str_shape/model.safetensors: tensor 'model.embed_tokens.weight' shape = '4,4' is not a list "
         "of at most 4 sizes; the file is damaged: download it again or re-save it with safetensors"),
        (hf_dir(root, "st_more_bytes", GEMMA3, {"model.embed_tokens.weight": {"dtype": "BF16", "shape": [262144, 1152],
                                                                               "data_offsets": [0, big]}}, 100),
         f"Error: {root}/st_more_bytes/model.safetensors: tensor 'model.embed_tokens.weight' data_offsets[1] = {big} is outside "
         "0..100; the header claims more bytes than the file holds (100); the file is damaged: download it again or re-save it "
         "with safetensors"),
        (write_gguf(root / "ctx0.gguf", ctx=0), f"Error: {root}/ctx0.gguf: gemma3.context_length = 0 is outside 1..16,777,216; the "
         "GGUF metadata is damaged: download or convert the model again"),
        (write_gguf(root / "bc0.gguf", block_count=0), f"Error: {root}/bc0.gguf: gemma3.block_count = 0 is outside 1..4,096; the GGUF "
         "metadata is damaged: download or convert the model again"),
        (write_gguf(root / "bc2e31.gguf", block_count=2**31), f"Error: {root}/bc2e31.gguf: gemma3.block_count = 2147483648 is outside "
         "1..4,096; the GGUF metadata is damaged: download or convert the model again"),
        (write_gguf(root / "align0.gguf", alignment=0), f"Error: {root}/align0.gguf: not a readable GGUF file (general.alignment = 0 is "
         "not a power of two up to 65536); the file is damaged or not a GGUF model: download or convert it again"),
        (nested_gguf(root / "nested.gguf"), f"Error: {root}/nested.gguf: not a readable GGUF file (arrays nested deeper than 2); the "
         "file is damaged or not a GGUF model: download or convert it again"),
    ]


def test_hostile_model_files_are_one_line(tmp_path):
    for path, line in _cases_models(tmp_path):
        r = run("estimate", "--model", path, "--quant", "Q4_K_M", "--target", "rtx4090")
        assert r.exit_code == 1, (path, r.output)
        assert first_line(r) == line, path


def test_debug_variable_still_shows_the_traceback(tmp_path):
    path = write_gguf(tmp_path / "bc0.gguf", block_count=0)
    r = run("estimate", "--model", path, "--quant", "Q4_K_M", "--target", "rtx4090", env={"GEMMA_PLAN_DEBUG": "1"})
    assert r.exit_code == 1 and r.exc_info is not None and type(r.exception).__name__ == "BoundsError"


def test_gguf_model_plans_its_own_type(tmp_path):
    path = write_gguf(tmp_path / "F16.gguf")
    r = run("recommend", "--model", path, "--target", "rtx4090", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["plan"]["weight_format"] == "F16"
    r = run("recommend", "--model", path, "--target", "rtx4090", "--quant", "Q8_0")
    assert r.exit_code == 1 and first_line(r) == (
        f"Error: {path} is F16; --quant Q8_0 would need another file; drop --quant to plan this file, or make one: "
        f"gemma-plan quantize --model {path} --quant Q8_0")
    r = run("recommend", "--model", path, "--target", "rtx4090", "--engine", "vllm")
    assert r.exit_code == 1 and first_line(r) == (
        f"Error: {path} is a GGUF file, which vllm does not run here; use --engine llama.cpp, or pass the Hugging Face "
        "checkpoint directory for vLLM/transformers")


# ---------------------------------------------------------------- target files


@pytest.mark.parametrize("extra,line", [
    ("memory_gib = 1e300\n", "devices[0].memory_gib: 1e+300 is above the bound of 1 PiB (profiles/bounds.py)"),
    ("memory_gib = 24\ncount = 1000000000\n", "devices[0].count: must be an integer 1..1,024, got 1000000000"),
    ("memory_gib = 24\nbandwidth_gb_s = 1e12\n", "devices[0].bandwidth_gb_s: 1000000000000.0 is above the bound of 1 PB/s (profiles/bounds.py)"),
    ("memory_gib = 24\nmemory_rule = []\ntotal_gib = 24\n", "devices[0].memory_rule: one of ['apple-default']"),
], ids=["memory-1e300", "count-1e9", "bandwidth", "rule-list"])
def test_hostile_target_files(tmp_path, extra, line):
    p = target_file(tmp_path, "t", extra)
    r = run(*E[:5], "--target", p)
    assert r.exit_code == 1
    assert first_line(r) == f"Error: {p}: {line}; fix the field named above (docs/targets.md describes the format)"


def test_many_hosts_are_refused_before_copying(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('name = "c"\nkind = "cluster"\nsource = "t"\n[[hosts]]\nname = "n"\ncount = 1000\nram_gib = 64\n'
                 '[[hosts.devices]]\nname = "g"\nvendor = "nvidia"\nbackend = "CUDA"\nmemory_gib = 24\ncount = 8\n')
    r = run(*E[:5], "--target", p)
    assert r.exit_code == 1 and first_line(r) == (
        f"Error: {p}: hosts[0].count: more than 1,024 hosts or 1,024 devices in all; fix the field named above "
        "(docs/targets.md describes the format)")


# ---------------------------------------------------------------- recipe.json and bench rows


def _recipe(tmp_path):
    out = tmp_path / "emit"
    assert run("recommend", *M, "--emit", out).exit_code == 0
    return out / "recipe.json"


@pytest.mark.parametrize("edit,line", [
    (lambda d: d["plan"]["settings"].update(n_ctx=-1), "plan.settings.n_ctx = -1 is outside 1..16,777,216"),
    (lambda d: d["plan"]["settings"].update(n_parallel="4"), "plan.settings.n_parallel = '4' is not an integer"),
    (lambda d: d["plan"].update(memory=[]), "plan.memory = [] is not an object"),
    (lambda d: d["plan"]["memory"]["devices"][0].update(kv_bytes=1e300), "plan.memory.devices[0].kv_bytes = 1e+300 is outside "
     "0..1,125,899,906,842,624"),
    (lambda d: d.update(recipes=[1]), "recipes = [1] is not an object"),
    (lambda d: d["model"].update(ref={"kind": 3, "value": None}), "model.ref = {'kind': 3, 'value': None} needs string kind and value"),
    (lambda d: d["plan"].pop("model"), "plan.model = None is missing or not a string"),
], ids=["ctx", "parallel-str", "memory-list", "kv-1e300", "recipes-list", "ref-types", "no-model"])
def test_malformed_recipe_json_is_one_line(tmp_path, edit, line):
    path = _recipe(tmp_path)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    r = run("validate", path, "--target", "rtx4090")
    assert r.exit_code == 1, r.output
    assert first_line(r) == (f"Error: {path}: {line}; re-create the recipe with `gemma-plan recommend --emit DIR` or "
                             "`gemma-plan quantize`")


def test_bench_rows_are_bounded(tmp_path):
    p = tmp_path / "rows.json"
    p.write_text(json.dumps([{"model": "gemma-3-27b", "quant": "Q4_K_M", "tg_tps": -3, "bandwidth_gbps": 1000}]))
    r = run("bench", "speed", "--rows", p)
    assert r.exit_code == 1 and first_line(r) == (
        f"Error: {p}: rows[0].tg_tps = -3 is outside [0, 1e+07]; fix the row (docs/accuracy.md describes the format)")
    p.write_text("[]")  # nothing to score is an error, not "median |error| None%"
    r = run("bench", "speed", "--rows", p)
    assert r.exit_code == 1 and first_line(r) == (
        f"Error: {p}: rows = 0 holds no measurements to score; give a file with at least one row "
        "(bench/data/calibration_rows.json shows the format)")


# ---------------------------------------------------------------- the local inventory (issue: .weight appended twice)

GEMMA3_TINY = {"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 256,
               "max_position_embeddings": 2048, "sliding_window": 128}


def _hf_tensors(cfg, f16=()):
    """HF names and shapes of a Gemma 3 text checkpoint (transformers Gemma3ForCausalLM)."""
    H, F, V, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    out = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (q, H), p + "self_attn.k_proj.weight": (kv, H), p + "self_attn.v_proj.weight": (kv, H),
                    p + "self_attn.o_proj.weight": (H, q), p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,),
                    p + "mlp.gate_proj.weight": (F, H), p + "mlp.up_proj.weight": (F, H), p + "mlp.down_proj.weight": (H, F),
                    p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                    p + "pre_feedforward_layernorm.weight": (H,), p + "post_feedforward_layernorm.weight": (H,)})
    return {n: (s, "F16" if n in f16 else "BF16") for n, s in out.items()}


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, (shape, dtype) in tensors.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)


def test_local_safetensors_inventory_drives_the_plan(tmp_path):
    from planner.formats import parse_format, weight_bytes
    from planner.sources import load_model

    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(GEMMA3_TINY))
    f16 = {"model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight"}
    write_safetensors(d / "model.safetensors", _hf_tensors(GEMMA3_TINY, f16))
    spec, _ = load_model(str(d))
    assert spec.notes == "tensor inventory from the safetensors headers"
    dtypes = {t.name: t.dtype for t in spec.tensors}
    assert dtypes["blk.1.ffn_down.weight"] == "F16" and dtypes["token_embd.weight"] == "F16"
    assert dtypes["blk.0.ffn_down.weight"] == "BF16" and dtypes["blk.0.attn_norm.weight"] == "F32"
    # the file's own tensors are what the plan weighs: one entry per file tensor, same element count
    from planner.sources import read_safetensors_header

    header = read_safetensors_header(d / "model.safetensors")
    assert len(spec.tensors) == len(header)
    assert spec.n_params_text == sum(int(np.prod(v["shape"])) for v in header.values())
    assert weight_bytes(spec, parse_format("Q8_0", "llama.cpp")) > 0

    # a file that disagrees with its config (a pruned layer) is not silently replaced by the config's shapes
    e = tmp_path / "pruned"
    e.mkdir()
    (e / "config.json").write_text(json.dumps(GEMMA3_TINY))
    tensors = _hf_tensors(GEMMA3_TINY)
    tensors["model.layers.1.mlp.down_proj.weight"] = ((64, 96), "BF16")
    write_safetensors(e / "model.safetensors", tensors)
    spec2, _ = load_model(str(e))
    assert spec2.notes.startswith("config gives ") and "the safetensors headers" in spec2.notes
