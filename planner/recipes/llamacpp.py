"""llama.cpp: ``llama-server``, ``llama-cli`` and RPC across machines, with every flag that fixes memory.

Flags follow llama.cpp's ``common/arg.cpp`` of the build the planner models (``LLAMA_CPP_VERSION``):
``-c`` is the context over all slots, ``-np`` the slots, ``-fa on|off``, ``-ctk/-ctv`` the KV types,
``-ngl N`` the output layer plus the last N-1 repeating layers, ``-ts`` the per-GPU share (written as
the layer counts the plan placed, so the cumulative split reproduces it exactly), ``-ot`` the MoE
expert override, ``--swa-full`` only when the plan sized sliding caches to the full context,
``--kv-unified`` (server-like tools only: ``llama-cli`` has no such flag), ``--load-mode none`` when
the plan reads the file instead of mapping it (this llama.cpp has no ``--no-mmap``), and ``--fit off``
because the plan already fixed context and placement (``--fit`` would change only what was left at its
default, but ``-ts`` unset is one of those).

The scripts take ``MODEL``, ``PORT`` and ``BIND_ADDRESS`` from the environment (defaults: the planned
file, the recipe's port, 127.0.0.1) and pass any extra arguments through. On a cluster the last host of
the plan runs llama-server with ``--rpc`` and every other host runs ``ggml-rpc-server``: llama.cpp lists
RPC devices first, in ``--rpc`` order, then its own GPUs, which is the plan's device order.
"""

from __future__ import annotations

import shlex
from typing import Optional

from planner.memory import layer_devices
from planner.recipes.base import Context, Recipe, ShellVar, Step, gib, model_origin, shell_script

EXPERTS_ON_CPU = r"\.ffn_.*_exps\.=CPU"  # matches blk.N.ffn_{gate,up,down}_exps.weight
SERVER_HOST = "127.0.0.1"
SERVER_PORT = 8080
RPC_PORT = 50052
RPC_PROGRAM = "ggml-rpc-server"  # tools/rpc's target name in this llama.cpp (older builds: rpc-server)
SERVER_LIKE = ("llama-server",)  # programs whose parser takes --kv-unified (LLAMA_EXAMPLE_SERVER)


def gpu_layers(ctx: Context) -> tuple[int, Optional[list[int]]]:
    """(-ngl value, layer count per GPU for -ts or None when one GPU or none)."""
    gpus = list(ctx.hw.devices)
    n_layer = ctx.n_layer
    s = ctx.s
    if not gpus:
        return 0, None
    ngl = n_layer + 1 if s.n_gpu_layers < 0 else min(s.n_gpu_layers, n_layer + 1)
    if len(gpus) == 1 or ngl == 0:
        return ngl, None
    # the same placement function the memory model used, so the counts are the plan's split
    dev_of = layer_devices(n_layer, s.n_gpu_layers, gpus, s.tensor_split)
    return ngl, [sum(1 for d in dev_of if d == i) for i in range(len(gpus))]


def memory_flags(ctx: Context, program: str = "llama-server") -> list[str]:
    """The flags that fix llama.cpp's allocations, in a stable order, as ``program``'s parser takes them."""
    s = ctx.s
    ngl, split = gpu_layers(ctx)
    argv = ["-c", str(s.n_ctx), "-np", str(s.n_parallel), "-b", str(s.n_batch), "-ub", str(s.n_ubatch),
            "-ctk", s.type_k, "-ctv", s.type_v, "-fa", "on" if s.flash_attn else "off", "-ngl", str(ngl)]
    if split:
        argv += ["-ts", ",".join(str(n) for n in split)]
    if s.experts_on_cpu:
        argv += ["-ot", EXPERTS_ON_CPU]
    if s.swa_full:
        argv.append("--swa-full")
    if s.kv_unified and program in SERVER_LIKE:
        argv.append("--kv-unified")
    if not s.offload_kqv:
        argv.append("--no-kv-offload")
    if not s.use_mmap:
        argv += ["--load-mode", "none"]
    argv += ["--fit", "off"]
    return argv


