"""Recipes rendered from real plans: every engine's flags carry the plan's numbers, and llama.cpp's
command read back through the memory model reproduces the plan byte for byte."""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest

from planner.catalog import get_model
from planner.formats import parse_format
from planner.memory import DEFAULT_MARGIN, estimate_memory
from planner.recipes import context_for, primary, render_all
from planner.recipes import llamacpp, llamacpp_python, lmstudio, mlx, ollama, vllm
from planner.recipes.base import ShellVar
from planner.search import plan as make_plan
from planner.search import recommend, vllm_tensor_parallel
from planner.types import RuntimeSettings
from profiles.targets import load_target

# (id, model, target, engine, formats, recommend kwargs, why this case)
CASES = [
    ("single-gpu", "27b", "rtx4090", "llama.cpp", None, {}, "everything on one GPU"),
    ("partial-offload", "31b", "rtx4090", "llama.cpp", ["Q8_0"], {}, "Q8_0 31B needs -ngl below all"),
    ("moe-experts-cpu", "26b", "rtx4070", "llama.cpp", ["Q4_K_M"], {}, "MoE experts kept on the CPU with -ot"),
    ("two-gpu-split", "27b", "2x-rtx3090", "llama.cpp", None, {"ctx": 131072}, "layers split over two GPUs with -ts"),
    ("parallel-slots", "gemma-3-12b", "rtx4090", "llama.cpp", None, {"parallel": 4, "kv_types": [("q8_0", "q8_0")]}, "4 slots, q8_0 KV"),
    ("vllm-tp2", "31b", "2x-a6000", "vllm", ["bf16"], {}, "tensor parallel over two GPUs"),
    ("vllm-2-node", "31b", "cluster-2x-dgx-spark", "vllm", ["bf16"], {"ctx_max": True, "parallel": 4}, "pipeline stages over two hosts"),
    ("apple", "4b", "m4-pro-48gb", "llama.cpp", None, {}, "Metal, unified memory"),
    ("phone", "1b", "pixel-9", "llama.cpp", None, {}, "Android phone"),
]
_CACHE: dict = {}


def _case(cid):
    if cid not in _CACHE:
        _, model, target, engine, formats, kw, _ = next(c for c in CASES if c[0] == cid)
        spec, _ = get_model(model)
        hw = load_target(target)
        rec = recommend(hw, models=[spec], engine=engine, formats=formats, target=target, **kw)
        assert rec.plan is not None and rec.plan.fits, cid
        _CACHE[cid] = (rec.plan, spec, hw, render_all(rec.plan, hw, spec=spec))
    return _CACHE[cid]


LLAMA_CASES = [c[0] for c in CASES if c[3] == "llama.cpp"]


def test_cases_are_what_they_claim():
    assert _case("partial-offload")[0].settings.n_gpu_layers > 0
    assert _case("moe-experts-cpu")[0].settings.experts_on_cpu
    p = _case("vllm-tp2")[0]
    assert (p.settings.tensor_parallel, p.settings.pipeline_parallel) == (2, 1)
    p = _case("vllm-2-node")[0]
    assert p.settings.pipeline_parallel == 2 and any("multi-node" in n for n in p.notes)


