"""Model sources: a catalog alias, a local Hugging Face directory, or a GGUF file -> ModelSpec.

No weights are read: a HF directory gives ``config.json`` and the safetensors headers, a GGUF file its
header (``gguf.GGUFReader`` maps the file; only metadata and tensor infos are touched).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Optional

from planner.arch import FAMILIES, spec_from_gguf
from planner.catalog import SUPPORTED_MODEL_TYPES, get_model, spec_from_config
from planner.errors import PlanError, UnknownModelError, UnsupportedArchitectureError
from planner.types import ModelSpec, TensorSpec
from profiles import bounds as B

SAFETENSORS_DTYPES = {"BF16": "BF16", "F16": "F16", "F32": "F32", "F8_E4M3": "F8", "I32": "I32", "I8": "I8", "U8": "U8"}
# Towers that llama.cpp keeps in a separate mmproj file: counted apart from the text weights.
TOWER_PREFIXES = ("vision_tower", "model.vision_tower", "multi_modal_projector", "model.multi_modal_projector",
                  "audio_tower", "model.audio_tower", "embed_vision", "model.embed_vision", "embed_audio", "model.embed_audio",
                  "vision_model", "model.vision_model")


class InvalidModelFileError(PlanError):
    hint = "check the path; a GGUF must be a complete file and a HF directory needs config.json"


def load_model(query: str) -> tuple[ModelSpec, str]:
    p = Path(query).expanduser()
    if p.is_dir():
        return load_hf_dir(p), ""
    ref = None
    if "/" in query:  # every hub spelling names USER/REPO; a catalog name never has a slash
        from planner import hub

        ref = hub.parse_ref(query)
    if ref is not None and not p.exists():
        remote = hub.load_remote(ref)
        if remote is not None:
            return remote
    if p.suffix.lower() == ".gguf" or (p.is_file() and _is_gguf(p)):
        if not p.exists():
            raise InvalidModelFileError(f"GGUF file not found: {p}")
        return load_gguf(p), ""
    if p.suffix.lower() in (".bin", ".safetensors", ".pt", ".pth") or (("/" in query or query.startswith(".")) and not _looks_like_repo(query)):
        if not p.exists():
            raise UnknownModelError(f"no such file or directory: {query}")
        raise InvalidModelFileError(f"{query} is a single weights file; pass its directory (with config.json) or a .gguf")
    return get_model(query)


def _looks_like_repo(q: str) -> bool:
    return q.count("/") == 1 and not q.startswith((".", "/", "~"))


def _is_gguf(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


# ---------------------------------------------------------------- HF directory


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file (8-byte little-endian length, then JSON), checked entry by entry:
    an object of tensors, each with a known dtype, a shape of at most MAX_DIMS sizes, and data inside the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise InvalidModelFileError(f"{path}: truncated safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > min(B.MAX_JSON_BYTES, size - 8):
                raise InvalidModelFileError(f"{path}: not a safetensors file (header length {n:,}, file {size:,} bytes)")
            data = f.read(n)
    except OSError as exc:
        raise InvalidModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidModelFileError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise InvalidModelFileError(f"{path}: safetensors header is a JSON {type(header).__name__}, not an object of tensors")
    header.pop("__metadata__", None)
    if len(header) > B.MAX_TENSORS:
        raise B.BoundsError(str(path), "tensor count", len(header), f"is above {B.MAX_TENSORS:,}", _ST_FIX)
    body = size - 8 - n
    for name, info in header.items():
        check_safetensors_entry(path, name, info, body)
    return header


_ST_FIX = "the file is damaged: download it again or re-save it with safetensors"
# bytes per element of each safetensors dtype (the safetensors spec's Dtype enum)
_ST_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
                   "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def check_safetensors_entry(path: Path, name: str, info, body: int) -> None:
    where = f"tensor {name[:80]!r}"
    if not isinstance(info, dict):
        raise B.BoundsError(str(path), where, info, "is not an object with dtype, shape and data_offsets", _ST_FIX)
    dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _ST_DTYPE_BYTES:
        raise B.BoundsError(str(path), where + " dtype", dtype, f"is not a safetensors dtype ({', '.join(_ST_DTYPE_BYTES)})", _ST_FIX)
    if not isinstance(shape, list) or len(shape) > B.MAX_DIMS:
        raise B.BoundsError(str(path), where + " shape", shape, f"is not a list of at most {B.MAX_DIMS} sizes", _ST_FIX)
    numel = 1
    for i, d in enumerate(shape):
        numel *= B.check_int(str(path), f"{where} shape[{i}]", d, 0, B.MAX_TENSOR_ELEMENTS, _ST_FIX)
    if numel > B.MAX_TENSOR_ELEMENTS:
        raise B.BoundsError(str(path), where + " shape", shape, f"has more than {B.MAX_TENSOR_ELEMENTS:,} elements", _ST_FIX)
    if not isinstance(offs, list) or len(offs) != 2:
        raise B.BoundsError(str(path), where + " data_offsets", offs, "is not a [begin, end] pair", _ST_FIX)
    begin = B.check_int(str(path), where + " data_offsets[0]", offs[0], 0, body, _ST_FIX)
    end = B.check_int(str(path), where + " data_offsets[1]", offs[1], begin, body,
                      f"the header claims more bytes than the file holds ({body:,}); {_ST_FIX}")
    if end - begin != numel * _ST_DTYPE_BYTES[dtype]:
        raise B.BoundsError(str(path), where + " data_offsets", offs,
                            f"span {end - begin:,} bytes, the shape and dtype need {numel * _ST_DTYPE_BYTES[dtype]:,}", _ST_FIX)


def parse_config(raw: bytes, where: str) -> dict:
    """A config.json's bytes (local or read from the hub) as a dict: size, JSON and type checked."""
    if len(raw) > B.MAX_JSON_BYTES:
        raise InvalidModelFileError(f"{where}: {len(raw):,} bytes is too large for a config")
    try:
        cfg = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidModelFileError(f"{where}: not valid JSON ({str(exc).splitlines()[0][:80] if str(exc) else 'too deeply nested'})") from None
    if not isinstance(cfg, dict):
        raise B.BoundsError(where, "config", type(cfg).__name__, "is not a JSON object",
                            "config.json must be an object like {\"model_type\": \"gemma3\", ...}")
    return cfg


