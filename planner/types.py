"""The planner's domain types. Bytes are ``int``; every type has a stable JSON form (``to_dict``).

The JSON forms are documented in ``docs/json.md``; keys are a contract: extend, never rename.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Optional

# The llama.cpp this memory model mirrors: the copy vendored in llama-cpp-python 0.3.36.
LLAMA_CPP_VERSION = "llama.cpp b11312 (0c1e57098, as vendored in llama-cpp-python 0.3.36)"
VLLM_VERSION = "vLLM 0.33"
TRANSFORMERS_VERSION = "transformers 5.x"


@dataclass(frozen=True)
class TensorSpec:
    """One weight tensor. ``shape`` is numpy order (outermost first); ``shape[-1]`` is the row (ggml ne0)."""

    name: str  # GGUF name, e.g. "blk.3.attn_v.weight"
    shape: tuple[int, ...]
    layer: Optional[int] = None  # block index, None for global tensors
    dtype: str = "BF16"  # source dtype, or the GGUF type for a GGUF file
    nbytes: Optional[int] = None  # exact bytes when read from a file (GGUF)

    @cached_property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def row(self) -> int:
        return self.shape[-1]


@dataclass(frozen=True)
class LayerSpec:
    """Per-layer attention facts (what the KV cache needs)."""

    index: int
    sliding: bool
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    kv_shared_from: Optional[int] = None  # layer whose KV this layer reuses (stores nothing itself)
    n_ff: int = 0

    @property
    def has_kv(self) -> bool:
        return self.kv_shared_from is None


@dataclass(frozen=True)
class MoESpec:
    """Mixture-of-experts shape: experts per layer, how many run per token, their MLP width."""

    n_expert: int
    n_expert_used: int
    expert_ff: int
    shared_ff: int = 0  # dense MLP that runs beside the experts


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """What planning needs of a model; built by planner/arch.py. Frozen: specs are shared (the catalog's are
    cached) and derived tables are cached per spec object, so a changed copy is made with dataclasses.replace.
    Identity, not value, is equality: caches key on the object itself."""

    name: str  # canonical catalog name, e.g. "gemma-4-31b"
    family: str  # gemma2, gemma3, gemma3n, gemma4
    arch: str  # GGUF architecture: gemma2, gemma3, gemma3n, gemma4
    hidden: int
    vocab: int
    n_layers: int
    layers: tuple[LayerSpec, ...]
    sliding_window: int
    ctx_train: int
    tensors: tuple[TensorSpec, ...]
    tied_embeddings: bool = True
    moe: Optional[MoESpec] = None
    ple_dim: int = 0  # per-layer embedding width (Gemma 3n / 4 E-models)
    vision_params: int = 0  # vision tower + projector (separate mmproj file in llama.cpp)
    audio_params: int = 0
    params_total: Optional[int] = None  # published count incl. towers, when known
    hf_repo: str = ""
    display: str = ""
    source: str = ""  # catalog, hf-dir:PATH, gguf:PATH
    sources: tuple[str, ...] = ()
    notes: str = ""
    gguf_file_bytes: Optional[int] = None  # GGUF sources: the file's size
    gguf_file_type: Optional[str] = None  # GGUF sources: the file's quant mix

    def __post_init__(self):
        # lists given by callers become tuples: nothing reachable from a spec can change
        for f in ("layers", "tensors", "sources"):
            v = getattr(self, f)
            if not isinstance(v, tuple):
                object.__setattr__(self, f, tuple(v))

    @cached_property
    def n_params_text(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @cached_property
    def kv_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(lay for lay in self.layers if lay.has_kv)


@dataclass(frozen=True)
class WeightFormat:
    """A weight format, parsed once (planner.formats.parse_format) and carried as this type."""

    name: str  # canonical: "Q4_K_M", "bf16", "gptq-int4"
    kind: str  # "gguf", "dense", "gptq"
    bits: float  # nominal bits of the main tensors (for display)
    group_size: int = 0  # GPTQ

    @property
    def engines(self) -> tuple[str, ...]:
        if self.kind == "gguf":
            return ("llama.cpp",)
        if self.kind == "gptq":
            return ("vllm", "transformers")
        if self.name == "fp8":
            return ("vllm",)
        return ("vllm", "transformers")

    def to_dict(self) -> dict:
        return asdict(self)


class Placement(str, Enum):
    """Where a plan's weights live."""

    GPU = "gpu"  # every layer on accelerators (or unified memory)
    PARTIAL = "partial"  # some repeating layers (or the output layer) on the CPU
    EXPERTS_ON_CPU = "experts-on-cpu"  # layers on the GPU, MoE expert tensors on the CPU (-ot exps=CPU)
    CPU = "cpu"  # no accelerator holds weights