@pytest.mark.parametrize("cid", LLAMA_CASES)
def test_llama_server_flags_reproduce_the_plan(cid):
    plan, spec, hw, recipes = _case(cid)
    argv = recipes["llama-server"].steps[0].argv
    got = llamacpp.parse_argv(argv)
    s = plan.settings
    assert (got["n_ctx"], got["n_parallel"], got["n_batch"], got["n_ubatch"]) == (s.n_ctx, s.n_parallel, s.n_batch, s.n_ubatch)
    assert (got["type_k"], got["type_v"], got["flash_attn"], got["swa_full"]) == (s.type_k, s.type_v, s.flash_attn, s.swa_full)
    assert got["experts_on_cpu"] == s.experts_on_cpu and ("-ot" in argv) == s.experts_on_cpu
    assert ("--swa-full" in argv) == s.swa_full and got["fit"] == "off"
    assert ("-ts" in argv) == (len(hw.devices) > 1)
    # the flags alone, run through the memory model on the same hardware, give the plan's bytes per device
    again = dataclasses.replace(s, n_ctx=got["n_ctx"], n_parallel=got["n_parallel"], n_gpu_layers=got["n_gpu_layers"],
                                tensor_split=[float(x) for x in got["tensor_split"]] if got["tensor_split"] else None,
                                type_k=got["type_k"], type_v=got["type_v"], flash_attn=got["flash_attn"],
                                swa_full=got["swa_full"], experts_on_cpu=got["experts_on_cpu"], n_batch=got["n_batch"],
                                n_ubatch=got["n_ubatch"])
    mem = estimate_memory(spec, parse_format(plan.weight_format), again, hw, DEFAULT_MARGIN)
    assert [(d.device, d.weights_bytes, d.kv_bytes, d.compute_bytes, d.layers) for d in mem.devices] == \
        [(d.device, d.weights_bytes, d.kv_bytes, d.compute_bytes, d.layers) for d in plan.memory.devices]
    assert llamacpp.check(recipes["llama-server"], _ctx(plan, hw, spec)) == []


def _ctx(plan, hw, spec):
    from planner.recipes import context_for

    return context_for(plan, hw, None, spec)


def test_tensor_split_follows_layer_counts_and_ngl_counts_the_output_layer():
    plan, spec, hw, recipes = _case("two-gpu-split")
    got = llamacpp.parse_argv(recipes["llama-server"].steps[0].argv)
    gpu_layers = [d.layers for d in plan.memory.devices if d.device != "CPU"]
    assert sum(got["tensor_split"]) == spec.n_layers + 1  # repeating layers + the output layer
    assert got["tensor_split"][:-1] == gpu_layers[:-1] and got["tensor_split"][-1] == gpu_layers[-1] + 1
    assert got["n_gpu_layers"] == spec.n_layers + 1
    plan, spec, hw, recipes = _case("partial-offload")
    assert llamacpp.parse_argv(recipes["llama-server"].steps[0].argv)["n_gpu_layers"] == plan.settings.n_gpu_layers
    assert any("partial offload" in n for n in recipes["llama-server"].notes)


def test_experts_override_is_the_documented_regex():
    plan, spec, hw, recipes = _case("moe-experts-cpu")
    argv = recipes["llama-server"].steps[0].argv
    assert argv[argv.index("-ot") + 1] == r"\.ffn_.*_exps\.=CPU"
    assert "-ot '\\.ffn_.*_exps\\.=CPU'" in recipes["llama-server"].files["run-llama-server.sh"]
    # engines that cannot express it say so
    assert not recipes["llama-cpp-python"].matches_plan and not recipes["ollama"].matches_plan
    assert "num_gpu" not in dict(ollama.parse_modelfile(recipes["ollama"].files["Modelfile"]))


@pytest.mark.parametrize("cid", [c[0] for c in CASES])
def test_every_recipe_serializes_and_its_files_parse(cid):
    plan, spec, hw, recipes = _case(cid)
    assert recipes and primary(recipes) is not None
    for name, r in recipes.items():
        d = json.loads(json.dumps(r.to_dict()))
        assert d["engine"] == name and d["commands"] == [[str(a) for a in s.argv] for s in r.steps]
        for line, step in zip(r.shell_lines(), r.steps):
            if not any(isinstance(a, ShellVar) for a in step.argv) and not step.env and not r.env:
                assert shlex.split(line) == [str(a) for a in step.argv]
        for fname, text in r.files.items():
            assert text.endswith("\n")
            if fname.endswith(".sh"):
                assert text.startswith("#!/bin/sh\n") and "set -eu" in text and fname in r.executable
            if fname.endswith(".py"):
                compile(text, fname, "exec")


