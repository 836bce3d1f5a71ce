"""llama.cpp through llama-cpp-python (pinned 0.3.36): quantize a GGUF, then load it and measure.

`quantize_gguf` calls `llama_cpp.llama_model_quantize` with the file-type id read from the binding
(`llama_cpp.LLAMA_FTYPE_MOSTLY_*`), writing to a temporary name that is renamed on success.

`load_and_measure` loads a GGUF through the low-level C API with every model and context setting
passed explicitly (llama-cpp-python's `Llama` defaults differ from the CLI's, and it cannot set
n_seq_max or kv_unified), captures llama.cpp's own log through `llama_log_set`, generates a few
greedy tokens, and returns what llama.cpp allocated. No C API returns the per-buffer breakdown in
this version, so the numbers come from the log lines, parsed by the pure `parse_llama_log`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .errors import BackendUnavailableError, OutputExistsError, QuantizationError

MIB = 2**20

# ---------------------------------------------------------------------------------------------
# log parsing (pure)

# Ollama's buffer regex (llm/llama_server.go bufferSizeRegex): function, buffer name, kind, MiB.
BUFFER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):\s+(\S+)\s+(model|KV|compute|output|RS)\s+buffer size\s*=\s*([\d.]+)\s*MiB")
# llama_kv_cache_iswa: creating non-SWA KV cache, size = 4096 cells   (llama-kv-cache-iswa.cpp)
ISWA_RE = re.compile(r"llama_kv_cache_iswa:\s+creating\s+(non-SWA|SWA)\s+KV cache, size = (\d+) cells")
# llama_kv_cache: size = 16.00 MiB (4096 cells, 4 layers, 1/1 seqs), K (f16): 8.00 MiB, V (f16): 8.00 MiB
# where "cells" is per stream and "a/b seqs" is n_seq_max/n_stream (llama-kv-cache.cpp constructor)
KV_SIZE_RE = re.compile(
    r"(\w+):\s+size\s*=\s*([\d.]+)\s*MiB\s*\(\s*(\d+)\s+cells,\s*(\d+)\s+layers,\s*(\d+)\s*/\s*(\d+)\s+seqs\),"
    r"\s*K\s*\((\w+)\):\s*([\d.]+)\s*MiB,\s*V\s*\((\w+)\):\s*([\d.]+)\s*MiB")
# llama_context: n_ctx = 4096  /  n_ctx_seq = 4096  /  flash_attn = enabled  (llama-context.cpp)
CTX_RE = re.compile(r"llama_context:\s+(n_ctx|n_ctx_seq|n_batch|n_ubatch|flash_attn|kv_unified|n_seq_max|causal_attn)\s*=\s*(\S+)")
OUTPUT_REALLOC_RE = re.compile(r"reallocating output buffer from size\s+([\d.]+)\s*MiB to\s+([\d.]+)\s*MiB")
NO_KV_RE = re.compile(r"layer\s+(\d+):\s+does not have KV cache")
# ~llama_context:        CPU compute buffer size is   2.1895 MiB, matches expectation of   2.1895 MiB
# (DEBUG, printed when the context is freed; 4 decimals, so +-52 B instead of the reserve line's +-5 KiB)
COMPUTE_END_RE = re.compile(r"~llama_context:\s+(\S+)\s+compute buffer size (?:is|of)\s+([\d.]+)\s*MiB")
FILE_SIZE_RE = re.compile(r"print_info: file size\s*=\s*([\d.]+)\s*(\w+)\s*\(([\d.]+) BPW\)")


def mib_to_bytes(mib: float) -> int:
    """llama.cpp prints MiB with 2 decimals: this is the printed value in bytes, +-5243 B."""
    return int(round(mib * MIB))


@dataclass(frozen=True)
class BufferLine:
    """One `<function>: <buffer> <kind> buffer size = X MiB` line."""

    function: str  # load_tensors, llama_kv_cache, sched_reserve, llama_context...
    buffer: str  # CPU, CPU_Mapped, CPU_REPACK, CUDA0, CUDA_Host, MTL0...
    kind: str  # model | KV | compute | output | RS
    mib: float

    @property
    def bytes(self) -> int:
        return mib_to_bytes(self.mib)


@dataclass
class KVCache:
    """One KV cache as logged; an iSWA model has two ("non-SWA" then "SWA"), others one ("")."""

    name: str
    cells: int
    layers: int
    n_seq_max: int
    n_stream: int  # cells are per stream: the cache holds cells x n_stream
    mib: float
    k_type: str
    k_mib: float
    v_type: str
    v_mib: float
    buffers: dict[str, int] = field(default_factory=dict)  # buffer -> bytes (from MiB)
    exact_bytes: int | None = None  # cells x sum over its layers of K+V row bytes, when derivable

    @property
    def bytes(self) -> int:
        return self.exact_bytes if self.exact_bytes is not None else mib_to_bytes(self.mib)


@dataclass
class ParsedLog:
    entries: list[BufferLine]
    kv_caches: list[KVCache]
    context: dict[str, str]  # llama_context: key = value
    layers_without_kv: list[int]
    output_realloc_mib: float | None  # last "reallocating output buffer ... to X MiB"
    file_size: str | None
    compute_at_free: dict[str, int] = field(default_factory=dict)  # buffer -> bytes, 4-decimal MiB

    def by_kind(self, kind: str) -> dict[str, int]:
        """buffer -> bytes. model/KV/RS buffers are summed over lines (split files, two iSWA caches);
        compute/output take the last line per buffer (a later reserve replaces an earlier one)."""
        out: dict[str, int] = {}
        for e in self.entries:
            if e.kind != kind:
                continue
            if kind in ("compute", "output"):
                out[e.buffer] = e.bytes
            else:
                out[e.buffer] = out.get(e.buffer, 0) + e.bytes
        return out


def parse_llama_log(text: str) -> ParsedLog:
    """Parse captured llama.cpp log text (llama-cpp-python 0.3.36 / llama.cpp 0c1e57098 formats,
    plus the older `llama_context:` compute prefix)."""
    entries: list[BufferLine] = []
    caches: list[KVCache] = []
    context: dict[str, str] = {}
    no_kv: list[int] = []
    pending_name: str | None = None
    pending_buffers: dict[str, int] = {}
    realloc = None
    file_size = None
    compute_end: dict[str, int] = {}
    for line in text.splitlines():
        m = COMPUTE_END_RE.search(line)
        if m:
            compute_end[m.group(1)] = mib_to_bytes(float(m.group(2)))
            continue
        m = ISWA_RE.search(line)
        if m:
            pending_name, pending_buffers = m.group(1), {}
            continue
        m = BUFFER_RE.search(line)
        if m:
            e = BufferLine(m.group(1), m.group(2), m.group(3), float(m.group(4)))
            entries.append(e)
            if e.kind == "KV":
                pending_buffers[e.buffer] = pending_buffers.get(e.buffer, 0) + e.bytes
            continue
        m = KV_SIZE_RE.search(line)
        if m:
            caches.append(KVCache(
                name=pending_name or "", cells=int(m.group(3)), layers=int(m.group(4)),
                n_seq_max=int(m.group(5)), n_stream=int(m.group(6)), mib=float(m.group(2)),
                k_type=m.group(7), k_mib=float(m.group(8)), v_type=m.group(9), v_mib=float(m.group(10)),
                buffers=dict(pending_buffers)))
            pending_name, pending_buffers = None, {}
            continue
        m = CTX_RE.search(line)
        if m:
            context[m.group(1)] = m.group(2)
            continue
        m = NO_KV_RE.search(line)
        if m:
            no_kv.append(int(m.group(1)))
            continue
        m = OUTPUT_REALLOC_RE.search(line)
        if m:
            realloc = float(m.group(2))
            continue
        m = FILE_SIZE_RE.search(line)
        if m:
            file_size = f"{m.group(1)} {m.group(2)} ({m.group(3)} BPW)"
    return ParsedLog(entries, caches, context, sorted(set(no_kv)), realloc, file_size, compute_end)


# ---------------------------------------------------------------------------------------------
# exact KV bytes from the GGUF header


@dataclass(frozen=True)
class KVLayout:
    """Per-layer K/V widths (elements per cell) and which cache each layer's KV lives in."""

    k_width: tuple[int, ...]
    v_width: tuple[int, ...]
    is_swa: tuple[bool, ...]
    has_kv: tuple[bool, ...]

    @classmethod
    def from_spec(cls, spec: Any) -> "KVLayout":
        """From a planner ModelSpec's per-layer facts (planner/arch.py)."""
        return cls(k_width=tuple(lay.n_head_kv * lay.head_dim_k for lay in spec.layers),
                   v_width=tuple(lay.n_head_kv * lay.head_dim_v for lay in spec.layers),
                   is_swa=tuple(lay.sliding for lay in spec.layers), has_kv=tuple(lay.has_kv for lay in spec.layers))