@dataclass(frozen=True)
class RuntimeSettings:
    """Engine settings a plan fixes. Defaults follow the llama.cpp CLI, not llama-cpp-python's."""

    engine: str = "llama.cpp"
    n_ctx: int = 4096  # total context requested (all slots)
    n_parallel: int = 1  # sequences / slots
    n_batch: int = 2048
    n_ubatch: int = 512
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = True
    swa_full: bool = False
    kv_unified: bool = False
    n_gpu_layers: int = -1  # -1 = all (incl. output layer)
    tensor_split: Optional[list[float]] = None
    offload_kqv: bool = True
    experts_on_cpu: bool = False  # MoE expert tensors kept on CPU (-ot / --cpu-moe)
    use_mmap: bool = True
    # graph outputs reserved for (llama_context_params.n_outputs_max): 0 = n_batch, the C default that
    # llama-cpp-python keeps; llama-server reserves n_parallel (server_output_limits, b11312)
    n_outputs_max: int = 0
    engine_version: str = ""  # llama.cpp release tag the plan models (planner/llama_versions.py); "" = default
    # vLLM
    gpu_memory_utilization: float = 0.92
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enforce_eager: bool = False
    kv_cache_dtype: str = "auto"
    # multimodal: load the vision projector (llama.cpp family: the mmproj file; None = the engine's default)
    vision: Optional[bool] = None
    # multimodal: also load the audio encoder (Gemma 4 E2B/E4B: in the same mmproj; None = with the projector)
    audio: Optional[bool] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RuntimeSettings":
        return cls(**_known(cls, d))


def _known(cls, d: dict) -> dict:
    """The keys of ``d`` that are fields of ``cls``: JSON written by a newer version still loads."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass
class DeviceMemory:
    """What one device holds, in bytes."""

    device: str
    weights_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    output_bytes: int = 0
    overhead_bytes: int = 0
    projector_bytes: int = 0  # vision projector (mmproj) weights + its encoder's compute buffer, when loaded here
    budget_bytes: Optional[int] = None  # what the plan may use on this device (after margin)
    capacity_bytes: Optional[int] = None  # the device's memory before margin
    layers: int = 0  # repeating layers placed here (llama.cpp)
    detail: dict = field(default_factory=dict)  # named parts: repack copy, tied duplicate, caches ...

    @property
    def total_bytes(self) -> int:
        return (self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes + self.overhead_bytes
                + self.projector_bytes)

    @property
    def fits(self) -> bool:
        return self.budget_bytes is None or self.total_bytes <= self.budget_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_bytes"] = self.total_bytes
        d["fits"] = self.fits
        return d


@dataclass
class MemoryBreakdown:
    """One engine's memory for a plan: per device, then the KV cell counts and the notes behind them."""

    engine: str
    engine_version: str
    devices: list[DeviceMemory]
    kv_cells: dict = field(default_factory=dict)  # {"full": cells, "swa": cells, "streams": n}
    notes: list[str] = field(default_factory=list)

    def _sum(self, attr: str) -> int:
        return sum(getattr(d, attr) for d in self.devices)

    @property
    def weights_bytes(self) -> int:
        return self._sum("weights_bytes")

    @property
    def kv_bytes(self) -> int:
        return self._sum("kv_bytes")

    @property
    def compute_bytes(self) -> int:
        return self._sum("compute_bytes")

    @property
    def output_bytes(self) -> int:
        return self._sum("output_bytes")

    @property
    def overhead_bytes(self) -> int:
        return self._sum("overhead_bytes")

    @property
    def total_bytes(self) -> int:
        return self._sum("total_bytes")

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices)

    @classmethod
    def from_dict(cls, m: dict, engine: str = "", engine_version: str = "") -> "MemoryBreakdown":
        devices = [DeviceMemory(**_known(DeviceMemory, dev)) for dev in m.get("devices", [])]
        return cls(m.get("engine", engine), m.get("engine_version", engine_version), devices, dict(m.get("kv_cells", {})),
                   list(m.get("notes", [])))

    def device(self, name: str) -> DeviceMemory:
        for d in self.devices:
            if d.device == name:
                return d
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "engine": self.engine,
            "engine_version": self.engine_version,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "output_bytes": self.output_bytes,
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
            "fits": self.fits,
            "kv_cells": self.kv_cells,
            "devices": [d.to_dict() for d in self.devices],
            "notes": list(self.notes),
        }


