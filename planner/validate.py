"""``gemma-plan validate RECIPE.json``: re-check a recipe against its plan, the model and the hardware.

Static checks (no engine needed): every recipe is regenerated from the plan, hardware and model stored
in recipe.json and compared byte for byte with the files in the folder and with recipe.json's own copies
(any difference fails, with a unified diff); the model file exists and is the planned type, the context
is within the model's trained maximum, every command that can be read back (llama-server, llama-cli,
llama-cpp-python, Ollama, vLLM) sets exactly the plan's values, the engine version the plan modelled is
the one this gemma-plan models, and the plan still fits this machine (or ``--target``), with what
changed since the recipe was written.

``--run`` (GGUF recipes) runs only what it regenerated, and nothing at all when the folder or
recipe.json differs from it: loads the model with llama-cpp-python through
``quantize.llamacpp.load_and_measure`` with the regenerated settings and compares what llama.cpp
allocated with the plan; then starts the regenerated llama-cpp-python server on 127.0.0.1, waits for it,
sends one chat completion through the OpenAI-compatible API, checks the reply and the KV buffer the
server logged, and stops the server (its whole process group) within a bounded time.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from planner.errors import BackendUnavailableError, PlanError
from planner.types import (LLAMA_CPP_VERSION, TRANSFORMERS_VERSION, VLLM_VERSION, DeviceMemory, MemoryBreakdown, ModelSpec, Plan,
                           RuntimeSettings)
from profiles import bounds as B
from profiles.errors import ProfileError
from profiles.hardware import Hardware

from profiles.units import GiB
MiB = 1 << 20
CURRENT_VERSIONS = {"llama.cpp": LLAMA_CPP_VERSION, "vllm": VLLM_VERSION, "transformers": TRANSFORMERS_VERSION}
SERVER_DEPS = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
OK, WARN, FAIL, SKIP, INFO = "ok", "warn", "fail", "skip", "info"
MAX_RECIPE_FILE_BYTES = 1 << 20  # every file a recipe writes is a few KiB; anything larger is not one of them


class RecipeFileError(PlanError):
    hint = "pass the recipe.json written by `gemma-plan recommend --emit DIR` or `gemma-plan quantize`"


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail, skip, info
    detail: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Validation:
    recipe: str
    target: str
    checks: list[Check] = field(default_factory=list)
    measured: Optional[dict] = None  # --run: what llama.cpp allocated
    served: Optional[dict] = None  # --run: the server round trip
    diffs: list[dict] = field(default_factory=list)  # {"file", "diff"}: what differs from the regenerated recipes

    @property
    def ok(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "target": self.target, "ok": self.ok, "checks": [c.to_dict() for c in self.checks],
                "measured": self.measured, "served": self.served, "diffs": list(self.diffs)}


# ---------------------------------------------------------------- reading recipe.json


def load_document(path: str | Path) -> tuple[dict, Path]:
    """recipe.json (or a directory holding one) -> (document, its path)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "recipe.json"
    if not p.is_file():
        raise RecipeFileError(f"no recipe file at {p}")
    try:
        if p.stat().st_size > B.MAX_JSON_BYTES:
            raise RecipeFileError(f"{p} is {p.stat().st_size:,} bytes, too large for a recipe")
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RecipeFileError(f"{p} is not a readable JSON recipe ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("gemma-plan/recipe/") or "plan" not in doc:
        raise RecipeFileError(f"{p} is not a gemma-plan recipe (no schema/plan)")
    return doc, p


# plan.settings numbers -> bounds (profiles.bounds); a recipe is a file a user may have edited
_SETTINGS_BOUNDS = {"n_ctx": (1, B.MAX_CTX), "n_parallel": (1, B.MAX_PARALLEL), "n_batch": (1, B.MAX_CTX),
                    "n_ubatch": (1, B.MAX_UBATCH), "n_gpu_layers": (-1, B.MAX_LAYERS + 1),
                    "tensor_parallel": (1, B.MAX_DEVICES), "pipeline_parallel": (1, B.MAX_DEVICES),
                    "max_num_seqs": (1, 1 << 20), "max_num_batched_tokens": (1, B.MAX_CTX)}


def read_document(doc: dict, origin: Path) -> tuple[Plan, Hardware, dict]:
    """The plan, the recorded hardware and the model reference of a recipe document, every field checked:
    a malformed or out-of-bounds value is refused with its name (RecipeFileError / BoundsError)."""
    src = str(origin)
    fix = "re-create the recipe with `gemma-plan recommend --emit DIR` or `gemma-plan quantize`"

    def obj(value, name) -> dict:
        if not isinstance(value, dict):
            raise B.BoundsError(src, name, value, "is not an object", fix)
        return value

    d = obj(doc.get("plan"), "plan")
    settings = obj(d.get("settings", {}), "plan.settings")
    for key, (lo, hi) in _SETTINGS_BOUNDS.items():
        if key in settings:
            B.check_int(src, f"plan.settings.{key}", settings[key], lo, hi, fix)
    if "gpu_memory_utilization" in settings:
        B.check_number(src, "plan.settings.gpu_memory_utilization", settings["gpu_memory_utilization"], 0, 1, fix, lo_open=True)
    for key in ("type_k", "type_v", "engine", "kv_cache_dtype"):
        if key in settings and not isinstance(settings[key], str):
            raise B.BoundsError(src, f"plan.settings.{key}", settings[key], "is not a string", fix)
    if settings.get("tensor_split") is not None:
        ts = settings["tensor_split"]
        if not isinstance(ts, list) or len(ts) > B.MAX_DEVICES:
            raise B.BoundsError(src, "plan.settings.tensor_split", ts, f"is not a list of at most {B.MAX_DEVICES} shares", fix)
        for i, x in enumerate(ts):
            B.check_number(src, f"plan.settings.tensor_split[{i}]", x, 0, 1e6, fix)
    for key in ("model", "weight_format", "engine"):
        if not isinstance(d.get(key), str):
            raise B.BoundsError(src, f"plan.{key}", d.get(key), "is missing or not a string", fix)
    memory = obj(d.get("memory", {}), "plan.memory")
    devices = memory.get("devices", [])
    if not isinstance(devices, list) or len(devices) > B.MAX_DEVICES + 1:
        raise B.BoundsError(src, "plan.memory.devices", devices, f"is not a list of at most {B.MAX_DEVICES + 1} devices", fix)
    for i, dev in enumerate(devices):
        obj(dev, f"plan.memory.devices[{i}]")
        for key in ("weights_bytes", "kv_bytes", "compute_bytes", "output_bytes", "overhead_bytes"):
            B.check_int(src, f"plan.memory.devices[{i}].{key}", dev.get(key, 0), 0, B.MAX_MEMORY, fix)
        for key in ("budget_bytes", "capacity_bytes"):  # None: no limit recorded
            B.opt_int(src, f"plan.memory.devices[{i}].{key}", dev.get(key), -B.MAX_MEMORY, B.MAX_MEMORY, fix)
        B.opt_int(src, f"plan.memory.devices[{i}].layers", dev.get("layers"), 0, B.MAX_LAYERS + 1, fix)
        if not isinstance(dev.get("device", ""), str) or not isinstance(dev.get("detail", {}), dict):
            raise B.BoundsError(src, f"plan.memory.devices[{i}]", dev, "has a malformed device name or detail", fix)
    B.check_int(src, "plan.weight_file_bytes", d.get("weight_file_bytes", 0), 0, B.MAX_MEMORY, fix)
    B.check_number(src, "plan.quality_loss", d.get("quality_loss", 0.0), -1e6, 1e6, fix)
    for key in ("kv_cells",):
        obj(memory.get(key, {}), f"plan.memory.{key}")
    for key in ("notes",):
        if not isinstance(d.get(key, []), list) or not isinstance(memory.get(key, []), list):
            raise B.BoundsError(src, f"plan.{key}", d.get(key), "is not a list", fix)
    model = obj(doc.get("model") or {}, "model")
    ref = obj(model.get("ref") or {"kind": "placeholder-gguf", "value": ""}, "model.ref")
    if not isinstance(ref.get("kind", ""), str) or not isinstance(ref.get("value", ""), str) or "\0" in ref.get("value", ""):
        raise B.BoundsError(src, "model.ref", ref, "needs string kind and value", fix)
    B.opt_int(src, "model.ctx_train", model.get("ctx_train"), 1, B.MAX_CTX, fix)
    recipes = obj(doc.get("recipes") or {}, "recipes")
    for name, r in recipes.items():
        obj(r, f"recipes.{name}")
    target = obj(doc.get("target") or {}, "target")
    hw_dict = obj(target.get("hardware") or {"name": d.get("target", ""), "devices": [], "ram_bytes": 0}, "target.hardware")
    try:
        plan = plan_from_dict(d)
        recorded = Hardware.from_dict(hw_dict)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RecipeFileError(f"{origin}: malformed plan or target ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})",
                              hint=fix) from None
    _check_recorded_hardware(recorded, src, fix)
    return plan, recorded, ref


def _check_recorded_hardware(hw: Hardware, src: str, fix: str) -> None:
    """The recorded target goes through the target-file rules (written as a target file and read back), and
    the detection-only numbers a target file does not carry are bounded here."""
    from profiles.targets import hardware_to_toml, parse_target_text

    if len(hw.devices) > B.MAX_DEVICES or len(hw.hosts) > B.MAX_HOSTS:
        raise B.BoundsError(src, "target.hardware.devices", len(hw.devices), f"is above {B.MAX_DEVICES}", fix)
    if not hw.devices and not hw.hosts and hw.ram_bytes == 0:
        return  # no hardware recorded
    try:
        parse_target_text(hardware_to_toml(hw), origin=f"{src}: target.hardware", default_name="recorded")
    except (TypeError, ValueError, AttributeError) as exc:
        raise B.BoundsError(src, "target.hardware", type(exc).__name__, f"is malformed ({str(exc)[:60]})", fix) from None
    for i, d in enumerate(hw.devices):
        B.opt_int(src, f"target.hardware.devices[{i}].free_bytes", d.free_bytes, 0, B.MAX_MEMORY, fix)
        if not isinstance(d.name, str):
            raise B.BoundsError(src, f"target.hardware.devices[{i}].name", d.name, "is not a string", fix)
    B.opt_int(src, "target.hardware.ram_free_bytes", hw.ram_free_bytes, 0, B.MAX_MEMORY, fix)


def _known(cls, d: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def plan_from_dict(d: dict) -> Plan:
    """The Plan a recipe was rendered from (speed is not needed and left out)."""
    s = RuntimeSettings(**_known(RuntimeSettings, d.get("settings", {})))
    m = d.get("memory", {})
    devices = [DeviceMemory(**_known(DeviceMemory, dev)) for dev in m.get("devices", [])]
    mem = MemoryBreakdown(m.get("engine", d.get("engine", "")), m.get("engine_version", d.get("engine_version", "")), devices,
                          m.get("kv_cells", {}), list(m.get("notes", [])))
    return Plan(d["model"], d["weight_format"], d["engine"], d.get("target", ""), s, mem, None,
                int(d.get("weight_file_bytes", 0)), float(d.get("quality_loss", 0.0)), list(d.get("notes", [])))


def _model_path(doc: dict, recipe_path: Path) -> Optional[Path]:
    ref = (doc.get("model") or {}).get("ref") or {}
    if ref.get("kind") not in ("gguf-file", "hf-dir", "placeholder-gguf", "placeholder-dir"):
        return None
    p = Path(ref["value"]).expanduser()
    if p.is_absolute():
        return p
    # scripts resolve relative paths from their own directory, which is the recipe's
    return recipe_path.parent / p


def _spec_for(doc: dict, plan: Plan, model_path: Optional[Path]) -> tuple[Optional[ModelSpec], str]:
    from planner.catalog import get_model

    kind = ((doc.get("model") or {}).get("ref") or {}).get("kind", "")
    if model_path is not None and model_path.exists() and kind in ("gguf-file", "hf-dir"):
        from planner.sources import load_model

        try:
            return load_model(str(model_path))[0], f"read from {model_path.name}"
        except (PlanError, ProfileError) as exc:
            return None, f"cannot read {model_path}: {exc}"
    try:
        return get_model(plan.model)[0], "from the catalog"
    except PlanError:
        return None, f"{plan.model} is not in the catalog and its files are not here"


# ---------------------------------------------------------------- regenerating the recipes


def _render_spec(doc: dict, plan: Plan) -> Optional[ModelSpec]:
    """The spec the recipes were rendered with: read from the file recorded as its source, else the catalog's,
    else none (what ``context_for`` used when neither was known)."""
    from planner.catalog import get_model

    model = doc.get("model") or {}
    source = str(model.get("source") or "")
    for prefix in ("gguf:", "hf-dir:"):
        if source.startswith(prefix) and Path(source[len(prefix):]).exists():
            from planner.sources import load_model

            try:
                return load_model(source[len(prefix):])[0]
            except PlanError:
                return None
    if not source and model.get("ctx_train") is None:
        return None
    try:
        return get_model(plan.model)[0]
    except PlanError:
        return None


def regenerate(doc: dict, plan: Plan, hw: Hardware, ref) -> dict:
    """The recipes rendered again from recipe.json's plan, recorded hardware and model reference (as
    ``read_document`` parsed them)."""
    from planner.recipes import render_context
    from planner.recipes.base import Context

    return render_context(Context(plan, hw, ref, _render_spec(doc, plan)))


def _printable(line: str) -> str:
    """A diff line with every unprintable character but the line end escaped (a hostile file cannot reach the terminal)."""
    body, end = (line[:-1], "\n") if line.endswith("\n") else (line, "")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in body) + end


def _diff(want: str, got: str, name: str, where: str) -> str:
    lines = difflib.unified_diff(want.splitlines(keepends=True), got.splitlines(keepends=True),
                                 fromfile=f"regenerated/{name}", tofile=f"{where}/{name}")
    return "".join(_printable(ln if ln.endswith("\n") else ln + "\n") for ln in lines)


def _read_recipe_file(path: Path) -> tuple[Optional[str], str]:
    """(text, problem): a regular file of at most MAX_RECIPE_FILE_BYTES, read as UTF-8; symlinks are refused."""
    if path.is_symlink():
        return None, f"{path.name} is a symbolic link, not the file the recipe wrote"
    if not path.exists():
        return None, ""
    if not path.is_file():
        return None, f"{path.name} is not a regular file"
    if path.stat().st_size > MAX_RECIPE_FILE_BYTES:
        return None, f"{path.name} is {path.stat().st_size:,} bytes, larger than any recipe file"
    try:
        return path.read_bytes().decode("utf-8"), ""
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {path.name} ({exc.__class__.__name__})"


def check_files(v: Validation, doc: dict, rpath: Path, recipes: dict) -> bool:
    """Compare every regenerated recipe with recipe.json's copy and every regenerated file with the folder's.
    Returns True when nothing differs."""
    same = True
    stored = doc.get("recipes") if isinstance(doc.get("recipes"), dict) else {}
    for name in sorted(set(stored) - set(recipes)):
        v.add(f"files: {name}", FAIL, f"recipe.json has a recipe {name!r} that this plan does not produce")
        same = False
    for name, r in recipes.items():
        problems = []
        if name not in stored:
            problems.append("missing from recipe.json")
        elif stored[name] != r.to_dict():
            problems.append("recipe.json's copy differs")
            # the scripts it stores as text, diffed as text; every other key as JSON
            have = stored[name] if isinstance(stored[name], dict) else {}
            have_files = have.get("files") if isinstance(have.get("files"), dict) else {}
            for fname in sorted(set(r.files) | set(have_files)):
                want_t, got_t = r.files.get(fname, ""), have_files.get(fname, "")
                if want_t != got_t:
                    got_t = got_t if isinstance(got_t, str) else json.dumps(got_t)
                    v.diffs.append({"file": f"recipe.json: recipes.{name}.files.{fname}",
                                    "diff": _diff(want_t, got_t, fname, f"recipe.json: recipes.{name}.files")})
            want_rest = json.dumps({k: x for k, x in r.to_dict().items() if k != "files"}, indent=2, sort_keys=True) + "\n"
            got_rest = json.dumps({k: x for k, x in have.items() if k != "files"} if have else stored[name], indent=2,
                                  sort_keys=True) + "\n"
            if want_rest != got_rest:
                v.diffs.append({"file": f"recipe.json: recipes.{name}", "diff": _diff(want_rest, got_rest, name, "recipe.json: recipes")})
        absent = []
        for fname, text in r.files.items():
            disk, problem = _read_recipe_file(rpath.parent / fname)
            if problem:
                problems.append(problem)
            elif disk is None:
                absent.append(fname)
            elif disk != text:
                problems.append(f"{fname} differs")
                v.diffs.append({"file": fname, "diff": _diff(text, disk, fname, str(rpath.parent))})
        if problems:
            same = False
            v.add(f"files: {name}", FAIL, "; ".join(problems) + ": not what the plan renders (diff below); "
                  "re-emit with `gemma-plan recommend --emit DIR --force`")
        elif absent:
            v.add(f"files: {name}", INFO, f"identical to the plan; not in the folder: {', '.join(absent)}")
        else:
            v.add(f"files: {name}", OK, "byte for byte what the plan renders" + (f" ({', '.join(r.files)})" if r.files else ""))
    return same


# ---------------------------------------------------------------- the checks


def validate(path: str | Path, *, hw: Optional[Hardware] = None, hw_note: str = "", run: bool = False,
             serve: bool = True, timeout: float = 180.0, margin: Optional[int] = None) -> Validation:
    """Every check on one recipe document; ``hw`` is the hardware to check against (None: skip that check)."""
    from planner.recipes import Recipe, check_recipe
    from planner.recipes.base import Context, ModelRef

    doc, rpath = load_document(path)
    plan, recorded, ref_dict = read_document(doc, rpath)
    v = Validation(str(rpath), hw.name if hw else plan.target)
    model_path = _model_path(doc, rpath)
    try:
        ref = ModelRef(**_known(ModelRef, ref_dict))
    except TypeError:
        raise RecipeFileError(f"{rpath}: model.ref lacks kind or value") from None
    spec, spec_note = _spec_for(doc, plan, model_path)

    # model file
    if model_path is None:
        v.add("model", SKIP, f"{ref.value} is a hub id: not checked here (vLLM/transformers download it)")
    elif model_path.exists():
        size = model_path.stat().st_size if model_path.is_file() else sum(f.stat().st_size for f in model_path.rglob("*") if f.is_file())
        v.add("model", OK, f"{model_path} ({size / GiB:.2f} GiB)")
    else:
        how = "produce it with `gemma-plan quantize` or point the recipe at your copy"
        if ref.kind == "placeholder-gguf" and ref.artifact.get("kind") == "gguf" and ref.artifact.get("fetch"):
            how = f"fetch it with `{shlex.join(ref.artifact['fetch'])}` in {rpath.parent} or `gemma-plan fetch {rpath}`"
        elif ref.kind == "placeholder-gguf":
            from planner.recipes.base import quantize_command

            how = f"produce it with `{shlex.join(quantize_command(Context(plan, recorded, ref, spec)))}` and move the .gguf it writes there"
        v.add("model", FAIL, f"{model_path} does not exist: {how}")
    if spec is not None and spec.gguf_file_type and plan.engine == "llama.cpp":
        if spec.gguf_file_type.upper() == plan.weight_format.upper():
            v.add("model type", OK, f"{spec.gguf_file_type}, as planned")
        else:
            v.add("model type", FAIL, f"the file is {spec.gguf_file_type}, the plan is for {plan.weight_format}")

    # context
    ctx_train = spec.ctx_train if spec else (doc.get("model") or {}).get("ctx_train")
    if ctx_train:
        status = OK if plan.ctx <= ctx_train else FAIL
        v.add("context", status, f"{plan.ctx} tokens, trained maximum {ctx_train} ({spec_note})")
    else:
        v.add("context", SKIP, f"trained maximum unknown ({spec_note})")

    # the recipes, regenerated from the plan, against recipe.json and the folder
    try:
        regenerated = regenerate(doc, plan, recorded, ref)
    except Exception as exc:  # a hand-edited plan can be malformed in many ways; report, do not crash
        regenerated = None
        v.add("files", FAIL, f"cannot regenerate the recipes from the stored plan: {exc.__class__.__name__}: {exc}")
    files_same = regenerated is not None and check_files(v, doc, rpath, regenerated)

    # flags read back from every recipe
    ctx = Context(plan, recorded, ref, spec)
    for name, rd in (doc.get("recipes") or {}).items():
        try:
            r = Recipe.from_dict(rd)
        except (TypeError, ValueError, AttributeError) as exc:
            v.add(f"recipe {name}", FAIL, f"malformed: {type(exc).__name__}: {str(exc)[:80]}")
            continue
        try:
            problems = check_recipe(name, r, ctx)
        except Exception as exc:  # a hand-edited recipe can be malformed in many ways; report, do not crash
            problems = [f"cannot read it back: {exc}"]
        if problems is None:
            v.add(f"recipe {name}", SKIP if r.matches_plan else WARN,
                  "not read back" if r.matches_plan else f"differs from the plan by design: {r.notes[0] if r.notes else ''}")
        elif problems:
            v.add(f"recipe {name}", FAIL, "; ".join(problems))
        elif not r.matches_plan:
            v.add(f"recipe {name}", WARN, "flags as rendered, but the engine cannot express all of the plan: "
                  + next((n for n in r.notes if "cannot" in n or "one " in n), r.notes[0] if r.notes else ""))
        else:
            v.add(f"recipe {name}", OK, "every memory setting matches the plan")

    # engine version
    current = CURRENT_VERSIONS.get(plan.engine)
    if current and plan.memory.engine_version and plan.memory.engine_version != current:
        v.add("engine version", WARN, f"planned for {plan.memory.engine_version}; this gemma-plan models {current}")
    elif current:
        v.add("engine version", OK, current)

    # the hardware now
    if hw is None:
        v.add("hardware", SKIP, "no target given")
    elif spec is None:
        v.add("hardware", SKIP, f"cannot re-plan: {spec_note}")
    else:
        _check_hardware(v, plan, spec, recorded, hw, hw_note, margin)

    if run:
        if not files_same:
            v.add("run", FAIL, "nothing was started: the folder or recipe.json differs from what the plan renders (diff below); "
                               "re-emit with `gemma-plan recommend --emit DIR --force`")
            return v
        _run(v, regenerated, plan, ref, model_path, spec, serve=serve, timeout=timeout, rpath=rpath)
    return v


def _margin_of(plan: Plan) -> int:
    from planner.memory import DEFAULT_MARGIN

    for d in plan.memory.devices:
        if d.capacity_bytes is not None and d.budget_bytes is not None and d.budget_bytes > 0 and plan.engine != "vllm":
            return max(0, d.capacity_bytes - d.budget_bytes)
    return DEFAULT_MARGIN


def _hw_changes(recorded: Hardware, hw: Hardware) -> list[str]:
    def sig(h: Hardware) -> list[str]:
        return [f"{d.name} {d.usable_bytes() / GiB:.1f} GiB" for d in h.devices]

    out = []
    a, b = sig(recorded), sig(hw)
    if a != b:
        out.append(f"accelerators were [{', '.join(a) or 'none'}], now [{', '.join(b) or 'none'}]")
    if recorded.host_budget_bytes() and abs(recorded.host_budget_bytes() - hw.host_budget_bytes()) > GiB // 2:
        out.append(f"host memory {recorded.host_budget_bytes() / GiB:.1f} GiB then, {hw.host_budget_bytes() / GiB:.1f} GiB now")
    return out


def _check_hardware(v: Validation, plan: Plan, spec: ModelSpec, recorded: Hardware, hw: Hardware, hw_note: str,
                    margin: Optional[int]) -> None:
    from planner.formats import parse_format
    from planner.search import plan as make_plan
    from planner.search import shortfall

    changes = _hw_changes(recorded, hw)
    if plan.engine == "llama.cpp" and len(recorded.devices) > 1 and len(hw.devices) != len(recorded.devices):
        v.add("tensor split", FAIL, f"the recipe's -ts is for {len(recorded.devices)} GPUs; {hw.name} has {len(hw.devices)}: "
                                    "re-run recommend --emit for this machine")
    settings = plan.settings
    try:
        now = make_plan(spec, parse_format(plan.weight_format, plan.engine), settings, hw,
                        margin=_margin_of(plan) if margin is None else margin, target=hw.name, with_speed=False)
    except PlanError as exc:
        v.add("hardware", FAIL, f"cannot re-plan on {hw.name}: {exc}")
        return
    then = plan.memory.total_bytes
    diff = now.memory.total_bytes - then
    what = (f"; changed: {'; '.join(changes)}" if changes else "; hardware unchanged") + (f" ({hw_note})" if hw_note else "")
    if now.fits:
        worst = max((d for d in now.memory.devices if d.budget_bytes), key=lambda d: d.total_bytes / max(1, d.budget_bytes), default=None)
        room = f"{worst.device}: {worst.total_bytes / GiB:.1f} of {worst.budget_bytes / GiB:.1f} GiB" if worst else ""
        v.add("hardware", OK, f"fits {hw.name} ({room}); total {now.memory.total_bytes / GiB:.2f} GiB "
                              f"({diff / GiB:+.2f} GiB vs the recipe){what}")
    else:
        v.add("hardware", FAIL, f"does not fit {hw.name}: {shortfall(now)}{what}")


# ---------------------------------------------------------------- --run


def _load_kwargs(plan: Plan, recipes: dict) -> dict:
    """load_and_measure arguments from the regenerated llama-server command (what a user would run)."""
    from planner.recipes.llamacpp import parse_argv

    server = recipes.get("llama-server")
    if server and server.steps:
        got = parse_argv([str(a) for a in server.steps[0].argv])
    else:
        s = plan.settings
        got = dataclasses.asdict(s) | {"n_gpu_layers": s.n_gpu_layers}
    return dict(n_ctx=got["n_ctx"], n_batch=got["n_batch"], n_ubatch=got["n_ubatch"], n_seq_max=got["n_parallel"],
                flash_attn=got["flash_attn"], type_k=got["type_k"], type_v=got["type_v"], swa_full=got["swa_full"],
                n_gpu_layers=got["n_gpu_layers"], kv_unified=got["kv_unified"], use_mmap=got["use_mmap"],
                offload_kqv=got["offload_kqv"])


def _llamacpp():
    try:
        from quantize import llamacpp
        from quantize.llamacpp import _llama_cpp

        _llama_cpp()
    except ImportError as exc:
        raise BackendUnavailableError(f"validate --run needs llama-cpp-python ({exc.name or exc} is missing)",
                                      hint="install the [gguf] extra: pip install 'gemma-plan[gguf]'") from None
    return llamacpp


def _run(v: Validation, recipes: dict, plan: Plan, ref, model_path: Optional[Path], spec, *, serve: bool, timeout: float,
         rpath: Path) -> None:
    """Load and serve with what ``regenerate`` rendered (the caller has checked the folder holds the same)."""
    if plan.engine != "llama.cpp" or ref.kind not in ("gguf-file", "placeholder-gguf"):
        raise RecipeFileError("--run loads GGUF recipes only; this recipe is for "
                              f"{plan.engine} ({plan.weight_format})", hint="drop --run, or validate a recipe for a local .gguf file")
    if model_path is None or not model_path.is_file():
        raise RecipeFileError(f"--run needs the model file, and {model_path} is not there",
                              hint="produce it with `gemma-plan quantize` or point the recipe at your copy")
    lc = _llamacpp()
    kwargs = _load_kwargs(plan, recipes)
    m = lc.load_and_measure(model_path, **kwargs)
    kv_plan = plan.memory.kv_bytes
    measured = {"library": m.library, "settings": kwargs, "n_ctx": m.n_ctx, "kv_bytes": m.kv_bytes, "kv_bytes_planned": kv_plan,
                "model_bytes": m.model_size, "model_bytes_planned": plan.weight_file_bytes,
                "compute_bytes": sum(m.compute_buffers.values()), "compute_bytes_planned": plan.memory.compute_bytes,
                "model_buffers": m.model_buffers, "kv_buffers": m.kv_buffers, "compute_buffers": m.compute_buffers,
                "generated_tokens": len(m.generated_tokens), "seconds": round(m.seconds, 2)}
    v.measured = measured
    if m.kv_bytes == kv_plan:
        v.add("run: KV cache", OK, f"{m.kv_bytes / MiB:.2f} MiB, exactly as planned ({m.library})")
    elif kv_plan and abs(m.kv_bytes - kv_plan) <= kv_plan * 0.01:
        v.add("run: KV cache", WARN, f"{m.kv_bytes / MiB:.2f} MiB measured, {kv_plan / MiB:.2f} MiB planned (within 1%)")
    else:
        v.add("run: KV cache", FAIL, f"{m.kv_bytes / MiB:.2f} MiB measured, {kv_plan / MiB:.2f} MiB planned")
    wp = plan.weight_file_bytes
    if wp and abs(m.model_size - wp) <= wp * 0.01:
        v.add("run: weights", OK, f"{m.model_size / MiB:.2f} MiB of tensors, {wp / MiB:.2f} MiB planned")
    else:
        v.add("run: weights", FAIL if wp else INFO, f"{m.model_size / MiB:.2f} MiB of tensors, {wp / MiB:.2f} MiB planned")
    v.add("run: compute", INFO, f"{measured['compute_bytes'] / MiB:.2f} MiB of compute buffers on this machine, "
                                f"{plan.memory.compute_bytes / MiB:.2f} MiB planned on {plan.target}")
    v.add("run: generate", OK if m.generated_tokens else FAIL, f"{len(m.generated_tokens)} tokens in {m.seconds:.1f} s")
    if not serve:
        v.add("run: server", SKIP, "--no-serve")
        return
    missing = [d for d in SERVER_DEPS if not _importable(d)]
    if missing:
        v.add("run: server", SKIP, f"llama-cpp-python's server needs {', '.join(missing)}: pip install 'llama-cpp-python[server]'")
        return
    lcp = recipes.get("llama-cpp-python")
    script = lcp.files.get("serve_llama_cpp_python.py") if lcp else None
    if not script:
        v.add("run: server", SKIP, "the plan has no llama-cpp-python server launcher")
        return
    v.served = serve_once(script, model_path, timeout=timeout)
    s = v.served
    if s.get("error"):
        v.add("run: server", FAIL, s["error"])
        return
    v.add("run: server", OK, f"answered {s['completion_tokens']} token(s) in {s['seconds']:.1f} s: {s['reply'][:60]!r}; stopped")
    if s.get("kv_bytes") is not None:
        if plan.settings.n_parallel == 1:
            same = s["kv_bytes"] == kv_plan
            v.add("run: server KV", OK if same else FAIL,
                  f"{s['kv_bytes'] / MiB:.2f} MiB logged by the server, {kv_plan / MiB:.2f} MiB planned")
        else:
            v.add("run: server KV", INFO, f"{s['kv_bytes'] / MiB:.2f} MiB for one sequence (llama-cpp-python has no parallel slots)")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: Optional[dict] = None, timeout: float = 5.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (127.0.0.1 only)
        return json.loads(resp.read().decode("utf-8"))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 10 s: nothing is left running."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def serve_once(script_text: str, model_path: Path, *, timeout: float = 180.0,
               prompt: str = "Say hello.", max_tokens: int = 8) -> dict:
    """Start the launcher on a free 127.0.0.1 port, wait for /v1/models, send one chat completion, stop it.

    Returns {"reply", "completion_tokens", "seconds", "port", "kv_bytes" (parsed from its log)} or {"error": ...}.
    """
    t0 = time.monotonic()
    port = _free_port()
    base = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryDirectory(prefix="gemma-plan-serve-") as tmp:
        script = Path(tmp) / "serve_llama_cpp_python.py"
        script.write_text(script_text, encoding="utf-8")
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port), "--verbose",
                                     "--model", str(model_path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=tmp, start_new_session=True)
        out: dict = {"port": port}
        try:
            deadline = t0 + timeout
            while True:
                if proc.poll() is not None:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                    out["error"] = f"the server exited with code {proc.returncode}: {' | '.join(tail)}"
                    return out
                try:
                    _http("GET", f"{base}/models", timeout=2)
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                    if time.monotonic() > deadline:
                        out["error"] = f"the server did not answer on port {port} within {timeout:.0f} s"
                        return out
                    time.sleep(0.5)
            remaining = max(5.0, deadline - time.monotonic())
            try:
                reply = _http("POST", f"{base}/chat/completions", {
                    "model": "planned", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                    "temperature": 0.0}, timeout=remaining)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError) as exc:
                out["error"] = f"the chat completion failed: {exc}"
                return out
            choices = reply.get("choices") or []
            usage = reply.get("usage") or {}
            if not choices or "message" not in choices[0]:
                out["error"] = f"the reply has no message: {json.dumps(reply)[:200]}"
                return out
            out["reply"] = choices[0]["message"].get("content") or ""
            out["finish_reason"] = choices[0].get("finish_reason")
            out["completion_tokens"] = int(usage.get("completion_tokens", 0))
            if out["completion_tokens"] < 1:
                out["error"] = "the server answered with no tokens"
        finally:
            _stop(proc)
            out["seconds"] = time.monotonic() - t0
            out["kv_bytes"] = _kv_from_log(log_path, model_path)
    return out


def _kv_from_log(path: Path, model_path: Path) -> Optional[int]:
    """KV bytes the server's llama.cpp logged, made exact from the GGUF's widths (the log rounds to 0.01 MiB)."""
    try:
        from quantize.llamacpp import exact_kv_bytes, kv_layout_from_gguf, parse_llama_log

        parsed = parse_llama_log(path.read_text(errors="replace"))
        layout = kv_layout_from_gguf(model_path)
    except (ImportError, OSError, KeyError, ValueError):
        return None
    if not parsed.kv_caches:
        return None
    for c in parsed.kv_caches:
        if layout is not None:
            c.exact_bytes = exact_kv_bytes(c, layout, False)
            if c.exact_bytes is None:
                c.exact_bytes = exact_kv_bytes(c, layout, True)
    return sum(c.bytes for c in parsed.kv_caches)
