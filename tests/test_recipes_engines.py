"""The MLX, LM Studio, Ollama, LiteRT-LM and transformers recipes, proven by the engines themselves.

- LM Studio, Ollama and LiteRT-LM's ``litert_lm_main`` cannot run here: every argv their scripts run
  (under ``sh``, with stub programs that record it) passes the flag table bench/engine_flags.py read
  from their source (bench/data/engine_flags/), and so do the Modelfile's PARAMETER names and the
  server environment.
- ``litert-lm`` (PyPI) and ``hf`` parse the recorded argv for real: the run fails at loading the model
  (or at the network), never at the arguments.
- MLX (``mlx[cpu]`` + ``mlx-lm`` wheels on Linux) runs ``run-mlx.sh`` unchanged for a tiny Gemma 3 and
  Gemma 4: convert, quantize, serve on 127.0.0.1, answer one request, stop; a second run skips the
  conversion; the converted weights and the KV cache are the bytes ``planner.mlx_memory`` predicts.
- transformers runs ``load_transformers.py`` unchanged on a tiny Gemma.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.engine_flags import check_argv, load_table
from planner.catalog import get_model
from planner.recipes import render_all
from planner.recipes.ollama import parse_modelfile
from planner.search import recommend
from profiles.targets import load_target

BIN = Path(sys.executable).parent
SIDE_EFFECTS = r'''
import json, os, sys
name = os.path.basename(sys.argv[0])
open(os.environ["ARGV_LOG"], "a").write(json.dumps([name] + sys.argv[1:]) + "\n")
args = sys.argv[1:]
if name == "mlx_lm.convert":  # writes the folder it is given, like the real one
    os.makedirs(args[args.index("--mlx-path") + 1])
if name == "hf" and "--local-dir" in args:  # the file the real download would write
    d = args[args.index("--local-dir") + 1]
    os.makedirs(d, exist_ok=True)
    f = args[2] if not args[2].startswith("-") else "bundle.litertlm"
    open(os.path.join(d, f), "w").close()
if name == "lms" and "--dry-run" in args and os.environ.get("LMS_ALREADY_IMPORTED"):
    sys.exit(1)  # what lms import does when the link exists
'''


def _stubs(tmp: Path, names: list[str]) -> Path:
    bindir = tmp / "stubs"
    bindir.mkdir(exist_ok=True)
    for n in names:
        f = bindir / n
        f.write_text(f"#!{sys.executable}\n{SIDE_EFFECTS}")
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    return bindir


def _run_stubbed(tmp: Path, files: dict[str, str], script: str, names: list[str], env: dict | None = None,
                 cwd: Path | None = None) -> list[list[str]]:
    out = tmp / "emit"
    out.mkdir(exist_ok=True)
    for fname, text in files.items():
        (out / fname).write_text(text)
    log = tmp / "argv.log"
    log.unlink(missing_ok=True)
    e = dict(os.environ, PATH=f"{_stubs(tmp, names)}:{os.environ['PATH']}", ARGV_LOG=str(log), **(env or {}))
    subprocess.run(["sh", "-n", str(out / script)], check=True)
    subprocess.run(["sh", str(out / script)], env=e, cwd=cwd or out, check=True, timeout=60)
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def _llama_cases():
    spec27, _ = get_model("27b")
    spec4, _ = get_model("31b")
    out = []
    hw = load_target("rtx4090")
    out.append(("single", recommend(hw, models=[spec27], formats=["Q4_K_M"], target="rtx4090").plan, hw, spec27))
    out.append(("slots", recommend(hw, models=[spec27], formats=["Q4_K_M"], parallel=4, target="rtx4090").plan, hw, spec27))
    hw3 = load_target("rtx3060-12gb")
    out.append(("partial", recommend(hw3, models=[spec4], formats=["Q4_K_M"], ctx=8192, target="rtx3060-12gb").plan, hw3, spec4))
    mac = load_target("m4-max-128gb")
    out.append(("apple", recommend(mac, models=[spec27], formats=["Q8_0"], parallel=2, target="m4-max-128gb").plan, mac, spec27))
    assert all(c[1] is not None for c in out)
    return out


CASES = _llama_cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_lmstudio_script_runs_and_every_argv_passes_lms_parser_table(tmp_path, case):
    _, plan, hw, spec = case
    r = render_all(plan, hw, spec=spec)["lmstudio"]
    table = load_table("lms")
    got = _run_stubbed(tmp_path, r.files, "run-lmstudio.sh", ["lms"])
    assert [a[0] for a in got] == ["lms"] * 4
    assert got[0][1:3] == ["import", str(tmp_path / "emit" / f"{spec.name}-{plan.weight_format}.gguf")]  # absolute: lms links it as given
    for argv in got:
        assert check_argv(table, argv) == [], argv
    load = next(a for a in got if a[1] == "load")
    assert load[load.index("--parallel") + 1] == str(plan.settings.n_parallel)
    assert load[load.index("--context-length") + 1] == str(plan.settings.n_ctx)
    assert "--symbolic-link" in got[1] and "-y" in got[1] and "--dry-run" not in got[1]
    assert got[-1][1:] == ["server", "start", "--bind", "127.0.0.1", "--port", "1234"]
    # a second run, where the link exists already: the import is skipped and the script still succeeds
    again = _run_stubbed(tmp_path, r.files, "run-lmstudio.sh", ["lms"], env={"LMS_ALREADY_IMPORTED": "1"})
    assert [a[1] for a in again] == ["import", "load", "server"]


def test_flag_tables_reject_what_the_engines_reject():
    lms, ollama, litert = load_table("lms"), load_table("ollama"), load_table("litert")
    assert check_argv(lms, ["lms", "load", "x", "--kv-cache", "q8_0"])  # no such flag in lms load
    assert check_argv(lms, ["lms", "import"])  # <file-path> is required
    assert check_argv(lms, ["lms", "load", "x", "--parallel"])  # needs a value
    assert check_argv(ollama, ["ollama", "serve", "--host", "0.0.0.0"])  # the address is OLLAMA_HOST, not a flag
    assert check_argv(litert, ["litert_lm_main", "--max_num_tokens=4096"])  # only litert_lm_advanced_main has it
    assert "num_ctx" in ollama["modelfile_parameters"] and "OLLAMA_HOST" in ollama["env"]
    assert lms["version"].startswith("0.3.43") and ollama["version"].startswith("v0.33.0-rc2")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_ollama_scripts_run_and_pass_ollama_tables(tmp_path, case):
    _, plan, hw, spec = case
    r = render_all(plan, hw, spec=spec)["ollama"]
    table = load_table("ollama")
    served = _run_stubbed(tmp_path, r.files, "run-ollama-serve.sh", ["ollama"])
    ran = _run_stubbed(tmp_path, r.files, "run-ollama.sh", ["ollama"])
    assert served == [["ollama", "serve"]] and [a[1] for a in ran] == ["create", "run"]
    for argv in served + ran:
        assert check_argv(table, argv) == [], argv
    params = parse_modelfile(r.files["Modelfile"])
    assert {k for k, _ in params} - {"model", "template"} <= set(table["modelfile_parameters"])
    env = r.steps[0].env
    assert set(env) <= set(table["env"]) and env["OLLAMA_HOST"] == "127.0.0.1:11434"
    assert "export OLLAMA_HOST=127.0.0.1:11434" in r.files["run-ollama-serve.sh"]
    assert "export OLLAMA_HOST=127.0.0.1:11434" in r.files["run-ollama.sh"]  # the client talks to that server
    assert "gemma-plan quantize" in r.files["Modelfile"]  # says where the placeholder GGUF comes from


def _phone_recipes():
    out = []
    for target, model in (("pixel-9", "1b"), ("pixel-9", "e2b"), ("galaxy-s24", "270m")):
        hw = load_target(target)
        spec, _ = get_model(model)
        plan = recommend(hw, models=[spec], ctx=4096, target=target).plan
        assert plan is not None, (target, model)
        out.append((f"{target}-{model}", render_all(plan, hw, spec=spec)["litert"]))
    return out


@pytest.mark.parametrize("case", _phone_recipes(), ids=lambda c: c[0] if isinstance(c, tuple) else "")
def test_litert_scripts_push_the_file_they_downloaded(tmp_path, case):
    _, r = case
    table = load_table("litert")
    checkout = tmp_path / "LiteRT-LM"  # run-litert-android.sh runs from the checkout
    checkout.mkdir()
    got = _run_stubbed(tmp_path, r.files, "run-litert-android.sh", ["hf", "adb"], cwd=checkout)
    local_dir = r.settings["local_dir"]
    downloaded = list((checkout / local_dir).glob("*.litertlm"))
    assert len(downloaded) == 1
    push = next(a for a in got if a[:2] == ["adb", "push"] and a[-1] == r.settings["remote_model"])
    assert push[2] == f"{local_dir}/{downloaded[0].name}"  # the file that exists, not a made-up name
    remote = shlex.split(got[-1][2])
    assert remote[0] == "env" and check_argv(table, remote[2:]) == []
    assert f"--model_path={r.settings['remote_model']}" in remote
    desk = _run_stubbed(tmp_path, r.files, "run-litert-desktop.sh", ["hf", "litert-lm"])
    assert desk[-1][:3] == ["litert-lm", "run", f"{local_dir}/{downloaded[0].name}"]


def test_litert_android_script_stops_when_the_download_is_ambiguous(tmp_path):
    hw, (spec, _) = load_target("pixel-9"), get_model("gemma-3n-e2b")  # a bundle without a recorded file name
    r = render_all(recommend(hw, models=[spec], ctx=4096, target="pixel-9").plan, hw, spec=spec)["litert"]
    assert "set -- ./litert-gemma-3n-e2b/*.litertlm" in r.files["run-litert-android.sh"].splitlines()
    checkout = tmp_path / "co"
    (checkout / r.settings["local_dir"]).mkdir(parents=True)
    for n in ("a.litertlm", "b.litertlm"):
        (checkout / r.settings["local_dir"] / n).write_text("")
    (tmp_path / "emit").mkdir()
    (tmp_path / "emit" / "s.sh").write_text(r.files["run-litert-android.sh"])
    bindir = _stubs(tmp_path, ["hf", "adb"])
    res = subprocess.run(["sh", str(tmp_path / "emit" / "s.sh")], cwd=checkout, capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", ARGV_LOG=str(tmp_path / "log")))
    assert res.returncode == 1 and "expected one .litertlm file" in res.stderr
    assert not any(json.loads(x)[0] == "adb" for x in (tmp_path / "log").read_text().splitlines())


def _parse_only(argv: list[str], env: dict, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run a real CLI in a scratch directory: whatever it creates (hf's --local-dir lock) stays there."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **env),
                          stdin=subprocess.DEVNULL, cwd=cwd)


def test_litert_lm_and_hf_parse_the_recorded_argv(tmp_path):
    exe = shutil.which("litert-lm", path=str(BIN)) or shutil.which("litert-lm")
    if exe is None:
        pytest.skip("litert-lm is not installed (pip install -e '.[engines]')")
    _, r = _phone_recipes()[0]
    desk = _run_stubbed(tmp_path, r.files, "run-litert-desktop.sh", ["hf", "litert-lm"])
    bundle = tmp_path / "emit" / desk[-1][2]
    bundle.write_bytes(b"not a model")
    argv = [exe] + desk[-1][1:2] + [str(bundle)] + desk[-1][3:]
    res = _parse_only(argv, {"HOME": str(tmp_path)}, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 2 and "No such option" not in out and "Usage:" not in out, out  # click: 2 = usage error
    assert f"Failed to create LiteRT-LM engine for {bundle}" in out  # parsed, and got as far as loading the fake bundle
    hf = shutil.which("hf", path=str(BIN)) or shutil.which("hf")
    res = _parse_only([hf] + desk[0][1:], {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 2 and "No such option" not in out and "offline mode is enabled" in out, out  # fails offline


def test_mlx_script_runs_twice_under_stubs_converting_once(tmp_path):
    _, plan, hw, spec = CASES[3]
    r = render_all(plan, hw, spec=spec)["mlx"]
    env = {"MLX_MODEL": str(tmp_path / "conv"), "PORT": "18080"}
    first = _run_stubbed(tmp_path, r.files, "run-mlx.sh", ["mlx_lm.convert", "mlx_lm.server", "sudo"], env=env)
    assert [a[0] for a in first] == ["mlx_lm.convert", "mlx_lm.server"]
    conv, serve = first
    assert conv[conv.index("--q-bits") + 1] == "8" and conv[conv.index("--q-group-size") + 1] == "64"
    assert serve[serve.index("--model") + 1] == env["MLX_MODEL"] and serve[serve.index("--host") + 1] == "127.0.0.1"
    assert serve[serve.index("--port") + 1] == "18080" and "--max-kv-size" not in serve
    assert serve[serve.index("--decode-concurrency") + 1] == "2"
    assert int(serve[serve.index("--prompt-cache-bytes") + 1]) == r.settings["memory"]["kv_bytes"]
    assert (tmp_path / "conv").is_dir() and not list(tmp_path.glob("conv.partial.*"))
    second = _run_stubbed(tmp_path, r.files, "run-mlx.sh", ["mlx_lm.convert", "mlx_lm.server", "sudo"], env=env)
    assert [a[0] for a in second] == ["mlx_lm.server"]


def test_mlx_script_downloads_the_published_conversion_once(tmp_path):
    """A catalog model with a published MLX conversion at the plan's bits: run-mlx.sh downloads the catalogue's
    repository into its folder (once) instead of converting, and the real hf CLI parses that download line."""
    mac, (spec, _) = load_target("m4-max-128gb"), get_model("gemma-3-27b")
    plan = recommend(mac, models=[spec], formats=["Q4_K_M"], target="m4-max-128gb").plan
    r = render_all(plan, mac, spec=spec)["mlx"]
    env = {"MLX_MODEL": str(tmp_path / "conv"), "PORT": "18080"}
    names = ["hf", "mlx_lm.convert", "mlx_lm.server", "sudo"]
    first = _run_stubbed(tmp_path, r.files, "run-mlx.sh", names, env=env)
    assert [a[0] for a in first] == ["hf", "mlx_lm.server"]
    dl, serve = first
    assert dl[1:4] == ["download", "mlx-community/gemma-3-text-27b-it-4bit", "--local-dir"] and ".partial." in dl[4]
    assert serve[serve.index("--model") + 1] == env["MLX_MODEL"] and (tmp_path / "conv").is_dir()
    assert [a[0] for a in _run_stubbed(tmp_path, r.files, "run-mlx.sh", names, env=env)] == ["mlx_lm.server"]
    hf = shutil.which("hf", path=str(BIN)) or shutil.which("hf")
    if hf:
        res = _parse_only([hf] + dl[1:4] + [str(tmp_path / "dl")], {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, tmp_path)
        out = res.stdout + res.stderr
        assert res.returncode != 2 and "No such option" not in out and "offline mode is enabled" in out, out


# ---------------------------------------------------------------- real engines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _http(url: str, body: dict | None = None, timeout: float = 60) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _serve_once(script: Path, env: dict, port: int, log: Path, timeout: float = 300) -> dict:
    """Start the script, wait for /health, send one chat completion, stop the server (always)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(["sh", str(script)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"run-mlx.sh exited {proc.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    assert _http(f"http://127.0.0.1:{port}/health", timeout=5) == {"status": "ok"}
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"no server after {timeout}s:\n{log.read_text()[-3000:]}")
                    time.sleep(0.5)
            return _http(f"http://127.0.0.1:{port}/v1/chat/completions",
                         {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0})
        finally:
            _stop(proc)


# Text-only checkpoints: mlx-lm's multimodal gemma3/gemma4 wrappers assume the real vocabulary (262208 /
# 262144 tokens) unless config.json says otherwise at the top level, which the tiny ones do not. Gemma 3 is
# laid out as Gemma 3 1B (one full-attention layer in 6: mlx-lm reads sliding_window_pattern, default 6).
MLX_FAMILIES = {"gemma3_text": {"num_hidden_layers": 6, "swa_period": 6}, "gemma4_text": {}}


@pytest.mark.slow
@pytest.mark.parametrize("family", MLX_FAMILIES)
def test_mlx_script_serves_a_tiny_gemma_and_memory_matches(tiny_model, tmp_path, family):
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (pip install -e '.[engines]')")
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.models.cache import make_prompt_cache

    from planner.mlx_memory import mlx_kv_bytes, mlx_weight_bytes
    from planner.sources import load_model

    src = tmp_path / "hf"
    shutil.copytree(tiny_model(family, dtype="bfloat16", **MLX_FAMILIES[family]), src)
    # config.json as Google publishes Gemma 4 (global_head_dim, num_global_key_value_heads), which mlx-lm
    # 0.32 reads: transformers 5.24's save_pretrained writes per_layer_config instead
    cfg = json.loads((src / "config.json").read_text())
    for over in cfg.pop("per_layer_config", {}).values():
        cfg["global_head_dim"] = over.get("head_dim", cfg["head_dim"])
        cfg["num_global_key_value_heads"] = over.get("num_key_value_heads", cfg["num_key_value_heads"])
    (src / "config.json").write_text(json.dumps(cfg))
    spec, _ = load_model(str(src))
    hw = load_target("m4-max-128gb")
    plan = recommend(hw, models=[spec], formats=["Q4_K_M"], ctx=512, target="m4-max-128gb").plan
    r = render_all(plan, hw, model_ref=str(src), spec=spec)["mlx"]
    (tmp_path / "run-mlx.sh").write_text(r.files["run-mlx.sh"])
    port = _free_port()
    conv = tmp_path / "converted"
    env = dict(os.environ, MLX_MODEL=str(conv), PORT=str(port), PATH=f"{BIN}:{os.environ['PATH']}")
    reply = _serve_once(tmp_path / "run-mlx.sh", env, port, tmp_path / "first.log")
    assert reply["choices"][0]["message"]["role"] == "assistant" and reply["usage"]["completion_tokens"] >= 1
    assert "Quantiz" in (tmp_path / "first.log").read_text()  # mlx_lm.convert ran
    cfg = json.loads((conv / "config.json").read_text())
    assert cfg["quantization"]["bits"] == 4 and cfg["quantization"]["group_size"] == 64
    # the second run serves the converted folder without converting again (convert refuses an existing path)
    mtime = (conv / "config.json").stat().st_mtime_ns
    reply = _serve_once(tmp_path / "run-mlx.sh", env, port, tmp_path / "second.log")
    assert reply["choices"] and (conv / "config.json").stat().st_mtime_ns == mtime
    assert "Quantiz" not in (tmp_path / "second.log").read_text()

    # bytes: what mlx holds for the weights and for one sequence at the plan's context
    model, _ = load(str(conv))
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    assert weights == mlx_weight_bytes(spec, 4, 64).total_bytes == r.settings["memory"]["weights_bytes"]
    tokens = plan.settings.n_ctx
    cache = make_prompt_cache(model)
    prompt = mx.array([[5 + i % 200 for i in range(tokens - 8)]])
    mx.eval(model(prompt, cache=cache))
    for _ in range(8):
        mx.eval(model(mx.array([[7]]), cache=cache))
    kv = sum(c.nbytes for c in cache)
    assert kv == mlx_kv_bytes(spec, tokens, 1) == r.settings["memory"]["kv_bytes"]


@pytest.mark.slow
def test_transformers_script_runs_unchanged_on_a_tiny_gemma(tiny_model, tmp_path):
    from planner.sources import load_model

    src = tiny_model("gemma3_text")
    spec, _ = load_model(str(src))
    hw = load_target("cpu-16gb")
    plan = recommend(hw, models=[spec], engine="transformers", formats=["bf16"], ctx=1024).plan
    r = render_all(plan, hw, model_ref=str(src), spec=spec)["transformers"]
    (tmp_path / "load_transformers.py").write_text(r.files["load_transformers.py"])
    res = subprocess.run([sys.executable, str(tmp_path / "load_transformers.py")], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"model: the Hugging Face checkpoint in {src}" in r.files["load_transformers.py"]
