"""llama-cpp-python: a ``Llama(...)`` script and a server launcher, every setting passed explicitly.

llama-cpp-python 0.3.36's defaults differ from the llama.cpp CLI's (``Llama.__init__``): n_ctx 512,
n_batch 512, n_gpu_layers 0, flash attention disabled (not auto), and ``swa_full`` left at the C
default ``true``, which sizes sliding-window caches to the whole context. Its server
(``python -m llama_cpp.server``) has no ``swa_full`` setting at all and defaults ``logits_all`` to
true, so the launcher written here builds the same app with a ``Llama`` subclass that passes the plan's
``swa_full``. It cannot express parallel slots (no ``n_seq_max``), a unified KV cache or tensor
overrides; recipes whose plan needs those say so and are marked as not matching the plan.
"""

from __future__ import annotations

import ast
from typing import Optional

from planner.recipes.base import Context, Recipe, Step, comment, gib, model_origin, py_literal
from planner.recipes.llamacpp import gpu_layers

LLAMA_SPLIT_MODE_LAYER = 1  # llama_cpp.LLAMA_SPLIT_MODE_LAYER
SERVER_PORT = 8000


def ggml_type_id(name: str) -> int:
    """KV cache type name -> ggml_type id (enum ggml_type in ggml.h, planner/ggml.py's table)."""
    from planner.ggml import GGML_TYPES

    return GGML_TYPES[name.upper()][0]


def llama_kwargs(ctx: Context) -> dict:
    """The Llama(...) keyword arguments, in the order the script writes them (model_path first)."""
    s = ctx.s
    ngl, split = gpu_layers(ctx)
    return {
        "model_path": ctx.model.value,
        "n_gpu_layers": ngl,
        "split_mode": LLAMA_SPLIT_MODE_LAYER,
        "tensor_split": [float(n) for n in split] if split else None,
        "n_ctx": s.n_ctx,
        "n_batch": s.n_batch,
        "n_ubatch": s.n_ubatch,
        "flash_attn": s.flash_attn,
        "swa_full": s.swa_full,
        "type_k": ggml_type_id(s.type_k),
        "type_v": ggml_type_id(s.type_v),
        "offload_kqv": s.offload_kqv,
        "use_mmap": s.use_mmap,
        "logits_all": False,
        "verbose": False,
    }


_WHY = {
    "n_gpu_layers": "llama-cpp-python's default is 0 (CPU only)",
    "tensor_split": "the plan's layers per GPU",
    "n_ctx": "default 512",
    "n_batch": "default 512",
    "flash_attn": "default False (disabled, not auto)",
    "swa_full": "default None keeps the C default true: full-size sliding-window caches",
    "type_k": None,
    "type_v": None,
    "logits_all": "True would keep logits for every position",
}


def _kwarg_lines(kwargs: dict, ctx: Context) -> list[str]:
    lines = []
    for k, v in kwargs.items():
        if k == "model_path":
            lines.append("    model_path=str(MODEL_PATH),")
            continue
        why = _WHY.get(k, "")
        if k in ("type_k", "type_v"):
            why = f"GGML_TYPE_{(ctx.s.type_k if k == 'type_k' else ctx.s.type_v).upper()}"
        lines.append(f"    {k}={py_literal(v)}," + (f"  # {comment(why)}" if why else ""))
    return lines


def _header(ctx: Context) -> list[str]:
    return ["#!/usr/bin/env python3"] + ["# " + comment(c) for c in ctx.header() + [model_origin(ctx)]]


def _model_path_lines(ctx: Context) -> list[str]:
    """The planned file, or $MODEL; a relative path is taken from the script's own directory."""
    return [f"DEFAULT_MODEL = {py_literal(ctx.model.value)}",
            'MODEL_PATH = Path(os.environ.get("MODEL") or DEFAULT_MODEL)',
            "if not MODEL_PATH.is_absolute():",
            "    MODEL_PATH = Path(__file__).resolve().parent / MODEL_PATH"]


def load_script(ctx: Context) -> str:
    kwargs = llama_kwargs(ctx)
    lines = _header(ctx) + ["import os", "from pathlib import Path", "", "from llama_cpp import Llama", ""] + _model_path_lines(ctx) + [
        "", "llm = Llama("] + _kwarg_lines(kwargs, ctx) + [")", "",
        'reply = llm.create_chat_completion(messages=[{"role": "user", "content": "Say hello in one sentence."}], max_tokens=64)',
        'print(reply["choices"][0]["message"]["content"])', ""]
    return "\n".join(lines)


