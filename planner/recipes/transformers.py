"""transformers: a runnable Python script with the plan's dtype, placement and cache.

The memory model (``planner.memory.transformers_memory``) puts every weight on the first GPU, so the
script pins ``device_map={"": 0}`` instead of ``"auto"`` (accelerate's auto map would leave 10 % of a
single GPU unused and may spill layers to the CPU). The cache is transformers 5.x's default
``DynamicCache``, which keeps only the window on Gemma's sliding layers and nothing on KV-shared
layers; the prompt plus the new tokens must stay within the plan's context.
"""

from __future__ import annotations

from planner.recipes.base import Context, Recipe, Step, comment, gib, model_origin, py_literal

DTYPE = {"bf16": "torch.bfloat16", "f16": "torch.float16", "gptq-int4": "torch.float16", "gptq-int8": "torch.float16"}


def script(ctx: Context) -> str:
    p, s = ctx.plan, ctx.s
    dtype = DTYPE.get(p.weight_format, "torch.bfloat16")
    # on a GPU, load straight onto it (device_map needs accelerate); on a CPU the default placement is right
    place = [f"    device_map={py_literal({'': 0})},  # the plan places every weight on one GPU"] if ctx.hw.devices else []
    lines = ["#!/usr/bin/env python3"] + ["# " + comment(c) for c in ctx.header() + [model_origin(ctx)]] + [
        "import torch",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"MODEL = {py_literal(ctx.model.value)}",
        f"MAX_CONTEXT = {s.n_ctx}  # prompt + new tokens, as planned",
        "MAX_NEW_TOKENS = 256",
        "",
        "tokenizer = AutoTokenizer.from_pretrained(MODEL)",
        "model = AutoModelForCausalLM.from_pretrained(",
        "    MODEL,",
        f"    dtype={dtype},",
    ] + place + [
        ")",
        "",
        'messages = [{"role": "user", "content": "Say hello in one sentence."}]',
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
        "inputs = inputs.to(model.device)",
        'prompt_len = inputs["input_ids"].shape[-1]',
        "if prompt_len + MAX_NEW_TOKENS > MAX_CONTEXT:",
        '    raise SystemExit(f"prompt of {prompt_len} tokens + {MAX_NEW_TOKENS} new ones is above the planned {MAX_CONTEXT}")',
        "# DynamicCache: sliding-window layers keep only their window, KV-shared layers store nothing",
        'out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, cache_implementation="dynamic", do_sample=False)',
        "print(tokenizer.decode(out[0][prompt_len:], skip_special_tokens=True))",
        "",
    ]
    return "\n".join(lines)


def recipe(ctx: Context) -> Recipe:
    p = ctx.plan
    notes = [model_origin(ctx), f"planned: weights {gib(p.memory.weights_bytes)}, KV {gib(p.memory.kv_bytes)}, prefill activations "
             f"{gib(p.memory.compute_bytes)} for a {p.ctx}-token prompt"]
    reqs = ["pip install 'transformers>=5' torch (a CUDA build of torch for GPUs)"]
    if ctx.hw.devices:
        reqs.append("pip install accelerate (device_map)")
    if p.weight_format.startswith("gptq"):
        reqs.append("pip install gptqmodel optimum (GPTQ checkpoints)")
        notes.append(f"{ctx.model.value} must be a GPTQ checkpoint (its config.json carries the quantization)")
    if ctx.spec and ctx.spec.vision_params:
        notes.append(f"AutoModelForCausalLM loads the whole multimodal checkpoint: its vision tower "
                     f"(~{ctx.spec.vision_params / 1e6:.0f}M params) comes on top of the plan's text weights")
    if ctx.model.kind == "hub":
        notes.append(f"{ctx.model.value} is gated on Hugging Face: accept the Gemma license and `hf auth login` first")
    step = Step(["python3", "load_transformers.py"], why="load, generate one reply")
    r = Recipe("transformers", "transformers (Python)", [step], notes=notes, requirements=reqs,
               settings={"dtype": DTYPE.get(p.weight_format, "torch.bfloat16"), "device_map": "0" if ctx.hw.devices else None,
                         "max_context": p.ctx, "cache_implementation": "dynamic"},
               matches_plan=p.engine == "transformers", model_path=ctx.model.value if ctx.model.is_local else None)
    if p.engine != "transformers":
        r.notes.insert(0, f"the plan is for {p.engine}; transformers needs its own memory (gemma-plan estimate --engine transformers)")
    r.files["load_transformers.py"] = script(ctx)
    r.executable.append("load_transformers.py")
    return r
