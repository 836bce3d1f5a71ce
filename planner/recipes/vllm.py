"""vLLM: ``vllm serve`` with the plan's memory flags, and Ray for plans that span hosts.

Flags as in vLLM 0.33 ``engine/arg_utils.py``: ``--max-model-len`` (the plan's context per request),
``--gpu-memory-utilization`` (the fraction of each GPU vLLM claims; the KV pool is what remains after
weights, activations and CUDA graphs), ``--kv-cache-dtype``, ``--max-num-seqs`` and
``--max-num-batched-tokens`` (they size the profile run's activation peak, so they are passed even at
their defaults, which differ by GPU), ``-tp``/``-pp``, ``--dtype bfloat16`` (vLLM refuses float16 for
Gemma 2 and 3: ``_FLOAT16_NOT_SUPPORTED_MODELS`` in config/model.py), ``--quantization
fp8_per_tensor`` for fp8 (online, from the bf16 checkpoint; plain ``fp8`` no longer quantizes online,
model_executor/layers/quantization/fp8.py). GPTQ checkpoints get no ``--quantization``: vLLM reads
``quant_method`` from the checkpoint and runs it with Marlin (auto_gptq.py
``override_quantization_method``). ``--language-model-only`` for multimodal checkpoints: the plan is
for text, and without it vLLM loads and profiles the vision/audio towers, which shrinks the KV pool.
A plan whose ranks outnumber one host's GPUs runs on a Ray
cluster (``ray start --head`` / ``ray start --address``, ``--distributed-executor-backend ray``):
tensor parallel inside a host, pipeline parallel across hosts.
"""

from __future__ import annotations

from typing import Optional

from planner.recipes.base import Context, Recipe, ShellVar, Step, gib, model_origin, shell_script
from profiles.units import fmt_gib

SERVER_HOST = "127.0.0.1"
SERVER_PORT = 8000
RAY_PORT = 6379
QUANTIZATION = {"fp8": "fp8_per_tensor"}  # GPTQ: none, vLLM reads it from the checkpoint (Marlin)
DTYPE = {"bf16": "bfloat16", "f16": "float16", "fp8": "bfloat16", "gptq-int4": "bfloat16", "gptq-int8": "bfloat16"}


def language_model_only(ctx: Context) -> bool:
    """Multimodal checkpoints start text-only (MultiModalConfig.language_model_only)."""
    return bool(ctx.spec and (ctx.spec.vision_params or ctx.spec.audio_params))


def gpus_per_host(ctx: Context) -> int:
    hosts = ctx.hw.hosts
    return min(len(h.devices) for h in hosts) if len(hosts) > 1 else len(ctx.hw.devices)


def multi_node(ctx: Context) -> bool:
    s = ctx.s
    return len(ctx.hw.hosts) > 1 and s.tensor_parallel * s.pipeline_parallel > gpus_per_host(ctx)


def serve_argv(ctx: Context) -> list[str]:
    s, p = ctx.s, ctx.plan
    argv = ["vllm", "serve", ctx.model.value,
            "--max-model-len", str(s.n_ctx),
            "--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}",
            "--kv-cache-dtype", s.kv_cache_dtype,
            "--max-num-seqs", str(s.max_num_seqs),
            "--max-num-batched-tokens", str(s.max_num_batched_tokens),
            "-tp", str(s.tensor_parallel), "-pp", str(s.pipeline_parallel)]
    if p.weight_format in DTYPE:
        argv += ["--dtype", DTYPE[p.weight_format]]
    if p.weight_format in QUANTIZATION:
        argv += ["--quantization", QUANTIZATION[p.weight_format]]
    if language_model_only(ctx):
        argv.append("--language-model-only")
    if s.enforce_eager:
        argv.append("--enforce-eager")
    if multi_node(ctx):
        argv += ["--distributed-executor-backend", "ray"]
    argv += ["--host", SERVER_HOST, "--port", str(SERVER_PORT)]
    return argv


def _kv_heads_note(ctx: Context) -> Optional[str]:
    if not ctx.spec:
        return None
    tp = ctx.s.tensor_parallel
    kv = sorted({lay.n_head_kv for lay in ctx.spec.layers})
    low = [k for k in kv if k < tp]
    if low:
        return (f"tensor parallel {tp} is above the {'/'.join(map(str, low))} KV heads of some layers: vLLM replicates "
                f"those heads on every rank (the plan counts the replicated KV)")
    return None


