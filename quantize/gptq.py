"""GPTQ checkpoints for vLLM and transformers through GPTQModel, then measured against the planner.

`quantize_gptq(model_dir, out_dir, ...)` quantizes a Gemma Hugging Face checkpoint with GPTQModel
(the maintained successor of auto-gptq; on CUDA when a GPU is visible, on the CPU otherwise) using
calibration text tokenized by the model's own tokenizer. It writes into a temporary directory beside
`out_dir` and renames it at the end; nothing is left behind on failure or Ctrl-C.

`validate_gptq(out_dir, ...)` reloads the checkpoint with transformers (GPTQModel's torch kernel on
the CPU), generates a few tokens, measures the parameter and buffer bytes of the loaded model,
compares them with `planner.formats.weight_bytes`, scores perplexity against the unquantized model,
and writes `manifest.json` and `recipe.json` into the checkpoint directory.

Both import torch, transformers and gptqmodel only when called.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import struct
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

from planner.errors import BackendUnavailableError, PlanError
from quantize.files import MANIFEST_SCHEMA, sha256_file, write_json

from .errors import InsufficientDiskError, OutputExistsError, QuantizationError

RECIPE_SCHEMA = "gemma-plan.gptq-recipe/1"
SUPPORTED_BITS = (4, 8)  # the planner's gptq-int4 / gptq-int8 formats
DEFAULT_GROUP_SIZE = 128
# 128 windows of 512 tokens: the usual GPTQ calibration budget, small enough for a CPU run.
DEFAULT_N_SAMPLES = 128
DEFAULT_SEQ_LEN = 512
DEFAULT_PROMPT = "The three things to check before deploying a language model are"
DEFAULT_NEW_TOKENS = 16
PPL_MAX_TOKENS = 1024  # perplexity is scored on at most this many tokens of the text, in windows of
PPL_WINDOW = 512
WITHIN_PCT = 1.0  # the bar for predicted vs measured weight bytes
DISK_SLACK = 64 << 20  # beyond the checkpoint: tokenizer files, manifest, GPTQModel's logs
BUNDLED_CALIBRATION = "data/calibration.txt"
BUNDLED_EVAL = "data/eval.txt"
# Files of the source checkpoint that the quantized one must not inherit (GPTQModel writes its own).
_WEIGHT_FILES = re.compile(r".*\.(safetensors|bin|pt|pth|gguf)$|.*\.safetensors\.index\.json$|^config\.json$")
_INSTALL_HINT = "pip install 'gemma-plan[gptq]' (GPTQModel 7.6 and optimum); docs/gptq.md has the GPU install"


class GPTQError(QuantizationError):
    hint = "check that the checkpoint loads in transformers; docs/gptq.md lists known problems"


Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- environment


def cpu_workers(cores: Optional[int] = None) -> int:
    """GPTQMODEL_CPU_WORKERS for this machine: GPTQModel's own default, min(12, ceil(cores / 2)),
    but at least 2, because its model-loader pool asks the CPU pool for 2 workers and fails on 1
    ("Virtual pool 'model_loader:cpu' requests 2 workers but parent 'cpu' only has 1")."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    return max(2, min(12, (cores + 1) // 2))


