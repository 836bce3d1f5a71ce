"""Plan, produce, measure: the GGUF quantize stage behind ``gemma-plan quantize``.

1. plan: the planner picks (or checks) the file type that fits the target at the requested context;
2. produce: HF checkpoint -> GGUF (our streaming converter) -> llama.cpp quantization, written to
   temporary names in the output directory and renamed at the end; refuses to overwrite without force;
3. measure: load the result in llama.cpp with the plan's settings, compare every buffer with the
   planner's prediction for this machine, and write manifest.json and recipe.json beside the GGUF.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from planner.errors import DoesNotFitError, InvalidSettingsError, PlanError, UnknownModelError
from planner.formats import parse_format
from planner.memory import DEFAULT_MARGIN
from planner.policy import check_slots, check_trained_max, planned_ctx
from planner.search import plan as make_plan
from planner.search import recommend, require_fit
from planner.types import ModelSpec, Plan, RuntimeSettings
from profiles.hardware import Hardware
from quantize.errors import InsufficientDiskError, OutputExistsError
from quantize.files import MANIFEST_SCHEMA, sha256_file

from profiles.units import GiB
# Room kept on the output disk beyond the files themselves (filesystem metadata, the manifest, logs).
DISK_SLACK = 256 << 20


@dataclass
class QuantizeJob:
    """Everything the quantize stage decided before it writes a byte."""

    source: Path  # HF directory or GGUF file
    source_kind: str  # "hf-dir" | "gguf"
    spec: ModelSpec
    plan: Plan
    hardware: Hardware
    out_dir: Path
    gguf_path: Path
    intermediate: Optional[Path]  # converted F16/BF16 GGUF before quantization (None if not needed)
    outtype: str  # converter output type for the intermediate (or the final file for F16/BF16/F32)
    need_bytes: int
    notes: list[str] = field(default_factory=list)
    mmproj_path: Optional[Path] = None  # the vision projector written beside the GGUF (--vision)
    mmproj_type: str = "f16"
    mmproj_audio: bool = False  # also write the audio encoder into the projector (Gemma 4 E2B/E4B's gemma4a)

    def describe(self) -> list[str]:
        p = self.plan
        lines = [f"model: {self.spec.name} ({self.source_kind}: {self.source})",
                 f"plan: {p.weight_format} at {p.ctx:,} tokens, KV {p.settings.type_k}/{p.settings.type_v}, "
                 f"{p.memory.total_bytes / GiB:.2f} GiB on {p.target} ({'fits' if p.fits else 'does not fit'})",
                 f"writes: {self.gguf_path} (~{p.weight_file_bytes / GiB:.2f} GiB), "
                 + (f"{self.mmproj_path.name}, " if self.mmproj_path else "") + "manifest.json, recipe.json"]
        if self.intermediate:
            lines.append(f"temporary: {self.intermediate.name} ({self.outtype}, deleted at the end)")
        lines.append(f"needs {self.need_bytes / GiB:.2f} GiB free in {self.out_dir}")
        return lines + [f"note: {n}" for n in self.notes]


def resolve_source(model: str) -> tuple[Path, str]:
    """A local HF directory, a .gguf file, or a hub id / catalog alias resolved through the HF cache."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p, "hf-dir"
    if p.is_file() and p.suffix.lower() == ".gguf":
        return p, "gguf"
    if p.exists():
        raise UnknownModelError(f"{model} is neither a Hugging Face directory nor a .gguf file")
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or p.suffix.lower() in (".gguf", ".safetensors") or "\\" in model:
        raise UnknownModelError(f"{model} does not exist", hint="check the path: pass a Hugging Face checkpoint directory or a .gguf file")
    repo, expect = model, 0
    from planner.catalog import resolve_entry
    from planner.errors import UnknownModelError as _Unknown

    try:
        entry = resolve_entry(model)[0]
        repo = entry["hf_repo"] if "/" not in model else model
        from planner.catalog import get_model

        spec = get_model(entry["name"])[0]
        expect = (spec.n_params_text + spec.vision_params + spec.audio_params) * 2  # bf16 safetensors
    except _Unknown:
        if "/" not in model:
            raise
    return _snapshot(repo, expect), "hf-dir"


