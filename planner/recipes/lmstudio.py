"""LM Studio: ``lms import`` the GGUF, ``lms load`` it with the plan's context, GPU share and slots, serve on 127.0.0.1.

Flags as in lms 0.3.43 (``src/subcommands/importCmd.ts``, ``load.ts``, ``server.ts``; the table
bench/engine_flags.py reads from them is bench/data/engine_flags/lms.json):
- ``lms import PATH --symbolic-link -y --user-repo gemma-plan/KEY``: a link in LM Studio's models
  folder, so the GGUF stays where the other recipes load it (a plain import moves it), no questions
  (``-y``), and a fixed place (``--user-repo``) so the load can name it exactly. ``symlink`` keeps the
  path as given, so it is absolute. A second import of the same file exits 1 ("Target file already
  exists"): the script tries ``--dry-run`` first and imports only when that succeeds.
- ``lms load gemma-plan/KEY/FILE --exact -y --context-length N --gpu off|max|0-1 --parallel N
  --identifier KEY``.
- ``lms server start --bind 127.0.0.1 --port 1234`` (``--bind`` beats ``LMS_SERVER_HOST``).
KV cache types and flash attention are load settings without CLI flags: the notes name them, and the
recipe matches the plan only when they are LM Studio's defaults.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from planner.recipes.base import Context, Recipe, ShellVar, Step, comment, model_origin, safe_name, shell_script
from planner.recipes.llamacpp import gpu_layers

LMS_VERSION = "0.3.43"
USER = "gemma-plan"  # --user-repo USER/KEY: where the import puts the link
SERVER_PORT = 1234  # LM Studio's default server port


def gpu_share(ctx: Context) -> str:
    ngl, _ = gpu_layers(ctx)
    total = ctx.n_layer + 1
    if ngl <= 0 or not ctx.hw.devices:
        return "off"
    if ngl >= total:
        return "max"
    return f"{ngl / total:.2f}"


def model_key(ctx: Context) -> str:
    return safe_name(Path(ctx.model.value).stem)


def _import_path(ctx: Context):
    """The GGUF as an absolute path: lms links to the path as given."""
    v = ctx.model.value
    if PurePosixPath(v).is_absolute():
        return v
    return ShellVar("PWD", "/" + (v[2:] if v.startswith("./") else v))


def recipe(ctx: Context) -> Recipe:
    s = ctx.s
    key = model_key(ctx)
    steps = []
    gguf = ctx.model.kind in ("gguf-file", "placeholder-gguf")
    if gguf:
        imp = ["lms", "import", _import_path(ctx), "--symbolic-link", "-y", "--user-repo", f"{USER}/{key}"]
        steps.append(Step(imp + ["--dry-run"], why="only when LM Studio has no link yet (else exits 1: already exists)"))
        steps.append(Step(imp, why="link the GGUF into LM Studio's models folder (the file stays here)"))
        load_ref, exact = f"{USER}/{key}/{PurePosixPath(ctx.model.value).name}", ["--exact"]
    else:
        steps.append(Step(["lms", "get", ctx.model.value, "-y"], why="download the model"))
        load_ref, exact = key, []
    load = ["lms", "load", load_ref] + exact + ["-y", "--context-length", str(s.n_ctx), "--gpu", gpu_share(ctx),
                                                "--parallel", str(max(1, s.n_parallel)), "--identifier", key]
    steps.append(Step(load, why="load with the plan's context, GPU share and parallel predictions"))
    steps.append(Step(["lms", "server", "start", "--bind", "127.0.0.1", "--port", str(SERVER_PORT)],
                      why=f"OpenAI-compatible server on http://127.0.0.1:{SERVER_PORT}"))
    origin = model_origin(ctx)
    notes = [origin,
             f"set in the model's load settings: flash attention {'on' if s.flash_attn else 'off'}, "
             f"K cache {s.type_k}, V cache {s.type_v}"]
    matches = s.type_k == "f16" and s.type_v == "f16" and not s.experts_on_cpu and not s.swa_full
    if s.n_parallel > 1:
        notes.append(f"--parallel {s.n_parallel}: LM Studio decides how the predictions share the {s.n_ctx}-token context")
        matches = False
    if s.experts_on_cpu:
        notes.append("MoE experts on the CPU: set 'number of layers for which to force MoE weights onto CPU' to all layers")
    if len(ctx.hw.devices) > 1:
        notes.append("LM Studio spreads layers over GPUs by its own strategy, not the plan's split")
        matches = False
    r = Recipe("lmstudio", "LM Studio (lms CLI)", steps, notes=notes,
               requirements=[f"LM Studio with the lms CLI {LMS_VERSION} or later (run `~/.lmstudio/bin/lms bootstrap` once)"],
               settings={"context_length": s.n_ctx, "gpu": gpu_share(ctx), "parallel": max(1, s.n_parallel), "key": key,
                         "model": load_ref},
               matches_plan=matches, model_path=ctx.model.value if ctx.model.is_local else None)
    r.files["run-lmstudio.sh"] = script(ctx, steps, origin)
    r.executable.append("run-lmstudio.sh")
    return r


def script(ctx: Context, steps: list[Step], origin: str) -> str:
    head = shell_script(ctx, [], extra=[origin])
    lines = []
    rest = steps
    if steps and "--dry-run" in [str(a) for a in steps[0].argv]:
        lines += ["# a second run finds the link from the first: lms prints 'Target file already exists' and the import is skipped",
                  f"if {steps[0].shell()}; then", f"  {steps[1].shell()}", "fi"]
        rest = steps[2:]
    for i, st in enumerate(rest):
        lines.append(("exec " if i == len(rest) - 1 else "") + st.shell())
    return head + "\n".join(comment(x) if x.startswith("#") else x for x in lines) + "\n"


def parse_load(argv: list[str]) -> dict:
    """``lms load REF [--exact] [-y] --context-length N --gpu X --parallel N --identifier NAME`` -> its settings."""
    argv = [str(a) for a in argv]
    if argv[:2] != ["lms", "load"] or len(argv) < 3:
        raise ValueError("not an `lms load` command")
    out: dict = {"key": argv[2]}
    names = {"--context-length": "context_length", "-c": "context_length", "--gpu": "gpu", "--identifier": "identifier",
             "--ttl": "ttl", "--parallel": "parallel"}
    switches = {"--exact": "exact", "-y": "yes", "--yes": "yes"}
    i = 3
    while i < len(argv):
        if argv[i] in switches:
            out[switches[argv[i]]] = True
            i += 1
            continue
        if argv[i] not in names or i + 1 >= len(argv):
            raise ValueError(f"unexpected argument {argv[i]!r}")
        out[names[argv[i]]] = argv[i + 1]
        i += 2
    return out


def check(recipe: Recipe, ctx: Context) -> list[str]:
    loads = [s for s in recipe.steps if [str(a) for a in s.argv[:2]] == ["lms", "load"]]
    if not loads:
        return ["no `lms load` command"]
    try:
        got = parse_load([str(a) for a in loads[0].argv])
    except ValueError as exc:
        return [f"lms load: {exc}"]
    want = {"context_length": str(ctx.s.n_ctx), "gpu": gpu_share(ctx), "parallel": str(max(1, ctx.s.n_parallel))}
    return [f"lms load: {k} is {got.get(k)!r}, the plan says {v!r}" for k, v in want.items() if got.get(k) != v]