def recipe(ctx: Context) -> Recipe:
    s, p = ctx.s, ctx.plan
    serve = Step(serve_argv(ctx), why=f"OpenAI-compatible server on http://{SERVER_HOST}:{SERVER_PORT}")
    ranks = s.tensor_parallel * s.pipeline_parallel
    gpus = [d for d in p.memory.devices if d.device != "CPU"]
    notes = []
    if gpus:
        d = gpus[0]
        kvc = p.memory.kv_cells
        notes.append(f"each of the {ranks} GPU rank(s): weights {gib(d.weights_bytes)}, activation peak and CUDA graphs "
                     f"{gib(d.compute_bytes)} (estimated), of {gib(d.detail.get('requested_bytes', 0))} claimed "
                     f"(--gpu-memory-utilization {s.gpu_memory_utilization:g} of the "
                     f"{gib(d.detail.get('cuda_total_bytes', 0))} CUDA reports)")
        notes.append(f"vLLM should log about: Available KV cache memory: {fmt_gib(d.detail.get('available_kv_bytes', 0), 2)}; "
                     f"GPU KV cache size: {kvc.get('kv_cache_tokens', 0):,} tokens; Maximum concurrency for "
                     f"{s.n_ctx:,} tokens per request: {kvc.get('max_concurrency', 0):.2f}x")
    if language_model_only(ctx):
        notes.append("--language-model-only: text only; drop it for images/audio, which loads the towers "
                     "and profiles the encoder (a smaller KV pool than planned)")
    note = _kv_heads_note(ctx)
    if note:
        notes.append(note)
    if p.weight_format == "fp8":
        notes.append("--quantization fp8_per_tensor quantizes the bf16 checkpoint to fp8 while loading (needs an fp8-capable GPU: Ada, Hopper or newer)")
    if p.weight_format.startswith("gptq"):
        notes.append(f"{ctx.model.value} must be a GPTQ checkpoint (gemma-plan quantize --format {p.weight_format}, or a published one); "
                     f"vLLM reads its quantization_config and runs it with Marlin kernels in bfloat16")
    if ctx.model.kind == "hub":
        notes.append(f"{ctx.model.value} is gated on Hugging Face: accept the Gemma license and `hf auth login` first")
    steps = [serve]
    files = {}
    if multi_node(ctx):
        head = Step(["ray", "start", "--head", "--port", str(RAY_PORT)], where="the head host", why="start the Ray cluster")
        worker = Step(["ray", "start", "--address", ShellVar("HEAD_ADDRESS", f":{RAY_PORT}")], where="every other host",
                      why="join the Ray cluster")
        serve.where = "the head host, after every host has joined"
        steps = [head, worker, serve]
        hosts = ctx.hw.hosts
        notes.insert(0, f"{len(hosts)} hosts x {gpus_per_host(ctx)} GPUs: tensor parallel {s.tensor_parallel} inside each host, "
                        f"pipeline parallel {s.pipeline_parallel} across hosts, over Ray")
        notes.append("every host needs the same vLLM version, the model at the same path (or the same hub cache), and a "
                     "fast network for NCCL (set NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME to that interface if needed)")
        files["run-ray-head.sh"] = shell_script(ctx, [head], extra=["run on the head host"])
        pre = ['HEAD_ADDRESS="${HEAD_ADDRESS:?set HEAD_ADDRESS to the head host address}"']
        files["run-ray-worker.sh"] = shell_script(ctx, [worker], extra=["run on every other host"], preamble=pre)
        files["run-vllm.sh"] = shell_script(ctx, [serve], extra=[model_origin(ctx), "run on the head host once `ray status` lists every GPU"])
    else:
        files["run-vllm.sh"] = shell_script(ctx, [serve], extra=[model_origin(ctx)])
        if len(ctx.hw.hosts) > 1:
            notes.insert(0, f"fits one host ({ranks} of its {gpus_per_host(ctx)} GPUs): run it on any one of the "
                            f"{len(ctx.hw.hosts)} hosts; no Ray cluster needed")
    # where the model comes from: first when it has to be made (a GPTQ checkpoint), else after the memory notes
    notes.insert(0 if ctx.model.kind == "placeholder-dir" else len(notes), model_origin(ctx))
    r = Recipe("vllm", "vLLM" + (" on a Ray cluster" if multi_node(ctx) else ""), steps, files=files,
               executable=sorted(files), notes=notes,
               requirements=[f"pip install vllm (the plan models {p.memory.engine_version})"] + (["pip install 'ray[default]'"] if multi_node(ctx) else []),
               settings={"max_model_len": s.n_ctx, "gpu_memory_utilization": s.gpu_memory_utilization,
                         "kv_cache_dtype": s.kv_cache_dtype, "max_num_seqs": s.max_num_seqs,
                         "max_num_batched_tokens": s.max_num_batched_tokens, "tensor_parallel": s.tensor_parallel,
                         "pipeline_parallel": s.pipeline_parallel, "quantization": QUANTIZATION.get(p.weight_format),
                         "dtype": DTYPE.get(p.weight_format), "language_model_only": language_model_only(ctx),
                         "enforce_eager": s.enforce_eager, "ray": multi_node(ctx)},
               model_path=ctx.model.value if ctx.model.is_local else None)
    return r


