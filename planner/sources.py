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
    """The JSON header of a .safetensors file (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise InvalidModelFileError(f"{path}: truncated safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise InvalidModelFileError(f"{path}: not a safetensors file (header length {n})")
        data = f.read(n)
    try:
        header = json.loads(data)
    except ValueError:
        raise InvalidModelFileError(f"{path}: safetensors header is not valid JSON") from None
    header.pop("__metadata__", None)
    return header


def load_hf_dir(path: Path) -> ModelSpec:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise InvalidModelFileError(f"{path} has no config.json")
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise InvalidModelFileError(f"{cfg_path}: not valid JSON ({exc})") from None
    files = sorted(path.glob("*.safetensors"))
    if not files and list(path.glob("*.bin")):
        raise InvalidModelFileError(f"{path} holds only pickle .bin weights; gemma-plan reads safetensors only (convert them first)")
    header: dict = {}
    for f in files:
        header.update(read_safetensors_header(f))
    dtypes = {v["dtype"] for k, v in header.items() if not k.startswith(TOWER_PREFIXES)}
    src = "BF16" if not dtypes or "BF16" in dtypes else ("F16" if "F16" in dtypes else "F32")
    spec = spec_from_config(_with_defaults(cfg), name=path.name, source=f"hf-dir:{path}", src_dtype=src)
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
        gname = tmap.get_name(short, try_suffixes=(".weight", ".bias"))
        if gname is None:
            return None
        full = gname + (".weight" if short.endswith(".weight") else ".bias" if short.endswith(".bias") else "")
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
    except (GGUFHeaderError, ValueError, OSError) as exc:  # ValueError: unknown value or tensor type ids
        raise InvalidModelFileError(f"{path}: not a readable GGUF file ({str(exc).splitlines()[0] if str(exc) else 'truncated'})") from None

    def field(key, default=None):
        return header.fields.get(key, default)

    arch = field("general.architecture")
    if arch not in ("gemma2", "gemma3", "gemma3n", "gemma4"):
        raise UnsupportedArchitectureError(f"{path.name}: GGUF architecture '{arch}' is not a supported Gemma")
    k = lambda name, default=None: field(f"{arch}.{name}", default)  # noqa: E731
    n_layers = int(k("block_count"))
    cfg = {
        "model_type": arch,
        "hidden_size": k("embedding_length"),
        "num_hidden_layers": n_layers,
        "intermediate_size": k("feed_forward_length"),
        "num_attention_heads": _first(k("attention.head_count")),
        "max_position_embeddings": k("context_length", 8192),
        "sliding_window": k("attention.sliding_window", 4096),
        "num_kv_shared_layers": k("attention.shared_kv_layers", 0),
        "hidden_size_per_layer_input": k("embedding_length_per_layer_input", 0),
    }
    kv = k("attention.head_count_kv")
    pattern = k("attention.sliding_window_pattern")
    if isinstance(pattern, list):
        cfg["layer_types"] = "".join("S" if b else "F" for b in pattern)
    elif isinstance(pattern, int) and pattern > 0:
        cfg["sliding_window_pattern"] = pattern
    key_len, key_swa = k("attention.key_length"), k("attention.key_length_swa")
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
    if k("expert_count"):
        cfg["num_experts"] = k("expert_count")
        cfg["top_k_experts"] = k("expert_used_count")
        cfg["moe_intermediate_size"] = k("expert_feed_forward_length")
    emb = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if emb is None:
        raise InvalidModelFileError(f"{path.name}: no token_embd.weight tensor")
    cfg["vocab_size"] = int(emb.shape[0])
    if cfg["intermediate_size"] is None:
        raise InvalidModelFileError(f"{path.name}: missing {arch}.feed_forward_length")
    spec = spec_from_config(cfg, name=path.stem, source=f"gguf:{path}")
    layer_of = {t.name: t.layer for t in spec.tensors}
    spec.tensors = [TensorSpec(t.name, t.shape, layer_of.get(t.name, _layer_from_name(t.name)), t.type_name, t.n_bytes)
                    for t in header.tensors]
    spec.gguf_file_bytes = path.stat().st_size
    ftype = field("general.file_type")
    spec.gguf_file_type = _FILE_TYPES.get(ftype, "GGUF") if ftype is not None else "GGUF"
    return spec


def _layer_from_name(name: str) -> Optional[int]:
    if name.startswith("blk."):
        try:
            return int(name.split(".")[1])
        except ValueError:
            return None
    return None


def _first(v):
    return v[0] if isinstance(v, list) else v


_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               21: "Q2_K_S", 25: "IQ4_NL", 30: "IQ4_XS", 32: "BF16"}

__all__ = ["load_model", "load_hf_dir", "load_gguf", "read_safetensors_header", "SUPPORTED_MODEL_TYPES", "InvalidModelFileError"]