@dataclass
class SpeedEstimate:
    """Decode and prefill rates for a plan, with their expected ranges and the basis they rest on."""

    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    time_to_first_token_s: float  # for a prompt of ``prompt_tokens``
    prompt_tokens: int
    bytes_per_token: int  # bytes read per decoded token
    bound: str  # "bandwidth" / "compute" and where (gpu / cpu split)
    efficiency: float
    basis: str  # how it was calibrated
    expected_error: str
    # added with the two-limit model (docs/json.md): ranges from the held-out error table, decode at the
    # plan's full context, what bound decode, which basis ("published" constants or this machine "measured")
    decode_range_tokens_per_s: list = field(default_factory=list)  # [low, high]
    prefill_range_tokens_per_s: list = field(default_factory=list)
    decode_depth_tokens: int = 0  # the depth decode_tokens_per_s is quoted at
    decode_at_context_tokens_per_s: float = 0.0  # with the KV cache full: context_tokens deep
    context_tokens: int = 0  # per slot
    decode_bound: str = ""  # memory, arithmetic, measured or cap
    basis_kind: str = ""  # published or measured
    speed_class: str = ""  # the efficiency class of speed.json decode used (the device reading the most bytes)
    prefill_class: str = ""  # the class of the device(s) running the prompt's matmuls
    capped_by: list = field(default_factory=list)  # why a rate was lowered to a published best

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """One configuration and what it needs. Frozen: changed copies come from ``noted`` / ``dataclasses.replace``.
    JSON: ``to_dict`` / ``from_dict`` (docs/json.md), the one place a plan is written and read back."""

    model: str
    fmt: WeightFormat
    engine: str
    target: str
    settings: RuntimeSettings
    memory: MemoryBreakdown
    speed: Optional[SpeedEstimate]
    weight_file_bytes: int = 0  # size of the artifact on disk (approx. for GGUF: tensors + metadata)
    quality_loss: float = 0.0  # published perplexity increase (%) vs 16-bit, lower is better
    notes: tuple[str, ...] = ()
    utility: Optional[dict] = None  # recommend: the utility's terms for this plan (planner/utility.py)
    artifact: Optional[dict] = None  # recommend: the published file this plan loads (planner/artifacts.py, docs/json.md)

    def __post_init__(self):
        if not isinstance(self.notes, tuple):
            object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def weight_format(self) -> str:
        """The format's name ("Q4_K_M", "bf16", "gptq-int4"), as JSON and every display write it."""
        return self.fmt.name

    @property
    def ctx(self) -> int:
        return self.settings.n_ctx

    @property
    def fits(self) -> bool:
        return self.memory.fits

    @property
    def placement(self) -> Placement:
        """Where the weights live, read from the memory plan (llama.cpp counts the layers each device holds)."""
        gpu = [d for d in self.memory.devices if d.device != "CPU"]
        if not gpu or not any(d.weights_bytes for d in gpu):
            return Placement.CPU
        if self.settings.experts_on_cpu:
            return Placement.EXPERTS_ON_CPU
        n_layers = sum(d.layers for d in self.memory.devices)  # llama.cpp: repeating layers per device
        ngl = self.settings.n_gpu_layers
        if self.settings.engine == "llama.cpp" and 0 <= ngl < n_layers + 1:
            return Placement.PARTIAL  # -ngl below n_layer + 1 leaves layers (or the output layer) on the CPU
        return Placement.GPU

    def noted(self, *lines: str, first: bool = False) -> "Plan":
        """A copy with notes added (at the front with ``first``)."""
        notes = (*lines, *self.notes) if first else (*self.notes, *lines)
        return dataclasses.replace(self, notes=notes)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "weight_format": self.weight_format,
            "format": self.fmt.to_dict(),
            "engine": self.engine,
            "engine_version": self.memory.engine_version,
            "target": self.target,
            "ctx": self.ctx,
            "parallel": self.settings.n_parallel,
            "kv_type": {"k": self.settings.type_k, "v": self.settings.type_v},
            "fits": self.fits,
            "placement": self.placement.value,
            "weight_file_bytes": self.weight_file_bytes,
            "quality_loss": self.quality_loss,
            "settings": self.settings.to_dict(),
            "memory": self.memory.to_dict(),
            "speed": self.speed.to_dict() if self.speed else None,
            "notes": list(self.notes),
            "utility": self.utility,
            "artifact": self.artifact,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        """Inverse of ``to_dict``. A plan written before "format" existed has its format parsed from the name."""
        from planner.formats import parse_format

        # the name is parsed (kind and bits are never taken from the file); GPTQ keeps its stored group size
        fmt = parse_format(d["weight_format"], d.get("engine") if d.get("engine") in ("llama.cpp", "vllm", "transformers") else None)
        f = d.get("format")
        if fmt.kind == "gptq" and isinstance(f, dict) and isinstance(f.get("group_size"), int) and not isinstance(f["group_size"], bool):
            fmt = dataclasses.replace(fmt, group_size=f["group_size"])
        sp = d.get("speed")
        speed = SpeedEstimate(**_known(SpeedEstimate, sp)) if isinstance(sp, dict) and set(_fields(SpeedEstimate)) <= set(sp) else None
        return cls(d["model"], fmt, d["engine"], d.get("target", ""), RuntimeSettings.from_dict(d.get("settings", {})),
                   MemoryBreakdown.from_dict(d.get("memory", {}), d.get("engine", ""), d.get("engine_version", "")), speed,
                   int(d.get("weight_file_bytes", 0)), float(d.get("quality_loss", 0.0)), tuple(d.get("notes", [])),
                   d.get("utility"), d.get("artifact"))


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@dataclass
class Alternative:
    """A plan that was not chosen, and why."""

    plan: Plan
    reason: str  # why it lost, e.g. "does not fit: needs 26.1 GiB, 23.5 GiB free"

    def to_dict(self) -> dict:
        p = self.plan
        return {
            "model": p.model,
            "weight_format": p.weight_format,
            "engine": p.engine,
            "ctx": p.ctx,
            "parallel": p.settings.n_parallel,
            "kv_type": {"k": p.settings.type_k, "v": p.settings.type_v},
            "fits": p.fits,
            "total_bytes": p.memory.total_bytes,
            "decode_tokens_per_s": p.speed.decode_tokens_per_s if p.speed else None,
            "quality_loss": p.quality_loss,
            "reason": self.reason,
            "utility": p.utility,
        }
