"""Model sources: a catalog alias, a local Hugging Face directory, or a GGUF file -> ModelSpec.

No weights are read: a HF directory gives ``config.json`` and the safetensors headers, a GGUF file its
header (``gguf.GGUFReader`` maps the file; only metadata and tensor infos are touched).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Optional

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
        _check_st_entry(path, name, info, body)
    return header


_ST_FIX = "the file is damaged: download it again or re-save it with safetensors"
# bytes per element of each safetensors dtype (the safetensors spec's Dtype enum)
_ST_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
                   "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def _check_st_entry(path: Path, name: str, info, body: int) -> None:
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


def load_hf_dir(path: Path) -> ModelSpec:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise InvalidModelFileError(f"{path} has no config.json")
    try:
        if cfg_path.stat().st_size > B.MAX_JSON_BYTES:
            raise InvalidModelFileError(f"{cfg_path}: {cfg_path.stat().st_size:,} bytes is too large for a config")
        cfg = json.loads(cfg_path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise InvalidModelFileError(f"{cfg_path}: not valid JSON ({str(exc).splitlines()[0][:80] if str(exc) else 'too deeply nested'})") from None
    except OSError as exc:
        raise InvalidModelFileError(f"{cfg_path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(cfg, dict):
        raise B.BoundsError(str(cfg_path), "config", type(cfg).__name__, "is not a JSON object",
                            "config.json must be an object like {\"model_type\": \"gemma3\", ...}")
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
    spec = spec_from_config(_with_defaults(cfg), name=name, source=source, src_dtype=src)
    if header:
        text = sum(_numel(v["shape"]) for k, v in header.items() if not k.startswith(TOWER_PREFIXES) and not k.endswith("lm_head.weight"))
        towers = sum(_numel(v["shape"]) for k, v in header.items() if k.startswith(TOWER_PREFIXES))
        spec.vision_params = towers
        inventory = _hf_inventory(spec, header)
        if inventory is not None:
            spec.tensors = inventory
            spec.notes = "tensor inventory from the safetensors headers"
        elif text != spec.n_params_text:
            spec.notes = f"config gives {spec.n_params_text:,} text parameters, the safetensors headers {text:,}"
    return spec


# Gemma4TextConfig defaults (transformers 5.24 signature): a config.json written as a diff omits them.
GEMMA4_TEXT_DEFAULTS = {"vocab_size": 262144, "head_dim": 256, "sliding_window": 512, "intermediate_size": 9216,
                        "hidden_size_per_layer_input": 256, "vocab_size_per_layer_input": 262144,
                        "attention_k_eq_v": False, "num_kv_shared_layers": 0, "enable_moe_block": False}


def _with_defaults(cfg: dict) -> dict:
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    if text.get("model_type", cfg.get("model_type")) in ("gemma4_text", "gemma4"):
        filled = {**GEMMA4_TEXT_DEFAULTS, **text}
        if not filled.get("enable_moe_block"):
            filled["num_experts"] = None
        return {**cfg, "text_config": filled} if text is not cfg else filled
    return cfg


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
    path = Path(origin)  # messages name the file

    def field(key, default=None):
        return header.fields.get(key, default)

    arch = field("general.architecture")
    if not isinstance(arch, str) or arch not in ("gemma2", "gemma3", "gemma3n", "gemma4"):
        raise UnsupportedArchitectureError(f"{path.name}: GGUF architecture '{arch}' is not a supported Gemma")
    fix = "the GGUF metadata is damaged: download or convert the model again"

    def k(name, default=None):
        return field(f"{arch}.{name}", default)

    def num(name, lo, hi, default=None, required=False):
        """One GGUF integer (or per-layer list of integers) checked against profiles.bounds."""
        v = k(name)
        if v is None:
            if required:
                raise B.BoundsError(origin, f"{arch}.{name}", None, "is missing", fix)
            return default
        if isinstance(v, list):
            if len(v) != n_layers:
                raise B.BoundsError(origin, f"{arch}.{name}", f"list of {len(v)}", f"needs one entry per layer ({n_layers})", fix)
            return [B.check_int(origin, f"{arch}.{name}[{i}]", x, lo, hi, fix) for i, x in enumerate(v)]
        return B.check_int(origin, f"{arch}.{name}", v, lo, hi, fix)

    n_layers = B.check_int(origin, f"{arch}.block_count", k("block_count"), 1, B.MAX_LAYERS, fix)
    ctx_train = num("context_length", 1, B.MAX_CTX, required=True)
    cfg = {
        "model_type": arch,
        "hidden_size": num("embedding_length", 1, B.MAX_HIDDEN, required=True),
        "num_hidden_layers": n_layers,
        "intermediate_size": num("feed_forward_length", 1, B.MAX_FF, required=True),
        "num_attention_heads": _first(num("attention.head_count", 1, B.MAX_HEADS, required=True)),
        "max_position_embeddings": _first(ctx_train),
        "sliding_window": _first(num("attention.sliding_window", 0, B.MAX_CTX, 4096)),
        "num_kv_shared_layers": _first(num("attention.shared_kv_layers", 0, n_layers - 1, 0)),
        "hidden_size_per_layer_input": _first(num("embedding_length_per_layer_input", 0, B.MAX_PLE_DIM, 0)),
    }
    kv = num("attention.head_count_kv", 0, B.MAX_HEADS)
    pattern = k("attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) == n_layers:
        cfg["layer_types"] = "".join("S" if b else "F" for b in pattern)
    elif isinstance(pattern, int) and not isinstance(pattern, bool) and 0 < pattern <= B.MAX_LAYERS:
        cfg["sliding_window_pattern"] = pattern
    elif pattern is not None:
        raise B.BoundsError(origin, f"{arch}.attention.sliding_window_pattern", pattern,
                            f"is neither a period (1..{B.MAX_LAYERS}) nor one flag per layer ({n_layers})", fix)
    key_len = _first(num("attention.key_length", 1, B.MAX_HEAD_DIM))
    key_swa = _first(num("attention.key_length_swa", 1, B.MAX_HEAD_DIM))
    if arch == "gemma4":
        cfg["head_dim"] = key_swa or key_len
        cfg["global_head_dim"] = key_len
        types = cfg.get("layer_types") or ""
        if isinstance(kv, list):
            cfg["num_key_value_heads"] = next((h for h, t in zip(kv, types) if t == "S"), kv[0])
            cfg["num_global_key_value_heads"] = next((h for h, t in zip(kv, types) if t == "F"), kv[0])
        else:
            cfg["num_key_value_heads"] = kv
        names = {t.name for t in header.tensors}
        cfg["attention_k_eq_v"] = any(
            f"blk.{i}.attn_q.weight" in names and f"blk.{i}.attn_v.weight" not in names for i in range(n_layers)
        )
    else:
        cfg["num_key_value_heads"] = _first(kv)
        cfg["head_dim"] = key_len
    for key in ("num_key_value_heads", "num_global_key_value_heads"):
        if cfg.get(key) == 0:
            raise B.BoundsError(origin, f"{arch}.attention.head_count_kv", kv, "gives a layer 0 KV heads", fix)
    experts = _first(num("expert_count", 0, B.MAX_EXPERTS, 0))
    if experts:
        cfg["num_experts"] = experts
        cfg["top_k_experts"] = _first(num("expert_used_count", 1, experts, required=True))
        cfg["moe_intermediate_size"] = _first(num("expert_feed_forward_length", 1, B.MAX_FF, required=True))
    emb = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if emb is None:
        raise InvalidModelFileError(f"{path.name}: no token_embd.weight tensor")
    if len(emb.shape) != 2:
        raise B.BoundsError(origin, "token_embd.weight shape", list(emb.shape), "is not [vocab, hidden]", fix)
    cfg["vocab_size"] = B.check_int(origin, "token_embd.weight rows (vocabulary)", int(emb.shape[0]), 1, B.MAX_VOCAB, fix)
    spec = spec_from_config(cfg, name=name, source=source)
    layer_of = {t.name: t.layer for t in spec.tensors}
    spec.tensors = [TensorSpec(t.name, t.shape, layer_of.get(t.name, _layer_from_name(t.name, n_layers)), t.type_name, t.n_bytes)
                    for t in header.tensors]
    spec.gguf_file_bytes = header.file_size
    ftype = field("general.file_type")
    spec.gguf_file_type = _FILE_TYPES.get(ftype, "GGUF") if isinstance(ftype, int) else "GGUF"
    return spec


def _layer_from_name(name: str, n_layers: int) -> Optional[int]:
    """The block of a ``blk.N.*`` tensor the spec did not predict; None outside 0..n_layers-1."""
    if name.startswith("blk."):
        part = name.split(".")[1]
        if part.isdigit() and len(part) < 6 and int(part) < n_layers:
            return int(part)
    return None


def _first(v):
    return v[0] if isinstance(v, list) else v


_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               21: "Q2_K_S", 25: "IQ4_NL", 30: "IQ4_XS", 32: "BF16"}

__all__ = ["load_model", "load_hf_dir", "load_gguf", "read_safetensors_header", "SUPPORTED_MODEL_TYPES", "InvalidModelFileError"]