@pytest.mark.parametrize("cid", ["single-gpu", "parallel-slots", "moe-experts-cpu"])
def test_llama_cpp_python_passes_every_default_that_differs(cid):
    plan, spec, hw, recipes = _case(cid)
    r = recipes["llama-cpp-python"]
    kw = llamacpp_python.read_load_script(r.files["load_llama_cpp_python.py"])
    s = plan.settings
    for key in ("n_ctx", "n_batch", "n_ubatch", "n_gpu_layers", "flash_attn", "swa_full", "type_k", "type_v", "logits_all"):
        assert key in kw
    assert (kw["n_ctx"], kw["flash_attn"], kw["swa_full"], kw["logits_all"]) == (s.n_ctx, s.flash_attn, s.swa_full, False)
    assert kw["type_k"] == {"f16": 1, "q8_0": 8}[s.type_k]
    served = llamacpp_python.read_serve_script(r.files["serve_llama_cpp_python.py"])
    assert served["swa_full"] is s.swa_full and served["n_ctx"] == s.n_ctx and served["logits_all"] is False
    assert r.matches_plan == (s.n_parallel == 1 and not s.experts_on_cpu)
    assert llamacpp_python.check(r, _ctx(plan, hw, spec)) == []


def test_ollama_modelfile_carries_context_per_slot_and_server_env():
    plan, spec, hw, recipes = _case("parallel-slots")
    r = recipes["ollama"]
    params = dict(ollama.parse_modelfile(r.files["Modelfile"]))
    per_slot = plan.settings.n_ctx // plan.settings.n_parallel
    assert params["num_ctx"] == str(per_slot) and params["num_gpu"] == str(spec.n_layers + 1)
    assert params["stop"] == "<end_of_turn>" and "<start_of_turn>model" in params["template"]
    assert r.steps[0].env == {"OLLAMA_HOST": "127.0.0.1:11434", "OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "q8_0", "OLLAMA_NUM_PARALLEL": "4",
                              "OLLAMA_CONTEXT_LENGTH": str(per_slot)}
    assert "export OLLAMA_KV_CACHE_TYPE=q8_0" in r.files["run-ollama-serve.sh"]
    assert ollama.check(r, _ctx(plan, hw, spec)) == []


def test_ollama_gemma4_template_and_split_kv_types():
    plan, spec, hw, _ = _case("partial-offload")
    split = dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, type_k="q8_0", type_v="f16"))
    r = render_all(split, hw, spec=spec)["ollama"]
    params = dict(ollama.parse_modelfile(r.files["Modelfile"]))
    assert params["stop"] == "<turn|>" and "<|turn>model" in params["template"]
    assert r.steps[0].env["OLLAMA_KV_CACHE_TYPE"] == "f16" and not r.matches_plan


def test_lmstudio_gpu_share():
    for cid, want in (("single-gpu", "max"), ("partial-offload", None)):
        plan, spec, hw, recipes = _case(cid)
        load = next(s for s in recipes["lmstudio"].steps if s.argv[:2] == ["lms", "load"])
        got = lmstudio.parse_load(load.argv)
        assert got["parallel"] == str(plan.settings.n_parallel) and got["exact"] and got["yes"]
        total = spec.n_layers + 1
        assert got["context_length"] == str(plan.ctx)
        assert got["gpu"] == (want or f"{plan.settings.n_gpu_layers / total:.2f}")


