"""Ollama: a Modelfile, ``ollama create``/``ollama run``, and the server environment.

Ollama (llama-server era, ``llm/llama_server.go``) starts llama-server with ``-c num_ctx*num_parallel
-np num_parallel``, ``-b/-ub num_batch``, ``--flash-attn`` from ``OLLAMA_FLASH_ATTENTION``, both cache
types from ``OLLAMA_KV_CACHE_TYPE`` and ``-ngl`` only when ``num_gpu`` is set (else llama.cpp's
``--fit`` places layers). So ``num_ctx`` is the context per slot, ``num_gpu`` the plan's GPU layer
count, ``num_batch`` the plan's ubatch. What Ollama cannot pass (a tensor split, K and V of
different types, MoE experts on the CPU, ``--swa-full``) is listed in the notes.

Modelfile values are written the way Ollama's parser (``parser/parser.go``) reads them back: bare
when they fit on one line without outer spaces or a leading quote; in double quotes when they hold no
quote; in triple quotes otherwise, unless a line of the value ends with three quotes (the parser would
stop there), and then rendering refuses.
"""

from __future__ import annotations

import re

from planner.recipes.base import Context, Recipe, RecipeError, Step, comment, model_origin, safe_name, shell_script
from planner.recipes.llamacpp import gpu_layers

# Gemma 2/3/3n turn format (ai.google.dev/gemma/docs/formatting): a system message is sent as a user turn.
GEMMA_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""
GEMMA_STOP = "<end_of_turn>"
# Gemma 4 turn format (its chat template: <|turn>role ... <turn|>), plain chat without tools or thinking.
GEMMA4_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "system" }}<|turn>system
{{ .Content }}<turn|>
{{ else if eq .Role "user" }}<|turn>user
{{ .Content }}<turn|>
{{ if $last }}<|turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<|turn>model
{{ .Content }}{{ if not $last }}<turn|>
{{ end }}
{{- end }}
{{- end }}"""
GEMMA4_STOP = "<turn|>"
OLLAMA_KV_TYPES = ("f16", "q8_0", "q4_0")
OLLAMA_VERSION = "v0.33.0-rc2"  # flags, env and PARAMETER names checked against bench/data/engine_flags/ollama.json
OLLAMA_HOST = "127.0.0.1:11434"  # envconfig.Host()'s default, written out so an inherited OLLAMA_HOST cannot widen it
_KV_BITS = {"f32": 32, "f16": 16, "bf16": 16, "q8_0": 8.5, "q5_1": 6, "q5_0": 5.5, "q4_1": 5, "q4_0": 4.5, "iq4_nl": 4.5}


# ---------------------------------------------------------------- Modelfile quoting (mirrors parser.go)


def _printable(ch: str) -> bool:
    """Characters that survive Ollama's parser: Go's strconv.IsPrint, plus tab and newlines inside quotes."""
    return ch in "\t\n\r" or ch.isprintable()


_WS = " \t\r\n"


def modelfile_quote(value: str) -> str:
    """Write one Modelfile argument so Ollama's parser returns exactly ``value``; RecipeError if impossible.

    The parser ends a value at a newline once the text so far (trimmed) is complete: bare, in double
    quotes or in triple quotes. Spaces never end a value.
    """
    value = str(value)
    if not all(_printable(c) for c in value):
        raise RecipeError(f"{value!r} has characters a Modelfile cannot hold")
    if value and value == value.strip(_WS) and not re.search(r"[\r\n]", value) and not value.startswith('"'):
        return value
    if '"' not in value:
        return f'"{value}"'
    for i, ch in enumerate(value):
        if ch in "\r\n":
            head = value[:i].rstrip(_WS)
            if len(head) >= 3 and head.endswith('"""'):
                raise RecipeError(f"{value!r} cannot be written into a Modelfile (a line of it ends with three quotes)")
    return f'"""{value}"""'


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, argument) pairs as Ollama's ``ParseFile`` produces them (a port of its state machine).

    PARAMETER lines come back as (name, value), FROM as ("model", value). Raises ValueError where Ollama
    reports a parse error. MESSAGE role checks are not ported (recipes write no MESSAGE lines).
    """
    NIL, NAME, VALUE, PARAM, COMMENT = range(5)
    valid = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter", "message", "requires"}
    cmds: list[tuple[str, str]] = []
    state, buf, name = NIL, [], ""

    def unquote(s: str):
        if s[:3] == '"""':
            return (s[3:-3], True) if len(s) >= 6 and s[-3:] == '"""' else ("", False)
        if s[:1] == '"':
            return (s[1:-1], True) if len(s) >= 2 and s[-1] == '"' else ("", False)
        return s, True

    def step(ch: str, st: int):
        if st == NIL:
            if ch == "#":
                return COMMENT, None
            if ch in _WS:
                return NIL, None
            return NAME, ch
        if st == NAME:
            if ch.isascii() and ch.isalpha():
                return NAME, ch
            if ch in " \t":
                return VALUE, None
            raise ValueError("invalid command")
        if st == VALUE:
            return (NIL, ch) if ch in _WS else (VALUE, ch)
        if st == PARAM:
            if ch.isascii() and (ch.isalnum() or ch == "_"):
                return PARAM, ch
            if ch in " \t":
                return VALUE, None
            raise ValueError("unexpected end of parameter name")
        return (NIL, None) if ch in "\r\n" else (COMMENT, None)

    for ch in text:
        nxt, r = step(ch, state)
        if nxt != state:
            if state == NAME:
                word = "".join(buf)
                if word.lower() not in valid:
                    raise ValueError(f"invalid command {word!r}")
                low = word.lower()
                if low == "parameter":
                    nxt = PARAM
                else:
                    name = "model" if low == "from" else low
            elif state == PARAM:
                name = "".join(buf)
            elif state == VALUE:
                s, ok = unquote("".join(buf).strip(_WS))
                if not ok or r in " \t":
                    buf.append(r)
                    continue
                cmds.append((name, s))
            buf = []
            state = nxt
        if r is not None and r.isprintable():
            buf.append(r)
    if state == VALUE:
        s, ok = unquote("".join(buf).strip(_WS))
        if not ok:
            raise ValueError("unexpected end of file inside a quoted value")
        cmds.append((name, s))
    elif state not in (NIL, COMMENT):
        raise ValueError("unexpected end of file")
    if not any(c == "model" for c, _ in cmds):
        raise ValueError("no FROM line")
    return cmds