def kv_layout_from_gguf(path: str | Path) -> KVLayout | None:
    """Widths read from the GGUF metadata by the planner's reader (planner.arch.spec_from_gguf, the same
    rules the plan used); None for an architecture it does not know."""
    from planner.arch import spec_from_gguf
    from planner.errors import PlanError
    from planner.gguf_header import read_header  # GGUFReader decodes the whole vocabulary: seconds per load
    from profiles.errors import ProfileError

    header = read_header(path)
    try:
        spec = spec_from_gguf(header.fields, header.tensors, name=Path(path).stem, source=f"gguf:{path}", origin=str(path))
    except (PlanError, ProfileError):  # not a Gemma, or metadata out of bounds
        return None
    return KVLayout.from_spec(spec)


def _row_bytes(type_name: str, n: int) -> int:
    from planner.ggml import quant_size

    block, size = quant_size(type_name)
    return n // block * size


def exact_kv_bytes(cache: KVCache, layout: KVLayout, v_trans: bool) -> int | None:
    """cells x sum of (K row + V row) bytes over the cache's layers (llama_kv_cache constructor).
    Without flash attention V is stored transposed and padded to the widest V of the model.
    Returns None unless the result agrees with the printed MiB and layer count."""
    if cache.name == "SWA":
        layers = [i for i, (s, h) in enumerate(zip(layout.is_swa, layout.has_kv)) if s and h]
    elif cache.name == "non-SWA":
        layers = [i for i, (s, h) in enumerate(zip(layout.is_swa, layout.has_kv)) if not s and h]
    else:
        layers = [i for i, h in enumerate(layout.has_kv) if h]
    if len(layers) != cache.layers:
        return None
    v_max = max(layout.v_width)  # hparams.n_embd_v_gqa_max(): every layer's V row when V is transposed
    try:
        k = sum(_row_bytes(cache.k_type, layout.k_width[i]) for i in layers)
        v = sum(_row_bytes(cache.v_type, v_max if v_trans else layout.v_width[i]) for i in layers)
    except KeyError:  # a type planner.ggml does not list (UnknownGGMLTypeError is a KeyError)
        return None
    total = cache.cells * cache.n_stream * (k + v)
    if abs(total / MIB - cache.mib) > 0.006:
        return None
    return total