def test_vllm_tp2_flags():
    plan, spec, hw, recipes = _case("vllm-tp2")
    r = recipes["vllm"]
    got = vllm.parse_argv(r.steps[0].argv)
    s = plan.settings
    assert got["tensor_parallel"] == 2 and got["pipeline_parallel"] == 1 and not got["ray"]
    assert (got["max_model_len"], got["gpu_memory_utilization"], got["kv_cache_dtype"]) == (s.n_ctx, 0.92, "auto")
    assert (got["max_num_seqs"], got["max_num_batched_tokens"], got["quantization"]) == (s.max_num_seqs, s.max_num_batched_tokens, None)
    assert got["model"] == "google/gemma-4-31B-it" and got["dtype"] == "bfloat16"
    assert "each of the 2 GPU rank(s)" in r.notes[0]
    assert vllm.check(r, _ctx(plan, hw, spec)) == []
    assert list(r.files) == ["run-vllm.sh"]


def test_vllm_quantization_flag_per_format():
    # fp8: the online shorthand (plain `fp8` no longer quantizes a bf16 checkpoint in vLLM 0.33);
    # GPTQ: no flag, vLLM reads the checkpoint's quant_method and picks Marlin; never float16 for Gemma
    plan, spec, hw, _ = _case("vllm-tp2")
    for fmt, q in (("fp8", "fp8_per_tensor"), ("gptq-int4", None)):
        p = make_plan(spec, parse_format(fmt, "vllm"), plan.settings, hw, target=hw.name)
        argv = render_all(p, hw, spec=spec)["vllm"].steps[0].argv
        assert (argv[argv.index("--quantization") + 1] if "--quantization" in argv else None) == q
        assert argv[argv.index("--dtype") + 1] == "bfloat16"
        if fmt.startswith("gptq"):
            assert argv[2].startswith("./") and "gptq-int4" in argv[2]  # a local GPTQ checkpoint, not the bf16 hub repo


def test_vllm_two_nodes_use_ray():
    plan, spec, hw, recipes = _case("vllm-2-node")
    r = recipes["vllm"]
    assert [s.argv[:2] for s in r.steps] == [["ray", "start"], ["ray", "start"], ["vllm", "serve"]]
    assert r.steps[1].argv[-1] == "${HEAD_ADDRESS}:6379" and isinstance(r.steps[1].argv[-1], ShellVar)
    assert '"${HEAD_ADDRESS}":6379' in r.files["run-ray-worker.sh"]
    got = vllm.parse_argv(r.steps[2].argv)
    assert (got["tensor_parallel"], got["pipeline_parallel"], got["ray"]) == (1, 2, True)
    assert {"run-ray-head.sh", "run-ray-worker.sh", "run-vllm.sh"} <= set(r.files)
    assert "transformers" not in recipes  # one GPU cannot hold what two hosts split


def test_cluster_plan_stays_on_one_host_when_it_fits():
    spec, _ = get_model("31b")
    hw = load_target("2x-node-8x-h100")
    rec = recommend(hw, models=[spec], engine="vllm", formats=["bf16"])
    s = rec.plan.settings
    assert (s.tensor_parallel, s.pipeline_parallel) == (8, 1)
    r = render_all(rec.plan, hw, spec=spec)["vllm"]
    assert "fits one host" in r.notes[0] and not vllm.parse_argv(r.steps[0].argv)["ray"]


def test_tensor_parallel_respects_kv_heads():
    spec, _ = get_model("31b")  # 32 heads; 16 KV heads on sliding layers, 4 on full layers
    assert vllm_tensor_parallel(spec, 8) == 8  # 8 is a multiple of 4: vLLM replicates those heads
    assert vllm_tensor_parallel(spec, 3) == 2
    odd = dataclasses.replace(spec, layers=[dataclasses.replace(lay, n_head_kv=6) for lay in spec.layers])
    assert vllm_tensor_parallel(odd, 8) == 2  # 4 neither divides 6 nor is a multiple of it