def load_hf_dir(path: Path) -> ModelSpec:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise InvalidModelFileError(f"{path} has no config.json")
    try:
        if cfg_path.stat().st_size > B.MAX_JSON_BYTES:
            raise InvalidModelFileError(f"{cfg_path}: {cfg_path.stat().st_size:,} bytes is too large for a config")
        raw = cfg_path.read_bytes()
    except OSError as exc:
        raise InvalidModelFileError(f"{cfg_path}: cannot read ({exc.strerror or exc})") from None
    cfg = parse_config(raw, str(cfg_path))
    files = sorted(path.glob("*.safetensors"))
    if not files and list(path.glob("*.bin")):
        raise InvalidModelFileError(f"{path} holds only pickle .bin weights; gemma-plan reads safetensors only (convert them first)")
    if len(files) > B.MAX_TENSORS:
        raise B.BoundsError(str(path), "safetensors files", len(files), f"is above {B.MAX_TENSORS:,}", _ST_FIX)
    header: dict = {}
    for f in files:
        header.update(read_safetensors_header(f))
        if len(header) > B.MAX_TENSORS:
            raise B.BoundsError(str(path), "tensor count", len(header), f"is above {B.MAX_TENSORS:,}", _ST_FIX)
    return spec_from_config_and_header(cfg, header, name=path.name, source=f"hf-dir:{path}")


