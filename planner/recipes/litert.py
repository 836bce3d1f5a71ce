"""LiteRT-LM on Android phones: which published Gemma bundle fits, how to fetch it, try it, push it and run it.

LiteRT-LM runs its own ``.litertlm`` bundles (int4/int8 weights with a fixed KV size), not GGUF, so
the plan's numbers do not carry over; the recipe picks the bundle for the planned model (or the
largest published one that fits the phone's app budget) and downloads it with ``hf download`` into its
own folder, from the repository and file the artifact catalogue names for that model (the same ones
``plan.artifact`` and ``gemma-plan fetch`` use), so the script knows the file it pushes: the published
name when the catalogue records it, else
the one ``.litertlm`` file the repository holds (the script stops if there is not exactly one). Two
scripts: ``run-litert-desktop.sh`` tries the bundle on this computer with the ``litert-lm`` CLI from
PyPI (``litert-lm run FILE --backend cpu --max-num-tokens N --prompt ...``, litert-lm 0.18.1), and
``run-litert-android.sh`` pushes it and Google's ``litert_lm_main`` demo binary with ``adb`` and runs it
(``--backend --model_path --input_prompt``: the flags ``runtime/engine/litert_lm_main.cc`` defines, see
bench/data/engine_flags/litert.json; it takes the KV size from the bundle). Building that binary
(Bazel, Android NDK) and shipping the model inside an app are not automated: the notes say so.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional

from planner.recipes.base import Context, Recipe, ShellVar, Step, gib, safe_name, shell_script
from profiles.units import GiB

DEVICE_DIR = "/data/local/tmp/gemma"
REMOTE_MODEL = f"{DEVICE_DIR}/model.litertlm"
LITERT_LM_VERSION = "0.18.1"  # the PyPI CLI whose parser tests/test_recipes_engines.py runs
PROMPT = "Say hello in one sentence."
MB = 1_000_000


@dataclass(frozen=True)
class Bundle:
    model: str  # catalog name; its repository and file are the artifact catalogue's (planner/data/artifacts.json)
    size_bytes: Optional[int]  # download size
    max_tokens: int  # KV size the bundle was exported with
    source: str

    @property
    def artifact(self) -> dict:
        return published(self.model)

    @property
    def repo(self) -> str:
        return self.artifact["repo"]

    @property
    def file(self) -> Optional[str]:
        return self.artifact.get("file")  # None: the repository's one .litertlm file


def published(model: str) -> dict:
    """The artifact catalogue's LiteRT-LM bundle of ``model`` (the one a litert-lm plan names as plan.artifact)."""
    from planner.artifacts import ArtifactCatalogError, matches

    hits = matches(model, "", "litert-lm")
    if not hits:
        raise ArtifactCatalogError(f"{model}: a LiteRT-LM bundle is sized here but planner/data/artifacts.json lists none")
    return hits[0]