# ---------------------------------------------------------------- the recipe


def _kv_type(ctx: Context) -> tuple[str, bool]:
    """Ollama sets one type for K and V; the larger of the two keeps quality, but differs from a split plan."""
    k, v = ctx.s.type_k, ctx.s.type_v
    if k == v and k in OLLAMA_KV_TYPES:
        return k, True
    t = max((k, v), key=lambda x: _KV_BITS.get(x, 16))
    return (t if t in OLLAMA_KV_TYPES else "f16"), False


def model_name(ctx: Context) -> str:
    return f"{safe_name(ctx.plan.model)}-{safe_name(ctx.plan.weight_format)}:ctx{ctx.ctx_per_slot}"


def modelfile(ctx: Context) -> str:
    ngl, _ = gpu_layers(ctx)
    template, stop = (GEMMA4_TEMPLATE, GEMMA4_STOP) if ctx.family == "gemma4" else (GEMMA_TEMPLATE, GEMMA_STOP)
    lines = ["# " + comment(c) for c in ctx.header() + [model_origin(ctx)]]
    lines.append(f"FROM {modelfile_quote(ctx.model.value)}")
    lines.append(f"TEMPLATE {modelfile_quote(template)}")
    lines.append(f"PARAMETER stop {modelfile_quote(stop)}")
    lines.append(f"PARAMETER num_ctx {ctx.ctx_per_slot}")
    if not ctx.s.experts_on_cpu:
        lines.append(f"PARAMETER num_gpu {ngl}")
    lines.append(f"PARAMETER num_batch {ctx.s.n_ubatch}")
    lines.append(f"PARAMETER num_predict {ctx.ctx_per_slot}")
    if not ctx.s.use_mmap:
        lines.append("PARAMETER use_mmap false")
    return "\n".join(lines) + "\n"


def server_env(ctx: Context) -> dict[str, str]:
    kv, _ = _kv_type(ctx)
    return {"OLLAMA_HOST": OLLAMA_HOST, "OLLAMA_FLASH_ATTENTION": "1" if ctx.s.flash_attn else "0", "OLLAMA_KV_CACHE_TYPE": kv,
            "OLLAMA_NUM_PARALLEL": str(ctx.s.n_parallel), "OLLAMA_CONTEXT_LENGTH": str(ctx.ctx_per_slot)}