_VALUE = {"--max-model-len": "max_model_len", "--gpu-memory-utilization": "gpu_memory_utilization",
          "--kv-cache-dtype": "kv_cache_dtype", "--max-num-seqs": "max_num_seqs",
          "--max-num-batched-tokens": "max_num_batched_tokens", "-tp": "tensor_parallel",
          "--tensor-parallel-size": "tensor_parallel", "-pp": "pipeline_parallel", "--pipeline-parallel-size": "pipeline_parallel",
          "--quantization": "quantization", "-q": "quantization", "--dtype": "dtype",
          "--distributed-executor-backend": "backend", "--host": "host", "--port": "port"}


def parse_argv(argv: list[str]) -> dict:
    """``vllm serve MODEL ...`` -> settings (vLLM's own names); unknown flags raise ValueError."""
    if len(argv) < 3 or argv[:2] != ["vllm", "serve"]:
        raise ValueError("not a `vllm serve` command")
    out: dict = {"model": argv[2], "quantization": None, "dtype": None, "enforce_eager": False,
                 "language_model_only": False, "ray": False}
    i = 3
    while i < len(argv):
        a = argv[i]
        if a in ("--enforce-eager", "--language-model-only"):
            out[a[2:].replace("-", "_")] = True
            i += 1
            continue
        if a not in _VALUE or i + 1 >= len(argv):
            raise ValueError(f"unexpected argument {a!r}")
        key, val = _VALUE[a], argv[i + 1]
        if key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "tensor_parallel", "pipeline_parallel", "port"):
            out[key] = int(val)
        elif key == "gpu_memory_utilization":
            out[key] = float(val)
        elif key == "backend":
            out["ray"] = val == "ray"
        else:
            out[key] = val
        i += 2
    return out


def check(recipe: Recipe, ctx: Context) -> list[str]:
    want = {"max_model_len": ctx.s.n_ctx, "gpu_memory_utilization": ctx.s.gpu_memory_utilization,
            "kv_cache_dtype": ctx.s.kv_cache_dtype, "max_num_seqs": ctx.s.max_num_seqs,
            "max_num_batched_tokens": ctx.s.max_num_batched_tokens, "tensor_parallel": ctx.s.tensor_parallel,
            "pipeline_parallel": ctx.s.pipeline_parallel, "quantization": QUANTIZATION.get(ctx.plan.weight_format),
            "dtype": DTYPE.get(ctx.plan.weight_format), "language_model_only": language_model_only(ctx),
            "enforce_eager": ctx.s.enforce_eager, "ray": multi_node(ctx)}
    problems = []
    serves = [s for s in recipe.steps if [str(a) for a in s.argv[:2]] == ["vllm", "serve"]]
    if not serves:
        return ["no `vllm serve` command"]
    try:
        got = parse_argv([str(a) for a in serves[0].argv])
    except ValueError as exc:
        return [f"vllm serve: {exc}"]
    for k, v in want.items():
        if got.get(k) != v:
            problems.append(f"vllm serve: {k} is {got.get(k)!r}, the plan says {v!r}")
    return problems