def source_name(model: str, source: Path) -> str:
    """The name outputs are called by: a hub id or catalog name keeps the catalog's name (``gemma-3-27b``) or the
    repository's, never the cache snapshot's hash; a local path keeps its own name."""
    p = Path(model).expanduser()
    if p.exists():
        return source.name if source.is_dir() else source.stem
    from planner.catalog import resolve_entry
    from planner.errors import UnknownModelError as _Unknown

    try:
        return resolve_entry(model)[0]["name"]
    except _Unknown:
        return model.rsplit("/", 1)[-1].lower()


SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja"]


def _snapshot(repo: str, expect_bytes: int = 0) -> Path:
    """Config, tokenizer and safetensors of a hub repo, from the local cache or the hub (never pickles or code).
    The cache is tried first; a download checks free disk in the cache for ``expect_bytes`` before it starts."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    fetch = f"hf download {repo} --include {' '.join(repr(p) for p in SNAPSHOT_PATTERNS)}"
    size = f" (~{expect_bytes / 1e9:.1f} GB)" if expect_bytes else ""
    try:
        return Path(snapshot_download(repo, allow_patterns=SNAPSHOT_PATTERNS, local_files_only=True))
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise UnknownModelError(
                f"{repo} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: quantize needs "
                f"its config, tokenizer and safetensors{size}", hint=f"where you have network run: {fetch}") from None
    except Exception:
        pass
    if expect_bytes:
        cache = Path(constants.HF_HUB_CACHE)
        probe = next((p for p in [cache, *cache.parents] if p.exists()), Path("/"))
        free = shutil.disk_usage(probe).free
        if free < expect_bytes + DISK_SLACK:
            raise InsufficientDiskError(f"downloading {repo} needs ~{(expect_bytes + DISK_SLACK) / GiB:.1f} GiB in {cache}, "
                                        f"{free / GiB:.1f} GiB free", hint="free space or set HF_HOME to a larger disk")
    try:
        return Path(snapshot_download(repo, allow_patterns=SNAPSHOT_PATTERNS))
    except LocalEntryNotFoundError:
        raise UnknownModelError(
            f"{repo} is not in the local Hugging Face cache and the hub cannot be reached: quantize needs its config, "
            f"tokenizer and safetensors{size}", hint=f"where you have network run: {fetch}") from None
    except Exception as exc:  # gated repos, bad ids, network errors: one line naming the repo
        raise UnknownModelError(f"could not fetch {repo}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                                hint="Gemma repos are gated: accept the licence on the model page and run `hf auth login`, "
                                     "or pass a local directory") from None


def plan_job(
    model: str,
    hw: Hardware,
    *,
    quant: str = "auto",
    ctx: Optional[int] = None,
    ctx_max: bool = False,
    parallel: int = 1,
    kv: Optional[tuple[str, str]] = None,
    out_dir: Optional[Path] = None,
    margin: int = DEFAULT_MARGIN,
    base: Optional[RuntimeSettings] = None,
    target: str = "",
    force: bool = False,
    out_name: Optional[str] = None,
    vision: Optional[bool] = None,
    mmproj_type: str = "f16",
    audio: Optional[bool] = None,
) -> QuantizeJob:
    from planner.sources import load_model

    source, kind = resolve_source(model)
    spec, _ = load_model(str(source))
    spec = dataclasses.replace(spec, name=source_name(model, source))
    check_trained_max(ctx, spec.name, spec.ctx_train)
    check_slots(planned_ctx(ctx, ctx_max, spec.ctx_train), parallel, given=ctx, is_max=ctx_max, ceiling=spec.ctx_train)
    base = dataclasses.replace(base or RuntimeSettings(), engine="llama.cpp", n_parallel=parallel)
    if kv:
        base = dataclasses.replace(base, type_k=kv[0], type_v=kv[1])
    if quant.lower() == "auto":
        rec = recommend(hw, models=[spec], engine="llama.cpp", ctx=ctx, ctx_max=ctx_max, parallel=parallel, kv_types=[kv] if kv else None,
                        margin=margin, base=base, target=target)
        if rec.plan is None:
            closest = rec.alternatives[0].reason if rec.alternatives else "nothing fits"
            raise DoesNotFitError(f"no GGUF type of {spec.name} fits {target or hw.name}: {closest}")
        p = rec.plan
    else:
        fmt = parse_format(quant, "llama.cpp")
        if fmt.kind != "gguf":
            raise InvalidSettingsError(f"--quant {quant} is not a GGUF type", hint="use --format gptq for GPTQ checkpoints")
        want = planned_ctx(ctx, ctx_max, spec.ctx_train)
        p = require_fit(make_plan(spec, fmt, dataclasses.replace(base, n_ctx=want), hw, margin=margin, target=target))
    out_dir = Path(out_dir or Path.cwd() / "out").expanduser()
    gguf_path = out_dir / (out_name or f"{spec.name}-{p.weight_format}.gguf")  # out_name: the file a recipe loads
    for path in (gguf_path, out_dir / "manifest.json", out_dir / "recipe.json"):
        if path.exists() and not force:
            raise OutputExistsError(f"{path} already exists")
    notes = []
    if kind == "gguf":
        if spec.gguf_file_type and spec.gguf_file_type.upper() not in ("F32", "F16", "BF16") and spec.gguf_file_type.upper() != p.weight_format:
            notes.append(f"requantizing a {spec.gguf_file_type} file loses quality; start from an F16/BF16 GGUF if you have one")
        intermediate, outtype = None, ""
        need = p.weight_file_bytes
    else:
        outtype = _source_outtype(spec)
        final_is_float = p.weight_format in ("F32", "F16", "BF16")
        if final_is_float:
            outtype = p.weight_format.lower()
            intermediate = None
            need = p.weight_file_bytes
        else:
            intermediate = out_dir / f".{spec.name}-{outtype}.gguf.tmp"
            need = p.weight_file_bytes + sum(t.n_elements for t in spec.tensors) * (4 if outtype == "f32" else 2)
    mmproj, mmproj_audio, p = _plan_projector(source, kind, spec, p, gguf_path, vision, mmproj_type, force, audio)
    if mmproj is not None:
        need += mmproj.weights_bytes + mmproj_audio
    need += DISK_SLACK
    return QuantizeJob(source, kind, spec, p, hw, out_dir, gguf_path, intermediate, outtype, need, notes,
                       mmproj_path=Path(mmproj.path) if mmproj else None, mmproj_type=mmproj_type,
                       mmproj_audio=bool(mmproj_audio))


def _plan_projector(source: Path, kind: str, spec: ModelSpec, p: Plan, gguf_path: Path, vision: Optional[bool],
                    mmproj_type: str, force: bool, audio: Optional[bool] = None):
    """The vision projector to write beside the GGUF: on by default when the checkpoint has a tower the writer
    knows (Gemma 3 SigLIP, Gemma 4 vision), refused with --vision when it has none. Its weights (the
    writer's own plan) and clip's compute buffer (measured for the released tower) join the plan.
    Gemma 4 E2B/E4B's audio encoder goes into the same file unless audio is False (refused with audio=True
    where the checkpoint has none). Returns (the projector or None, bytes of the audio encoder's tensors, the
    plan with them)."""
    if audio and vision is False:
        raise InvalidSettingsError("--audio with --no-vision: the audio encoder is written into the vision projector's "
                                   "mmproj file, which llama.cpp loads whole", hint="drop --no-vision")
    if vision is False:
        return None, 0, p
    if kind != "hf-dir":
        if vision or audio:
            flag = "--vision" if vision else "--audio"
            raise InvalidSettingsError(f"{flag} needs the Hugging Face checkpoint: a GGUF file holds no vision or audio tower",
                                       hint=f"pass the checkpoint directory, or drop {flag}")
        return None, 0, p
    from planner.projector import ProjectorMemory, encoder_compute_bytes, tower_for
    from planner.search import add_projector
    from quantize.errors import UnsupportedArchitectureError
    from quantize.mmproj import plan_mmproj

    try:
        mp = plan_mmproj(source, mmproj_type, audio=False)  # the vision projector the plan counts
    except UnsupportedArchitectureError as e:
        if vision or audio:
            flag = "--vision" if vision else "--audio"
            raise InvalidSettingsError(f"{flag}: {e}", hint=f"drop {flag} to quantize the text model only") from None
        return None, 0, p
    path = gguf_path.with_name(gguf_path.name[:-5] + f"-mmproj-{mmproj_type.upper()}.gguf")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists")
    hp = mp.hparams
    released = tower_for(spec.family, True, spec.name)
    same = released is not None and (released.kind, released.n_embd, released.n_ff, released.image_size) == (
        mp.projector, hp["n_embd"], hp["n_ff"], hp["image_size"])
    pm = ProjectorMemory(kind=mp.projector, file_type=mmproj_type, weights_bytes=mp.tensor_bytes,
                         compute_bytes=(encoder_compute_bytes(released) or 0) if same else 0,
                         tokens_per_image=hp["tokens_per_image"], image_size=hp["image_size"],
                         source=f"{source.name}/config.json vision_config", path=str(path))
    p = add_projector(p, spec, p.settings, pm)
    audio_bytes = 0
    if audio is not False:
        full = plan_mmproj(source, mmproj_type, audio=True)
        a = full.hparams.get("audio")
        if a is None:
            if audio and mp.projector == "gemma3nv":
                from planner.projector import GEMMA3N_AUDIO_NOTE

                raise InvalidSettingsError(f"--{GEMMA3N_AUDIO_NOTE.replace('--audio plans', 'the projector holds')}",
                                           hint="drop --audio: the projector is written with the vision tower only")
            if audio:
                raise InvalidSettingsError(f"--audio: {source.name} has no audio encoder the projector writer knows "
                                           "(it writes Gemma 4 E2B/E4B's conformer)", hint="drop --audio")
        else:
            from planner.projector import AUDIO_ENCODER_COMPUTE, GEMMA4_AUDIO
            from planner.search import add_audio_projector

            audio_bytes = full.tensor_bytes - mp.tensor_bytes
            same = (a["n_embd"], a["n_mel"]) == (GEMMA4_AUDIO.n_embd, GEMMA4_AUDIO.n_mel)
            p = add_audio_projector(p, spec, p.settings, dict(
                kind="gemma4a", file_type=mmproj_type, weights_bytes=audio_bytes,
                compute_bytes=AUDIO_ENCODER_COMPUTE[("gemma4a", GEMMA4_AUDIO.n_embd)] if same else 0,
                tokens_per_second=GEMMA4_AUDIO.tokens_per_second, slice_seconds=GEMMA4_AUDIO.warmup_seconds,
                source=f"{source.name}/config.json audio_config"))
    return pm, audio_bytes, p


def _source_outtype(spec: ModelSpec) -> str:
    dtypes = {t.dtype for t in spec.tensors if len(t.shape) > 1}
    return "bf16" if "BF16" in dtypes else ("f32" if dtypes == {"F32"} else "f16")


class OutputDirError(PlanError):
    hint = "choose another --out directory that you can write to"


def check_disk(job: QuantizeJob, where: Optional[Path] = None) -> None:
    """Free space where the job builds its files (its private directory beside the output)."""
    where = where or next((p for p in (job.out_dir, *job.out_dir.parents) if p.is_dir()), Path.cwd())
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        raise OutputDirError(f"cannot use {job.out_dir}: {exc.strerror or exc}") from None
    if free < job.need_bytes:
        raise InsufficientDiskError(f"{job.out_dir} has {free / GiB:.2f} GiB free, the job needs {job.need_bytes / GiB:.2f} GiB")


def run_job(
    job: QuantizeJob,
    *,
    force: bool = False,
    validate: bool = True,
    imatrix: Optional[str] = None,
    nthreads: Optional[int] = None,
    progress: Optional[Callable[[str, float], None]] = None,
) -> dict:
    """Produce the GGUF, validate it, write manifest.json and recipe.json. Returns the manifest.

    Everything is built in a private directory beside the output (planner.outputs.Staged) and the three
    files are moved into place together at the end: a failure or an interrupt leaves the previous state."""
    from planner.outputs import Staged
    from quantize.convert import convert_hf_to_gguf
    from quantize.llamacpp import quantize_gguf

    say = progress or (lambda stage, frac: None)
    started = time.time()
    fmt = job.plan.weight_format
    with Staged(job.out_dir, force=force, flag="--out") as staged:
        check_disk(job, staged.work)
        built = staged.path(job.gguf_path.name)
        intermediate = staged.path(job.intermediate.name.lstrip(".")) if job.intermediate else None
        # quantize_gguf reports the bytes written so far; the plan knows the file's size
        quantized = _fraction_of(job.plan.weight_file_bytes)
        if job.source_kind == "hf-dir":
            say("convert", 0.0)
            convert_hf_to_gguf(job.source, intermediate or built, outtype=job.outtype, force=True,
                               progress=lambda done, total, name: say("convert", done / max(1, total)))
            say("convert", 1.0)
            if intermediate:
                say("quantize", 0.0)
                quantize_gguf(intermediate, built, fmt, nthreads=nthreads, imatrix=imatrix, force=True,
                              progress=lambda written: say("quantize", quantized(written)))
                say("quantize", 1.0)
                intermediate.unlink()
        else:
            say("quantize", 0.0)
            quantize_gguf(job.source, built, fmt, nthreads=nthreads, imatrix=imatrix, force=True,
                          progress=lambda written: say("quantize", quantized(written)))
            say("quantize", 1.0)
        mmproj_built = None
        if job.mmproj_path is not None:
            from quantize.mmproj import write_mmproj

            say("mmproj", 0.0)
            mmproj_built = staged.path(job.mmproj_path.name)
            write_mmproj(job.source, mmproj_built, job.mmproj_type, force=True, audio=job.mmproj_audio,
                         progress=lambda done, total, name: say("mmproj", done / max(1, total)))
        if validate:
            say("validate", 0.0)
            validation = validate_gguf(job, built)
            say("validate", 1.0)
        else:
            validation = {"skipped": True}
        manifest = build_manifest(job, validation, imatrix=imatrix, seconds=time.time() - started, built=built)
        if mmproj_built is not None:
            manifest["mmproj"] = _mmproj_manifest(job, built, mmproj_built, validate)
        staged.write("recipe.json", json.dumps(job_recipe_document(job), indent=2, ensure_ascii=False) + "\n")
        staged.write("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        staged.commit([job.gguf_path.name] + ([job.mmproj_path.name] if mmproj_built else []) + ["recipe.json", "manifest.json"])
    return manifest


def _fraction_of(expected: int) -> Callable[[int], float]:
    """Bytes written so far -> fraction done, against the size the plan expects; held below 1.0 until the
    stage returns (the estimate can be a little small), then the caller reports 1.0."""
    def frac(written: int) -> float:
        return min(0.99, written / expected) if expected > 0 else 0.0
    return frac


# ---------------------------------------------------------------- validation


def local_settings(job: QuantizeJob) -> RuntimeSettings:
    """The plan's settings as this machine can run them: llama-cpp-python here is a CPU build."""
    return dataclasses.replace(job.plan.settings, n_gpu_layers=0, tensor_split=None, experts_on_cpu=False)


