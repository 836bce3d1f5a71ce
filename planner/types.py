"""The planner's domain types. Bytes are ``int``; every type has a stable JSON form (``to_dict``).

The JSON forms are documented in ``docs/json.md``; keys are a contract: extend, never rename.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Optional

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


@dataclass
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
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    time_to_first_token_s: float  # for a prompt of ``prompt_tokens``
    prompt_tokens: int
    bytes_per_token: int  # bytes read per decoded token
    bound: str  # "bandwidth" / "compute" and where (gpu / cpu split)
    efficiency: float
    basis: str  # how it was calibrated
    expected_error: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    model: str
    weight_format: str  # "Q4_K_M", "bf16", "gptq-int4" ...
    engine: str
    target: str
    settings: RuntimeSettings
    memory: MemoryBreakdown
    speed: Optional[SpeedEstimate]
    weight_file_bytes: int = 0  # size of the artifact on disk (approx. for GGUF: tensors + metadata)
    quality_loss: float = 0.0  # published perplexity increase (%) vs 16-bit, lower is better
    notes: list[str] = field(default_factory=list)
    utility: Optional[dict] = None  # recommend: the utility's terms for this plan (planner/utility.py)
    artifact: Optional[dict] = None  # recommend: the published file this plan loads (planner/artifacts.py, docs/json.md)

    @property
    def ctx(self) -> int:
        return self.settings.n_ctx

    @property
    def fits(self) -> bool:
        return self.memory.fits

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "weight_format": self.weight_format,
            "engine": self.engine,
            "engine_version": self.memory.engine_version,
            "target": self.target,
            "ctx": self.ctx,
            "parallel": self.settings.n_parallel,
            "kv_type": {"k": self.settings.type_k, "v": self.settings.type_v},
            "fits": self.fits,
            "weight_file_bytes": self.weight_file_bytes,
            "quality_loss": self.quality_loss,
            "settings": self.settings.to_dict(),
            "memory": self.memory.to_dict(),
            "speed": self.speed.to_dict() if self.speed else None,
            "notes": list(self.notes),
            "utility": self.utility,
            "artifact": self.artifact,
        }


@dataclass
class Alternative:
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