def _gptqmodel():
    """Import gptqmodel with GPTQMODEL_CPU_WORKERS set first (it is read when the pool is built)."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(cpu_workers()))
    try:
        import gptqmodel
    except ImportError as exc:
        raise BackendUnavailableError(f"GPTQ needs gptqmodel, which does not import here ({exc})", hint=_INSTALL_HINT) from None
    try:
        # GPTQModel writes per-run logs to ./logs of whatever directory the user is in; keep them out of it
        from gptqmodel.looper import loop_processor

        loop_processor._PROJECT_LOG_DIR = Path(tempfile.mkdtemp(prefix="gemma-plan-gptq-logs-"))  # private (0700), per run
    except (ImportError, AttributeError):  # another GPTQModel layout: its default stays
        pass
    return gptqmodel


def gptq_available() -> bool:
    """True when gptqmodel and optimum import (the [gptq] extra is installed and works)."""
    try:
        _gptqmodel()
        import optimum  # noqa: F401  (transformers loads GPTQ checkpoints through optimum)
    except (BackendUnavailableError, ImportError):
        return False
    return True


def _versions() -> dict[str, Optional[str]]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Optional[str]] = {}
    for pkg in ("gemma-plan", "gptqmodel", "optimum", "transformers", "torch", "numpy", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# ---------------------------------------------------------------- calibration


@dataclasses.dataclass
class Calibration:
    """Token windows fed to GPTQ, and where they came from."""

    samples: list[dict[str, list[int]]]
    source: str  # "bundled:quantize/data/calibration.txt" or the file's path
    sha256: str
    documents: int
    text_tokens: int  # tokens in the whole text, before windowing
    seq_len: int
    requested: int

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "documents": self.documents,
                "text_tokens": self.text_tokens, "samples": len(self.samples), "samples_requested": self.requested,
                "seq_len": self.seq_len, "tokens": sum(len(s["input_ids"]) for s in self.samples)}


def read_calibration_text(calib: str | Path | None) -> tuple[list[str], str, bytes]:
    """Documents from a text file (one document), a JSONL file (one document per line, from its
    "text" field), or the bundled sample when calib is None. Returns (documents, source, raw bytes)."""
    if calib is None:
        raw = resources.files("quantize").joinpath(BUNDLED_CALIBRATION).read_bytes()
        source = f"bundled:quantize/{BUNDLED_CALIBRATION}"
    else:
        path = Path(calib).expanduser()
        if not path.is_file():
            raise GPTQError(f"calibration file not found: {path}", hint="pass a UTF-8 text file or a JSONL file with a \"text\" field")
        raw = path.read_bytes()
        source = str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GPTQError(f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if calib is not None and (Path(calib).suffix.lower() in (".jsonl", ".ndjson") or text.lstrip().startswith("{")):
        docs = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise GPTQError(f"{source} line {i} is not JSON ({exc})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise GPTQError(f"{source} line {i} has no string \"text\" field",
                                hint="each JSONL line must be an object like {\"text\": \"...\"}")
            if rec["text"].strip():
                docs.append(rec["text"])
    else:
        docs = [text] if text.strip() else []
    if not docs:
        raise GPTQError(f"{source} holds no text")
    return docs, source, raw


def calibration_windows(token_ids: list[int], n_samples: int, seq_len: int, bos: Optional[int]) -> list[list[int]]:
    """n_samples windows of seq_len tokens spread evenly over token_ids (overlapping when the text
    is shorter than n_samples x seq_len; duplicates dropped), each starting with BOS as Gemma expects."""
    body = seq_len - (1 if bos is not None else 0)
    prefix = [bos] if bos is not None else []
    if len(token_ids) <= body:
        return [prefix + token_ids]
    last = len(token_ids) - body
    n = max(1, n_samples)
    starts = sorted({round(i * last / (n - 1)) for i in range(n)} if n > 1 else {0})
    return [prefix + token_ids[s:s + body] for s in starts]


def build_calibration(tokenizer: Any, calib: str | Path | None, n_samples: int, seq_len: int) -> Calibration:
    docs, source, raw = read_calibration_text(calib)
    sep = tokenizer.eos_token_id
    ids: list[int] = []
    for doc in docs:
        if ids and sep is not None:
            ids.append(sep)
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
    windows = calibration_windows(ids, n_samples, seq_len, tokenizer.bos_token_id)
    windows = [w for w in windows if len(w) >= 10]  # GPTQModel drops shorter ones (calibration_data_min_length)
    if not windows:
        raise GPTQError(f"{source} gives only {len(ids)} tokens; GPTQ needs at least 10 per sample")
    samples = [{"input_ids": w, "attention_mask": [1] * len(w)} for w in windows]
    return Calibration(samples, source, hashlib.sha256(raw).hexdigest(), len(docs), len(ids), seq_len, n_samples)


# ---------------------------------------------------------------- files


def _file_table(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    return {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(directory.iterdir()) if p.is_file() and p.name not in skip}


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _safetensors_names(directory: Path) -> list[str]:
    names: list[str] = []
    for f in sorted(directory.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            names.extend(k for k in json.loads(fh.read(n)) if k != "__metadata__")
    return names


def quantized_modules(directory: Path) -> tuple[Optional[str], list[str]]:
    """(block prefix, module names inside a block) of the QuantLinears a GPTQ checkpoint holds,
    read from its safetensors headers: e.g. ("model.layers", ["mlp.down_proj", ..., "self_attn.v_proj"])."""
    blocks: set[str] = set()
    mods: set[str] = set()
    for name in _safetensors_names(directory):
        if not name.endswith(".qweight"):
            continue
        m = re.match(r"(.+?\.layers)\.\d+\.(.+)\.qweight$", name)
        if m:
            blocks.add(m.group(1))
            mods.add(m.group(2))
    return (blocks.pop() if len(blocks) == 1 else None), sorted(mods)


def _finish_checkpoint(src: Path, ckpt: Path) -> None:
    """Make the saved checkpoint self-describing for every loader.

    GPTQModel quantizes only the Linear modules its model definition lists (gptqmodel/models/
    definitions/gemma*.py module_tree); optimum's loader otherwise replaces *every* Linear inside a
    decoder block with a QuantLinear, e.g. Gemma 4's MoE router (router.proj), which then holds
    uninitialised buffers. `modules_in_block_to_quantize` (read by optimum's GPTQQuantizer.convert_model
    and vLLM's GPTQConfig) names exactly the modules that were quantized.
    """
    block, mods = quantized_modules(ckpt)
    if not mods:
        raise GPTQError(f"GPTQModel saved no quantized modules for {src.name}")
    cfg_path = ckpt / "config.json"
    cfg = json.loads(cfg_path.read_text())
    qc = cfg.setdefault("quantization_config", {})
    qc["modules_in_block_to_quantize"] = [mods]
    if block:
        qc["block_name_to_quantize"] = block
    qc.get("meta", {}).pop("offload_to_disk_path", None)  # a temporary directory that no longer exists
    write_json(cfg_path, cfg)
    qfile = ckpt / "quantize_config.json"
    qfc = _read_json(qfile)
    if qfc is not None:
        qfc.get("meta", {}).pop("offload_to_disk_path", None)
        write_json(qfile, qfc)
    # Tokenizer, processor, generation and licence files GPTQModel did not copy (tokenizer.model,
    # preprocessor_config.json for the vision tower, ...), so the directory serves on its own.
    for f in src.iterdir():
        if f.is_file() and not _WEIGHT_FILES.match(f.name) and not (ckpt / f.name).exists() and f.stat().st_size < (64 << 20):
            shutil.copy2(f, ckpt / f.name)


# ---------------------------------------------------------------- quantize


def _source_spec(model_dir: Path):
    from planner.sources import load_model

    if not model_dir.is_dir():
        raise GPTQError(f"{model_dir} is not a directory", hint="pass a Hugging Face checkpoint directory (config.json + *.safetensors)")
    cfg = _read_json(model_dir / "config.json")
    if cfg is None:
        raise GPTQError(f"{model_dir} has no readable config.json")
    if cfg.get("quantization_config") or (cfg.get("text_config") or {}).get("quantization_config"):
        method = (cfg.get("quantization_config") or {}).get("quant_method", "a quantization")
        raise GPTQError(f"{model_dir} is already quantized ({method})", hint="start from the bf16/f16 checkpoint")
    if not list(model_dir.glob("*.safetensors")):
        raise GPTQError(f"{model_dir} has no *.safetensors weights", hint="convert pickle .bin weights to safetensors first")
    spec, _ = load_model(str(model_dir))
    return spec


def _format(bits: int, group_size: int):
    from planner.formats import parse_format

    return dataclasses.replace(parse_format(f"gptq-int{bits}"), group_size=group_size)


def quantize_gptq(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    bits: int = 4,
    group_size: int = DEFAULT_GROUP_SIZE,
    calib: str | Path | None = None,
    n_samples: int = DEFAULT_N_SAMPLES,
    seq_len: int = DEFAULT_SEQ_LEN,
    force: bool = False,
    progress: Optional[Progress] = None,
) -> Path:
    """Quantize the Gemma checkpoint in model_dir to GPTQ (bits 4 or 8, group_size 32/64/128/...
    or -1 for one group per row) and write a checkpoint directory at out_dir; returns out_dir.

    calib: a UTF-8 text file or a JSONL file with a "text" field per line; default the bundled sample
    (quantize/data/calibration.txt). n_samples windows of seq_len tokens are taken from it.
    progress(done, total) is called with the number of decoder layers quantized so far.
    Writes manifest.json (inputs, calibration, versions, output hashes); validate_gptq completes it.
    Raises OutputExistsError if out_dir exists and force is False, InsufficientDiskError if the disk
    cannot hold the source-sized offload copy plus the checkpoint, BackendUnavailableError without gptqmodel.
    """
    from planner.formats import weight_bytes

    model_dir, out_dir = Path(model_dir).expanduser(), Path(out_dir).expanduser()
    if bits not in SUPPORTED_BITS:
        raise GPTQError(f"GPTQ bits must be one of {SUPPORTED_BITS}, not {bits}")
    if group_size != -1 and (group_size < 32 or group_size % 32):
        raise GPTQError(f"group size must be -1 or a positive multiple of 32, not {group_size}")
    if n_samples < 1 or seq_len < 16:
        raise GPTQError(f"need n_samples >= 1 and seq_len >= 16 (got {n_samples}, {seq_len})")
    spec = _source_spec(model_dir)
    if out_dir.exists():
        if not force:
            raise OutputExistsError(f"{out_dir} already exists")
        if not out_dir.is_dir():
            raise OutputExistsError(f"{out_dir} exists and is not a directory", hint="remove it or choose another output path")
        if out_dir.resolve() == model_dir.resolve():
            raise GPTQError("the output directory is the source checkpoint", hint="choose another output path")
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    source_bytes = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    # GPTQModel offloads the not-yet-quantized layers to disk (offload_to_disk), up to a source-sized copy.
    need = weight_bytes(spec, _format(bits, group_size)) + source_bytes + DISK_SLACK
    free = shutil.disk_usage(parent).free
    if free < need:
        raise InsufficientDiskError(f"{parent} has {free / 2**30:.2f} GiB free; GPTQ of {model_dir.name} needs "
                                    f"{need / 2**30:.2f} GiB (checkpoint + offloaded layers)")

    started = time.time()
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=parent))
    ckpt = work / "checkpoint"
    model = None
    try:
        gptqmodel = _gptqmodel()
        import torch
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        calibration = build_calibration(tokenizer, calib, n_samples, seq_len)
        cuda = torch.cuda.is_available()
        qcfg = gptqmodel.QuantizeConfig(bits=bits, group_size=group_size, desc_act=False, sym=True,
                                        offload_to_disk=True, offload_to_disk_path=str(work / "offload"))
        model = gptqmodel.GPTQModel.load(str(model_dir), qcfg, device="cuda:0" if cuda else "cpu")
        total = spec.n_layers
        done: set[int] = set()
        if progress:
            progress(0, total)

            # GPTQModel's looper calls layer_callback(layer_idx=, submodule_finalized=) when a layer is
            # quantized and subset_callback(stage=, layer_idx=, subset_index=, subset_total=, ...) around
            # each group of modules (gptqmodel/looper/module_looper.py callbackup, _emit_subset_event).
            # Not every path emits both (on CUDA no layer event was seen), so either counts a layer once.
            def on_layer(layer_idx: int, submodule_finalized: bool = False, **_: Any) -> None:
                if layer_idx is not None and layer_idx not in done:
                    done.add(layer_idx)
                    progress(min(len(done), total), total)

            def on_subset(stage: str = "", layer_idx: Optional[int] = None, subset_index: int = 0,
                          subset_total: int = 1, **_: Any) -> None:
                if stage == "forward_end" and subset_index + 1 >= subset_total:
                    on_layer(layer_idx)

            model.layer_callback = on_layer
            model.subset_callback = on_subset
        model.quantize(calibration.samples, tokenizer=tokenizer, batch_size=1,
                       backend=gptqmodel.BACKEND.AUTO if cuda else gptqmodel.BACKEND.TORCH)
        model.save(str(ckpt))
        del model
        model = None
        gc.collect()
        _finish_checkpoint(model_dir, ckpt)
        if progress:
            progress(total, total)
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "kind": "gptq",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"kind": "hf-dir", "path": str(model_dir.resolve()), "model": spec.name,
                       "files": {n: r["sha256"] for n, r in _file_table(model_dir).items()},
                       "safetensors_bytes": source_bytes},
            "calibration": calibration.describe(),
            "quantization": {"method": "gptq", "format": _format(bits, group_size).name, "bits": bits,
                             "group_size": group_size, "desc_act": False, "sym": True,
                             "device": "cuda" if cuda else "cpu",
                             "cpu_workers": int(os.environ.get("GPTQMODEL_CPU_WORKERS", cpu_workers())),
                             "modules_in_block": quantized_modules(ckpt)[1],
                             "seconds": round(time.time() - started, 1)},
            "output": _output_section(out_dir, ckpt),
            "versions": _versions(),
            "validation": None,
        }
        write_json(ckpt / "manifest.json", manifest)
        _install(ckpt, out_dir, work)
    except BaseException as exc:
        model = None
        gc.collect()
        _remove_work_dir(work)
        if isinstance(exc, (PlanError, KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        if isinstance(exc, Exception):
            raise GPTQError(f"GPTQ quantization of {model_dir.name} failed: {type(exc).__name__}: {exc}") from exc
        raise
    shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _remove_work_dir(work: Path, wait_s: float = 30.0) -> None:
    """Delete the temporary directory once GPTQModel's worker threads are done with it: after an
    exception (Ctrl-C included) its pool still finishes the tasks in flight, which write offloaded
    layers into work/offload (DeviceThreadPool.wait in gptqmodel/utils/threadx.py drains them)."""
    try:
        import gptqmodel

        gptqmodel.DEVICE_THREAD_POOL.wait()
    except BaseException:  # best effort: a second Ctrl-C, or a pool that never started
        pass
    deadline = time.monotonic() + wait_s
    while True:
        shutil.rmtree(work, ignore_errors=True)
        time.sleep(0.2)
        if not work.exists() or time.monotonic() > deadline:
            break


def _output_section(out_dir: Path, ckpt: Path) -> dict[str, Any]:
    files = _file_table(ckpt, skip=("manifest.json", "recipe.json"))
    return {"path": str(out_dir.resolve()), "files": files, "bytes": sum(f["bytes"] for f in files.values()),
            "safetensors_bytes": sum(f["bytes"] for n, f in files.items() if n.endswith(".safetensors"))}


def _install(ckpt: Path, out_dir: Path, work: Path) -> None:
    """Rename the finished checkpoint into place; an old out_dir (force) is moved aside first and
    deleted only once the new one is in place."""
    old = None
    if out_dir.exists():
        old = work / "previous"
        os.rename(out_dir, old)
    try:
        os.rename(ckpt, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise


# ---------------------------------------------------------------- validate


def _text_source(ppl_text: str | Path | None) -> tuple[str, str]:
    """(text, source) for perplexity: a file's contents or the bundled held-out sample."""
    if ppl_text is None:
        return resources.files("quantize").joinpath(BUNDLED_EVAL).read_text(encoding="utf-8"), f"bundled:quantize/{BUNDLED_EVAL}"
    p = Path(ppl_text).expanduser()
    if not p.is_file():
        raise GPTQError(f"perplexity text not found: {p}")
    return p.read_text(encoding="utf-8"), str(p)


def perplexity(model: Any, tokenizer: Any, text: str, *, max_tokens: int = PPL_MAX_TOKENS, window: int = PPL_WINDOW) -> tuple[float, int]:
    """exp(mean next-token NLL) over the first max_tokens tokens of text, scored in windows of
    `window` tokens that each start with BOS. Returns (perplexity, tokens scored)."""
    import torch

    bos = tokenizer.bos_token_id
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    step = window - (1 if bos is not None else 0)
    nll, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(ids), step):
            chunk = ([bos] if bos is not None else []) + ids[start:start + step]
            if len(chunk) < 2:
                continue
            x = torch.tensor([chunk], device=device)
            logits = model(input_ids=x).logits.float()
            logp = torch.log_softmax(logits[0, :-1], dim=-1)
            nll -= logp.gather(1, x[0, 1:, None]).sum().item()
            count += len(chunk) - 1
    if not count:
        raise GPTQError("the perplexity text is too short (needs at least one token after BOS)")
    return math.exp(nll / count), count