def _rpc_hosts(ctx: Context) -> list:
    """The hosts that run ggml-rpc-server: all but the last (which runs llama-server)."""
    return list(ctx.hw.hosts[:-1]) if ctx.hw.is_cluster else []


def _preamble(ctx: Context, port: int, rpc: bool) -> list[str]:
    """Environment defaults (fixed text; the model path is shell-quoted)."""
    lines = [f"if [ -z \"${{MODEL:-}}\" ]; then MODEL={shlex.quote(ctx.model.value)}; fi"]
    if mmproj_path(ctx):
        lines.append(f"if [ -z \"${{MMPROJ:-}}\" ]; then MMPROJ={shlex.quote(mmproj_path(ctx))}; fi")
    if port:
        lines += [f"if [ -z \"${{BIND_ADDRESS:-}}\" ]; then BIND_ADDRESS={SERVER_HOST}; fi",
                  f"if [ -z \"${{PORT:-}}\" ]; then PORT={port}; fi"]
    if rpc:
        lines.append('RPC_SERVERS="${RPC_SERVERS:?set RPC_SERVERS to host:port of every ggml-rpc-server, comma-separated, '
                     'in the plan\'s host order}"')
    return lines


def mmproj_path(ctx: Context) -> Optional[str]:
    """The vision projector file when the plan loads one (--vision): the one quantize wrote, else the name
    quantize gives it beside the model."""
    pm = next((d.detail["projector"] for d in ctx.plan.memory.devices if "projector" in d.detail), None)
    if pm is None:
        return None
    if pm.get("path"):
        return str(pm["path"])
    model = str(ctx.model.value)
    stem = model[:-5] if model.endswith(".gguf") else model
    return f"{stem}-mmproj-{str(pm.get('file_type', 'f16')).upper()}.gguf"


def _argv(ctx: Context, program: str, script: bool) -> list[str]:
    """The command; ``script`` puts the environment variables in place of the literal values."""
    argv = [program, "-m", ShellVar("MODEL") if script else ctx.model.value, *memory_flags(ctx, program)]
    mmproj = mmproj_path(ctx)
    if mmproj:
        argv += ["--mmproj", ShellVar("MMPROJ") if script else mmproj]
    if _rpc_hosts(ctx):
        argv += ["--rpc", ShellVar("RPC_SERVERS")]
    if program == "llama-server":
        argv += ["--host", ShellVar("BIND_ADDRESS") if script else SERVER_HOST,
                 "--port", ShellVar("PORT") if script else str(SERVER_PORT)]
    return argv


def _notes(ctx: Context) -> list[str]:
    notes = [model_origin(ctx)]
    ngl, split = gpu_layers(ctx)
    if ctx.hw.devices and ngl <= ctx.n_layer:
        notes.append(f"partial offload: -ngl {ngl} puts the output layer and the last {max(0, ngl - 1)} repeating layers on the GPU "
                     "(llama.cpp builds from 2026 on; older builds offload the last N repeating layers and keep the output on the CPU)")
    if split:
        names = [d.device for d in ctx.plan.memory.devices if d.device != "CPU"]
        notes.append("-ts gives each GPU the layer count the plan placed there: " + ", ".join(f"{n} {c}" for n, c in zip(names, split)))
    if ctx.s.experts_on_cpu:
        notes.append("-ot keeps every MoE expert tensor in host memory; attention and the shared MLP stay on the GPU")
    for d in ctx.plan.memory.devices:
        if d.total_bytes:
            notes.append(f"{d.device}: {gib(d.total_bytes)} planned (weights {gib(d.weights_bytes)}, KV {gib(d.kv_bytes)}, "
                         f"compute {gib(d.compute_bytes)})")
    return notes