def spec_from_config_and_header(cfg: dict, header: dict, *, name: str, source: str) -> ModelSpec:
    """A ModelSpec from a config.json object and the merged, checked safetensors headers (local or read over HTTP)."""
    dtypes = {v["dtype"] for k, v in header.items() if not k.startswith(TOWER_PREFIXES)}
    src = "BF16" if not dtypes or "BF16" in dtypes else ("F16" if "F16" in dtypes else "F32")
    # a config.json may omit keys its transformers config class defaults (planner/arch.py CONFIG_DEFAULTS)
    spec = spec_from_config(cfg, name=name, source=source, src_dtype=src, fill_defaults=True)
    if header:
        text = sum(_numel(v["shape"]) for k, v in header.items() if not k.startswith(TOWER_PREFIXES) and not k.endswith("lm_head.weight"))
        towers = sum(_numel(v["shape"]) for k, v in header.items() if k.startswith(TOWER_PREFIXES))
        inventory = _hf_inventory(spec, header)
        if inventory is not None:
            spec = dataclasses.replace(spec, vision_params=towers, tensors=tuple(inventory),
                                       notes="tensor inventory from the safetensors headers")
        elif text != spec.n_params_text:
            spec = dataclasses.replace(spec, vision_params=towers,
                                       notes=f"config gives {spec.n_params_text:,} text parameters, the safetensors headers {text:,}")
        else:
            spec = dataclasses.replace(spec, vision_params=towers)
    return spec


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _hf_inventory(spec: ModelSpec, header: dict) -> Optional[list[TensorSpec]]:
    """Map HF tensor names to GGUF names with gguf's TensorNameMap; None if any text tensor is unknown."""
    import gguf

    arch = {"gemma2": gguf.MODEL_ARCH.GEMMA2, "gemma3": gguf.MODEL_ARCH.GEMMA3, "gemma3n": gguf.MODEL_ARCH.GEMMA3N,
            "gemma4": gguf.MODEL_ARCH.GEMMA4}[spec.arch]
    tmap = gguf.get_tensor_name_map(arch, spec.n_layers)
    expected = {t.name: t for t in spec.tensors}
    out = []
    for name, info in header.items():
        if name.startswith(TOWER_PREFIXES) or name.endswith("lm_head.weight"):
            continue
        short = name.replace("model.language_model.", "model.")
        full = tmap.get_name(short, try_suffixes=(".weight", ".bias"))  # keeps the suffix it matched
        if full is None:
            return None
        ref = expected.get(full)
        if ref is None or _numel(info["shape"]) != ref.n_elements:
            return None
        out.append(TensorSpec(full, ref.shape, ref.layer, SAFETENSORS_DTYPES.get(info["dtype"], "BF16") if len(ref.shape) > 1 else "F32"))
    if {t.name for t in out} != {n for n in expected if not n.startswith("rope_freqs")}:
        return None
    order = {t.name: i for i, t in enumerate(spec.tensors)}
    extra = [t for t in spec.tensors if t.name.startswith("rope_freqs")]
    return sorted(out + extra, key=lambda t: order[t.name])


# ---------------------------------------------------------------- GGUF file


def load_gguf(path: Path) -> ModelSpec:
    """A GGUF file's header -> ModelSpec (planner.arch.spec_from_gguf); no tensor data is read."""
    from planner.gguf_header import GGUFHeaderError, read_header

    try:
        header = read_header(path)
    except (GGUFHeaderError, ValueError, OSError) as exc:
        raise InvalidModelFileError(f"{path}: not a readable GGUF file ({str(exc).splitlines()[0] if str(exc) else 'truncated'})",
                                    hint=getattr(exc, "hint", "") or InvalidModelFileError.hint) from None
    return spec_from_gguf_header(header, name=path.stem, origin=str(path), source=f"gguf:{path}")


def spec_from_gguf_header(header, *, name: str, origin: str, source: str) -> ModelSpec:
    """A ModelSpec from a parsed GGUF header (planner.gguf_header), read from a local file or over HTTP;
    ``origin`` names the file in messages, ``source`` is what the spec records."""
    label = Path(origin).name
    arch = header.fields.get("general.architecture")
    if not isinstance(arch, str) or arch not in FAMILIES:
        raise UnsupportedArchitectureError(f"{label}: GGUF architecture '{arch}' is not a supported Gemma")
    if not any(t.name == "token_embd.weight" for t in header.tensors):
        raise InvalidModelFileError(f"{label}: no token_embd.weight tensor")
    return spec_from_gguf(header.fields, header.tensors, name=name, source=source, origin=origin, file_bytes=header.file_size)


__all__ = ["load_model", "load_hf_dir", "load_gguf", "read_safetensors_header", "SUPPORTED_MODEL_TYPES", "InvalidModelFileError"]