def measure_model_bytes(model: Any) -> dict[str, int]:
    """Bytes of every distinct parameter and buffer of a loaded model (tied weights once), split into
    the text model and the vision/audio towers (planner.sources.TOWER_PREFIXES), plus how much of it is
    runtime-only buffers that no checkpoint tensor backs (rotary tables, kernel lookup tables)."""
    from planner.sources import TOWER_PREFIXES

    persistent = set(model.state_dict().keys())
    seen: set[int] = set()
    total = towers = runtime = 0
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        n = t.numel() * t.element_size()
        total += n
        if name.startswith(TOWER_PREFIXES):
            towers += n
        elif name not in persistent:
            runtime += n
    return {"total_bytes": total, "tower_bytes": towers, "text_bytes": total - towers, "runtime_buffer_bytes": runtime}


def _load_quantized(out_dir: Path, bits: int, dtype: Any, cuda: bool) -> Any:
    from transformers import AutoModelForCausalLM, GPTQConfig

    # GPTQModel's pure-torch kernel (BACKEND.TORCH) keeps the file's qweight/qzeros/scales/g_idx layout,
    # as vLLM's gptq kernels do, and needs no build. The automatic pick repacks (torch_aten on the CPU,
    # Marlin/Machete on GPUs) and can JIT-compile first: Machete on Hopper downloads CUTLASS sources.
    qc = GPTQConfig(bits=bits, backend="torch")
    return AutoModelForCausalLM.from_pretrained(out_dir, dtype=dtype, device_map="cuda:0" if cuda else "cpu",
                                                quantization_config=qc).eval()


