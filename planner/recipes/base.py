"""What every engine module shares: the ``Recipe`` type, the model reference, and safe rendering.

Commands are argv lists, never shell text. Text for a shell is produced here only, with
``shlex.quote``; a ``ShellVar`` is the one way to put a shell expansion in a command (a name checked
against ``[A-Za-z_][A-Za-z0-9_]*``, rendered as ``"${NAME}"``). Comments built from user data
(model names, paths) go through ``comment`` so that no newline can end a comment early.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from planner.errors import PlanError
from planner.types import ModelSpec, Plan
from profiles.hardware import Hardware

SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.gguf$")  # a published GGUF's name, used as a path in the recipe dir
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")  # owner/name on the Hugging Face hub
MiB = 1 << 20
from profiles.units import GiB, fmt_gib


class RecipeError(PlanError):
    hint = "rename the file or directory so it has no control characters, or pass another model path"


class EmitExistsError(PlanError):
    hint = "pass --force to overwrite, or choose another --emit directory"


class ShellVar(str):
    """An argv element the shell expands: ``"${NAME}"`` followed by a literal suffix.

    Its string value (what JSON shows) is ``${NAME}suffix``; only ``render_arg`` turns it into an
    expansion. Plain strings are always quoted, so text that merely looks like ``${X}`` stays literal.
    """

    name: str
    suffix: str

    def __new__(cls, name: str, suffix: str = ""):
        if not SHELL_NAME.match(name):
            raise ValueError(f"not a shell variable name: {name!r}")
        obj = super().__new__(cls, "${" + name + "}" + suffix)
        obj.name, obj.suffix = name, suffix
        return obj

    def shell(self) -> str:
        return f'"${{{self.name}}}"' + (shlex.quote(self.suffix) if self.suffix else "")


def render_arg(arg: str) -> str:
    return arg.shell() if isinstance(arg, ShellVar) else shlex.quote(str(arg))


def render_argv(argv: list[str]) -> str:
    """One shell line for an argv list; equal to ``shlex.join`` when no ShellVar is present."""
    if not any(isinstance(a, ShellVar) for a in argv):
        return shlex.join([str(a) for a in argv])
    return " ".join(render_arg(a) for a in argv)


def render_env(env: dict[str, str]) -> str:
    for k in env:
        if not SHELL_NAME.match(k):
            raise ValueError(f"not an environment variable name: {k!r}")
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())


def comment(text: str) -> str:
    """A single line safe after ``#`` in sh, Python and Modelfile comments (every unprintable character,
    line breaks included, becomes a space)."""
    return "".join(c if c.isprintable() else " " for c in str(text))


@dataclass
class Step:
    """One command: an argv list, optional environment, and where it runs when not on this machine."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    where: str = ""  # "" = the machine that serves; else e.g. "each worker host"
    why: str = ""

    def shell(self) -> str:
        line = render_argv(self.argv)
        return f"{render_env(self.env)} {line}" if self.env else line

    def to_dict(self) -> dict:
        return {"argv": [str(a) for a in self.argv], "env": dict(self.env), "where": self.where, "why": self.why,
                "shell": self.shell()}


