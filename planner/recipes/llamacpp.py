"""llama.cpp: ``llama-server``, ``llama-cli`` and RPC across machines, with every flag that fixes memory.

Flags follow llama.cpp's ``common/arg.cpp`` of the build the planner models (``LLAMA_CPP_VERSION``):
``-c`` is the context over all slots, ``-np`` the slots, ``-fa on|off``, ``-ctk/-ctv`` the KV types,
``-ngl N`` the output layer plus the last N-1 repeating layers, ``-ts`` the per-GPU share (written as
the layer counts the plan placed, so the cumulative split reproduces it exactly), ``-ot`` the MoE
expert override, ``--swa-full`` only when the plan sized sliding caches to the full context, and
``--fit off`` because the plan already fixed context and placement (``--fit`` would change only what
was left at its default, but ``-ts`` unset is one of those).
"""

from __future__ import annotations

from typing import Optional

from planner.memory import _layer_devices
from planner.recipes.base import Context, Recipe, ShellVar, Step, gib, shell_script

EXPERTS_ON_CPU = r"\.ffn_.*_exps\.=CPU"  # matches blk.N.ffn_{gate,up,down}_exps.weight
SERVER_HOST = "127.0.0.1"
SERVER_PORT = 8080
RPC_PORT = 50052


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
    dev_of = _layer_devices(n_layer, s.n_gpu_layers, gpus, s.tensor_split)
    return ngl, [sum(1 for d in dev_of if d == i) for i in range(len(gpus))]


def memory_flags(ctx: Context) -> list[str]:
    """The flags that fix llama.cpp's allocations, in a stable order."""
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
    if s.kv_unified:
        argv.append("--kv-unified")
    if not s.offload_kqv:
        argv.append("--no-kv-offload")
    if not s.use_mmap:
        argv.append("--no-mmap")
    argv += ["--fit", "off"]
    return argv


def _model_flags(ctx: Context) -> list[str]:
    return ["-m", ctx.model.value]


def _notes(ctx: Context) -> list[str]:
    notes = []
    if ctx.model.is_placeholder:
        notes.append(f"{ctx.model.value} is a placeholder: produce it with `gemma-plan quantize` (or download a "
                     f"{ctx.plan.weight_format} GGUF of {ctx.model.hf_repo or ctx.plan.model}) and put it next to this script")
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


def _settings(ctx: Context) -> dict:
    s = ctx.s
    ngl, split = gpu_layers(ctx)
    return {"n_ctx": s.n_ctx, "n_parallel": s.n_parallel, "n_batch": s.n_batch, "n_ubatch": s.n_ubatch,
            "type_k": s.type_k, "type_v": s.type_v, "flash_attn": s.flash_attn, "swa_full": s.swa_full,
            "kv_unified": s.kv_unified, "offload_kqv": s.offload_kqv, "use_mmap": s.use_mmap,
            "experts_on_cpu": s.experts_on_cpu, "n_gpu_layers": ngl, "tensor_split": split}


def _requirements(ctx: Context) -> list[str]:
    backend = ctx.hw.devices[0].backend if ctx.hw.devices else "CPU"
    return [f"llama.cpp built with the {backend} backend, a build with `--fit` and `-fa on|off` (2026 or later; "
            f"the plan models {ctx.plan.memory.engine_version})"]


def server(ctx: Context) -> Recipe:
    argv = ["llama-server", *_model_flags(ctx), *memory_flags(ctx), "--host", SERVER_HOST, "--port", str(SERVER_PORT)]
    step = Step(argv, why=f"OpenAI-compatible server on http://{SERVER_HOST}:{SERVER_PORT}")
    r = Recipe("llama-server", "llama.cpp server", [step], notes=_notes(ctx), requirements=_requirements(ctx),
               settings=_settings(ctx), model_path=ctx.model.value if ctx.model.is_local else None)
    r.files["run-llama-server.sh"] = shell_script(ctx, [step])
    r.executable.append("run-llama-server.sh")
    return r


def cli(ctx: Context) -> Recipe:
    argv = ["llama-cli", *_model_flags(ctx), *memory_flags(ctx)]
    step = Step(argv, why="interactive chat in the terminal")
    notes = ["llama-cli answers one conversation; with -np above 1 the other slots' KV stays reserved, as planned"] if ctx.s.n_parallel > 1 else []
    r = Recipe("llama-cli", "llama.cpp interactive CLI", [step], notes=notes + _notes(ctx), requirements=_requirements(ctx),
               settings=_settings(ctx), model_path=ctx.model.value if ctx.model.is_local else None)
    r.files["run-llama-cli.sh"] = shell_script(ctx, [step])
    r.executable.append("run-llama-cli.sh")
    return r


def rpc(ctx: Context) -> Recipe:
    """A cluster plan: one rpc-server per other host, llama-server on the first host with --rpc."""
    hosts = ctx.hw.hosts
    worker = Step(["rpc-server", "--host", "0.0.0.0", "--port", str(RPC_PORT)], where="each host except the first",
                  why="exposes that host's GPUs to the main llama-server over the network")
    argv = ["llama-server", *_model_flags(ctx), *memory_flags(ctx), "--rpc", ShellVar("RPC_SERVERS"),
            "--host", SERVER_HOST, "--port", str(SERVER_PORT)]
    main = Step(argv, where=f"the first host ({hosts[0].name if hosts else 'main'})", why="serves, with remote devices over RPC")
    notes = [f"{len(hosts)} hosts: start rpc-server on the others, then set RPC_SERVERS=host2:{RPC_PORT},... on the first",
             "rpc-server has no authentication: bind it to a private network interface only",
             "-ts lists GPUs in the plan's order (this host's first); check llama.cpp's order with "
             "`llama-server --rpc \"$RPC_SERVERS\" --list-devices` and reorder -ts to match",
             f"every token's activations cross the network; plan with the link speed in mind ({_link(ctx)})"] + _notes(ctx)
    r = Recipe("llama-rpc", "llama.cpp across hosts (RPC)", [worker, main], notes=notes,
               requirements=_requirements(ctx) + ["llama.cpp built with -DGGML_RPC=ON on every host, the same version everywhere"],
               settings=_settings(ctx), model_path=ctx.model.value if ctx.model.is_local else None)
    r.files["run-rpc-server.sh"] = shell_script(ctx, [worker], extra=["run on every host except the first"])
    pre = ['RPC_SERVERS="${RPC_SERVERS:?set RPC_SERVERS to host:port of every rpc-server, comma-separated}"']
    r.files["run-llama-server-rpc.sh"] = shell_script(ctx, [main], extra=["run on the first host"], preamble=pre)
    r.executable += ["run-rpc-server.sh", "run-llama-server-rpc.sh"]
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
    "-fit": "fit", "--fit": "fit", "--host": "host", "--port": "port", "--rpc": "rpc",
}
_BOOL_FLAGS = {"--swa-full": ("swa_full", True), "-kvu": ("kv_unified", True), "--kv-unified": ("kv_unified", True),
               "-nkvo": ("offload_kqv", False), "--no-kv-offload": ("offload_kqv", False), "--no-mmap": ("use_mmap", False)}
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
    want = _settings(ctx)
    problems = []
    for step in recipe.steps:
        if not step.argv or str(step.argv[0]) not in ("llama-server", "llama-cli"):
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
    return problems