def validate_gguf(job: QuantizeJob, built: Optional[Path] = None) -> dict:
    """Load the artifact (``built``: where it is before it moves into place) in llama.cpp with the plan's
    settings and compare what it allocated with the planner."""
    from planner.sources import load_model
    from profiles.hardware import CPU
    from quantize.llamacpp import load_and_measure

    s = local_settings(job)
    gguf_path = built or job.gguf_path
    spec, _ = load_model(str(gguf_path))
    local = Hardware("validation host", [], 1 << 50, CPU(flags=_cpu_flags()))
    predicted = make_plan(spec, job.plan.fmt, s, local, margin=0).memory
    m = load_and_measure(
        gguf_path, n_ctx=s.n_ctx, n_batch=s.n_batch, n_ubatch=s.n_ubatch, n_seq_max=s.n_parallel,
        flash_attn=s.flash_attn, type_k=s.type_k, type_v=s.type_v, swa_full=s.swa_full, n_gpu_layers=0,
        kv_unified=s.kv_unified, use_mmap=s.use_mmap, offload_kqv=s.offload_kqv,
    )
    host = predicted.device("CPU")
    rows = {
        "weights": (predicted.weights_bytes, m.model_size),
        "kv": (predicted.kv_bytes, m.kv_bytes),
        "compute": (predicted.compute_bytes, sum(m.compute_buffers_at_free.values()) or sum(m.compute_buffers.values())),
        "output": (predicted.output_bytes, sum(m.output_buffers.values())),
    }
    repack = host.detail.get("repack_bytes", 0)
    measured_repack = m.model_buffers.get("CPU_REPACK", 0)
    if repack or measured_repack:
        rows["cpu_repack"] = (repack, measured_repack)
    comparison = {k: {"predicted_bytes": int(p), "measured_bytes": int(v), "error_pct": _err(p, v)} for k, (p, v) in rows.items()}
    return {
        "engine": m.library,
        "machine": "this machine, CPU only (the plan's GPU placement is not reproduced here)",
        "settings": m.settings,
        "n_ctx": m.n_ctx,
        "kv_caches": [{"name": c.name, "cells": c.cells, "layers": c.layers} for c in m.kv_caches],
        "buffers": {"model": m.model_buffers, "kv": m.kv_buffers, "compute": m.compute_buffers, "output": m.output_buffers},
        "comparison": comparison,
        "tokens_generated": len(m.generated_tokens),
        "generated_text": m.generated_text,
        "seconds": round(m.seconds, 2),
    }