def serve_script(ctx: Context) -> str:
    kwargs = llama_kwargs(ctx)
    swa_full = kwargs.pop("swa_full")
    kwargs.pop("model_path")
    settings_lines = [f"    {k!r}: {py_literal(v)}," for k, v in kwargs.items()]
    lines = _header(ctx) + [
        "# llama-cpp-python's server has no swa_full setting; PlannedLlama passes the plan's value.",
        "import argparse",
        "import os",
        "from pathlib import Path",
        "",
        "import llama_cpp",
        "import uvicorn",
        "from llama_cpp.server.app import create_app",
        "from llama_cpp.server.settings import ModelSettings, ServerSettings",
        "",
    ] + _model_path_lines(ctx) + [
        f"SWA_FULL = {py_literal(swa_full)}",
        "SETTINGS = {",
    ] + settings_lines + [
        "}",
        "",
        "",
        "class PlannedLlama(llama_cpp.Llama):",
        "    def __init__(self, *args, **kwargs):",
        '        kwargs["swa_full"] = SWA_FULL',
        "        super().__init__(*args, **kwargs)",
        "",
        "",
        "def main() -> None:",
        '    ap = argparse.ArgumentParser(description="llama-cpp-python server with the plan\'s settings")',
        '    ap.add_argument("--host", default="127.0.0.1")',
        f'    ap.add_argument("--port", type=int, default={SERVER_PORT})',
        '    ap.add_argument("--model", default=str(MODEL_PATH), help="the GGUF file (default: the planned one)")',
        '    ap.add_argument("--verbose", action="store_true", help="print llama.cpp\'s log (buffer sizes)")',
        "    args = ap.parse_args()",
        "    llama_cpp.Llama = PlannedLlama  # llama_cpp.server.model looks the class up when it loads the model",
        "    model = ModelSettings(model=args.model, **{**SETTINGS, \"verbose\": args.verbose})",
        "    server = ServerSettings(host=args.host, port=args.port)",
        "    uvicorn.run(create_app(server_settings=server, model_settings=[model]), host=args.host, port=args.port)",
        "",
        "",
        'if __name__ == "__main__":',
        "    main()",
        "",
    ]
    return "\n".join(lines)


def recipe(ctx: Context) -> Recipe:
    s = ctx.s
    load = Step(["python3", "load_llama_cpp_python.py"], why="load the model in Python and answer one prompt")
    serve = Step(["python3", "serve_llama_cpp_python.py", "--host", "127.0.0.1", "--port", str(SERVER_PORT)],
                 why=f"OpenAI-compatible server on http://127.0.0.1:{SERVER_PORT}")
    notes, matches = [], True
    if s.n_parallel > 1:
        matches = False
        notes.append(f"llama-cpp-python serves one sequence: the plan's {s.n_parallel} slots become one sequence of "
                     f"{s.n_ctx} tokens (sliding-window caches sized for one stream); use llama-server for parallel slots")
    if s.kv_unified:
        matches = False
        notes.append("llama-cpp-python cannot set a unified KV cache; use llama-server for this plan")
    if s.experts_on_cpu:
        matches = False
        notes.append("llama-cpp-python cannot keep MoE experts on the CPU (no tensor overrides): it would try to put "
                     "them on the GPU; use llama-server for this plan")
    notes.append("every Llama(...) argument is written out: the library's defaults (n_ctx 512, n_gpu_layers 0, "
                 "flash attention off, full-size sliding-window caches) differ from llama.cpp's CLI")
    notes.append("serve_llama_cpp_python.py is `python -m llama_cpp.server` with the plan's swa_full, which the stock "
                 "server cannot set")
    notes.insert(0, model_origin(ctx))
    total = ctx.plan.memory.total_bytes
    notes.append(f"planned total {gib(total)} (llama-cpp-python also keeps an n_batch x vocab float array of logits on the host)")
    r = Recipe("llama-cpp-python", "llama-cpp-python (Python API and server)", [load, serve], notes=notes,
               requirements=["pip install 'llama-cpp-python==0.3.36' (built for your GPU backend)",
                             "the server also needs: pip install 'llama-cpp-python[server]==0.3.36'"],
               settings={"kwargs": llama_kwargs(ctx)}, matches_plan=matches,
               model_path=ctx.model.value if ctx.model.is_local else None)
    r.files["load_llama_cpp_python.py"] = load_script(ctx)
    r.files["serve_llama_cpp_python.py"] = serve_script(ctx)
    r.executable += ["load_llama_cpp_python.py", "serve_llama_cpp_python.py"]
    return r


# ---------------------------------------------------------------- reading the scripts back


def _constants(tree: ast.Module) -> dict:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                call = node.value
                # MODEL_PATH = Path('...')
                if isinstance(call, ast.Call) and call.args:
                    try:
                        out[node.targets[0].id] = ast.literal_eval(call.args[0])
                    except ValueError:
                        pass
    return out


def read_load_script(text: str) -> dict:
    """The keyword arguments of the Llama(...) call in a load script, constants resolved."""
    tree = ast.parse(text)
    consts = _constants(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Llama":
            out = {}
            for kw in node.keywords:
                if kw.arg == "model_path":
                    out["model_path"] = consts.get("DEFAULT_MODEL")
                else:
                    out[kw.arg] = ast.literal_eval(kw.value)
            return out
    raise ValueError("no Llama(...) call found")


def read_serve_script(text: str) -> dict:
    consts = _constants(ast.parse(text))
    out = dict(consts.get("SETTINGS") or {})
    out["swa_full"] = consts.get("SWA_FULL")
    out["model_path"] = consts.get("DEFAULT_MODEL")
    return out


def check(recipe: Recipe, ctx: Context) -> list[str]:
    want = llama_kwargs(ctx)
    problems = []
    for name, reader in (("load_llama_cpp_python.py", read_load_script), ("serve_llama_cpp_python.py", read_serve_script)):
        text: Optional[str] = recipe.files.get(name)
        if text is None:
            problems.append(f"{name} is missing")
            continue
        try:
            got = reader(text)
        except (SyntaxError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        for k, v in want.items():
            if k == "verbose":
                continue
            if got.get(k) != v:
                problems.append(f"{name}: {k} is {got.get(k)!r}, the plan says {v!r}")
    return problems
