"""Catalog consistency, model sources, and the CLI contract (exit codes, one-line errors, JSON keys)."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from planner.catalog import active_params, all_models, catalog_entries, get_model
from planner.cli import main

PUBLISHED_PARAMS = {
    # keras-hub exact counts (text only where the model is multimodal)
    "gemma-2-2b": 2_614_341_888, "gemma-2-9b": 9_241_705_984, "gemma-2-27b": 27_227_128_320,
    "gemma-3-270m": 268_098_176, "gemma-3-1b": 999_885_952, "gemma-3-4b": 3_880_099_328,
    "gemma-3-12b": 11_765_788_416, "gemma-3-27b": 27_009_002_240,
}


def test_every_catalog_entry_builds_and_has_sources():
    names = {e["name"] for e in catalog_entries()}
    assert len(names) == 15
    for m in all_models():
        assert m.sources and m.n_layers == len(m.layers) and m.kv_layers
        assert all(lay.n_head_kv > 0 and lay.head_dim_k % 32 == 0 for lay in m.layers)


@pytest.mark.parametrize("name,params", sorted(PUBLISHED_PARAMS.items()))
def test_params_match_published_counts(name, params):
    spec, _ = get_model(name)
    # our inventory adds nothing the checkpoints lack; norms are counted, so allow 0.01%
    assert abs(spec.n_params_text - params) / params < 1e-4


def test_gemma4_sizes_match_model_cards():
    assert abs(get_model("31b")[0].n_params_text / 1e9 - 30.7) < 0.05
    moe = get_model("26b")[0]
    assert abs(moe.n_params_text / 1e9 - 25.2) < 0.1 and abs(active_params(moe) / 1e9 - 3.8) < 0.05
    assert abs(active_params(get_model("e2b")[0]) / 1e9 - 2.3) < 0.05  # "2.3B effective"


@pytest.mark.parametrize("alias,name", [("31b", "gemma-4-31b"), ("gemma4:31b", "gemma-4-31b"), ("google/gemma-4-31B-it", "gemma-4-31b"),
                                         ("gemma-4-31b", "gemma-4-31b"), ("gemma3:27b", "gemma-3-27b"), ("e4b", "gemma-4-e4b")])
def test_aliases(alias, name):
    assert get_model(alias)[0].name == name


def test_ambiguous_size_picks_newest_and_says_so():
    spec, note = get_model("27b")
    assert spec.name == "gemma-3-27b" and "gemma-2-27b" in note


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_recommend_31b_rtx4090_fits_and_json_contract():
    r = run("recommend", "--model", "31b", "--target", "rtx4090", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    p = d["plan"]
    assert p["fits"] and p["ctx"] >= 4096
    for key in ("weights_bytes", "kv_bytes", "compute_bytes", "output_bytes", "overhead_bytes", "total_bytes"):
        assert isinstance(p["memory"][key], int)
        assert p["memory"][key] == sum(dev[key] for dev in p["memory"]["devices"])
    assert p["speed"]["decode_tokens_per_s"] > 0 and "weight_format" in p
    assert isinstance(d["alternatives"], list) and d["alternatives"][0]["reason"]
    for dev in p["memory"]["devices"]:
        assert dev["total_bytes"] <= dev["budget_bytes"]  # really fits, margin included


def test_estimate_json_has_same_memory_object():
    r = run("estimate", "-m", "gemma-3-27b", "-q", "Q4_K_M", "--target", "rtx4090", "--ctx", "32768", "--json")
    assert r.exit_code == 0, r.output
    mem = json.loads(r.output)["plan"]["memory"]
    assert mem["kv_bytes"] == 3_338_665_984 and mem["kv_cells"]["swa"] == 1536


def test_recommend_without_model_picks_a_gemma_for_a_phone():
    r = run("recommend", "--target", "pixel-9", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["plan"]["fits"]


def test_vllm_tp2_bf16_on_two_a6000():
    r = run("recommend", "--model", "31b", "--target", "2x-a6000", "--engine", "vllm", "--quant", "bf16", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)["plan"]
    assert d["fits"] and d["settings"]["tensor_parallel"] == 2 and d["weight_format"] == "bf16"  # 31B bf16 needs both
    est = run("estimate", "-m", "31b", "-q", "bf16", "--engine", "vllm", "--tp", "2", "--target", "2x-a6000", "--ctx", "8192", "--json")
    assert est.exit_code == 0, est.output
    devs = json.loads(est.output)["plan"]["memory"]["devices"]
    assert len(devs) == 2 and devs[0]["weights_bytes"] == devs[1]["weights_bytes"]


@pytest.mark.parametrize("args,line", [
    (("estimate", "-m", "gemma-9", "-q", "Q4_K_M", "--target", "rtx4090"),
     "Error: unknown model 'gemma-9'; did you mean gemma2-9b, gemma-2-9b, gemma3-4b; run `gemma-plan models` to list "
     "the catalog, or pass a local HF directory or a .gguf file"),
    (("estimate", "-m", "4b", "-q", "Q4_K_M", "--target", "rtx409"),
     "Error: unknown target 'rtx409'; did you mean 'rtx4090' or 'rtx5090' or 'rtx4080'?; run `gemma-plan targets` to "
     "list them, or pass a path to a target .toml file"),
    (("estimate", "-m", "4b", "-q", "Q9_K", "--target", "rtx4090"), "Error: unknown weight format 'Q9_K' (known: "),
    (("estimate", "-m", "4b", "-q", "Q4_K_M", "--target", "rtx4090", "--ctx", "999999"),
     "Error: context 999999 is above gemma-3-4b's trained maximum of 131072; use --ctx 131072 or less, or --ctx max"),
    (("estimate", "-m", "4b", "-q", "Q4_K_M", "--target", "rtx4090", "--ctx", "0"),
     "Error: --ctx 0 must be a positive number of tokens, at most 16,777,216; use --ctx 32768 or --ctx max"),
    (("estimate", "-m", "4b", "-q", "Q4_K_M", "--target", "rtx4090", "--parallel", "-1"),
     "Error: --parallel must be a positive integer up to 4,096, got -1; pass --parallel 1 or more"),
    (("estimate", "-m", "4b", "-q", "Q4_K_M", "--target", "rtx4090", "--kv-type", "q4_0", "--no-flash-attn"),
     "Error: quantized V cache (q4_0) requires flash attention; drop --no-flash-attn, or use --kv-type f16 "
     "(or q8_0/f16: quantized K alone works without it)"),
    (("estimate", "-m", "4b", "-q", "Q4_K_M", "--target", "rtx4090", "--vram", "-3GiB"),
     "Error: --vram '-3GiB' is not a positive size; write it like 24GiB, 24GB or 512MiB"),
])
def test_bad_input_one_line_error(args, line, one_line_error):
    got = one_line_error(run(*args), 1)
    assert got.startswith(line) if line.endswith("(known: ") else got == line


def test_not_a_gguf_and_truncated_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"nope" * 10)
    r = run("estimate", "-m", str(bad), "-q", "Q4_K_M", "--target", "rtx4090")
    assert r.exit_code != 0 and "not a readable GGUF" in r.output
    good = _write_gguf(tmp_path / "m.gguf")
    trunc = tmp_path / "t.gguf"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    r = run("estimate", "-m", str(trunc), "-q", "F16", "--target", "rtx4090")
    assert r.exit_code != 0 and "GGUF" in r.output and len(r.output.strip().splitlines()) == 1


def _write_gguf(path):
    """A 2-layer Gemma 3 GGUF header + tensors, written with gguf-py."""
    import gguf

    w = gguf.GGUFWriter(str(path), "gemma3")
    H, F, V, L = 256, 512, 512, 2
    w.add_block_count(L)
    w.add_embedding_length(H)
    w.add_feed_forward_length(F)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_key_length(128)
    w.add_value_length(128)
    w.add_context_length(2048)
    w.add_sliding_window(128)
    w.add_file_type(1)
    w.add_array("gemma3.attention.sliding_window_pattern", [True, False])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<pad>", "<eos>", "<bos>", "<unk>"] + [f"t{i}" for i in range(V - 4)])
    w.add_token_scores([0.0] * V)
    w.add_token_types([3, 3, 3, 2] + [1] * (V - 4))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((V, H)).astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(H, dtype=np.float32))
    for i in range(L):
        p = f"blk.{i}."
        for n, shape in (("attn_q", (256, H)), ("attn_k", (128, H)), ("attn_v", (128, H)), ("attn_output", (H, 256)),
                         ("ffn_gate", (F, H)), ("ffn_up", (F, H)), ("ffn_down", (H, F))):
            w.add_tensor(p + n + ".weight", rng.standard_normal(shape).astype(np.float16))
        for n in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            w.add_tensor(p + n + ".weight", np.ones(H, dtype=np.float32))
        for n in ("attn_q_norm", "attn_k_norm"):
            w.add_tensor(p + n + ".weight", np.ones(128, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_source_uses_file_tensor_sizes(tmp_path):
    from planner.formats import parse_format, weight_bytes
    from planner.sources import load_model

    path = _write_gguf(tmp_path / "m.gguf")
    spec, _ = load_model(str(path))
    assert spec.arch == "gemma3" and spec.n_layers == 2 and [lay.sliding for lay in spec.layers] == [True, False]
    import gguf

    reader = gguf.GGUFReader(str(path))
    assert weight_bytes(spec, parse_format("F16")) == sum(int(t.n_bytes) for t in reader.tensors)
    assert spec.gguf_file_type == "F16"


def test_hf_dir_reads_config_and_safetensors_headers(tmp_path):
    from planner.sources import load_model

    entry = next(e for e in catalog_entries() if e["name"] == "gemma-3-1b")
    cfg = {k: entry[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                 "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "sliding_window")}
    cfg["model_type"] = "gemma3_text"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    nbytes = cfg["vocab_size"] * cfg["hidden_size"] * 2
    header = {"model.embed_tokens.weight": {"dtype": "BF16", "shape": [cfg["vocab_size"], cfg["hidden_size"]], "data_offsets": [0, nbytes]}}
    blob = json.dumps(header).encode()
    with open(tmp_path / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + nbytes)  # sparse: the data the header claims, without writing it
    spec, _ = load_model(str(tmp_path))
    assert spec.n_layers == 26 and spec.source.startswith("hf-dir:")
    assert "safetensors headers" in spec.notes  # partial header: the mismatch is reported


def test_missing_config_field_is_one_line(tmp_path, one_line_error):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "hidden_size": 64}))
    r = run("estimate", "-m", str(tmp_path), "-q", "Q8_0", "--target", "rtx4090")
    assert one_line_error(r, 1) == (f"Error: {tmp_path.name}: config is missing num_hidden_layers; check config.json is a "
                                    "complete Gemma config")


def test_unknown_architecture_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    r = run("estimate", "-m", str(tmp_path), "-q", "Q8_0", "--target", "rtx4090")
    assert r.exit_code != 0 and "gemma3" in r.output and "supported" in r.output


def test_recommend_imports_no_heavy_modules():
    code = ("import sys; from planner.cli import main\n"
            "try:\n main(['recommend','--model','31b','--target','rtx4090','--json'])\n"
            "except SystemExit: pass\n"
            "heavy=[m for m in ('torch','transformers','llama_cpp') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_models_and_targets_commands():
    r = run("models", "--json")
    assert r.exit_code == 0 and len(json.loads(r.output)["models"]) == 15
    r = run("targets", "--json")
    assert r.exit_code == 0 and any(t["name"] == "rtx4090" for t in json.loads(r.output)["targets"])


def test_fast_header_reader_agrees_with_gguf_reader(tmp_path):
    import gguf

    from planner.gguf_header import read_header

    w = gguf.GGUFWriter(str(tmp_path / "v.gguf"), "gemma3")
    w.add_token_list([f"t{i}" for i in range(5000)])  # long enough to be skipped, not decoded
    w.add_array("gemma3.attention.sliding_window_pattern", [True, False, True])
    w.add_tensor("a.weight", np.zeros((3, 64), np.float16))
    w.add_tensor("b.weight", np.zeros((32,), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    h = read_header(tmp_path / "v.gguf")
    ref = gguf.GGUFReader(str(tmp_path / "v.gguf"))
    assert len(h.fields["tokenizer.ggml.tokens"]) == 5000
    assert h.fields["gemma3.attention.sliding_window_pattern"] == [True, False, True]
    assert [(t.name, t.shape, t.n_bytes) for t in h.tensors] == [
        (t.name, tuple(int(x) for x in reversed(t.shape.tolist())), int(t.n_bytes)) for t in ref.tensors]
    assert h.data_offset == ref.data_offset
