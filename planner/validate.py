"""``gemma-plan validate RECIPE.json``: re-check a recipe against its plan, the model and the hardware.

Static checks (no engine needed): every recipe is regenerated from the plan, hardware and model stored
in recipe.json and compared byte for byte with the files in the folder and with recipe.json's own copies
(any difference fails, with a unified diff); the model file exists and is the planned type, the context
is within the model's trained maximum, every command that can be read back (llama-server, llama-cli,
llama-cpp-python, Ollama, vLLM) sets exactly the plan's values, the engine version the plan modelled is
the one this gemma-plan models, and the plan still fits this machine (or ``--target``), with what
changed since the recipe was written.

``--run`` (GGUF recipes) runs only what it regenerated, and nothing at all when the folder or
recipe.json differs from it. That half measures with the engine, so it lives beside the engine code in
``quantize/measure.py`` (``quantize.measure.validate`` = these checks + the run); this module imports
nothing of ``quantize``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from planner.errors import PlanError
from planner.types import (LLAMA_CPP_VERSION, TRANSFORMERS_VERSION, VLLM_VERSION, DeviceMemory, MemoryBreakdown, ModelSpec, Plan,
                           RuntimeSettings)
from profiles import bounds as B
from profiles.errors import ProfileError
from profiles.hardware import Hardware

from profiles.units import GiB
CURRENT_VERSIONS = {"llama.cpp": LLAMA_CPP_VERSION, "vllm": VLLM_VERSION, "transformers": TRANSFORMERS_VERSION}
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
                    "max_num_seqs": (1, 1 << 20), "max_num_batched_tokens": (1, B.MAX_CTX), "n_outputs_max": (0, B.MAX_CTX)}
_SETTINGS_FLAGS = ("flash_attn", "swa_full", "kv_unified", "offload_kqv", "experts_on_cpu", "use_mmap", "enforce_eager")


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
    for key in ("type_k", "type_v", "engine", "kv_cache_dtype", "engine_version"):
        if key in settings and not isinstance(settings[key], str):
            raise B.BoundsError(src, f"plan.settings.{key}", settings[key], "is not a string", fix)
    for key in _SETTINGS_FLAGS:
        if key in settings and not isinstance(settings[key], bool):
            raise B.BoundsError(src, f"plan.settings.{key}", settings[key], "is not true or false", fix)
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
    for where, art in (("model.ref.artifact", ref.get("artifact")), ("plan.artifact", d.get("artifact"))):
        if art is None:
            continue
        fetch = obj(art, where).get("fetch", [])
        if not isinstance(fetch, list) or not all(isinstance(a, str) for a in fetch) or not isinstance(art.get("kind", ""), (str, type(None))):
            raise B.BoundsError(src, where, art, "needs a string kind and fetch as a list of strings", fix)
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
    """The Plan a recipe was rendered from (planner.types.Plan.from_dict: the one JSON reader of plans)."""
    return Plan.from_dict(d)


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
             serve: bool = True, timeout: float = 180.0, margin: Optional[int] = None,
             runner: Optional[Callable[..., None]] = None) -> Validation:
    """Every check on one recipe document; ``hw`` is the hardware to check against (None: skip that check).

    ``run``: load and serve with the engine through ``runner`` (``quantize.measure.run_recipe``: the planner
    does not import the engines' side; ``quantize.measure.validate`` passes it)."""
    if run and runner is None:
        raise PlanError("validate(run=True) needs the measuring half: call quantize.measure.validate",
                        hint="or pass runner=quantize.measure.run_recipe")
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
        runner(v, regenerated, plan, ref, model_path, spec, serve=serve, timeout=timeout, rpath=rpath)
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
    from planner.search import plan as make_plan
    from planner.search import shortfall

    changes = _hw_changes(recorded, hw)
    if plan.engine == "llama.cpp" and len(recorded.devices) > 1 and len(hw.devices) != len(recorded.devices):
        v.add("tensor split", FAIL, f"the recipe's -ts is for {len(recorded.devices)} GPUs; {hw.name} has {len(hw.devices)}: "
                                    "re-run recommend --emit for this machine")
    settings = plan.settings
    try:
        now = make_plan(spec, plan.fmt, settings, hw,
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