def _rpc_notes(ctx: Context) -> list[str]:
    hosts = ctx.hw.hosts
    if not _rpc_hosts(ctx):
        return []
    workers = ", ".join(h.name for h in hosts[:-1])
    return [f"{len(hosts)} hosts: run run-rpc-server.sh on {workers} (BIND_ADDRESS=that host's private-network address), "
            f"then on {hosts[-1].name} RPC_SERVERS=<{hosts[0].name}-address>:{RPC_PORT}[,...] ./run-llama-server.sh, "
            "in the plan's host order: llama.cpp puts RPC devices first, in --rpc order, then its own GPUs, "
            "which is the order -ts is written in"]


def _settings(ctx: Context, program: str = "llama-server") -> dict:
    s = ctx.s
    ngl, split = gpu_layers(ctx)
    return {"n_ctx": s.n_ctx, "n_parallel": s.n_parallel, "n_batch": s.n_batch, "n_ubatch": s.n_ubatch,
            "type_k": s.type_k, "type_v": s.type_v, "flash_attn": s.flash_attn, "swa_full": s.swa_full,
            "kv_unified": s.kv_unified and program in SERVER_LIKE, "offload_kqv": s.offload_kqv, "use_mmap": s.use_mmap,
            "experts_on_cpu": s.experts_on_cpu, "n_gpu_layers": ngl, "tensor_split": split}


def _requirements(ctx: Context) -> list[str]:
    backend = ctx.hw.devices[0].backend if ctx.hw.devices else "CPU"
    req = [f"llama.cpp built with the {backend} backend, a build with `--fit`, `-fa on|off` and `--load-mode` (2026 or later; "
           f"the plan models {ctx.plan.memory.engine_version}); `python -m quantize.llama_bins` builds that one for the CPU"]
    if _rpc_hosts(ctx):
        req.append("llama.cpp built with -DGGML_RPC=ON on every host, the same version everywhere")
    return req


def _model_path(ctx: Context) -> Optional[str]:
    return ctx.model.value if ctx.model.is_local else None


def server(ctx: Context) -> Recipe:
    where = f"the last host ({ctx.hw.hosts[-1].name})" if _rpc_hosts(ctx) else ""
    step = Step(_argv(ctx, "llama-server", False), where=where,
                why=f"OpenAI-compatible server on http://{SERVER_HOST}:{SERVER_PORT}")
    script = Step(_argv(ctx, "llama-server", True))
    extra = ["environment: MODEL (the GGUF), BIND_ADDRESS (default 127.0.0.1), PORT (default 8080); extra arguments are "
             "passed to llama-server"]
    r = Recipe("llama-server", "llama.cpp server", [step], notes=_rpc_notes(ctx) + _notes(ctx), requirements=_requirements(ctx),
               settings=_settings(ctx), model_path=_model_path(ctx))
    r.files["run-llama-server.sh"] = shell_script(ctx, [script], extra=[model_origin(ctx)] + extra,
                                                  preamble=_preamble(ctx, SERVER_PORT, bool(_rpc_hosts(ctx))), pass_args=True)
    r.executable.append("run-llama-server.sh")
    return r


def cli(ctx: Context) -> Recipe:
    step = Step(_argv(ctx, "llama-cli", False), why="interactive chat in the terminal")
    script = Step(_argv(ctx, "llama-cli", True))
    notes = ["llama-cli answers one conversation; with -np above 1 the other slots' KV stays reserved, as planned"] if ctx.s.n_parallel > 1 else []
    matches = True
    if ctx.s.kv_unified:
        matches = False
        notes.append("llama-cli has no --kv-unified (only llama-server takes it): its KV cache is one stream per slot, "
                     "which differs from the plan's unified cache; use run-llama-server.sh for this plan")
    extra = ["environment: MODEL (the GGUF); extra arguments are passed to llama-cli (e.g. -p PROMPT -n 64 -st for one answer)"]
    r = Recipe("llama-cli", "llama.cpp interactive CLI", [step], notes=_notes(ctx)[:1] + notes + _notes(ctx)[1:],
               requirements=_requirements(ctx), settings=_settings(ctx, "llama-cli"), matches_plan=matches,
               model_path=_model_path(ctx))
    r.files["run-llama-cli.sh"] = shell_script(ctx, [script], extra=[model_origin(ctx)] + extra,
                                               preamble=_preamble(ctx, 0, bool(_rpc_hosts(ctx))), pass_args=True)
    r.executable.append("run-llama-cli.sh")
    return r