@dataclass
class Recipe:
    """How to start one plan on one engine.

    ``settings`` holds the plan values in the engine's own spelling (what ``validate`` reads back);
    ``matches_plan`` is False when the engine cannot express part of the plan (the notes say which),
    so its memory use differs from the plan's numbers.
    """

    engine: str  # llama-server, llama-cli, llama-rpc, llama-cpp-python, ollama, lmstudio, vllm, transformers, mlx, litert
    title: str
    steps: list[Step] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # environment every step needs
    files: dict[str, str] = field(default_factory=dict)  # file name -> text
    executable: list[str] = field(default_factory=list)  # names in files to mark executable
    notes: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    matches_plan: bool = True
    model_path: Optional[str] = None  # the local file or directory it loads, when there is one

    @property
    def commands(self) -> list[list[str]]:
        return [s.argv for s in self.steps]

    def shell_lines(self) -> list[str]:
        env = render_env(self.env) + " " if self.env else ""
        return [(env if not s.where else "") + s.shell() for s in self.steps]

    def to_dict(self) -> dict:
        return {
            "engine": self.engine,
            "title": self.title,
            "commands": [[str(a) for a in s.argv] for s in self.steps],
            "steps": [s.to_dict() for s in self.steps],
            "env": dict(self.env),
            "files": dict(self.files),
            "executable": list(self.executable),
            "notes": list(self.notes),
            "requirements": list(self.requirements),
            "settings": dict(self.settings),
            "matches_plan": self.matches_plan,
            "model_path": self.model_path,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        steps = [Step(list(s.get("argv", [])), dict(s.get("env", {})), s.get("where", ""), s.get("why", "")) for s in d.get("steps", [])]
        return cls(d.get("engine", ""), d.get("title", ""), steps, dict(d.get("env", {})), dict(d.get("files", {})),
                   list(d.get("executable", [])), list(d.get("notes", [])), list(d.get("requirements", [])),
                   dict(d.get("settings", {})), bool(d.get("matches_plan", True)), d.get("model_path"))


@dataclass
class ModelRef:
    """What the recipes load: a local GGUF file or HF directory, a hub id, or a placeholder name."""

    kind: str  # "gguf-file", "hf-dir", "hub", "placeholder-gguf", "placeholder-dir"
    value: str
    hf_repo: str = ""  # the original checkpoint (tokenizer, conversion source)
    artifact: dict = field(default_factory=dict)  # the published file value names (plan.artifact), when there is one

    @property
    def is_local(self) -> bool:
        return self.kind in ("gguf-file", "hf-dir", "placeholder-gguf", "placeholder-dir")

    @property
    def is_placeholder(self) -> bool:
        return self.kind.startswith("placeholder")

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "value": self.value, "hf_repo": self.hf_repo}
        if self.artifact:
            d["artifact"] = dict(self.artifact)
        return d


def check_text(value: str, what: str) -> str:
    """Refuse unprintable characters (newlines and other controls included) in a path or name that will be
    written into scripts, Modelfiles and Python files."""
    if not value.isprintable():
        raise RecipeError(f"{what} contains an unprintable character: {value!r}")
    return value


def _path(ref: str) -> Path:
    try:
        return Path(ref).expanduser()
    except RuntimeError:  # "~name" for a user that does not exist
        return Path(ref)


def resolve_model_ref(plan: Plan, spec: Optional[ModelSpec], model_ref: Optional[str] = None) -> ModelRef:
    """model_ref given (path or hub id), else where the spec came from, else a placeholder file name."""
    hf_repo = spec.hf_repo if spec else ""
    gguf_plan = plan.engine == "llama.cpp"
    if model_ref:
        ref = check_text(str(model_ref), "model path")
        p = _path(ref)
        if p.suffix.lower() == ".gguf" or (p.is_file() and gguf_plan):
            return ModelRef("gguf-file", _local(p, ref), hf_repo)
        if p.exists() or not HUB_ID.match(ref):
            return ModelRef("gguf-file" if gguf_plan else "hf-dir", _local(p, ref), hf_repo)
        return ModelRef("hub", ref, hf_repo or ref)
    source = spec.source if spec else ""
    if source.startswith("gguf:") and gguf_plan:
        return ModelRef("gguf-file", check_text(_local(Path(source[5:]), source[5:]), "model path"), hf_repo)
    if source.startswith("hf-dir:") and not gguf_plan and not plan.weight_format.startswith("gptq"):
        return ModelRef("hf-dir", check_text(_local(Path(source[7:]), source[7:]), "model path"), hf_repo)
    art = plan.artifact or {}
    if gguf_plan and art.get("kind") == "gguf" and art.get("file") and FILE_NAME.match(art["file"]):
        return ModelRef("placeholder-gguf", art["file"], hf_repo, dict(art))  # fetched next to the scripts
    if gguf_plan:
        tool = dict(art) if art.get("kind") in ("ollama", "lmstudio") else {}  # the same format, pulled by that tool
        return ModelRef("placeholder-gguf", f"{safe_name(plan.model)}-{plan.weight_format}.gguf", hf_repo, tool)
    if plan.weight_format.startswith("gptq") and art.get("kind") == "gptq" and HUB_ID.match(str(art.get("repo") or "")):
        return ModelRef("hub", art["repo"], hf_repo, dict(art))  # a published GPTQ checkpoint the engine downloads
    if plan.weight_format.startswith("gptq"):
        return ModelRef("placeholder-dir", f"./{safe_name(plan.model)}-{plan.weight_format}", hf_repo)
    if hf_repo:
        return ModelRef("hub", hf_repo, hf_repo)
    return ModelRef("placeholder-dir", f"./{safe_name(plan.model)}", hf_repo)


