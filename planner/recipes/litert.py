"""LiteRT-LM on Android phones: which published Gemma bundle fits, how to push it, how to run it.

LiteRT-LM runs its own ``.litertlm`` bundles (int4/int8 weights with a fixed KV size), not GGUF, so
the plan's numbers do not carry over; the recipe picks the bundle for the planned model (or the
largest published one that fits the phone's app budget), pushes it with ``adb`` and runs Google's
``litert_lm_main`` demo binary with ``--max_num_tokens``. Building that binary (Bazel, Android NDK)
and shipping the model inside an app are not automated: the notes say so.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional

from planner.recipes.base import Context, Recipe, Step, gib, shell_script

DEVICE_DIR = "/data/local/tmp/gemma"
MB = 1_000_000


@dataclass(frozen=True)
class Bundle:
    model: str  # catalog name
    repo: str  # Hugging Face repository
    file: Optional[str]  # file in the repo, when published by name
    size_bytes: Optional[int]  # download size
    max_tokens: int  # KV size the bundle was exported with
    source: str


# Published LiteRT-LM bundles (LiteRT-LM README, "Supported Models and Performance"; Hugging Face litert-community).
BUNDLES = (
    Bundle("gemma-3-1b", "litert-community/Gemma3-1B-IT", "Gemma3-1B-IT_multi-prefill-seq_q4_ekv4096.litertlm", 557 * MB, 4096,
           "github.com/google-ai-edge/LiteRT-LM README: 4-bit per-channel, context 4096, 557 MB"),
    Bundle("gemma-3n-e2b", "google/gemma-3n-E2B-it-litert-lm-preview", None, 2965 * MB, 4096,
           "github.com/google-ai-edge/LiteRT-LM README: 4-bit per-channel, context 4096, 2965 MB"),
    Bundle("gemma-3n-e4b", "google/gemma-3n-E4B-it-litert-lm-preview", None, 4235 * MB, 4096,
           "github.com/google-ai-edge/LiteRT-LM README: 4-bit per-channel, context 4096, 4235 MB"),
    Bundle("gemma-4-e2b", "litert-community/gemma-4-E2B-it-litert-lm", "gemma-4-E2B-it.litertlm", 2580 * MB, 4096,
           "ai.google.dev/edge/litert-lm/models/gemma-4: Model Size 2.58 GB (gemma-4-E2B-it.litertlm)"),
    Bundle("gemma-4-e4b", "litert-community/gemma-4-E4B-it-litert-lm", None, None, 4096,
           "huggingface.co/litert-community (Gemma 4 E4B bundle; size not recorded here)"),
)


def choose_bundle(model: str, budget_bytes: int) -> tuple[Optional[Bundle], str]:
    """The bundle for the planned model if one is published and fits, else the largest that fits."""
    by_model = {b.model: b for b in BUNDLES}
    b = by_model.get(model)
    if b is not None and (b.size_bytes is None or b.size_bytes <= budget_bytes):
        return b, f"published LiteRT-LM bundle of {model}"
    sized = [b for b in BUNDLES if b.size_bytes is not None and b.size_bytes <= budget_bytes]
    if not sized:
        return None, "no published LiteRT-LM Gemma bundle fits this phone's budget"
    best = max(sized, key=lambda x: x.size_bytes)
    why = f"no published bundle of {model}" if b is None else f"{model}'s bundle does not fit"
    return best, f"{why}; {best.model} is the largest published one that fits ({gib(best.size_bytes)})"


def recipe(ctx: Context) -> Recipe:
    dev = ctx.hw.devices[0] if ctx.hw.devices else None
    budget = (dev.memory_bytes if dev else ctx.hw.ram_bytes) - (1 << 30)
    bundle, why = choose_bundle(ctx.plan.model, budget)
    notes = [why, "LiteRT-LM runs its own .litertlm bundles: the plan's GGUF memory numbers do not apply to it",
             "not automated: building litert_lm_main (Bazel 7.6 + Android NDK r28b, "
             "`bazel build --config=android_arm64 //runtime/engine:litert_lm_main` in a LiteRT-LM checkout), "
             "accepting the Gemma license on Hugging Face, and shipping the model in an app "
             "(the LiteRT-LM Kotlin API or MediaPipe LLM Inference with .task files)"]
    if bundle is None:
        return Recipe("litert", "LiteRT-LM (Android)", [], notes=notes, matches_plan=False,
                      requirements=["adb", "a LiteRT-LM build for android_arm64"])
    notes.append(f"bundle: {bundle.repo}" + (f"/{bundle.file}" if bundle.file else " (the .litertlm file in that repository)")
                 + f" [{bundle.source}]")
    local = bundle.file or "model.litertlm"
    max_tokens = min(ctx.plan.ctx, bundle.max_tokens)
    if ctx.plan.ctx > bundle.max_tokens:
        notes.append(f"the bundle was exported with a {bundle.max_tokens}-token KV cache: --max_num_tokens is capped there")
    download = ["hf", "download", bundle.repo] + ([bundle.file] if bundle.file else ["--include", "*.litertlm"]) + ["--local-dir", "."]
    remote_model = f"{DEVICE_DIR}/model.litertlm"
    run_remote = ["env", f"LD_LIBRARY_PATH={DEVICE_DIR}/android_arm64", f"{DEVICE_DIR}/litert_lm_main", "--backend=gpu",
                  f"--model_path={remote_model}", f"--max_num_tokens={max_tokens}"]
    steps = [
        Step(download, why="download the bundle (gated: accept the license and `hf auth login` first)"),
        Step(["adb", "shell", shlex.join(["mkdir", "-p", DEVICE_DIR])], why="a folder adb may write"),
        Step(["adb", "push", local, remote_model], why="copy the model to the phone"),
        Step(["adb", "push", "bazel-bin/runtime/engine/litert_lm_main", f"{DEVICE_DIR}/"], why="the demo binary you built"),
        Step(["adb", "push", "prebuilt/android_arm64", f"{DEVICE_DIR}/"], why="GPU delegate libraries from the LiteRT-LM checkout"),
        # adb shell hands its arguments to the phone's shell as one command line: pass one quoted string
        Step(["adb", "shell", shlex.join(run_remote)], why="run on the phone's GPU (use --backend=cpu if it fails)"),
    ]
    if not bundle.file:
        notes.append("the download keeps the repository's file name: rename it to model.litertlm before `adb push`")
    r = Recipe("litert", "LiteRT-LM (Android, adb)", steps, notes=notes, matches_plan=False,
               requirements=["adb (Android platform tools), USB debugging on the phone",
                             "a LiteRT-LM checkout with litert_lm_main built for android_arm64 (run the script from there)",
                             "huggingface_hub's `hf` CLI"],
               settings={"bundle": bundle.repo, "file": bundle.file, "max_num_tokens": max_tokens})
    r.files["run-litert-android.sh"] = shell_script(ctx, steps, extra=["run from a LiteRT-LM checkout with litert_lm_main built"],
                                                     cd_self=False)
    r.executable.append("run-litert-android.sh")
    return r
