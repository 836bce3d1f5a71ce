"""Every `vllm serve` command gemma-plan writes goes through vLLM 0.33's own argument parser
(vllm.entrypoints.common.cli_args.make_arg_parser, what `vllm serve` builds) and EngineArgs, and uses
no flag value vLLM 0.33 refuses: no float16 for Gemma 2/3, no deprecated or online-less quantization
names, and for GPTQ no method that would bypass Marlin."""

from __future__ import annotations

import os
import shlex

import pytest

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

from planner.catalog import get_model  # noqa: E402
from planner.recipes import render_all  # noqa: E402
from planner.search import recommend  # noqa: E402
from profiles.targets import load_target  # noqa: E402

# (model, target, formats, recommend kwargs)
PLANS = [
    ("gemma-3-12b", "l4", ["gptq-int4"], {}),
    ("gemma-3-27b", "h100", ["fp8"], {}),
    ("gemma-3-4b", "a6000", ["bf16"], {"kv_types": [("fp8", "fp8")]}),
    ("gemma-2-9b", "l4", ["gptq-int8"], {}),
    ("gemma-3-1b", "l4", ["bf16"], {}),
    ("gemma-4-31b", "2x-a6000", ["bf16"], {}),
    ("gemma-4-26b-a4b", "h100", ["gptq-int4"], {}),
    ("gemma-4-31b", "cluster-2x-dgx-spark", ["bf16"], {"ctx_max": True, "parallel": 4}),
]


@pytest.fixture(autouse=True)
def _hub_online_for_vllm(monkeypatch):
    # With HF_HUB_OFFLINE (set for every test by the root conftest.py) EngineArgs.__post_init__ resolves the
    # model id through the local hub cache (vllm.transformers_utils.repo_utils.get_model_path), which the
    # hermetic cache does not have. Online, it only parses; sockets stay blocked to anything but loopback.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def vparse():
    from vllm.config.model import _FLOAT16_NOT_SUPPORTED_MODELS
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.model_executor.layers.quantization import DEPRECATED_QUANTIZATION_METHODS, QUANTIZATION_METHODS
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    parser = make_arg_parser(FlexibleArgumentParser())
    return parser, EngineArgs, _FLOAT16_NOT_SUPPORTED_MODELS, QUANTIZATION_METHODS, DEPRECATED_QUANTIZATION_METHODS


def _serve_from_script(text: str) -> list[str]:
    """The `vllm serve` command of run-vllm.sh, as the shell would split it."""
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["exec"]:
            words = words[1:]
        if words[:2] == ["vllm", "serve"]:
            return words
    raise AssertionError("no vllm serve line in run-vllm.sh")


@pytest.mark.parametrize("model,target,formats,kw", PLANS)
def test_vllm_argv_passes_vllms_parser(vparse, model, target, formats, kw):
    parser, EngineArgs, no_fp16, methods, deprecated = vparse
    spec = get_model(model)[0]
    hw = load_target(target)
    rec = recommend(hw, models=[spec], engine="vllm", formats=formats, target=target, **kw)
    assert rec.plan is not None and rec.plan.fits
    r = render_all(rec.plan, hw, spec=spec)["vllm"]
    argv = _serve_from_script(r.files["run-vllm.sh"])
    args = parser.parse_args(argv[2:])  # SystemExit on anything vLLM's parser refuses
    ea = EngineArgs.from_cli_args(args)
    s = rec.plan.settings
    assert args.model_tag == argv[2]
    assert (ea.max_model_len, ea.gpu_memory_utilization, ea.kv_cache_dtype) == (s.n_ctx, s.gpu_memory_utilization, s.kv_cache_dtype)
    assert (ea.tensor_parallel_size, ea.pipeline_parallel_size) == (s.tensor_parallel, s.pipeline_parallel)
    assert (ea.max_num_seqs, ea.max_num_batched_tokens) == (s.max_num_seqs, s.max_num_batched_tokens)
    model_types = {"gemma2": "gemma2", "gemma3": "gemma3"}
    if spec.family in model_types:
        assert model_types[spec.family] in no_fp16 and ea.dtype != "float16" and ea.dtype != "half"
    q = ea.quantization
    assert q is None or (q in methods and q not in deprecated and q != "fp8"), q
    if rec.plan.weight_format.startswith("gptq"):
        assert q in (None, "gptq_marlin")  # anything else would keep vLLM off Marlin
    assert ea.language_model_only == bool(spec.vision_params or spec.audio_params)


def test_quantize_recipe_passes_vllms_parser(vparse, tmp_path):
    from quantize.gptq import build_recipe
    parser, EngineArgs, *_ = vparse
    argv = build_recipe(tmp_path / "ckpt", 4, 128)["vllm"]["argv"]
    ea = EngineArgs.from_cli_args(parser.parse_args(argv[2:]))
    assert ea.dtype == "bfloat16" and ea.quantization is None