def _err(pred: int, meas: int) -> Optional[float]:
    if not meas:
        return None if pred else 0.0
    return round((pred - meas) / meas * 100, 3)


def _cpu_flags() -> list[str]:
    try:
        from profiles.detect import detect_hardware

        return detect_hardware().cpu.flags
    except Exception:  # detection is best effort; without flags no repack is predicted
        return []


# ---------------------------------------------------------------- manifest and recipe


def _inputs(job: QuantizeJob) -> list[Path]:
    if job.source_kind == "gguf":
        return [job.source]
    keep = ("config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "model.safetensors.index.json")
    return sorted(p for p in job.source.iterdir() if p.suffix == ".safetensors" or p.name in keep)


def _mmproj_manifest(job: QuantizeJob, built: Path, mmproj: Path, validate: bool) -> dict:
    """The projector file and, with the engine, one image encoded through it: clip's own accounting of its
    weights and compute buffer next to the plan's."""
    from planner.gguf_header import read_header
    from quantize.llama_bins import mtmd_lib
    from quantize.mmproj import encode_image, plan_mmproj

    mp = plan_mmproj(job.source, job.mmproj_type, audio=job.mmproj_audio)
    planned = next((d.detail["projector"] for d in job.plan.memory.devices if "projector" in d.detail), {})
    planned_audio = next((d.detail["audio_projector"] for d in job.plan.memory.devices if "audio_projector" in d.detail), {})
    out = {"path": str(job.mmproj_path), "sha256": sha256_file(mmproj), "bytes": mmproj.stat().st_size,
           "type": job.mmproj_type, "projector": mp.projector,
           "tensor_bytes": sum(t.n_bytes for t in read_header(mmproj).tensors),
           "predicted_weights_bytes": planned.get("weights_bytes"), "predicted_compute_bytes": planned.get("compute_bytes")}
    if job.mmproj_audio:
        out.update(audio=True, predicted_audio_weights_bytes=planned_audio.get("weights_bytes"),
                   predicted_audio_compute_bytes=planned_audio.get("compute_bytes"))
    if not validate:
        out["validation"] = {"skipped": True}
    elif mtmd_lib() is None:
        out["validation"] = {"skipped": "llama.cpp's multimodal library is not built: python -m quantize.llama_bins --mtmd"}
    else:
        import numpy as np

        # Gemma 3 and 3n: their fixed input size; Gemma 4: 10 x 10 soft tokens (480 px for gemma4v's 16 px patches pooled 3x3)
        side = (mp.hparams["image_size"] if mp.projector in ("gemma3", "gemma3nv")
                else 10 * mp.hparams["patch_size"] * mp.hparams["scale"])
        rgb = ((np.arange(side * side * 3) * 37) % 251).astype(np.uint8).reshape(side, side, 3)
        enc = encode_image(built, mmproj, rgb)
        out["validation"] = {"image_px": side, "image_tokens": enc.image_tokens, "embd_finite": enc.embd_finite,
                             "tokens_generated": len(enc.generated), "clip_weights_bytes": enc.clip_buffers.get("model"),
                             "clip_compute_bytes": enc.clip_buffers.get("CPU compute"),
                             "note": "clip logs MiB with two decimals"}
        if job.mmproj_audio:
            from quantize.mmproj import encode_audio

            t = np.arange(16000) / 16000  # one second, 16 kHz: two tones
            pcm = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
            aenc = encode_audio(built, mmproj, pcm)
            out["validation"]["audio"] = {"seconds": 1.0, "audio_tokens": aenc.image_tokens, "embd_finite": aenc.embd_finite,
                                          "tokens_generated": len(aenc.generated),
                                          "clip_compute_bytes": aenc.clip_buffers.get("audio CPU compute")}
    return out


def build_manifest(job: QuantizeJob, validation: dict, *, imatrix: Optional[str], seconds: float,
                   built: Optional[Path] = None) -> dict:
    """The manifest of the artifact; ``built`` is where the file is now (it names its final path)."""
    from planner.formats import gguf_tensor_types, type_histogram
    from planner.gguf_header import read_header

    built = built or job.gguf_path
    header = read_header(built)
    hist: dict[str, int] = {}
    for t in header.tensors:
        hist[t.type_name] = hist.get(t.type_name, 0) + 1

    predicted_hist = type_histogram(gguf_tensor_types(job.spec, job.plan.weight_format)) if job.source_kind == "hf-dir" else None
    return {
        "schema": MANIFEST_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"kind": job.source_kind, "path": str(job.source),
                   "files": {p.name: sha256_file(p) for p in _inputs(job)}},
        "output": {"path": str(job.gguf_path), "sha256": sha256_file(built), "bytes": built.stat().st_size,
                   "tensor_bytes": sum(t.n_bytes for t in header.tensors)},
        "file_type": job.plan.weight_format,
        "imatrix": imatrix,
        "tensor_types": dict(sorted(hist.items())),
        "tensor_types_predicted": predicted_hist,
        "versions": _versions(),
        "plan": job.plan.to_dict(),
        "validation": validation,
        "seconds": round(seconds, 1),
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("gemma-plan", "llama-cpp-python", "gguf", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def job_recipe_document(job: QuantizeJob) -> dict:
    """Launch recipes for this artifact, rendered from the same plan (planner.recipes)."""
    from planner.recipes import recipe_document

    return recipe_document(job.plan, job.hardware, str(job.gguf_path))


__all__ = ["QuantizeJob", "plan_job", "run_job", "validate_gguf", "check_disk", "build_manifest", "resolve_source", "source_name"]