def _local(p: Path, ref: str) -> str:
    """An existing local path as an absolute one (the scripts run from their own directory); a relative
    one that starts with '-' gets './' so no program reads it as an option."""
    if p.exists():
        return str(p.resolve())
    return "./" + ref if ref.startswith("-") else ref


def safe_name(text: str) -> str:
    """A file or model name made of [a-z0-9._-] (Ollama names, placeholder files)."""
    out = re.sub(r"[^a-z0-9._-]+", "-", str(text).lower()).strip("-.")
    return out or "model"


@dataclass
class Context:
    """Everything a renderer reads: the plan, the hardware it was made for, the model and its spec."""

    plan: Plan
    hw: Hardware
    model: ModelRef
    spec: Optional[ModelSpec] = None

    @property
    def s(self):
        return self.plan.settings

    @property
    def n_layer(self) -> int:
        """Repeating layers (llama.cpp plans count them per device; else the spec's)."""
        n = sum(d.layers for d in self.plan.memory.devices)
        return n or (self.spec.n_layers if self.spec else 0)

    @property
    def family(self) -> str:
        if self.spec:
            return self.spec.family
        name = self.plan.model.lower()
        for fam, key in (("gemma3n", "gemma-3n"), ("gemma4", "gemma-4"), ("gemma3", "gemma-3"), ("gemma2", "gemma-2")):
            if key in name:
                return fam
        return "gemma3"

    @property
    def ctx_per_slot(self) -> int:
        return max(1, self.s.n_ctx // max(1, self.s.n_parallel))

    def header(self) -> list[str]:
        p = self.plan
        return [f"gemma-plan recipe: {p.model} {p.weight_format} on {p.engine}, target {p.target}",
                f"context {p.ctx} tokens over {p.settings.n_parallel} slot(s); planned total {p.memory.total_bytes / GiB:.2f} GiB"]


gib = fmt_gib


def shell_script(ctx: Context, steps: list[Step], env: Optional[dict[str, str]] = None, extra: Optional[list[str]] = None,
                 preamble: Optional[list[str]] = None, cd_self: bool = True, pass_args: bool = False) -> str:
    """A POSIX sh script: header comments, ``set -eu``, cd to its own directory, exports, then the steps.

    The last step is ``exec``-ed so signals reach the server directly; with ``pass_args`` it also gets the
    script's own arguments (``"$@"``). ``preamble`` lines are fixed text written by this package
    (variable checks and defaults, values shell-quoted), never unquoted user data.
    """
    lines = ["#!/bin/sh"]
    lines += ["# " + comment(c) for c in ctx.header() + (extra or [])]
    lines += ["set -eu"] + (['cd "$(dirname "$0")"'] if cd_self else [])
    lines += list(preamble or [])
    for k, v in (env or {}).items():
        if not SHELL_NAME.match(k):
            raise ValueError(f"not an environment variable name: {k!r}")
        lines.append(f"export {k}={shlex.quote(str(v))}")
    for i, st in enumerate(steps):
        last = i == len(steps) - 1
        lines.append(("exec " if last else "") + st.shell() + (' "$@"' if last and pass_args else ""))
    return "\n".join(lines) + "\n"


# ``gemma-plan quantize`` writes ``OUT/<model>-<type>.gguf`` (quantize.pipeline) and refuses an OUT that already
# holds a recipe.json, so the command a recipe names writes into ./quantized and moves the GGUF to the name it loads.
QUANTIZE_OUT = "quantized"


def _quantize_argv(ctx: Context, *fmt_args: str) -> list[str]:
    """``gemma-plan quantize [fmt_args] -m REPO [-t TARGET]``: the target is named when it is a profile."""
    from profiles.targets import packaged_target_names, user_target_names

    p = ctx.plan
    argv = ["gemma-plan", "quantize", *fmt_args, "-m", ctx.model.hf_repo or p.model]
    if p.target in packaged_target_names() + user_target_names():
        argv += ["-t", p.target]
    return argv


def _made(ctx: Context, suffix: str) -> str:
    """What ``gemma-plan quantize`` writes into QUANTIZE_OUT for this plan (named after the catalog model)."""
    return f"{QUANTIZE_OUT}/{safe_name(ctx.spec.name if ctx.spec else ctx.plan.model)}-{ctx.plan.weight_format}{suffix}"


def quantize_command(ctx: Context, out_dir: str = QUANTIZE_OUT) -> list[str]:
    """The ``gemma-plan quantize`` argv that produces this plan's GGUF."""
    s = ctx.s
    argv = _quantize_argv(ctx) + ["-q", ctx.plan.weight_format, "--ctx", str(s.n_ctx), "-np", str(s.n_parallel)]
    if (s.type_k, s.type_v) != ("f16", "f16"):
        argv += ["--kv-type", s.type_k if s.type_k == s.type_v else f"{s.type_k}/{s.type_v}"]
    devs = ctx.plan.memory.devices
    if any("projector" in d.detail for d in devs) and not any("audio_projector" in d.detail for d in devs):
        from planner.projector import audio_tower_for

        if ctx.spec and audio_tower_for(ctx.spec.name, bool(ctx.spec.audio_params)):
            argv.append("--no-audio")  # quantize writes E2B/E4B's audio encoder into the mmproj unless told not to
    return argv + ["--out", out_dir]


def gptq_command(ctx: Context, out_dir: str) -> list[str]:
    """The ``gemma-plan quantize --format gptq`` argv that makes this plan's checkpoint (it writes
    ``OUT/<model>-gptq-int<bits>-g<group>``; group 128, the default)."""
    p, s = ctx.plan, ctx.s
    bits = "8" if p.weight_format.startswith("gptq-int8") else "4"
    engine = p.engine if p.engine in ("vllm", "transformers") else "vllm"
    return _quantize_argv(ctx, "--format", "gptq") + ["--bits", bits, "--engine", engine, "--ctx", str(s.n_ctx),
                                                      "-np", str(s.n_parallel), "--out", out_dir]


def model_origin(ctx: Context) -> str:
    """One printable line, the same in every recipe: the model file and where it comes from (for a model that
    does not exist yet, the command that makes it)."""
    m = ctx.model
    if m.kind == "placeholder-gguf" and m.artifact.get("kind") in ("ollama", "lmstudio") and m.artifact.get("fetch"):
        line = (f"model: {m.value} does not exist yet; make it here with: {shlex.join(quantize_command(ctx))} "
                f"&& mv {shlex.quote(_made(ctx, '.gguf'))} {shlex.quote(m.value)}; {m.artifact['kind']} has this format as: "
                f"{shlex.join([str(x) for x in m.artifact['fetch']])}")
    elif m.kind == "placeholder-gguf" and m.artifact.get("fetch"):
        a = m.artifact
        size = (f"{a['bytes']:,} bytes" + (", exact from the hub" if a.get("size_source") == "hub" else "") if a.get("bytes")
                else f"{a['size_published']} as published" if a.get("size_published") else "size not published")
        line = (f"model: {m.value} ({a.get('publisher') or a.get('repo')}, {size}): fetch it here with "
                f"{shlex.join(a['fetch'])} or gemma-plan fetch recipe.json")
        pulls = a.get("pull") if isinstance(a.get("pull"), dict) else {}
        line += "".join(f"; {tool} has it as: {shlex.join([str(x) for x in argv])}" for tool, argv in sorted(pulls.items())
                        if isinstance(argv, list))
    elif m.kind == "placeholder-gguf":
        line = (f"model: {m.value} does not exist yet; make it here with: {shlex.join(quantize_command(ctx))} "
                f"&& mv {shlex.quote(_made(ctx, '.gguf'))} {shlex.quote(m.value)} (or point MODEL at a copy you have)")
    elif m.kind == "gguf-file":
        line = f"model: {m.value} (the GGUF this plan was made for" + (f", from {m.hf_repo})" if m.hf_repo else ")")
    elif m.kind == "hf-dir":
        line = f"model: the Hugging Face checkpoint in {m.value}"
    elif m.kind == "hub":
        line = f"model: {m.value} from the Hugging Face hub (downloaded on first use)"
    elif m.kind == "placeholder-dir" and ctx.plan.weight_format.startswith("gptq"):
        line = (f"model: {m.value} does not exist yet; make it here with: {shlex.join(gptq_command(ctx, QUANTIZE_OUT))} "
                f"&& mv {shlex.quote(_made(ctx, '-g128'))} {shlex.quote(m.value)}")
    else:
        line = f"model: {m.value} does not exist yet (a local directory you provide)"
    return comment(line)


def py_literal(value) -> str:
    """A Python literal for a str/int/float/bool/None/list/dict value (repr is a literal for these)."""
    return repr(value)