def rpc(ctx: Context) -> Recipe:
    """A cluster plan: ggml-rpc-server on every host but the last, which runs run-llama-server.sh with --rpc."""
    hosts = ctx.hw.hosts
    workers = _rpc_hosts(ctx)
    worker = Step([RPC_PROGRAM, "--host", SERVER_HOST, "--port", str(RPC_PORT)],
                  where=", ".join(h.name for h in workers) or "each host except the last",
                  why="exposes that host's GPUs to llama-server over the network")
    script = Step([RPC_PROGRAM, "--host", ShellVar("BIND_ADDRESS"), "--port", ShellVar("PORT")])
    main = Step(_argv(ctx, "llama-server", False), where=f"the last host ({hosts[-1].name if hosts else 'main'})",
                why="serves, with the other hosts' devices over RPC (run-llama-server.sh)")
    notes = _rpc_notes(ctx) + [
        f"{RPC_PROGRAM} has no authentication: it binds 127.0.0.1 unless BIND_ADDRESS names another address; give it "
        "an address on a private link between the hosts, never a public one",
        f"every token's activations cross the network; plan with the link speed in mind ({_link(ctx)})"] + _notes(ctx)
    r = Recipe("llama-rpc", "llama.cpp across hosts (RPC)", [worker, main], notes=notes,
               requirements=_requirements(ctx), settings=_settings(ctx), model_path=_model_path(ctx))
    pre = [f"if [ -z \"${{BIND_ADDRESS:-}}\" ]; then BIND_ADDRESS={SERVER_HOST}; fi",
           f"if [ -z \"${{PORT:-}}\" ]; then PORT={RPC_PORT}; fi"]
    r.files["run-rpc-server.sh"] = shell_script(
        ctx, [script], extra=["run on " + (", ".join(h.name for h in workers) or "every host except the last"),
                              "environment: BIND_ADDRESS (default 127.0.0.1: set this host's private-network address so "
                              "llama-server can reach it), PORT (default 50052)"], preamble=pre, pass_args=True)
    r.executable.append("run-rpc-server.sh")
    return r


def _link(ctx: Context) -> str:
    bw = ctx.hw.network_bytes_per_s
    return f"{bw * 8 / 1e9:.0f} Gbit/s between hosts" if bw else "link speed unknown"


# ---------------------------------------------------------------- reading a command back


_VALUE_FLAGS = {
    "-m": "model", "--model": "model", "-hf": "hf", "-c": "n_ctx", "--ctx-size": "n_ctx", "-np": "n_parallel",
    "--parallel": "n_parallel", "-b": "n_batch", "--batch-size": "n_batch", "-ub": "n_ubatch", "--ubatch-size": "n_ubatch",
    "-ctk": "type_k", "--cache-type-k": "type_k", "-ctv": "type_v", "--cache-type-v": "type_v", "-fa": "flash_attn",
    "--flash-attn": "flash_attn", "-ngl": "n_gpu_layers", "--gpu-layers": "n_gpu_layers", "--n-gpu-layers": "n_gpu_layers",
    "-ts": "tensor_split", "--tensor-split": "tensor_split", "-ot": "override_tensor", "--override-tensor": "override_tensor",
    "-fit": "fit", "--fit": "fit", "--host": "host", "--port": "port", "--rpc": "rpc", "-lm": "load_mode",
    "--load-mode": "load_mode", "--mmproj": "mmproj",
}
_BOOL_FLAGS = {"--swa-full": ("swa_full", True), "-kvu": ("kv_unified", True), "--kv-unified": ("kv_unified", True),
               "-nkvo": ("offload_kqv", False), "--no-kv-offload": ("offload_kqv", False)}