def test_llamacpp_on_a_cluster_gets_an_rpc_recipe():
    spec, _ = get_model("27b")
    hw = load_target("cluster-2x-dgx-spark")
    rec = recommend(hw, models=[spec], formats=["Q8_0"])
    recipes = render_all(rec.plan, hw, spec=spec)
    r = recipes["llama-rpc"]
    assert r.steps[0].argv[:3] == ["ggml-rpc-server", "--host", "127.0.0.1"] and r.steps[0].where == "spark0"
    # the server itself carries --rpc: a two-host plan never silently lands on one host
    for name, fname in (("llama-server", "run-llama-server.sh"), ("llama-cli", "run-llama-cli.sh")):
        text = recipes[name].files[fname]
        assert '--rpc "${RPC_SERVERS}"' in text and 'RPC_SERVERS="${RPC_SERVERS:?' in text
        assert "--rpc" in recipes[name].steps[0].argv
    assert 'BIND_ADDRESS=127.0.0.1; fi' in r.files["run-rpc-server.sh"]
    assert '--host "${BIND_ADDRESS}"' in r.files["run-rpc-server.sh"]
    assert "llama-cpp-python" not in recipes  # Llama() has no RPC in 0.3.36
    assert not any("0.0.0.0" in t for x in recipes.values() for t in list(x.files.values()) + x.shell_lines())
    ctx = context_for(rec.plan, hw, None, spec)
    assert llamacpp.check(recipes["llama-server"], ctx) == []
    no_rpc = dataclasses.replace(recipes["llama-server"], steps=[dataclasses.replace(
        recipes["llama-server"].steps[0], argv=[a for a in recipes["llama-server"].steps[0].argv if a not in ("--rpc", "${RPC_SERVERS}")])])
    assert any("no --rpc" in p for p in llamacpp.check(no_rpc, ctx))


def test_llamacpp_flags_exist_in_the_programs_that_get_them():
    plan, spec, hw, _ = _case("single-gpu")
    s = dataclasses.replace(plan.settings, use_mmap=False, kv_unified=True)
    p = dataclasses.replace(plan, settings=s)
    recipes = render_all(p, hw, spec=spec)
    server, cli = recipes["llama-server"], recipes["llama-cli"]
    assert "--no-mmap" not in server.steps[0].argv  # not a flag of this llama.cpp: --load-mode none is
    i = server.steps[0].argv.index("--load-mode")
    assert server.steps[0].argv[i + 1] == "none" and llamacpp.parse_argv(server.steps[0].argv)["use_mmap"] is False
    assert "--kv-unified" in server.steps[0].argv and "--kv-unified" not in cli.steps[0].argv
    assert not cli.matches_plan and any("--kv-unified" in n for n in cli.notes)
    ctx = context_for(p, hw, None, spec)
    assert llamacpp.check(server, ctx) == [] and llamacpp.check(cli, ctx) == []


def test_apple_gets_mlx_with_matching_bits_and_wired_limit_only_when_needed():
    plan, spec, hw, recipes = _case("apple")
    r = recipes["mlx"]
    conv = r.steps[0].argv
    assert conv[:2] == ["mlx_lm.convert", "--hf-path"] and conv[conv.index("--q-bits") + 1] == str(mlx.BITS[plan.weight_format])
    serve = [str(a) for a in r.steps[-1].argv]
    assert "--max-kv-size" not in serve  # mlx_lm.server has no such flag (mlx_lm.generate does)
    assert serve[serve.index("--host") + 1] == "127.0.0.1"
    assert int(serve[serve.index("--prompt-cache-bytes") + 1]) == r.settings["memory"]["kv_bytes"] > 0
    assert not any(s.argv[0] == "sudo" for s in r.steps) and not r.matches_plan
    # a plan made with the GPU limit raised to 44 GiB needs the sysctl
    big = load_target("m4-pro-48gb")
    big.devices[0].memory_bytes = 44 << 30
    spec27, _ = get_model("27b")
    p = recommend(big, models=[spec27], formats=["Q8_0"], ctx_max=True, target="m4-pro-48gb").plan
    assert p.memory.devices[0].total_bytes > 36 << 30  # above macOS's default 36 GiB on a 48 GB Mac
    r = render_all(p, big, spec=spec27)["mlx"]
    sysctl = next(s for s in r.steps if s.argv[0] == "sudo")
    assert sysctl.argv[2].startswith("iogpu.wired_limit_mb=")


