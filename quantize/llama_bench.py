"""This machine's llama.cpp CPU speed, measured on real-width slices of a Gemma model.

For each file type, two zero-weight slices of the model (``quantize.slices``: the real hidden size, heads,
FFN and 262k-entry output matrix, with ``LAYERS[0]`` and ``LAYERS[1]`` layers) are loaded in
llama-cpp-python on the CPU with the thread count llama.cpp's CLI uses (the physical cores), and a
prompt of ``PROMPT`` tokens then ``DECODE`` single tokens are timed, ``REPEATS`` times, the slices
taking turns token by token. The difference
between the two slices is the time of one layer; what is left is the output matrix and the per-token
fixed cost. From these come the rates the speed model uses in place of published efficiencies
(``planner.speed``):

- ``layer_decode_bytes_per_s``: repeating-layer weight bytes streamed per second while decoding;
- ``output_decode_bytes_per_s``: output-matrix bytes per second (with the per-token fixed cost folded in);
- ``prefill_flops_per_s``: 2 x layer parameters x prompt tokens per second of prompt processing.

Timings are medians (of the prompts, and of every decoded token); the load average before and after is recorded, since another
process on the same cores slows every number down. Needs the [gguf] extra (llama-cpp-python, numpy).
The rates are kept for ``--target auto`` by ``profiles.speed_basis``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

LAYERS = (2, 8)  # the two slice depths; their difference gives the per-layer time
PROMPT = 128
DECODE = 16
REPEATS = 4
DEFAULT_MODEL = "gemma-3-1b"
DEFAULT_FTYPES = ("Q4_K_M", "Q8_0")
BENCH_FTYPES = ("F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_XS", "Q3_K_M",
                "Q3_K_S", "Q2_K")


@dataclass
class SpeedBasis:
    """One file type's measured CPU rates (see the module docstring)."""

    ftype: str
    model: str
    threads: int
    layer_decode_bytes_per_s: float
    output_decode_bytes_per_s: float
    prefill_flops_per_s: float
    slice_layers: list[int] = field(default_factory=lambda: list(LAYERS))
    decode_tps: list[float] = field(default_factory=list)  # measured per slice (median of repeats)
    prefill_tps: list[float] = field(default_factory=list)
    load_average: list[float] = field(default_factory=list)  # 1-minute load before and after
    engine: str = ""  # llama-cpp-python version
    measured_at: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpeedBasis":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def _loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def time_slices(paths: list[Path], threads: int, prompt: Optional[int] = None, decode: Optional[int] = None,
                repeats: Optional[int] = None, tick: Optional[Callable[[], None]] = None) -> list[tuple[float, float]]:
    """[(prefill tok/s, decode tok/s)] of llama.cpp on this CPU for each GGUF of ``paths``: medians over
    ``repeats`` prompts of ``prompt`` tokens (one batch), and over every single decoded token after them.
    The files are loaded together and measured in turn, token by token while decoding, so a burst of
    load from another process falls on all of them alike."""
    import llama_cpp

    prompt, decode, repeats = prompt or PROMPT, decode or DECODE, repeats or REPEATS
    llms = [llama_cpp.Llama(str(p), n_ctx=max(512, prompt + decode + 16), n_batch=512, n_ubatch=512,
                            n_threads=threads, n_threads_batch=threads, flash_attn=True, n_gpu_layers=0,
                            use_mmap=False, verbose=False) for p in paths]
    pps: list[list[float]] = [[] for _ in paths]
    tok_s: list[list[float]] = [[] for _ in paths]  # seconds per decoded token
    try:
        for llm in llms:
            llm.eval([300 + i for i in range(8)])  # warm-up: first touch of the weights and the graph
        toks = [300 + (i * 7) % 1000 for i in range(prompt)]
        for _ in range(repeats):
            for k, llm in enumerate(llms):
                llm.reset()
                t0 = time.perf_counter()
                llm.eval(toks)
                pps[k].append(prompt / (time.perf_counter() - t0))
            for i in range(decode):
                for k, llm in enumerate(llms):
                    t0 = time.perf_counter()
                    llm.eval([400 + i])
                    tok_s[k].append(time.perf_counter() - t0)
            if tick:
                tick()
    finally:
        for llm in llms:
            llm.close()
    return [(statistics.median(p), 1 / statistics.median(t)) for p, t in zip(pps, tok_s)]


