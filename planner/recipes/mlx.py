"""MLX on Apple silicon: ``mlx_lm.convert`` to the nearest bit width, then ``mlx_lm.server``.

MLX quantizes with its own affine scheme (group size 64 by default: one scale and one bias per group in
the model's dtype), so the weights differ from the GGUF the plan sized; ``planner.mlx_memory`` gives
MLX's own numbers and the recipe is marked as not matching the plan. ``mlx_lm.server`` (mlx-lm 0.32) has
no per-sequence KV cap (``--max-kv-size`` belongs to ``mlx_lm.generate``): the recipe runs the plan's
slots as ``--decode-concurrency``/``--prompt-concurrency``, keeps at most that many finished caches
(``--prompt-cache-size``) and caps what they hold at MLX's KV bytes for the plan's context
(``--prompt-cache-bytes``). The script converts once: into a temporary folder renamed when
``mlx_lm.convert`` (which refuses an existing ``--mlx-path``) has finished, skipped when that folder
exists. ``MLX_MODEL`` and ``PORT`` in the environment override the folder and the port.
When the plan needs more GPU memory than macOS wires by default, the recipe adds the
``sysctl iogpu.wired_limit_mb`` command (profiles.unified has the default rule). For a catalog model whose
MLX conversion at the plan's bit width is published (planner/data/artifacts.json: mlx-community's, made with
mlx_lm.convert's defaults), the script downloads that repository with ``hf download`` instead of converting.
"""

from __future__ import annotations

import re
from typing import Optional

from planner.mlx_memory import GROUP_SIZE, MLX_LM_VERSION, mlx_kv_bytes, mlx_weight_bytes
from planner.recipes.base import Context, Recipe, ShellVar, Step, gib, safe_name, shell_script
from profiles.units import GiB
from profiles.unified import apple_gpu_limit_bytes

SERVER_PORT = 8080
PROMPT_CONCURRENCY_MAX = 8  # mlx_lm.server's --prompt-concurrency default
# GGUF mix -> MLX bit width with about the same bits per weight (MLX has 2, 3, 4, 5, 6 and 8)
BITS = {"Q8_0": 8, "Q6_K": 6, "Q5_K_M": 5, "Q5_K_S": 5, "Q5_0": 5, "Q5_1": 5, "Q4_K_M": 4, "Q4_K_S": 4, "IQ4_XS": 4,
        "IQ4_NL": 4, "Q4_0": 4, "Q4_1": 4, "Q3_K_M": 3, "Q3_K_S": 3, "Q3_K_L": 3, "Q2_K": 2, "gptq-int4": 4, "gptq-int8": 8}
MiB = 1 << 20
_SAFE_DIR = re.compile(r"^\./[a-z0-9._-]+$")


def q_bits(fmt: str):
    return BITS.get(fmt)


def dtype_for(fmt: str) -> str:
    return "float16" if fmt == "f16" else "bfloat16"


def memory(ctx: Context) -> dict:
    """MLX's own numbers for this plan: converted weights, KV for every slot at its context (bytes)."""
    if ctx.spec is None:
        return {}
    bits = q_bits(ctx.plan.weight_format)
    dtype = dtype_for(ctx.plan.weight_format)
    w = mlx_weight_bytes(ctx.spec, bits, GROUP_SIZE, dtype)
    kv = mlx_kv_bytes(ctx.spec, ctx.ctx_per_slot, ctx.s.n_parallel, dtype)
    return {"weights_bytes": w.total_bytes, "kv_bytes": kv, "tokens_per_sequence": ctx.ctx_per_slot,
            "sequences": ctx.s.n_parallel, "dtype": dtype, "mlx_lm_version": MLX_LM_VERSION}