def _err_pct(pred: int, meas: int) -> Optional[float]:
    return round((pred - meas) / meas * 100, 4) if meas else None


def validate_gptq(
    out_dir: str | Path,
    ref_dir: str | Path | None = None,
    prompt: str = DEFAULT_PROMPT,
    ppl_text: str | Path | None = None,
    *,
    n_tokens: int = DEFAULT_NEW_TOKENS,
) -> dict:
    """Reload the GPTQ checkpoint in out_dir, generate, measure, and write manifest.json and
    recipe.json beside it. Returns the manifest (its "validation" section holds the results).

    ref_dir: the unquantized checkpoint, for the planner's prediction and the reference perplexity;
    default the source recorded in manifest.json. Without one, the prediction comes from out_dir's
    config.json and no reference perplexity is computed.
    ppl_text: a UTF-8 text file; default the bundled held-out sample (quantize/data/eval.txt).
    """
    from planner.formats import weight_bytes
    from planner.sources import load_model

    out_dir = Path(out_dir).expanduser()
    cfg = _read_json(out_dir / "config.json")
    qcfg = (cfg or {}).get("quantization_config") or {}
    if qcfg.get("quant_method") != "gptq":
        raise GPTQError(f"{out_dir} is not a GPTQ checkpoint (config.json has no GPTQ quantization_config)")
    bits, group = int(qcfg["bits"]), int(qcfg.get("group_size", DEFAULT_GROUP_SIZE))
    manifest = _read_json(out_dir / "manifest.json") or {
        "schema": MANIFEST_SCHEMA, "kind": "gptq", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": None, "quantization": {"method": "gptq", "bits": bits, "group_size": group,
                                         "desc_act": bool(qcfg.get("desc_act", False))},
        "output": _output_section(out_dir, out_dir)}
    if ref_dir is None and manifest.get("source") and Path(manifest["source"]["path"]).is_dir():
        ref_dir = manifest["source"]["path"]
    ref = Path(ref_dir).expanduser() if ref_dir is not None else None
    fmt = _format(bits, group)
    spec, _ = load_model(str(ref if ref is not None else out_dir))
    predicted = weight_bytes(spec, fmt)
    text, text_source = _text_source(ppl_text)

    _gptqmodel()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16  # Gemma's training dtype; fp16 activations can overflow on real Gemma 3 models
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = _load_quantized(out_dir, bits, dtype, cuda)
    try:
        measured = measure_model_bytes(model)
        kernels = sorted({type(m).__name__ for m in model.modules() if hasattr(m, "qweight")})
        n_quantized = sum(1 for m in model.modules() if hasattr(m, "qweight"))
        enc = tokenizer(prompt, return_tensors="pt").to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=n_tokens, do_sample=False)
        new_ids = out[0, enc["input_ids"].shape[1]:].tolist()
        generated = tokenizer.decode(new_ids, skip_special_tokens=True)
        ppl_q, ppl_tokens = perplexity(model, tokenizer, text)
    finally:
        del model
        gc.collect()
    ppl_ref = None
    if ref is not None:
        ref_model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, device_map="cuda:0" if cuda else "cpu").eval()
        try:
            ppl_ref, _ = perplexity(ref_model, AutoTokenizer.from_pretrained(ref), text)
        finally:
            del ref_model
            gc.collect()

    err = _err_pct(predicted, measured["text_bytes"])
    validation = {
        "engine": f"transformers {_versions()['transformers']} + gptqmodel {_versions()['gptqmodel']}",
        "kernel": ", ".join(kernels),
        "device": "cuda" if cuda else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "quantized_modules": n_quantized,
        "prediction": {"format": fmt.name, "group_size": group, "function": "planner.formats.weight_bytes",
                       "spec_from": str(ref if ref is not None else out_dir), "spec_notes": spec.notes},
        "measured": measured,
        "comparison": {"weights": {"predicted_bytes": predicted, "measured_bytes": measured["text_bytes"], "error_pct": err}},
        "within_pct": WITHIN_PCT,
        "within": err is not None and abs(err) <= WITHIN_PCT,
        "prompt": prompt,
        "tokens_generated": len(new_ids),
        "generated_ids": new_ids,
        "generated_text": generated,
        "perplexity": {"text": text_source, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                       "tokens": ppl_tokens, "window": PPL_WINDOW, "quantized": round(ppl_q, 4),
                       "reference": round(ppl_ref, 4) if ppl_ref is not None else None,
                       "ratio": round(ppl_q / ppl_ref, 4) if ppl_ref else None},
        "seconds": round(time.time() - started, 1),
    }
    manifest["validation"] = validation
    manifest["versions"] = _versions()
    recipe = build_recipe(out_dir, bits, group)
    write_json(out_dir / "recipe.json", recipe)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