_LOAD_MODES = {"auto": True, "mmap": True, "mmap+mlock": True, "none": False, "mlock": False, "dio": False}
_INTS = ("n_ctx", "n_parallel", "n_batch", "n_ubatch", "n_gpu_layers", "port")


def parse_argv(argv: list[str]) -> dict:
    """llama-server / llama-cli argv -> the settings it sets (RuntimeSettings names; llama.cpp defaults for the rest).

    Unknown flags raise ValueError so that a recipe cannot carry a flag this reader ignores.
    """
    out: dict = {"swa_full": False, "kv_unified": False, "offload_kqv": True, "use_mmap": True, "experts_on_cpu": False,
                 "tensor_split": None, "fit": "on", "program": argv[0] if argv else ""}
    i = 1
    while i < len(argv):
        a = str(argv[i])
        if a in _BOOL_FLAGS:
            key, val = _BOOL_FLAGS[a]
            out[key] = val
            i += 1
            continue
        if a not in _VALUE_FLAGS or i + 1 >= len(argv):
            raise ValueError(f"unexpected argument {a!r}")
        key, val = _VALUE_FLAGS[a], str(argv[i + 1])
        if key in _INTS:
            out[key] = int(val)
        elif key == "flash_attn":
            if val not in ("on", "off", "auto"):
                raise ValueError(f"-fa {val!r}")
            out[key] = {"on": True, "off": False}.get(val, "auto")
        elif key == "tensor_split":
            out[key] = [int(x) if float(x).is_integer() else float(x) for x in val.split(",")]
        elif key == "load_mode":
            if val not in _LOAD_MODES:
                raise ValueError(f"--load-mode {val!r}")
            out["use_mmap"] = _LOAD_MODES[val]
        elif key == "override_tensor":
            if val != EXPERTS_ON_CPU:
                raise ValueError(f"-ot {val!r} is not the expert override")
            out["experts_on_cpu"] = True
        else:
            out[key] = val
        i += 2
    return out


def check(recipe: Recipe, ctx: Context) -> list[str]:
    """Differences between what a llama.cpp recipe's commands set and what the plan says."""
    problems = []
    for step in recipe.steps:
        if not step.argv or str(step.argv[0]) not in ("llama-server", "llama-cli"):
            continue
        want = _settings(ctx, str(step.argv[0]))
        if str(step.argv[0]) == "llama-cli" and ("-kvu" in step.argv or "--kv-unified" in step.argv):
            problems.append("llama-cli: --kv-unified is not a llama-cli flag")
            continue
        try:
            got = parse_argv([str(a) for a in step.argv])
        except ValueError as exc:
            problems.append(f"{step.argv[0]}: {exc}")
            continue
        for key, val in want.items():
            if got.get(key) != val:
                problems.append(f"{step.argv[0]}: {key} is {got.get(key)!r}, the plan says {val!r}")
        if got.get("fit") != "off":
            problems.append(f"{step.argv[0]}: --fit is not off, so llama.cpp may change the placement")
        if bool(got.get("mmproj")) != bool(mmproj_path(ctx)):
            problems.append(f"{step.argv[0]}: " + ("no --mmproj, but the plan counts the vision projector" if mmproj_path(ctx)
                                                   else "--mmproj loads a vision projector the plan does not count"))
        if _rpc_hosts(ctx) and not got.get("rpc"):
            problems.append(f"{step.argv[0]}: no --rpc, so the other hosts' share of the plan lands on this one")
        if got.get("host", SERVER_HOST) != SERVER_HOST:
            problems.append(f"{step.argv[0]}: --host {got['host']}: the recipe binds {SERVER_HOST}")
    return problems