def test_phone_gets_a_published_litert_bundle():
    plan, spec, hw, recipes = _case("phone")
    r = recipes["litert"]
    assert "ollama" not in recipes and r.settings["bundle"] == "litert-community/Gemma3-1B-IT"
    shell_steps = [s for s in r.steps if s.argv[:2] == ["adb", "shell"]]
    assert all(len(s.argv) == 3 for s in shell_steps)  # the phone's shell gets one quoted command line
    remote = shlex.split(shell_steps[-1].argv[2])
    assert "--model_path=/data/local/tmp/gemma/model.litertlm" in remote and not any("max_num_tokens" in a for a in remote)
    assert r.settings["max_num_tokens"] == 4096 and "--max-num-tokens" in r.files["run-litert-desktop.sh"]
    assert any("not automated" in n for n in r.notes)
    # no bundle of the planned model: the largest published one that fits
    spec270, _ = get_model("270m")
    p = recommend(hw, models=[spec270]).plan
    r = render_all(p, hw, spec=spec270)["litert"]
    assert r.settings["bundle"].startswith("google/gemma-3n-E4B") and "no published bundle" in r.notes[1]
    assert r.notes[0].startswith("model: google/gemma-3n-E4B")  # says where the bundle comes from


def test_placeholder_and_real_model_paths(tmp_path):
    plan, spec, hw, recipes = _case("single-gpu")
    fmt = plan.weight_format
    assert recipes["llama-server"].steps[0].argv[2] == f"gemma-3-27b-{fmt}.gguf"
    origin = recipes["llama-server"].notes[0]
    assert f"gemma-plan quantize -m google/gemma-3-27b-it -t rtx4090 -q {fmt} --ctx" in origin and "--out quantized" in origin
    for name, fname in (("llama-server", "run-llama-server.sh"), ("llama-cli", "run-llama-cli.sh"),
                        ("llama-cpp-python", "load_llama_cpp_python.py")):
        assert "gemma-plan quantize -m" in recipes[name].files[fname].splitlines()[3], fname
    f = tmp_path / "my model.gguf"
    f.write_bytes(b"GGUF")
    r = render_all(plan, hw, model_ref=str(f), spec=spec)["llama-server"]
    assert r.steps[0].argv[2] == str(f.resolve()) and r.model_path == str(f.resolve())
    assert f"then MODEL='{f.resolve()}'; fi" in r.files["run-llama-server.sh"]
    assert '-m "${MODEL}"' in r.files["run-llama-server.sh"]


def test_transformers_script_pins_the_planned_device_and_dtype():
    spec, _ = get_model("4b")
    hw = load_target("rtx4090")
    p = recommend(hw, models=[spec], engine="transformers", formats=["bf16"]).plan
    r = render_all(p, hw, spec=spec)["transformers"]
    text = r.files["load_transformers.py"]
    assert "dtype=torch.bfloat16" in text and "device_map={'': 0}" in text and 'cache_implementation="dynamic"' in text
    assert f"MAX_CONTEXT = {p.ctx}" in text and r.matches_plan
    cpu = load_target("cpu-32gb")
    p = recommend(cpu, models=[spec], engine="transformers", formats=["bf16"]).plan
    text = render_all(p, cpu, spec=spec)["transformers"].files["load_transformers.py"]
    assert "device_map" not in text  # CPU plans need no accelerate


def test_runtime_settings_defaults_are_not_silently_relied_on():
    # llama-server's own default with -np unset is 4 slots and a unified cache: the recipe always passes -np
    argv = llamacpp.memory_flags(_ctx(*[_case("single-gpu")[i] for i in (0, 2, 1)]))
    assert "-np" in argv and "-c" in argv and "-b" in argv and "-ub" in argv
    assert RuntimeSettings().n_batch == 2048


