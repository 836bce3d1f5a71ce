"""``gemma-plan validate --run``: the half of validation that runs the engine.

GGUF recipes only, and only what ``planner.validate`` regenerated from the plan (it refuses to start anything
when the folder or recipe.json differs): loads the model with llama-cpp-python through
``quantize.llamacpp.load_and_measure`` with the regenerated settings and compares what llama.cpp allocated
with the plan; then starts the regenerated llama-cpp-python server on 127.0.0.1, waits for it, sends one chat
completion through the OpenAI-compatible API, checks the reply and the KV buffer the server logged (parsed by
``quantize.llamacpp.parse_llama_log``), and stops the server (its whole process group) within a bounded time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from planner.errors import BackendUnavailableError
from planner.types import Plan
from planner.validate import FAIL, INFO, OK, SKIP, WARN, RecipeFileError, Validation
from planner.validate import validate as _static_validate
from profiles.units import MiB

SERVER_DEPS = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def validate(path, **kwargs) -> Validation:
    """planner.validate.validate with the measuring half: ``run=True`` loads and serves the model."""
    return _static_validate(path, runner=run_recipe, **kwargs)


def _load_kwargs(plan: Plan, recipes: dict) -> dict:
    """load_and_measure arguments from the regenerated llama-server command (what a user would run)."""
    from planner.recipes.llamacpp import parse_argv

    server = recipes.get("llama-server")
    if server and server.steps:
        got = parse_argv([str(a) for a in server.steps[0].argv])
    else:
        s = plan.settings
        got = dataclasses.asdict(s) | {"n_gpu_layers": s.n_gpu_layers}
    return dict(n_ctx=got["n_ctx"], n_batch=got["n_batch"], n_ubatch=got["n_ubatch"], n_seq_max=got["n_parallel"],
                flash_attn=got["flash_attn"], type_k=got["type_k"], type_v=got["type_v"], swa_full=got["swa_full"],
                n_gpu_layers=got["n_gpu_layers"], kv_unified=got["kv_unified"], use_mmap=got["use_mmap"],
                offload_kqv=got["offload_kqv"])


def _llamacpp():
    try:
        from quantize import llamacpp

        llamacpp.llama_cpp_module()
    except ImportError as exc:
        raise BackendUnavailableError(f"validate --run needs llama-cpp-python ({exc.name or exc} is missing)",
                                      hint="install the [gguf] extra: pip install 'gemma-plan[gguf]'") from None
    return llamacpp


def run_recipe(v: Validation, recipes: dict, plan: Plan, ref, model_path: Optional[Path], spec, *, serve: bool, timeout: float,
               rpath: Path) -> None:
    """Load and serve with what ``regenerate`` rendered (the caller has checked the folder holds the same)."""
    if plan.engine != "llama.cpp" or ref.kind not in ("gguf-file", "placeholder-gguf"):
        raise RecipeFileError("--run loads GGUF recipes only; this recipe is for "
                              f"{plan.engine} ({plan.weight_format})", hint="drop --run, or validate a recipe for a local .gguf file")
    if model_path is None or not model_path.is_file():
        raise RecipeFileError(f"--run needs the model file, and {model_path} is not there",
                              hint="produce it with `gemma-plan quantize` or point the recipe at your copy")
    lc = _llamacpp()
    kwargs = _load_kwargs(plan, recipes)
    m = lc.load_and_measure(model_path, **kwargs)
    kv_plan = plan.memory.kv_bytes
    measured = {"library": m.library, "settings": kwargs, "n_ctx": m.n_ctx, "kv_bytes": m.kv_bytes, "kv_bytes_planned": kv_plan,
                "model_bytes": m.model_size, "model_bytes_planned": plan.weight_file_bytes,
                "compute_bytes": sum(m.compute_buffers.values()), "compute_bytes_planned": plan.memory.compute_bytes,
                "model_buffers": m.model_buffers, "kv_buffers": m.kv_buffers, "compute_buffers": m.compute_buffers,
                "generated_tokens": len(m.generated_tokens), "seconds": round(m.seconds, 2)}
    v.measured = measured
    if m.kv_bytes == kv_plan:
        v.add("run: KV cache", OK, f"{m.kv_bytes / MiB:.2f} MiB, exactly as planned ({m.library})")
    elif kv_plan and abs(m.kv_bytes - kv_plan) <= kv_plan * 0.01:
        v.add("run: KV cache", WARN, f"{m.kv_bytes / MiB:.2f} MiB measured, {kv_plan / MiB:.2f} MiB planned (within 1%)")
    else:
        v.add("run: KV cache", FAIL, f"{m.kv_bytes / MiB:.2f} MiB measured, {kv_plan / MiB:.2f} MiB planned")
    wp = plan.weight_file_bytes
    if wp and abs(m.model_size - wp) <= wp * 0.01:
        v.add("run: weights", OK, f"{m.model_size / MiB:.2f} MiB of tensors, {wp / MiB:.2f} MiB planned")
    else:
        v.add("run: weights", FAIL if wp else INFO, f"{m.model_size / MiB:.2f} MiB of tensors, {wp / MiB:.2f} MiB planned")
    v.add("run: compute", INFO, f"{measured['compute_bytes'] / MiB:.2f} MiB of compute buffers on this machine, "
                                f"{plan.memory.compute_bytes / MiB:.2f} MiB planned on {plan.target}")
    v.add("run: generate", OK if m.generated_tokens else FAIL, f"{len(m.generated_tokens)} tokens in {m.seconds:.1f} s")
    if not serve:
        v.add("run: server", SKIP, "--no-serve")
        return
    missing = [d for d in SERVER_DEPS if not _importable(d)]
    if missing:
        v.add("run: server", SKIP, f"llama-cpp-python's server needs {', '.join(missing)}: pip install 'llama-cpp-python[server]'")
        return
    lcp = recipes.get("llama-cpp-python")
    script = lcp.files.get("serve_llama_cpp_python.py") if lcp else None
    if not script:
        v.add("run: server", SKIP, "the plan has no llama-cpp-python server launcher")
        return
    v.served = serve_once(script, model_path, timeout=timeout)
    s = v.served
    if s.get("error"):
        v.add("run: server", FAIL, s["error"])
        return
    v.add("run: server", OK, f"answered {s['completion_tokens']} token(s) in {s['seconds']:.1f} s: {s['reply'][:60]!r}; stopped")
    if s.get("kv_bytes") is not None:
        if plan.settings.n_parallel == 1:
            same = s["kv_bytes"] == kv_plan
            v.add("run: server KV", OK if same else FAIL,
                  f"{s['kv_bytes'] / MiB:.2f} MiB logged by the server, {kv_plan / MiB:.2f} MiB planned")
        else:
            v.add("run: server KV", INFO, f"{s['kv_bytes'] / MiB:.2f} MiB for one sequence (llama-cpp-python has no parallel slots)")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: Optional[dict] = None, timeout: float = 5.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (127.0.0.1 only)
        return json.loads(resp.read().decode("utf-8"))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 10 s: nothing is left running."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def serve_once(script_text: str, model_path: Path, *, timeout: float = 180.0,
               prompt: str = "Say hello.", max_tokens: int = 8) -> dict:
    """Start the launcher on a free 127.0.0.1 port, wait for /v1/models, send one chat completion, stop it.

    Returns {"reply", "completion_tokens", "seconds", "port", "kv_bytes" (parsed from its log)} or {"error": ...}.
    """
    t0 = time.monotonic()
    port = _free_port()
    base = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryDirectory(prefix="gemma-plan-serve-") as tmp:
        script = Path(tmp) / "serve_llama_cpp_python.py"
        script.write_text(script_text, encoding="utf-8")
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port), "--verbose",
                                     "--model", str(model_path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=tmp, start_new_session=True)
        out: dict = {"port": port}
        try:
            deadline = t0 + timeout
            while True:
                if proc.poll() is not None:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                    out["error"] = f"the server exited with code {proc.returncode}: {' | '.join(tail)}"
                    return out
                try:
                    _http("GET", f"{base}/models", timeout=2)
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                    if time.monotonic() > deadline:
                        out["error"] = f"the server did not answer on port {port} within {timeout:.0f} s"
                        return out
                    time.sleep(0.5)
            remaining = max(5.0, deadline - time.monotonic())
            try:
                reply = _http("POST", f"{base}/chat/completions", {
                    "model": "planned", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                    "temperature": 0.0}, timeout=remaining)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError) as exc:
                out["error"] = f"the chat completion failed: {exc}"
                return out
            choices = reply.get("choices") or []
            usage = reply.get("usage") or {}
            if not choices or "message" not in choices[0]:
                out["error"] = f"the reply has no message: {json.dumps(reply)[:200]}"
                return out
            out["reply"] = choices[0]["message"].get("content") or ""
            out["finish_reason"] = choices[0].get("finish_reason")
            out["completion_tokens"] = int(usage.get("completion_tokens", 0))
            if out["completion_tokens"] < 1:
                out["error"] = "the server answered with no tokens"
        finally:
            _stop(proc)
            out["seconds"] = time.monotonic() - t0
            out["kv_bytes"] = _kv_from_log(log_path, model_path)
    return out


def _kv_from_log(path: Path, model_path: Path) -> Optional[int]:
    """KV bytes the server's llama.cpp logged, made exact from the GGUF's widths (the log rounds to 0.01 MiB)."""
    try:
        from quantize.llamacpp import exact_kv_bytes, kv_layout_from_gguf, parse_llama_log  # noqa: I001

        parsed = parse_llama_log(path.read_text(errors="replace"))
        layout = kv_layout_from_gguf(model_path)
    except (ImportError, OSError, KeyError, ValueError):
        return None
    if not parsed.kv_caches:
        return None
    for c in parsed.kv_caches:
        if layout is not None:
            c.exact_bytes = exact_kv_bytes(c, layout, False)
            if c.exact_bytes is None:
                c.exact_bytes = exact_kv_bytes(c, layout, True)
    return sum(c.bytes for c in parsed.kv_caches)