# ---------------------------------------------------------------------------------------------
# llama-cpp-python access


def llama_cpp_module():
    try:
        import llama_cpp
    except ImportError as e:
        raise BackendUnavailableError(f"llama-cpp-python is not installed: {e}") from e
    return llama_cpp


def ftype_ids() -> dict[str, int]:
    """File-type name (as llama-quantize spells it: Q4_K_M, Q8_0, F16...) -> llama_ftype id, read from the binding."""
    lc = llama_cpp_module()
    out: dict[str, int] = {}
    for attr in dir(lc):
        if attr.startswith("LLAMA_FTYPE_MOSTLY_"):
            out[attr[len("LLAMA_FTYPE_MOSTLY_"):]] = int(getattr(lc, attr))
        elif attr == "LLAMA_FTYPE_ALL_F32":
            out["F32"] = int(getattr(lc, attr))
    return out


def ggml_type_id(t: str | int) -> int:
    """"f16", "q8_0"... or an int -> ggml_type id (from the binding's GGML_TYPE_* constants)."""
    if isinstance(t, int):
        return t
    lc = llama_cpp_module()
    val = getattr(lc, f"GGML_TYPE_{t.upper()}", None)
    if val is None:
        raise ValueError(f"unknown ggml type {t!r}")
    return int(val)


