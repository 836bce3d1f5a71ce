"""The emitted llama.cpp recipes, run unchanged by the engines themselves on a tiny quantized Gemma.

llama-server, llama-cli and ggml-rpc-server are the programs `python -m quantize.llama_bins` builds from
the llama.cpp vendored in the pinned llama-cpp-python (CI builds them first; here the tests skip, with
that command as the reason, when they are absent). Only the environment differs from what a user runs:
PATH finds the programs, PORT is a free port and LLAMA_ARG_LOG_VERBOSITY=4 makes llama.cpp log its buffer
sizes; every server binds 127.0.0.1 and is stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from planner.formats import parse_format
from planner.recipes import document, render_all
from planner.recipes.emit import plan_files, write_files
from planner.search import plan as make_plan
from planner.sources import load_model
from planner.types import RuntimeSettings
from profiles.hardware import CPU, Device, Hardware, Host

pytestmark = pytest.mark.slow
MiB = 1 << 20
LOG_ROUNDING = MiB // 100  # llama.cpp prints MiB with two decimals
BUILD_FLAGS = ["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"]  # what quantize.llama_bins compiles for (not -march=native)


@pytest.fixture(scope="session")
def llama_bin_dir() -> Path:
    from quantize.llama_bins import bin_dir

    d = bin_dir()
    if d is None:
        if os.environ.get("GEMMA_PLAN_REQUIRE_LLAMA_BINS"):
            pytest.fail("llama.cpp programs missing although GEMMA_PLAN_REQUIRE_LLAMA_BINS is set: run `python -m quantize.llama_bins`")
        pytest.skip("llama-server/llama-cli/ggml-rpc-server not built: run `python -m quantize.llama_bins` (CI does)")
    return d


@pytest.fixture(scope="session")
def tiny_q8(tiny_gguf, llama_cpp_module, tmp_path_factory) -> Path:
    """A tiny Gemma 3 quantized to Q8_0 by the quantize stage (llama.cpp's own quantizer)."""
    from quantize.llamacpp import quantize_gguf

    out = tmp_path_factory.mktemp("q8") / "tiny-gemma3-Q8_0.gguf"
    return quantize_gguf(tiny_gguf("gemma3_text", outtype="f16"), out, "Q8_0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _env(bins: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "PORT", "BIND_ADDRESS", "RPC_SERVERS")}
    env["PATH"] = f"{bins}{os.pathsep}{env.get('PATH', '')}"
    env["LLAMA_ARG_LOG_VERBOSITY"] = "4"  # llama.cpp's own variable for -lv: level 4 shows the buffer sizes it allocates
    env.update(extra)
    return env


def _emit(tmp: Path, plan, hw, model: Path, spec) -> dict:
    recipes = render_all(plan, hw, model_ref=str(model), spec=spec)
    from planner.recipes import context_for

    write_files(plan_files(tmp, document(plan, hw, recipes, context_for(plan, hw, str(model), spec)), recipes))
    return recipes


def _start(argv: list[str], log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _http(method: str, url: str, body=None, timeout: float = 5.0):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (127.0.0.1)
        return r.status, json.loads(r.read().decode())


def _wait_health(proc: subprocess.Popen, port: int, log: Path, path: str = "/health", timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the server exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}"
        try:
            status, _ = _http("GET", f"http://127.0.0.1:{port}{path}", timeout=2)
            if status == 200:
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        assert time.monotonic() < deadline, f"no answer on {port}{path}: {log.read_text(errors='replace')[-2000:]}"
        time.sleep(0.3)


def _chat(port: int) -> dict:
    status, reply = _http("POST", f"http://127.0.0.1:{port}/v1/chat/completions",
                          {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0},
                          timeout=120)
    assert status == 200 and reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["usage"]["completion_tokens"] >= 1
    return reply


def _logged(log: Path, model: Path):
    """llama.cpp's own log lines: model bytes per buffer, KV bytes per buffer (as logged, 0.01 MiB), the exact
    KV total (cells x row bytes from the GGUF's widths), compute bytes per buffer, the parsed log."""
    from quantize.llamacpp import exact_kv_bytes, kv_layout_from_gguf, parse_llama_log

    parsed = parse_llama_log(log.read_text(errors="replace"))
    layout = kv_layout_from_gguf(model)
    exact = [exact_kv_bytes(c, layout, False) for c in parsed.kv_caches]
    assert parsed.kv_caches and None not in exact, "the log has no KV cache lines"
    return parsed.by_kind("model"), parsed.by_kind("KV"), sum(exact), parsed.by_kind("compute"), parsed


def _tiny_plan(model: Path, hw: Hardware, fmt: str = "Q8_0", **settings):
    spec, _ = load_model(str(model))
    s = RuntimeSettings(**{"n_ctx": 1024, "n_batch": 512, "n_ubatch": 512, **settings})
    return make_plan(spec, parse_format(fmt, "llama.cpp"), s, hw, target=hw.name, with_speed=False), spec


def _cpu_host() -> Hardware:
    return Hardware("this-cpu", [], 8 << 30, CPU(flags=BUILD_FLAGS))


def test_llama_server_recipe_runs_and_allocates_the_plan(llama_bin_dir, tiny_q8, tmp_path):
    hw = _cpu_host()
    plan, spec = _tiny_plan(tiny_q8, hw, n_parallel=2)
    _emit(tmp_path, plan, hw, tiny_q8, spec)
    script = tmp_path / "run-llama-server.sh"
    port = _free_port()
    log = tmp_path / "server.log"
    proc = _start(["sh", str(script)], log, _env(llama_bin_dir, PORT=str(port)), tmp_path)
    try:
        _wait_health(proc, port, log)
        _chat(port)
    finally:
        _stop(proc)
    text = log.read_text(errors="replace")
    assert f"127.0.0.1:{port}" in text and "0.0.0.0" not in text
    weights, _, kv_exact, compute, parsed = _logged(log, tiny_q8)
    cpu = next(d for d in plan.memory.devices if d.device == "CPU")
    assert kv_exact == plan.memory.kv_bytes  # exact: cells x row bytes
    assert parsed.context.get("n_seq_max") == "2" and parsed.context.get("n_ctx") == str(plan.ctx)
    assert abs(sum(weights.values()) - cpu.weights_bytes) <= len(weights) * LOG_ROUNDING
    assert abs(sum(compute.values()) - plan.memory.compute_bytes) <= 0.10 * plan.memory.compute_bytes


def test_llama_cli_recipe_answers_one_prompt(llama_bin_dir, tiny_q8, tmp_path):
    hw = _cpu_host()
    plan, spec = _tiny_plan(tiny_q8, hw)
    _emit(tmp_path, plan, hw, tiny_q8, spec)
    r = subprocess.run(["sh", str(tmp_path / "run-llama-cli.sh"), "-p", "Say hello.", "-n", "8", "-st"],
                       env=_env(llama_bin_dir), cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    log = tmp_path / "cli.log"
    log.write_text(r.stdout + r.stderr)
    _, _, kv_exact, _, _ = _logged(log, tiny_q8)
    assert kv_exact == plan.memory.kv_bytes


def _two_hosts(gpu_bytes: int) -> Hardware:
    """A worker host whose accelerator is reached over RPC (here: ggml-rpc-server's CPU device) and a main host
    with no accelerator: the plan splits the layers between them."""
    gpu = Device(name="worker-accel", vendor="nvidia", backend="CUDA", memory_bytes=gpu_bytes, total_bytes=gpu_bytes)
    hosts = [Host("worker", [gpu], 8 << 30), Host("main", [], 8 << 30)]
    return Hardware("two-hosts", [gpu], 16 << 30, CPU(flags=BUILD_FLAGS), kind="cluster", hosts=hosts)


def test_two_host_plan_splits_across_rpc_as_planned(llama_bin_dir, tiny_q8, tmp_path):
    spec, _ = load_model(str(tiny_q8))
    hw = _two_hosts(4 << 30)
    plan, spec = _tiny_plan(tiny_q8, hw, n_gpu_layers=spec.n_layers - 1)  # the output layer and all but two layers remote
    recipes = _emit(tmp_path, plan, hw, tiny_q8, spec)
    assert "llama-cpp-python" not in recipes  # it has no RPC: it could not reach the worker
    server_sh = (tmp_path / "run-llama-server.sh").read_text()
    assert '--rpc "${RPC_SERVERS}"' in server_sh
    rpc_port, port = _free_port(), _free_port()
    rpc_log, log = tmp_path / "rpc.log", tmp_path / "server.log"
    rpc = _start(["sh", str(tmp_path / "run-rpc-server.sh")], rpc_log, _env(llama_bin_dir, PORT=str(rpc_port)), tmp_path)
    proc = None
    try:
        deadline = time.monotonic() + 60
        while not _listening(rpc_port):  # its own output is block-buffered in a file
            assert rpc.poll() is None and time.monotonic() < deadline, rpc_log.read_text(errors="replace")
            time.sleep(0.2)
        proc = _start(["sh", str(tmp_path / "run-llama-server.sh")], log,
                      _env(llama_bin_dir, PORT=str(port), RPC_SERVERS=f"127.0.0.1:{rpc_port}"), tmp_path)
        _wait_health(proc, port, log)
        _chat(port)
    finally:
        if proc is not None:
            _stop(proc)
        _stop(rpc)
    weights, kv, kv_exact, _, parsed = _logged(log, tiny_q8)
    remote = f"RPC0[127.0.0.1:{rpc_port}]"
    dev = next(d for d in plan.memory.devices if d.device != "CPU")
    cpu = next(d for d in plan.memory.devices if d.device == "CPU")
    assert dev.layers == spec.n_layers - 2 and cpu.kv_bytes > 0  # a real split: both hosts hold layers
    assert kv_exact == plan.memory.kv_bytes
    n = len(parsed.kv_caches)
    assert abs(kv[remote] - dev.kv_bytes) <= n * LOG_ROUNDING and abs(kv["CPU"] - cpu.kv_bytes) <= n * LOG_ROUNDING
    assert abs(weights[remote] - dev.weights_bytes) <= LOG_ROUNDING
    local = sum(b for k, b in weights.items() if k != remote)
    assert abs(local - cpu.weights_bytes) <= len(weights) * LOG_ROUNDING


def test_llama_cpp_python_scripts_run_unchanged(tiny_gguf, llama_cpp_module, tmp_path):
    """F16 weights: a llama-cpp-python built with -march=native on an AMX CPU takes ggml's AMX path for
    quantized matmuls, and that died with SIGILL (`tilezero`) in this script's Q8_0 generation on the
    virtual machine these tests were written on; F16 matmuls never take it."""
    pytest.importorskip("uvicorn", reason="the server script needs llama-cpp-python[server]")
    model = tiny_gguf("gemma3_text", outtype="f16")
    hw = _cpu_host()
    plan, spec = _tiny_plan(model, hw, fmt="F16")
    _emit(tmp_path, plan, hw, model, spec)
    env = _env(Path(sys.executable).parent)
    r = subprocess.run([sys.executable, str(tmp_path / "load_llama_cpp_python.py")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, stdin=subprocess.DEVNULL, env=env)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-2000:]
    port = _free_port()
    log = tmp_path / "lcp.log"
    proc = _start([sys.executable, str(tmp_path / "serve_llama_cpp_python.py"), "--port", str(port)], log, env, tmp_path)
    try:
        _wait_health(proc, port, log, path="/v1/models")
        _chat(port)
    finally:
        _stop(proc)
    assert f"127.0.0.1:{port}" in log.read_text(errors="replace")


LLAMA_PLANS = [("27b", "rtx4090", None, {}), ("31b", "rtx4090", ["Q8_0"], {}), ("26b", "rtx4070", ["Q4_K_M"], {}),
               ("27b", "2x-rtx3090", None, {"ctx": 131072}), ("gemma-3-12b", "rtx4090", None, {"parallel": 4, "kv_types": [("q8_0", "q8_0")]}),
               ("4b", "m4-pro-48gb", None, {}), ("1b", "pixel-9", None, {})]


@pytest.mark.parametrize("model,target,formats,kw", LLAMA_PLANS, ids=[f"{m}-{t}" for m, t, _, _ in LLAMA_PLANS])
def test_every_rendered_flag_passes_the_programs_own_parser(llama_bin_dir, model, target, formats, kw):
    """`PROGRAM ARGV... --help` parses every argument first (common_params_parse) and fails on any it does not
    take; --help then exits 0 without loading anything."""
    import dataclasses

    from planner.catalog import get_model
    from planner.search import recommend
    from profiles.targets import load_target

    spec, _ = get_model(model)
    hw = load_target(target)
    plan = recommend(hw, models=[spec], formats=formats, target=target, **kw).plan
    variants = [plan, dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, use_mmap=False, kv_unified=True,
                                                                            offload_kqv=False, swa_full=True))]
    for p in variants:
        recipes = render_all(p, hw, spec=spec)
        for name in ("llama-server", "llama-cli"):
            argv = [str(a) for a in recipes[name].steps[0].argv]
            r = subprocess.run([str(llama_bin_dir / argv[0]), *argv[1:], "--help"], capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            assert r.returncode == 0, f"{name}: {r.stderr[-600:]}"


def test_the_flags_this_llama_cpp_refuses_are_not_rendered(llama_bin_dir):
    """What the recipes used to render, refused by the parser itself: the reason for --load-mode and for
    keeping --kv-unified off llama-cli."""
    for argv in (["llama-server", "--no-mmap"], ["llama-cli", "--kv-unified"], ["llama-cli", "--host", "127.0.0.1"]):
        r = subprocess.run([str(llama_bin_dir / argv[0]), *argv[1:], "--help"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert r.returncode != 0, argv
    assert not (llama_bin_dir / "rpc-server").exists()  # the RPC tool is ggml-rpc-server in this llama.cpp