def recipe(ctx: Context) -> Recipe:
    s = ctx.s
    name = model_name(ctx)
    env = server_env(ctx)
    ngl, split = gpu_layers(ctx)
    serve = Step(["ollama", "serve"], env=env, where="the Ollama server's environment",
                 why="these variables are read by the server, not by `ollama run`")
    create = Step(["ollama", "create", name, "-f", "Modelfile"], why="register the GGUF with the plan's parameters")
    run = Step(["ollama", "run", name], why="chat")
    notes, matches = [], True
    kv, same = _kv_type(ctx)
    if not same:
        matches = False
        notes.append(f"Ollama uses one cache type for K and V: the plan's {s.type_k}/{s.type_v} becomes {kv}/{kv}; "
                     f"re-plan with --kv-type {kv} to see its memory")
    if split:
        matches = False
        notes.append("Ollama passes no tensor split: llama.cpp's --fit chooses how layers spread over the GPUs")
    if s.experts_on_cpu:
        matches = False
        notes.append("Ollama cannot keep MoE experts on the CPU by itself: num_gpu is left unset so llama.cpp's --fit "
                     "places layers and experts")
    if s.swa_full:
        matches = False
        notes.append("Ollama cannot pass --swa-full: its sliding-window caches are window-sized (less memory than planned)")
    if not s.offload_kqv or s.kv_unified:
        matches = False
        notes.append("Ollama cannot pass --no-kv-offload or --kv-unified")
    if s.n_ctx % max(1, s.n_parallel):
        notes.append(f"num_ctx is per slot: {ctx.ctx_per_slot} x {s.n_parallel} slots")
    notes.append("if Ollama runs as a service, put the environment in the service (systemctl edit ollama: "
                 "Environment=\"NAME=value\" lines) and restart it")
    notes.insert(0, model_origin(ctx))
    r = Recipe("ollama", "Ollama", [serve, create, run], env={}, notes=notes,
               requirements=[f"Ollama {OLLAMA_VERSION} or later (llama-server based, passes -ngl from num_gpu)"],
               settings={"num_ctx": ctx.ctx_per_slot, "num_gpu": None if s.experts_on_cpu else ngl, "num_batch": s.n_ubatch,
                         "env": env, "name": name},
               matches_plan=matches, model_path=ctx.model.value if ctx.model.is_local else None)
    r.files["Modelfile"] = modelfile(ctx)
    r.files["run-ollama-serve.sh"] = shell_script(ctx, [Step(["ollama", "serve"])], env=env,
                                                  extra=["starts the Ollama server with the plan's environment, on "
                                                         + OLLAMA_HOST + " only"])
    r.files["run-ollama.sh"] = shell_script(ctx, [create, run], env={"OLLAMA_HOST": OLLAMA_HOST},
                                            extra=["needs a server started with run-ollama-serve.sh", model_origin(ctx)])
    r.executable += ["run-ollama-serve.sh", "run-ollama.sh"]
    return r


def check(recipe: Recipe, ctx: Context) -> list[str]:
    problems = []
    text = recipe.files.get("Modelfile")
    if text is None:
        return ["Modelfile is missing"]
    try:
        cmds = parse_modelfile(text)
    except ValueError as exc:
        return [f"Modelfile: {exc}"]
    params = {c: v for c, v in cmds}
    if params.get("model") != ctx.model.value:
        problems.append(f"Modelfile: FROM is {params.get('model')!r}, the recipe's model is {ctx.model.value!r}")
    want = {"num_ctx": str(ctx.ctx_per_slot), "num_batch": str(ctx.s.n_ubatch)}
    ngl, _ = gpu_layers(ctx)
    if not ctx.s.experts_on_cpu:
        want["num_gpu"] = str(ngl)
    for k, v in want.items():
        if params.get(k) != v:
            problems.append(f"Modelfile: {k} is {params.get(k)!r}, the plan says {v!r}")
    env = server_env(ctx)
    for k, v in env.items():
        if recipe.steps and recipe.steps[0].env.get(k) != v:
            problems.append(f"server environment: {k} is {recipe.steps[0].env.get(k)!r}, the plan says {v!r}")
    return problems
