"""Trace llama.cpp's compute buffer: which graph tensors are alive, and where, when it peaks.

    python bench/trace_compute.py gemma-4-31b --n-ctx 4096 --flash-attn on
    python bench/trace_compute.py path/to/model.gguf --n-ubatch 128 --parallel 4 --timeline

Loads the GGUF (or a catalog model at its real widths with a few layers and zero weights), asks
llama.cpp for the worst-case graph that sched_reserve sizes the compute buffer with
(llama_graph_reserve: n_ubatch tokens, n_seq_max sequences, every token an output, the KV cache
full), reads its nodes with ctypes and replays ggml-alloc's allocator on them in Python (best-fit
free blocks, in-place reuse of a parent with one child, views, inputs first, outputs kept). The
replayed peak is checked against the size llama.cpp itself reports, so the listing of what is
alive at the peak is the engine's, not a guess. This is how the compute-buffer rule in
planner/memory.py was traced. Needs llama-cpp-python 0.3.36 (ggml 0.25.3 struct layouts).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.memory import pad  # noqa: E402

MAX_DIMS, MAX_SRC, MAX_OP_PARAMS, MAX_NAME = 4, 10, 64, 64
FLAG_INPUT, FLAG_OUTPUT = 1, 2
ALIGNMENT = 32  # TENSOR_ALIGNMENT of the CPU buffer type
# ggml_op_can_inplace (ggml-alloc.c), by name as ggml_op_desc spells them; unary ops print their own name
INPLACE_OPS = {"FILL", "SCALE", "DIAG_MASK_ZERO", "DIAG_MASK_INF", "ADD", "ADD_ID", "ADD1", "SUB", "MUL", "DIV", "SQR",
               "SQRT", "LOG", "ROPE", "ROPE_BACK", "SILU_BACK", "RMS_NORM", "RMS_NORM_BACK", "CLAMP", "SOFT_MAX",
               "SOFT_MAX_BACK"}
UNARY_OPS = {"ABS", "SGN", "NEG", "STEP", "TANH", "ELU", "RELU", "SIGMOID", "GELU", "GELU_QUICK", "SILU", "HARDSWISH",
             "HARDSIGMOID", "EXP", "EXPM1", "SOFTPLUS", "GELU_ERF", "XIELU", "FLOOR", "CEIL", "ROUND", "TRUNC"}


class GgmlTensor(ctypes.Structure):
    """struct ggml_tensor (ggml.h, ggml 0.25.3)."""

    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * MAX_DIMS),
                ("nb", ctypes.c_size_t * MAX_DIMS), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * (MAX_OP_PARAMS // 4)),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * MAX_SRC), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * MAX_NAME),
                ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


class GgmlCgraph(ctypes.Structure):
    """The head of struct ggml_cgraph (ggml-impl.h)."""

    _fields_ = [("size", ctypes.c_int), ("n_nodes", ctypes.c_int), ("n_leafs", ctypes.c_int),
                ("nodes", ctypes.POINTER(ctypes.c_void_p)), ("grads", ctypes.c_void_p), ("grad_accs", ctypes.c_void_p),
                ("leafs", ctypes.POINTER(ctypes.c_void_p))]


@dataclass
class Tensor:
    ptr: int
    name: str
    op: str
    type: int
    ne: tuple
    nb: tuple
    nbytes: int
    external: bool  # data or buffer already set: weights, KV cache
    view_src: int
    flags: int
    srcs: list[int]


@dataclass
class Placement:
    tensor: Tensor
    offset: int
    size: int
    first: int  # node index that allocates it (-1: before the first node)
    last: int  # node index after which it is freed (n_nodes: never)


def _libs():
    import llama_cpp

    libdir = Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(libdir / "libggml-base.so"))
    ggml.ggml_op_desc.restype = ctypes.c_char_p
    ggml.ggml_op_desc.argtypes = [ctypes.c_void_p]
    ggml.ggml_nbytes.restype = ctypes.c_size_t
    ggml.ggml_nbytes.argtypes = [ctypes.c_void_p]
    llama = ctypes.CDLL(str(libdir / "libllama.so"))
    # exported with C++ linkage only (src/llama-ext.h), hence the mangled name
    reserve = getattr(llama, "_Z19llama_graph_reserveP13llama_contextjjj")
    reserve.restype = ctypes.c_void_p
    reserve.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32]
    return ggml, reserve


def _tensor(ggml, ptr: int) -> Tensor:
    t = GgmlTensor.from_address(ptr)
    return Tensor(ptr, t.name.decode(errors="replace"), ggml.ggml_op_desc(ptr).decode(), t.type, tuple(t.ne), tuple(t.nb),
                  int(ggml.ggml_nbytes(ptr)), bool(t.data or t.buffer), t.view_src or 0, t.flags, [s for s in t.src if s])


def reserve_graph(path: Path, *, n_ctx: int, n_ubatch: int, n_seq: int, flash_attn: bool, type_k: str, type_v: str,
                  swa_full: bool) -> tuple[list[Tensor], list[Tensor], dict[int, Tensor], int]:
    """(nodes, leafs, every tensor by address, compute buffer bytes llama.cpp reported) of the
    worst-case prompt graph for these settings."""
    from quantize.llamacpp import _session, parse_llama_log

    ggml, reserve = _libs()
    with _session(path, n_ctx=n_ctx, n_batch=n_ubatch, n_ubatch=n_ubatch, n_seq_max=n_seq, flash_attn=flash_attn,
                  type_k=type_k, type_v=type_v, swa_full=swa_full, n_gpu_layers=0, kv_unified=False, use_mmap=True,
                  offload_kqv=True, n_threads=None) as (lc, model, ctx, chunks):
        reported = sum(parse_llama_log("".join(chunks)).by_kind("compute").values())  # logged to 0.01 MiB
        n_tokens = min(int(lc.llama_n_ctx(ctx)), n_ubatch)
        g = reserve(ctypes.cast(ctx, ctypes.c_void_p), n_tokens, n_seq, n_tokens)
        if not g:
            raise SystemExit("error: llama_graph_reserve returned no graph")
        cg = GgmlCgraph.from_address(g)
        seen: dict[int, Tensor] = {}

        def visit(ptr: int) -> Tensor:
            if ptr not in seen:
                seen[ptr] = t = _tensor(ggml, ptr)
                for s in t.srcs + ([t.view_src] if t.view_src else []):
                    visit(s)
            return seen[ptr]

        nodes = [visit(cg.nodes[i]) for i in range(cg.n_nodes)]
        leafs = [visit(cg.leafs[i]) for i in range(cg.n_leafs)]
    return nodes, leafs, seen, reported


class Allocator:
    """ggml_dyn_tallocr: one chunk, free blocks sorted by offset, the last one open-ended."""

    def __init__(self, alignment: int = ALIGNMENT):
        self.alignment = alignment
        self.blocks: list[list[int]] = [[0, 1 << 62]]
        self.max_size = 0

    def _align(self, n: int) -> int:
        return pad(n, self.alignment)

    def alloc(self, size: int) -> int:
        size = self._align(size)
        best, best_size = -1, None
        for i, (_off, bsize) in enumerate(self.blocks[:-1]):  # best fit among all but the last block
            if bsize >= size and (best_size is None or bsize <= best_size):
                best, best_size = i, bsize
        if best == -1:
            best = len(self.blocks) - 1
        block = self.blocks[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del self.blocks[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def free(self, offset: int, size: int) -> None:
        size = self._align(size)
        for i, b in enumerate(self.blocks):
            if b[0] + b[1] == offset:  # freed range follows this block
                b[1] += size
                if i + 1 < len(self.blocks) and b[0] + b[1] == self.blocks[i + 1][0]:
                    b[1] += self.blocks[i + 1][1]
                    del self.blocks[i + 1]
                return
            if offset + size == b[0]:  # freed range precedes this block
                b[0] = offset
                b[1] += size
                if i > 0 and self.blocks[i - 1][0] + self.blocks[i - 1][1] == b[0]:
                    self.blocks[i - 1][1] += b[1]
                    del self.blocks[i]
                return
        pos = next((i for i, b in enumerate(self.blocks) if b[0] >= offset), len(self.blocks))
        self.blocks.insert(pos, [offset, size])


def replay(nodes: list[Tensor], leafs: list[Tensor], seen: dict[int, Tensor]) -> tuple[int, list[Placement]]:
    """ggml_gallocr_alloc_graph_impl on the graph: returns the buffer size and every placement."""
    a = Allocator()
    children: dict[int, int] = {}
    views: dict[int, int] = {}
    own: dict[int, Placement] = {}  # allocated by us and not yet freed
    done: list[Placement] = []
    step = -1

    def is_view(t: Tensor) -> bool:
        return bool(t.view_src)

    def allocate(t: Tensor) -> None:
        if t.external or t.ptr in own or is_view(t):
            return
        if t.op in INPLACE_OPS or t.op in UNARY_OPS:
            for sp in t.srcs:
                parent = seen[sp]
                if sp not in own:
                    continue
                if parent.flags & FLAG_OUTPUT or (parent.view_src and seen[parent.view_src].flags & FLAG_OUTPUT):
                    continue
                if (parent.type, parent.ne, parent.nb) != (t.type, t.ne, t.nb):
                    continue
                if children.get(sp, 0) == 1 and views.get(sp, 0) == 0:
                    p = own.pop(sp)
                    p.last = step
                    own[t.ptr] = Placement(t, p.offset, t.nbytes, step, step)
                    keep = a._align(t.nbytes)  # ggml_gallocr_free_extra_space: the parent is never smaller
                    if a._align(p.size) > keep:
                        a.free(p.offset + keep, a._align(p.size) - keep)
                    done.append(p)
                    return
        own[t.ptr] = Placement(t, a.alloc(t.nbytes), t.nbytes, step, step)

    def release(t: Tensor) -> None:
        if t.flags & FLAG_OUTPUT:
            return
        p = own.pop(t.ptr)
        a.free(p.offset, p.size)
        p.last = step
        done.append(p)

    for leaf in leafs:
        allocate(leaf)
    for n in nodes:
        if is_view(n) and n.op != "NONE":
            views[n.view_src] = views.get(n.view_src, 0) + 1
        if n.flags & FLAG_INPUT:
            allocate(n)
        for s in n.srcs:
            children[s] = children.get(s, 0) + 1
            if seen[s].flags & FLAG_INPUT:
                allocate(seen[s])
    for step, n in enumerate(nodes):
        for s in n.srcs:
            allocate(seen[s])
        allocate(n)
        for s in n.srcs:
            parent = seen[s]
            children[s] -= 1
            if children[s] == 0 and views.get(s, 0) == 0:
                if is_view(parent):
                    vs = parent.view_src
                    views[vs] -= 1
                    if views[vs] == 0 and children.get(vs, 0) == 0 and vs in own:
                        release(seen[vs])
                elif s in own:
                    release(parent)
    for p in own.values():
        p.last = len(nodes)
        done.append(p)
    return a.max_size, done


def peak_report(nodes: list[Tensor], placements: list[Placement], size: int, reported: int, top: int) -> str:
    mib = 2**20
    peak = max(placements, key=lambda p: p.offset + p.size)
    at = max(peak.first, 0)
    alive = sorted((p for p in placements if p.first <= at <= p.last and p.size), key=lambda p: p.offset)
    used = sum(p.size for p in alive)
    check = "matches llama.cpp" if abs(size - reported) < 0.006 * mib else f"DIFFERS from llama.cpp's {reported / mib:.2f} MiB"
    lines = [f"compute buffer: {size / mib:.2f} MiB replayed ({check}), {len(nodes)} nodes",
             f"peak set by {peak.tensor.name} ({peak.tensor.op}) at node {at}: {len(alive)} tensors alive, "
             f"{used / mib:.2f} MiB in use, {(size - used) / mib:.2f} MiB of holes below the top",
             f"{'offset MiB':>11} {'size MiB':>9} {'nodes':>10}  tensor (op) shape"]
    for p in alive[-top:]:
        lines.append(f"{p.offset / mib:11.2f} {p.size / mib:9.2f} {p.first:4d}-{p.last:<5d}  {p.tensor.name} "
                     f"({p.tensor.op}) {list(p.tensor.ne)}")
    return "\n".join(lines)


def timeline(nodes: list[Tensor], placements: list[Placement]) -> str:
    """Every node in graph order with its placement and the top of the live set after it."""
    mib = 2**20
    where = {p.tensor.ptr: p for p in placements if p.first >= 0}
    lines = [f"{'node':>4} {'offset':>9} {'size':>8} {'top':>8}  tensor (op)"]
    for i, n in enumerate(nodes):
        p = where.get(n.ptr)
        top = max((q.offset + q.size for q in placements if q.first <= i <= q.last), default=0)
        at = f"{p.offset / mib:9.2f} {p.size / mib:8.2f}" if p else f"{'view' if n.view_src else '-':>9} {'':>8}"
        lines.append(f"{i:4d} {at} {top / mib:8.2f}  {n.name} ({n.op})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a GGUF file, or a catalog model name (built at its real widths)")
    ap.add_argument("--layers", type=int, default=2, help="layers when building a catalog model (default 2)")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--n-ubatch", type=int, default=512)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--flash-attn", choices=["on", "off"], default="on")
    ap.add_argument("--kv", default="f16", help="K and V cache type (f16, q8_0, q4_0)")
    ap.add_argument("--swa-full", action="store_true")
    ap.add_argument("--top", type=int, default=25, help="tensors to list at the peak, highest offsets first")
    ap.add_argument("--timeline", action="store_true", help="also list every node with its offset and the live top")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model)
        if not path.is_file():
            from bench.fidelity import write_width_gguf
            from planner.catalog import catalog_entries

            entries = {e["name"]: e for e in catalog_entries()}
            if args.model not in entries:
                raise SystemExit(f"error: {args.model} is neither a file nor a catalog model; see `gemma-plan models`")
            path = write_width_gguf(entries[args.model], Path(tmp) / "m.gguf", args.layers)
        nodes, leafs, seen, reported = reserve_graph(
            path, n_ctx=args.n_ctx, n_ubatch=args.n_ubatch, n_seq=args.parallel, flash_attn=args.flash_attn == "on",
            type_k=args.kv, type_v=args.kv, swa_full=args.swa_full)
        size, placements = replay(nodes, leafs, seen)
        if args.timeline:
            print(timeline(nodes, placements))
        print(peak_report(nodes, placements, size, reported, args.top))


if __name__ == "__main__":
    main()
