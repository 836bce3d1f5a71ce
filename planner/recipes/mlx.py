"""MLX on Apple silicon: ``mlx_lm.convert`` to the nearest bit width, ``mlx_lm.server`` with a KV cap.

MLX quantizes with its own scheme (affine, group size 64 by default: one fp16 scale and one fp16 bias
per group, so ``bits + 32/64`` bits per weight), so the weights differ from the GGUF the plan sized;
the recipe gives the estimate and is marked as not matching the plan. ``--max-kv-size`` caps the
KV cache per sequence at the plan's context per slot (a rotating cache: older tokens are dropped).
When the plan needs more GPU memory than macOS wires by default, the recipe adds the
``sysctl iogpu.wired_limit_mb`` command (profiles.unified has the default rule).
"""

from __future__ import annotations

from planner.recipes.base import Context, Recipe, Step, gib, safe_name, shell_script
from profiles.unified import apple_gpu_limit_bytes

GROUP_SIZE = 64  # mlx_lm.convert's default --q-group-size
SERVER_PORT = 8080
# GGUF mix -> MLX bit width with about the same bits per weight (MLX has 2, 3, 4, 5, 6 and 8)
BITS = {"Q8_0": 8, "Q6_K": 6, "Q5_K_M": 5, "Q5_K_S": 5, "Q5_0": 5, "Q5_1": 5, "Q4_K_M": 4, "Q4_K_S": 4, "IQ4_XS": 4,
        "IQ4_NL": 4, "Q4_0": 4, "Q4_1": 4, "Q3_K_M": 3, "Q3_K_S": 3, "Q3_K_L": 3, "Q2_K": 2, "gptq-int4": 4, "gptq-int8": 8}
MiB = 1 << 20


def q_bits(fmt: str):
    return BITS.get(fmt)


def recipe(ctx: Context) -> Recipe:
    p = ctx.plan
    bits = q_bits(p.weight_format)
    src = ctx.model.hf_repo or (ctx.spec.hf_repo if ctx.spec else "")
    if not src and ctx.spec and ctx.spec.source.startswith("hf-dir:"):
        src = ctx.spec.source[len("hf-dir:"):]
    src = src or p.model
    src = "./" + src if src.startswith("-") else src  # never read as an option
    out_dir = f"./{safe_name(p.model)}-mlx-{bits}bit" if bits else f"./{safe_name(p.model)}-mlx"
    convert = ["mlx_lm.convert", "--hf-path", src, "--mlx-path", out_dir]
    if bits:
        convert += ["-q", "--q-bits", str(bits), "--q-group-size", str(GROUP_SIZE)]
    else:
        convert += ["--dtype", "bfloat16" if p.weight_format != "f16" else "float16"]
    steps = [Step(convert, why="convert the Hugging Face checkpoint to MLX" + (f" at {bits} bits" if bits else ""))]
    notes = []
    gpu = next((d for d in p.memory.devices if d.device != "CPU"), None)
    dev = ctx.hw.devices[0] if ctx.hw.devices else None
    if gpu is not None and dev is not None:
        ram = dev.total_bytes or ctx.hw.ram_bytes
        default = apple_gpu_limit_bytes(ram)
        need = gpu.total_bytes + (1 << 30)
        if need > default:
            mb = -(-need // MiB)
            steps.append(Step(["sudo", "sysctl", f"iogpu.wired_limit_mb={mb}"],
                              why=f"let Metal wire {gib(need)} (macOS default {gib(default)}); resets at reboot"))
        else:
            notes.append(f"macOS's default GPU limit ({gib(default)}) covers the plan's {gib(gpu.total_bytes)}")
    serve = ["mlx_lm.server", "--model", out_dir, "--host", "127.0.0.1", "--port", str(SERVER_PORT),
             "--max-kv-size", str(ctx.ctx_per_slot)]
    steps.append(Step(serve, why=f"OpenAI-compatible server on http://127.0.0.1:{SERVER_PORT}"))
    n_params = ctx.spec.n_params_text if ctx.spec else 0
    if bits and n_params:
        est = n_params * (bits + 32 / GROUP_SIZE) / 8
        notes.insert(0, f"MLX {bits}-bit weights: about {gib(int(est))} (the plan's {p.weight_format} GGUF: "
                        f"{gib(p.weight_file_bytes)}); KV is MLX's own fp16 cache, capped at {ctx.ctx_per_slot} tokens per sequence")
    notes.append("mlx_lm.generate takes the same --max-kv-size for one-off prompts")
    if ctx.model.kind == "hub" or src.count("/") == 1:
        notes.append(f"{src} is gated on Hugging Face: accept the Gemma license and `hf auth login` first")
    r = Recipe("mlx", "MLX (mlx-lm, Apple silicon)", steps, notes=notes,
               requirements=["pip install mlx-lm (a recent release with --max-kv-size on mlx_lm.server)"],
               settings={"q_bits": bits, "q_group_size": GROUP_SIZE if bits else None, "max_kv_size": ctx.ctx_per_slot},
               matches_plan=False)
    r.files["run-mlx.sh"] = shell_script(ctx, steps)
    r.executable.append("run-mlx.sh")
    return r