# Sizes and KV lengths of published LiteRT-LM bundles (LiteRT-LM README, "Supported Models and Performance";
# ai.google.dev); where each one is downloaded from is the artifact catalogue's entry of the same model.
BUNDLES = (
    Bundle("gemma-3-1b", 557 * MB, 4096, "github.com/google-ai-edge/LiteRT-LM README: 4-bit per-channel, context 4096, 557 MB"),
    Bundle("gemma-3n-e2b", 2965 * MB, 4096, "github.com/google-ai-edge/LiteRT-LM README: 4-bit per-channel, context 4096, 2965 MB"),
    Bundle("gemma-3n-e4b", 4235 * MB, 4096, "github.com/google-ai-edge/LiteRT-LM README: 4-bit per-channel, context 4096, 4235 MB"),
    Bundle("gemma-4-e2b", 2580 * MB, 4096,
           "ai.google.dev/edge/litert-lm/models/gemma-4: Model Size 2.58 GB (gemma-4-E2B-it.litertlm)"),
    Bundle("gemma-4-e4b", None, 4096, "huggingface.co/litert-community (Gemma 4 E4B bundle; size not recorded here)"),
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


def bundle_dir(bundle: Bundle) -> str:
    return f"./litert-{safe_name(bundle.model)}"


def _fetch_lines(bundle: Bundle, download: Step) -> list[str]:
    """Download into the bundle's folder, then BUNDLE= the one .litertlm file there (fixed text + quoted names)."""
    d = bundle_dir(bundle)
    pattern = shlex.quote(f"{d}/{bundle.file}") if bundle.file else shlex.quote(d) + "/*.litertlm"
    return [download.shell(),
            f"set -- {pattern}",
            'if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then',
            f'  echo "expected one .litertlm file in {d}, found: $*; keep the one for this phone '
            'and delete the others" >&2',
            "  exit 1",
            "fi",
            'BUNDLE="$1"']


def recipe(ctx: Context) -> Recipe:
    dev = ctx.hw.devices[0] if ctx.hw.devices else None
    budget = (dev.memory_bytes if dev else ctx.hw.ram_bytes) - GiB
    bundle, why = choose_bundle(ctx.plan.model, budget)
    notes = [why, "LiteRT-LM runs its own .litertlm bundles: the plan's GGUF memory numbers do not apply to it",
             "not automated: building litert_lm_main (Bazel 7.6 + Android NDK r28b, "
             "`bazel build --config=android_arm64 //runtime/engine:litert_lm_main` in a LiteRT-LM checkout), "
             "accepting the Gemma license on Hugging Face, and shipping the model in an app "
             "(the LiteRT-LM Kotlin API or MediaPipe LLM Inference with .task files)"]
    if bundle is None:
        return Recipe("litert", "LiteRT-LM (Android)", [], notes=notes, matches_plan=False,
                      requirements=["adb", "a LiteRT-LM build for android_arm64"])
    d = bundle_dir(bundle)
    origin = (f"model: {bundle.repo}" + (f"/{bundle.file}" if bundle.file else " (its one .litertlm file)")
              + f" from Hugging Face, downloaded into {d} [{bundle.source}]")
    notes.insert(0, origin)
    max_tokens = min(ctx.plan.ctx, bundle.max_tokens)
    if ctx.plan.ctx > bundle.max_tokens:
        notes.append(f"the bundle was exported with a {bundle.max_tokens}-token KV cache: the context is capped there")
    download = Step(["hf", "download", bundle.repo] + ([bundle.file] if bundle.file else ["--include", "*.litertlm"])
                    + ["--local-dir", d], why="download the bundle (gated: accept the license and `hf auth login` first)")
    run_remote = ["env", f"LD_LIBRARY_PATH={DEVICE_DIR}/android_arm64", f"{DEVICE_DIR}/litert_lm_main", "--backend=gpu",
                  f"--model_path={REMOTE_MODEL}", f"--input_prompt={PROMPT}"]
    android = [
        Step(["adb", "shell", shlex.join(["mkdir", "-p", DEVICE_DIR])], why="a folder adb may write"),
        Step(["adb", "push", ShellVar("BUNDLE"), REMOTE_MODEL], why="copy the bundle to the phone"),
        Step(["adb", "push", "bazel-bin/runtime/engine/litert_lm_main", f"{DEVICE_DIR}/"], why="the demo binary you built"),
        Step(["adb", "push", "prebuilt/android_arm64", f"{DEVICE_DIR}/"], why="GPU delegate libraries from the LiteRT-LM checkout"),
        # adb shell hands its arguments to the phone's shell as one command line: pass one quoted string
        Step(["adb", "shell", shlex.join(run_remote)], why="run on the phone's GPU (use --backend=cpu if it fails)"),
    ]
    desktop = Step(["litert-lm", "run", ShellVar("BUNDLE"), "--backend", "cpu", "--max-num-tokens", str(max_tokens),
                    "--prompt", PROMPT], why="try the bundle on this computer's CPU first (pip install litert-lm)")
    r = Recipe("litert", "LiteRT-LM (Android, adb)", [download, desktop] + android, notes=notes, matches_plan=False,
               requirements=["adb (Android platform tools), USB debugging on the phone",
                             "a LiteRT-LM checkout with litert_lm_main built for android_arm64 (run the script from there)",
                             "huggingface_hub's `hf` CLI",
                             f"pip install 'litert-lm>={LITERT_LM_VERSION}' for run-litert-desktop.sh"],
               settings={"bundle": bundle.repo, "file": bundle.file, "local_dir": d, "remote_model": REMOTE_MODEL,
                         "max_num_tokens": max_tokens})
    r.files["run-litert-android.sh"] = _script(ctx, bundle, download, android, cd_self=False,
                                               extra=[origin, "run from a LiteRT-LM checkout with litert_lm_main built"])
    r.files["run-litert-desktop.sh"] = _script(ctx, bundle, download, [desktop], cd_self=True, extra=[origin])
    r.executable += ["run-litert-android.sh", "run-litert-desktop.sh"]
    return r


def _script(ctx: Context, bundle: Bundle, download: Step, steps: list[Step], cd_self: bool, extra: list[str]) -> str:
    lines = _fetch_lines(bundle, download)
    lines += [("exec " if i == len(steps) - 1 else "") + st.shell() for i, st in enumerate(steps)]
    return shell_script(ctx, [], extra=extra, cd_self=cd_self) + "\n".join(lines) + "\n"