def _source(ctx: Context) -> str:
    if ctx.model.kind in ("hf-dir", "hub"):
        src = ctx.model.value
    else:
        src = ctx.model.hf_repo or (ctx.spec.hf_repo if ctx.spec else "")
        if not src and ctx.spec and ctx.spec.source.startswith("hf-dir:"):
            src = ctx.spec.source[len("hf-dir:"):]
        src = src or ctx.plan.model
    return "./" + src if src.startswith("-") else src  # never read as an option


def published(ctx: Context, bits) -> Optional[dict]:
    """The artifact catalogue's MLX conversion of a catalog model at ``bits`` (planner/data/artifacts.json), which the
    recipe downloads instead of converting; None for a model the user gave (a directory, a file, a hub id) or when
    none is published. Only a conversion of the same checkpoint (not a QAT one) and with the vision tower when the
    plan loads it."""
    if not bits or ctx.model.kind == "hf-dir" or (ctx.spec is not None and ctx.spec.source != "catalog"):
        return None
    from planner.artifacts import matches

    hits = [e for e in matches(ctx.plan.model, f"{bits}bit", "mlx") if e.get("bits") == bits and not e.get("qat")
            and not (e.get("vision") is False and ctx.s.vision)]
    return hits[0] if hits else None


def recipe(ctx: Context) -> Recipe:
    p, s = ctx.plan, ctx.s
    bits = q_bits(p.weight_format)
    dtype = dtype_for(p.weight_format)
    art = published(ctx, bits)
    src = art["repo"] if art else _source(ctx)
    out_dir = f"./{safe_name(p.model)}-mlx-{bits}bit" if bits else f"./{safe_name(p.model)}-mlx"
    assert _SAFE_DIR.match(out_dir)  # written unquoted inside "${MLX_MODEL:-...}"
    mem = memory(ctx)
    if art:  # mlx_lm.convert's own defaults (group size 64) at these bits: the bytes memory() predicts
        steps = [Step(["hf", "download", art["repo"], "--local-dir", ShellVar("MLX_MODEL")],
                      why=f"download the published MLX {bits}-bit conversion (first run only: into a temporary folder, "
                          "renamed when complete)")]
    else:
        convert = ["mlx_lm.convert", "--hf-path", src, "--mlx-path", ShellVar("MLX_MODEL")]
        if bits:
            convert += ["-q", "--q-bits", str(bits), "--q-group-size", str(GROUP_SIZE)]
        convert += ["--dtype", dtype]
        steps = [Step(convert, why="convert the Hugging Face checkpoint to MLX" + (f" at {bits} bits" if bits else "")
                      + " (first run only: into a temporary folder, renamed when complete)")]
    notes = []
    gpu = next((d for d in p.memory.devices if d.device != "CPU"), None)
    dev = ctx.hw.devices[0] if ctx.hw.devices else None
    if gpu is not None and dev is not None:
        ram = dev.total_bytes or ctx.hw.ram_bytes
        default = apple_gpu_limit_bytes(ram)
        planned = mem["weights_bytes"] + mem["kv_bytes"] if mem else gpu.total_bytes
        need = max(planned, gpu.total_bytes) + GiB
        if need > default:
            mb = -(-need // MiB)
            steps.append(Step(["sudo", "sysctl", f"iogpu.wired_limit_mb={mb}"],
                              why=f"let Metal wire {gib(need)} (macOS default {gib(default)}); resets at reboot"))
        else:
            notes.append(f"macOS's default GPU limit ({gib(default)}) covers the plan's {gib(max(planned, gpu.total_bytes))}")
    slots = max(1, s.n_parallel)
    serve = ["mlx_lm.server", "--model", ShellVar("MLX_MODEL"), "--host", "127.0.0.1", "--port", ShellVar("PORT"),
             "--decode-concurrency", str(slots), "--prompt-concurrency", str(min(slots, PROMPT_CONCURRENCY_MAX)),
             "--prompt-cache-size", str(slots)]
    if mem:
        serve += ["--prompt-cache-bytes", str(mem["kv_bytes"])]
    steps.append(Step(serve, why=f"OpenAI-compatible server on http://127.0.0.1:{SERVER_PORT} (PORT overrides)"))
    if mem:
        notes.insert(0, f"MLX {bits}-bit weights: {gib(mem['weights_bytes'])}" if bits else f"MLX {dtype} weights: {gib(mem['weights_bytes'])}")
        notes[0] += (f" (the plan's {p.weight_format} GGUF: {gib(p.weight_file_bytes)}); KV {gib(mem['kv_bytes'])} for "
                     f"{slots} x {ctx.ctx_per_slot} tokens ({dtype}; llama.cpp's: {gib(p.memory.kv_bytes)})")
    if art:
        notes.append(f"model: {src}, published by {art.get('publisher') or src.split('/')[0]}"
                     + (f" ({art['note']})" if art.get("note") else "") + f", downloaded on the first run into {out_dir} "
                     f"(MLX_MODEL overrides the folder) [{art['source']}]")
    else:
        notes.append(f"model: converted on the first run from {src} into {out_dir} (MLX_MODEL overrides the folder)")
    notes.append(f"mlx_lm.server cannot cap a request's length: a prompt plus reply above {ctx.ctx_per_slot} tokens "
                 f"uses more KV than planned (mlx_lm.generate --max-kv-size {ctx.ctx_per_slot} caps one-off prompts)")
    if not art and (ctx.model.kind == "hub" or (ctx.model.kind != "hf-dir" and src.count("/") == 1)):
        notes.append(f"{src} is gated on Hugging Face: accept the Gemma license and `hf auth login` first")
    r = Recipe("mlx", "MLX (mlx-lm, Apple silicon)", steps, notes=notes,
               requirements=[f"pip install 'mlx-lm>={MLX_LM_VERSION}' (flags as in mlx-lm {MLX_LM_VERSION})"]
               + (["huggingface_hub's `hf` CLI"] if art else []),
               settings={"q_bits": bits, "q_group_size": GROUP_SIZE if bits else None, "dtype": dtype, "mlx_path": out_dir,
                         "mlx_repo": art["repo"] if art else None,
                         "decode_concurrency": slots, "prompt_cache_size": slots,
                         "prompt_cache_bytes": mem.get("kv_bytes"), "memory": mem},
               matches_plan=False, model_path=src if ctx.model.kind == "hf-dir" else None)
    r.files["run-mlx.sh"] = script(ctx, steps, out_dir, src, "downloaded by hf download" if art else "converted by mlx_lm.convert")
    r.executable.append("run-mlx.sh")
    return r


def script(ctx: Context, steps: list[Step], out_dir: str, src: str, how: str = "converted by mlx_lm.convert") -> str:
    """Convert (or download) once (temporary folder + rename), then the remaining steps; the server is exec-ed."""
    convert, rest = steps[0], steps[1:]
    tmp_argv = [ShellVar("tmp", "/model") if isinstance(a, ShellVar) and a.name == "MLX_MODEL" else a for a in convert.argv]
    head = shell_script(ctx, [], extra=[f"model: {src} {how} into $MLX_MODEL (default {out_dir}) "
                                        "on the first run", "environment: MLX_MODEL (converted folder), PORT (default "
                                        f"{SERVER_PORT})"])
    lines = [f'MLX_MODEL="${{MLX_MODEL:-{out_dir}}}"', f'PORT="${{PORT:-{SERVER_PORT}}}"',
             'if [ ! -d "${MLX_MODEL}" ]; then',
             '  tmp="$(mktemp -d "${MLX_MODEL}.partial.XXXXXX")"',
             "  trap 'rm -rf \"${tmp}\"' EXIT",
             "  " + Step(tmp_argv).shell(),
             '  mv "${tmp}/model" "${MLX_MODEL}"',
             '  rmdir "${tmp}"',
             "  trap - EXIT",
             "fi"]
    for i, st in enumerate(rest):
        lines.append(("exec " if i == len(rest) - 1 else "") + st.shell())
    return head + "\n".join(lines) + "\n"