# ---------------------------------------------------------------- recipe


def build_recipe(out_dir: str | Path, bits: int, group_size: int) -> dict:
    """How to serve the checkpoint: vLLM as an argv list (and its shlex-quoted line), transformers as a
    Python snippet whose path is a Python literal (repr), so no path can inject a command."""
    path = str(Path(out_dir).resolve())
    # No --quantization: vLLM 0.33 reads quant_method from the checkpoint and runs it with Marlin
    # (AutoGPTQConfig.override_quantization_method in vllm/model_executor/layers/quantization/auto_gptq.py),
    # in bfloat16 (get_supported_act_dtypes: half and bfloat16); float16 is refused for Gemma 2/3
    # (_FLOAT16_NOT_SUPPORTED_MODELS in vllm/config/model.py).
    argv = ["vllm", "serve", path, "--dtype", "bfloat16"]
    snippet = "\n".join([
        "import torch",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"path = {path!r}",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        "# needs gptqmodel and optimum; on a CPU-only machine pass",
        "# quantization_config=transformers.GPTQConfig(bits=%d, backend=\"torch\")" % bits,
        "model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map=\"auto\")",
        "messages = [{\"role\": \"user\", \"content\": \"Hello!\"}]",
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True).to(model.device)",
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))",
    ])
    return {
        "schema": RECIPE_SCHEMA,
        "artifact": path,
        "format": _format(bits, group_size).name,
        "group_size": group_size,
        "vllm": {"argv": argv, "command": shlex.join(argv)},
        "transformers": {"python": snippet, "requires": ["transformers>=5", "gptqmodel", "optimum"]},
    }


__all__ = [
    "Calibration", "GPTQError", "build_calibration", "build_recipe", "calibration_windows", "cpu_workers",
    "gptq_available", "measure_model_bytes", "perplexity", "quantize_gptq", "quantized_modules",
    "read_calibration_text", "validate_gptq",
]