def _layer_and_output_bytes(spec, ftype: str) -> tuple[float, float, float]:
    """(mean repeating-layer weight bytes, output-matrix bytes, mean layer parameters) of a slice."""
    from planner.formats import gguf_tensor_types, tensor_bytes

    layer_bytes = out_bytes = layer_params = 0
    for t, typ in gguf_tensor_types(spec, ftype):
        if t.name.startswith("blk."):
            layer_bytes += tensor_bytes(typ, t.shape)
            layer_params += t.n_elements
        elif t.name == "token_embd.weight" and spec.tied_embeddings or t.name == "output.weight":
            out_bytes += tensor_bytes(typ, t.shape)
    n = spec.n_layers
    return layer_bytes / n, out_bytes, layer_params / n


def measure_ftype(entry: dict, ftype: str, threads: int, work: Path,
                  tick: Optional[Callable[[], None]] = None, repeats: Optional[int] = None) -> SpeedBasis:
    from quantize.slices import write_slice_gguf

    load = [_loadavg()]
    written = [write_slice_gguf(entry, ftype, work / f"slice-{n}.gguf", n) for n in LAYERS]
    try:
        timed = time_slices([p for p, _ in written], threads, repeats=repeats, tick=tick)
    finally:
        for p, _ in written:
            p.unlink(missing_ok=True)
    specs = [s for _, s in written]
    pp = [p for p, _ in timed]
    tg = [t for _, t in timed]
    load.append(_loadavg())
    (lb0, ob, lp0), (lb1, _, lp1) = (_layer_and_output_bytes(s, ftype) for s in specs)
    n0, n1 = specs[0].n_layers, specs[1].n_layers
    # per-token decode time t(n) = n x t_layer + t_rest; the slices' layers differ only in count
    t_layer = max((1 / tg[1] - 1 / tg[0]) / (n1 - n0), 1e-9)
    t_rest = max(1 / tg[0] - n0 * t_layer, 0.05 / tg[0])  # noise can push the difference past the whole
    layer_bytes = (lb0 * n0 + lb1 * n1) / (n0 + n1)
    layer_params = (lp0 * n0 + lp1 * n1) / (n0 + n1)
    p_layer = max((1 / pp[1] - 1 / pp[0]) / (n1 - n0), 1e-12)
    return SpeedBasis(
        ftype=ftype, model=entry["name"], threads=threads,
        layer_decode_bytes_per_s=round(layer_bytes / t_layer, 1),
        output_decode_bytes_per_s=round(ob / t_rest, 1),
        prefill_flops_per_s=round(2 * layer_params / p_layer, 1),
        slice_layers=[n0, n1], decode_tps=[round(x, 3) for x in tg], prefill_tps=[round(x, 2) for x in pp],
        load_average=load, engine=_engine_version(), measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _engine_version() -> str:
    try:
        import llama_cpp

        return f"llama-cpp-python {llama_cpp.__version__}"
    except Exception:  # noqa: BLE001 - a version string is a label only
        return "llama-cpp-python"


def default_threads(cores_physical: Optional[int], cores_logical: Optional[int]) -> int:
    """llama.cpp's CLI default: the physical cores (cpu_get_num_math)."""
    return max(1, cores_physical or cores_logical or os.cpu_count() or 1)


def run_speed_bench(model: str = DEFAULT_MODEL, ftypes=DEFAULT_FTYPES, threads: Optional[int] = None,
                    progress: Optional[Callable[[float], None]] = None, repeats: Optional[int] = None) -> list[SpeedBasis]:
    """Measure every file type of ``ftypes`` on slices of the catalog model ``model``."""
    from planner.catalog import resolve_entry

    entry, _ = resolve_entry(model)
    if entry.get("moe"):
        raise ValueError(f"{entry['name']} is a mixture of experts; measure a dense model of the same family "
                         f"(the dense layers' kernels are the same)")
    bad = [f for f in ftypes if f not in BENCH_FTYPES]
    if bad:
        raise ValueError(f"cannot bench file type {', '.join(bad)}: one of {', '.join(BENCH_FTYPES)}")
    if threads is None:
        import psutil

        threads = default_threads(psutil.cpu_count(logical=False), psutil.cpu_count(logical=True))
    repeats = repeats or REPEATS
    steps = len(ftypes) * repeats
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress:
            progress(min(done[0] / steps, 1.0))

    out = []
    with tempfile.TemporaryDirectory(prefix="gemma-plan-bench-") as tmp:
        for f in ftypes:
            out.append(measure_ftype(entry, f, threads, Path(tmp), tick=tick, repeats=repeats))
    return out