@pytest.mark.parametrize("cid", ["single-gpu", "two-gpu-split", "parallel-slots", "partial-offload"])
def test_llama_cpp_python_arguments_are_real_parameters(cid):
    """Llama.__init__ takes **kwargs and ignores what it does not know (that is how the server's rpc_servers
    vanishes), so every keyword the scripts pass is checked against the signature and the server's settings."""
    import inspect

    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is the [gguf] extra")
    settings = pytest.importorskip("llama_cpp.server.settings", reason="llama-cpp-python[server] is not installed")
    plan, spec, hw, recipes = _case(cid)
    params = inspect.signature(llama_cpp.Llama.__init__).parameters
    kwargs = llamacpp_python.llama_kwargs(_ctx(plan, hw, spec))
    assert set(kwargs) <= {p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY or p == "model_path"}
    served = llamacpp_python.read_serve_script(recipes["llama-cpp-python"].files["serve_llama_cpp_python.py"])
    assert set(served) - {"swa_full", "model_path"} <= set(settings.ModelSettings.model_fields)
    assert "rpc_servers" not in params  # why cluster plans get no llama-cpp-python recipe


def test_gptq_recipes_name_the_quantize_command_that_makes_their_checkpoint():
    """#11: a GPTQ plan loads ./<model>-gptq-int4; its recipes say which command produces exactly that directory,
    and that command is one gemma-plan's own parser accepts."""
    import shlex

    from planner.catalog import get_model
    from planner.cli import main
    from planner.formats import parse_format
    from planner.search import plan as make_plan
    from planner.types import RuntimeSettings

    spec, _ = get_model("gemma-3-12b")
    hw = load_target("l4")
    p = make_plan(spec, parse_format("gptq-int4", "vllm"), RuntimeSettings(engine="vllm", n_ctx=32768), hw, target="l4")
    recipes = render_all(p, hw, spec=spec)
    origin = recipes["vllm"].notes[0]
    cmd = shlex.split(origin.split("make it here with: ", 1)[1])
    assert cmd[:4] == ["gemma-plan", "quantize", "--format", "gptq"]
    assert cmd[cmd.index("--out") + 1] == "quantized" and cmd[-3:] == ["mv", "quantized/gemma-3-12b-gptq-int4-g128",
                                                                        "./gemma-3-12b-gptq-int4"]
    assert recipes["vllm"].steps[-1].argv[2] == "./gemma-3-12b-gptq-int4"
    cmd = cmd[:cmd.index("&&")]
    assert cmd[cmd.index("--bits") + 1] == "4" and cmd[cmd.index("-t") + 1] == "l4"
    parsed = main.commands["quantize"].make_context("quantize", cmd[2:])
    assert parsed.params["fmt"] == "gptq" and parsed.params["bits"] == "4" and parsed.params["ctx"] == "32768"
    assert origin in recipes["vllm"].files["run-vllm.sh"]
    assert origin in recipes["transformers"].files["load_transformers.py"]


def test_quantize_names_hub_sources_after_the_catalog_not_the_cache_snapshot(tmp_path):
    """The recipes' `mv quantized/<model>-<type>.gguf` works only if quantize names a hub or catalog source by its
    catalog name (the HF cache's snapshot directory is a commit hash)."""
    from quantize.pipeline import source_name

    snap = tmp_path / "snapshots" / "0123abcd"
    assert source_name("google/gemma-3-27b-it", snap) == "gemma-3-27b"
    assert source_name("27b", snap) == "gemma-3-27b"
    assert source_name("someone/my-gemma-finetune", snap) == "my-gemma-finetune"
    local = tmp_path / "my-dir"
    local.mkdir()
    assert source_name(str(local), local) == "my-dir"