def load_imatrix(path: str | Path) -> dict[str, np.ndarray]:
    """Importance matrix file -> tensor name -> per-column weights, as llama-quantize normalises them
    (tools/quantize/quantize.cpp load_imatrix): GGUF format sums / per-expert counts; legacy .dat sums / ncall."""
    import gguf

    path = Path(path)
    try:
        r = gguf.GGUFReader(path)
    except Exception:
        return _load_imatrix_legacy(path)
    if not all(k in r.fields for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")):
        raise QuantizationError(f"{path} lacks the imatrix.* metadata llama-quantize requires")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in r.tensors:
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
    out: dict[str, np.ndarray] = {}
    for name, s in sums.items():
        if name not in counts:
            raise QuantizationError(f"{path}: {name} has sums but no counts")
        c = np.rint(counts[name])
        per = s.reshape(len(c), -1)
        out[name] = np.where(c[:, None] > 0, per / np.maximum(c[:, None], 1), 1.0).astype(np.float32).reshape(-1)
    return out


def _load_imatrix_legacy(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    off = 0

    def i32() -> int:
        nonlocal off
        v = int(np.frombuffer(data, np.int32, 1, off)[0])
        off += 4
        return v

    out: dict[str, np.ndarray] = {}
    try:
        n = i32()
        if n < 1:
            raise ValueError("no entries")
        for _ in range(n):
            ln = i32()
            name = data[off:off + ln].decode("utf-8")
            off += ln
            ncall, nval = i32(), i32()
            vals = np.frombuffer(data, np.float32, nval, off).copy()
            off += 4 * nval
            out[name] = vals / ncall if ncall > 0 else vals
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise QuantizationError(f"{path} is neither a GGUF nor a legacy imatrix file: {e}") from e
    return out


def quantize_gguf(
    in_path: str | Path,
    out_path: str | Path,
    ftype: str,
    nthreads: int | None = None,
    imatrix: str | Path | Mapping[str, np.ndarray] | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Quantize a GGUF with llama.cpp's own quantizer (llama_model_quantize); returns out_path.

    ftype: a llama-quantize name ("Q4_K_M", "Q8_0", "IQ4_XS", "F16"...); see ftype_ids().
    nthreads: None or 0 lets llama.cpp use every hardware thread.
    imatrix: an importance-matrix file (GGUF or legacy .dat) or a name -> array mapping.
    progress: called with the bytes written so far, about every 0.2 s.
    The output is written to a temporary name in the same directory and renamed; on failure or
    KeyboardInterrupt the temporary file is removed and nothing exists at out_path.
    """
    lc = llama_cpp_module()
    in_path, out_path = Path(in_path), Path(out_path)
    ids = ftype_ids()
    key = ftype.upper()
    if key not in ids:
        raise QuantizationError(f"unknown file type {ftype!r}; llama.cpp knows {', '.join(sorted(ids))}")
    if not in_path.is_file():
        raise QuantizationError(f"{in_path} does not exist")
    if out_path.exists() and not force:
        raise OutputExistsError(f"{out_path} already exists")
    if not out_path.parent.is_dir() or not os.access(out_path.parent, os.W_OK):
        raise QuantizationError(f"cannot write to {out_path.parent}")

    params = lc.llama_model_quantize_default_params()
    params.ftype = ids[key]
    params.nthread = int(nthreads or 0)
    keep: list[Any] = []  # ctypes buffers must outlive the call
    if imatrix is not None:
        data = load_imatrix(imatrix) if isinstance(imatrix, (str, Path)) else dict(imatrix)
        arr = (lc.llama_model_imatrix_data * (len(data) + 1))()
        for i, (name, vals) in enumerate(data.items()):
            v = np.ascontiguousarray(vals, dtype=np.float32)
            nb = name.encode("utf-8")
            keep += [v, nb]
            arr[i].name = nb
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = v.size
        arr[len(data)].name = None  # NULL-terminated
        keep.append(arr)
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(lc.llama_model_imatrix_data))

    from planner.outputs import place, temp_name

    tmp = temp_name(out_path.parent, out_path.name, ".partial")  # unique, created O_EXCL: never a planted link
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["rc"] = lc.llama_model_quantize(str(in_path).encode(), str(tmp).encode(), ctypes.byref(params))
        except BaseException as e:  # surfaced in the caller's thread
            result["error"] = e

    # The C call cannot be interrupted; running it in a daemon thread keeps Ctrl-C responsive here.
    worker = threading.Thread(target=work, name="llama_model_quantize", daemon=True)
    try:
        with captured_llama_log() as chunks:
            worker.start()
            while worker.is_alive():
                worker.join(0.2)
                if progress and tmp.exists():
                    progress(tmp.stat().st_size)
        if "error" in result:
            raise QuantizationError(f"llama_model_quantize failed: {result['error']}")
        if result.get("rc") != 0 or not tmp.is_file():
            raise QuantizationError(f"llama_model_quantize returned {result.get('rc')} for {in_path.name} -> {key}: "
                                    + _tail(chunks))
        place(tmp, out_path, overwrite=force)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        del keep
    return out_path


@dataclass
class Measured:
    """What llama.cpp allocated and produced for one load; bytes are ints."""

    gguf_path: str
    library: str  # "llama-cpp-python 0.3.36"
    settings: dict[str, Any]  # every setting passed, as passed
    n_ctx: int  # llama_n_ctx: the context actually created (padded to 256)
    n_ctx_seq: int
    model_size: int  # llama_model_size: sum of tensor bytes
    n_params: int
    model_buffers: dict[str, int]  # buffer name (CPU_Mapped, CPU_REPACK, CUDA0...) -> bytes
    kv_buffers: dict[str, int]
    compute_buffers: dict[str, int]  # from the reserve line (2-decimal MiB)
    compute_buffers_at_free: dict[str, int]  # same buffers reported again at free (4-decimal MiB)
    output_buffers: dict[str, int]
    rs_buffers: dict[str, int]
    kv_caches: list[KVCache]
    layers_without_kv: list[int]
    output_realloc_bytes: int | None
    prompt_tokens: list[int]
    generated_tokens: list[int]
    generated_text: str
    seconds: float
    log: str = field(repr=False, default="")

    @property
    def kv_bytes(self) -> int:
        """Sum over caches, exact where derivable from the GGUF, else from the printed MiB."""
        return sum(c.bytes for c in self.kv_caches)

    def to_dict(self, with_log: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["kv_bytes"] = self.kv_bytes
        if not with_log:
            d.pop("log")
        return d


_LOG_LOCK = threading.RLock()


@contextlib.contextmanager
def captured_llama_log() -> Iterator[list[str]]:
    """Route llama.cpp's log (every level) into a list for the duration, then restore the
    previous callback (llama-cpp-python's own, which prints to stderr when verbose)."""
    lc = llama_cpp_module()
    chunks: list[str] = []

    @lc.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        chunks.append(text.decode("utf-8", "replace"))

    prev_cb = lc.llama_log_callback()
    prev_ud = ctypes.c_void_p()
    with _LOG_LOCK:  # the callback is process-global in llama.cpp
        lc.llama_log_get(ctypes.byref(prev_cb), ctypes.byref(prev_ud))
        lc.llama_log_set(capture, ctypes.c_void_p(0))
        try:
            yield chunks
        finally:
            lc.llama_log_set(prev_cb, prev_ud)


def _flash_attn_type(lc: Any, flash_attn: bool | str) -> int:
    if flash_attn == "auto":
        return int(lc.LLAMA_FLASH_ATTN_TYPE_AUTO)
    return int(lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED)


@contextlib.contextmanager
def _session(path: Path, *, n_ctx: int, n_batch: int, n_ubatch: int, n_seq_max: int, flash_attn: bool | str,
             type_k: str | int, type_v: str | int, swa_full: bool, n_gpu_layers: int, kv_unified: bool,
             use_mmap: bool, offload_kqv: bool, n_threads: int | None) -> Iterator[tuple[Any, Any, Any, list[str]]]:
    """Model + context created from explicit settings (llama_model_default_params and
    llama_context_default_params overwritten field by field), log captured, both freed on exit."""
    lc = llama_cpp_module()
    if not path.is_file():
        raise QuantizationError(f"{path} does not exist")
    with captured_llama_log() as chunks:
        model = ctx = None
        try:
            lc.llama_backend_init()
            mp = lc.llama_model_default_params()
            mp.n_gpu_layers = int(n_gpu_layers)
            mp.load_mode = int(lc.LLAMA_LOAD_MODE_MMAP if use_mmap else lc.LLAMA_LOAD_MODE_NONE)
            model = lc.llama_model_load_from_file(str(path).encode(), mp)
            if not model:
                raise QuantizationError(f"llama.cpp could not load {path.name}: {_tail(chunks)}")
            cp = lc.llama_context_default_params()
            cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = int(n_ctx), int(n_batch), int(n_ubatch), int(n_seq_max)
            threads = int(n_threads or max(1, os.cpu_count() or 1))
            cp.n_threads = cp.n_threads_batch = threads
            cp.flash_attn_type = _flash_attn_type(lc, flash_attn)
            cp.type_k, cp.type_v = ggml_type_id(type_k), ggml_type_id(type_v)
            cp.swa_full, cp.kv_unified, cp.offload_kqv = bool(swa_full), bool(kv_unified), bool(offload_kqv)
            cp.no_perf = True
            ctx = lc.llama_init_from_model(model, cp)
            if not ctx:
                raise QuantizationError(f"llama.cpp could not create the context: {_tail(chunks)}")
            yield lc, model, ctx, chunks
        finally:
            if ctx:
                lc.llama_free(ctx)
            if model:
                lc.llama_model_free(model)


def load_and_measure(
    gguf_path: str | Path,
    *,
    n_ctx: int,
    n_batch: int,
    n_ubatch: int,
    n_seq_max: int = 1,
    flash_attn: bool | str,
    type_k: str | int,
    type_v: str | int,
    swa_full: bool,
    n_gpu_layers: int = 0,
    kv_unified: bool = False,
    use_mmap: bool = True,
    offload_kqv: bool = True,
    n_threads: int | None = None,
    prompt: str = "The capital of France is",
    n_tokens: int = 4,
) -> Measured:
    """Load gguf_path with exactly these settings, greedy-generate n_tokens, and report llama.cpp's
    allocations (parsed from its log) and llama_model_size. Raises BackendUnavailableError without
    llama-cpp-python and QuantizationError if llama.cpp refuses the model or the context."""
    path = Path(gguf_path)
    settings = dict(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_seq_max=n_seq_max, flash_attn=flash_attn,
                    type_k=type_k, type_v=type_v, swa_full=swa_full, n_gpu_layers=n_gpu_layers,
                    kv_unified=kv_unified, use_mmap=use_mmap, offload_kqv=offload_kqv, n_threads=n_threads)
    t0 = time.perf_counter()
    with _session(path, **settings) as (lc, model, ctx, chunks):
        prompt_ids, gen_ids, text = _generate(lc, model, ctx, prompt, n_tokens)
        n_ctx_real = int(lc.llama_n_ctx(ctx))
        n_ctx_seq = int(lc.llama_n_ctx_seq(ctx))
        model_size = int(lc.llama_model_size(model))
        n_params = int(lc.llama_model_n_params(model))
    log = "".join(chunks)
    parsed = parse_llama_log(log)
    try:
        layout = kv_layout_from_gguf(path)
    except Exception:  # an unusual header only costs the exact KV figure
        layout = None
    if layout is not None:
        # V is transposed without flash attention; with "auto" try both, only one can agree when
        # V widths vary, and both give the same bytes when they do not.
        first = flash_attn is False
        for c in parsed.kv_caches:
            c.exact_bytes = exact_kv_bytes(c, layout, first)
            if c.exact_bytes is None:
                c.exact_bytes = exact_kv_bytes(c, layout, not first)
    realloc = parsed.output_realloc_mib
    return Measured(
        gguf_path=str(path), library=f"llama-cpp-python {lc.__version__}", settings=settings,
        n_ctx=n_ctx_real, n_ctx_seq=n_ctx_seq, model_size=model_size, n_params=n_params,
        model_buffers=parsed.by_kind("model"), kv_buffers=parsed.by_kind("KV"),
        compute_buffers=parsed.by_kind("compute"), compute_buffers_at_free=parsed.compute_at_free,
        output_buffers=parsed.by_kind("output"),
        rs_buffers=parsed.by_kind("RS"), kv_caches=parsed.kv_caches, layers_without_kv=parsed.layers_without_kv,
        output_realloc_bytes=mib_to_bytes(realloc) if realloc is not None else None,
        prompt_tokens=prompt_ids, generated_tokens=gen_ids, generated_text=text,
        seconds=time.perf_counter() - t0, log=log)


def token_logits(
    gguf_path: str | Path,
    tokens: Sequence[int],
    *,
    type_k: str | int = "f32",
    type_v: str | int = "f32",
    flash_attn: bool = False,
    swa_full: bool = False,
    n_threads: int | None = None,
) -> np.ndarray:
    """llama.cpp's logits for every position of `tokens` (one batch, one sequence): float32
    [len(tokens), n_vocab]. For comparing a GGUF with its source model or a quantized file with
    its F16/F32 original; the KV cache defaults to F32 so it adds no rounding of its own."""
    n = len(tokens)
    if n == 0:
        raise ValueError("tokens is empty")
    n_ctx = -(-n // 256) * 256
    with _session(Path(gguf_path), n_ctx=n_ctx, n_batch=n, n_ubatch=n, n_seq_max=1, flash_attn=flash_attn,
                  type_k=type_k, type_v=type_v, swa_full=swa_full, n_gpu_layers=0, kv_unified=False,
                  use_mmap=True, offload_kqv=True, n_threads=n_threads) as (lc, model, ctx, _chunks):
        n_vocab = int(lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model)))
        batch = lc.llama_batch_init(n, 0, 1)
        try:
            for i, t in enumerate(tokens):
                batch.token[i] = int(t)
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            batch.n_tokens = n
            if lc.llama_decode(ctx, batch) != 0:
                raise QuantizationError("llama_decode failed")
            out = np.empty((n, n_vocab), dtype=np.float32)
            for i in range(n):
                out[i] = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
        finally:
            lc.llama_batch_free(batch)
    return out


def _tail(chunks: Sequence[str], n: int = 3) -> str:
    lines = [ln for ln in "".join(chunks).splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "no log output"


def _generate(lc: Any, model: Any, ctx: Any, prompt: str, n_tokens: int) -> tuple[list[int], list[int], str]:
    """Tokenize (BOS added, special tokens parsed), decode the prompt, then greedy-decode n_tokens."""
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = int(lc.llama_vocab_n_tokens(vocab))
    raw = prompt.encode("utf-8")
    buf = (lc.llama_token * (len(raw) + 8))()
    n = lc.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, True)
    if n < 0:
        buf = (lc.llama_token * (-n))()
        n = lc.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, True)
    prompt_ids = list(buf[:n])
    out: list[int] = []
    pieces: list[bytes] = []
    batch_tokens = (lc.llama_token * max(1, n))(*prompt_ids)
    if lc.llama_decode(ctx, lc.llama_batch_get_one(batch_tokens, n)) != 0:
        raise QuantizationError("llama_decode failed on the prompt")
    for _ in range(n_tokens):
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        tok = int(np.argmax(logits))
        out.append(tok)
        if lc.llama_vocab_is_eog(vocab, tok):
            break
        piece = ctypes.create_string_buffer(256)
        k = lc.llama_token_to_piece(vocab, tok, piece, 256, 0, False)
        pieces.append(piece.raw[:max(0, k)])
        one = (lc.llama_token * 1)(tok)
        if lc.llama_decode(ctx, lc.llama_batch_get_one(one, 1)) != 0:
            raise QuantizationError("llama_decode failed while generating")
    return prompt_ids, out, b"".join(pieces).decode("utf-8", "replace")
