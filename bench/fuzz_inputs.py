"""Fuzz the model readers: mutated GGUF headers and mutated Hugging Face directories, each loaded and planned.

Every input must end in a plan or a typed error (PlanError / ProfileError), within 2 s of CPU time (wall time
is printed too; it depends on what else the machine runs) and 1 GiB of memory: the process's peak resident
size may never grow by 1 GiB over its size before the first input (a run that needed 1 GiB would raise it;
the planner's per-model caches are cleared after each input, as each CLI run starts without them). The script prints the counts;
the three it checks must all be zero:

    python bench/fuzz_inputs.py --gguf 10000 --hf 2000 --seed 0

Mutations are both byte-level (interesting integers written over header fields, truncation, inserted and
deleted bytes) and structural (metadata values of the wrong size, sign or type, missing keys, nested arrays,
tensors with 0 or 5 dimensions, unknown types, unaligned offsets; config.json values and safetensors entries
replaced). ``tests/test_fuzz.py`` reuses the seeds and the runner with hypothesis.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import signal
import struct
import sys
import tempfile
import resource
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TIME_LIMIT_S = 2.0
MEMORY_LIMIT = 1 << 30
HARD_STOP_S = 20  # a run still going after this is stopped and counted as over time

INTERESTING = [0, 1, 2, 3, 7, 8, 31, 32, 33, 255, 256, 4095, 4096, 4097, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
               2**62, 2**63 - 1, 2**63, 2**64 - 1]
INTERESTING_SIGNED = [-1, -2, -(2**31), -(2**63)]

# ---------------------------------------------------------------- GGUF: a tiny serializer (so values can be wrong)

# GGUF value types (gguf-py constants.py GGUFValueType)
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
# ggml types: (id, block size, bytes per block)
GGML = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144), "Q6_K": (14, 256, 210),
        "BF16": (30, 1, 2)}


def _s(x: str) -> bytes:
    b = x.encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(b)) + b


def _value(vtype: int, v) -> bytes:
    if isinstance(v, bytes):  # already encoded (deeply nested arrays, built without recursion)
        return v
    if vtype == STR:
        return _s(v if isinstance(v, str) else str(v))
    if vtype == ARR:
        etype, items = v if isinstance(v, tuple) else (U8, [])
        return struct.pack("<IQ", etype, len(items)) + b"".join(_value(etype, x) for x in items)
    try:
        return struct.pack(_FMT[vtype], v)
    except (struct.error, KeyError, OverflowError, TypeError):
        return struct.pack("<Q", int(v) & (2**64 - 1)) if isinstance(v, int) else b"\0" * 4


def serialize_gguf(meta: list, tensors: list, alignment: int = 32) -> tuple[bytes, int]:
    """meta: [(key, vtype, value)]; tensors: [(name, dims (ggml order), type id, offset or None, nbytes)]."""
    out = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(meta))]
    for key, vtype, value in meta:
        out += [_s(key), struct.pack("<I", vtype), _value(vtype, value)]
    offset = 0
    infos = []
    for name, dims, tid, off, nbytes in tensors:
        off = offset if off is None else off
        infos.append(_s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in dims)
                     + struct.pack("<IQ", tid & 0xFFFFFFFF, off & (2**64 - 1)))
        offset += (nbytes + 31) // 32 * 32
    body = b"".join(out) + b"".join(infos)
    ok = isinstance(alignment, int) and 0 < alignment <= 1 << 16 and alignment & (alignment - 1) == 0
    pad = (-len(body)) % alignment if ok else 0  # no padding for alignments the reader refuses anyway
    return body + b"\0" * pad, offset


def gguf_seed(arch: str = "gemma3", layers: int = 2, H: int = 64, F: int = 128, V: int = 256, ftype: str = "F16") -> tuple[list, list]:
    """Metadata and tensors of a small, valid Gemma GGUF (the converter's keys, llama.cpp's tensor names)."""
    hd, nh, nkv = 32, 2, 1
    meta = [("general.architecture", STR, arch), ("general.name", STR, "fuzz"), ("general.file_type", U32, {"F16": 1, "F32": 0}[ftype]),
            (f"{arch}.block_count", U32, layers), (f"{arch}.context_length", U32, 8192), (f"{arch}.embedding_length", U32, H),
            (f"{arch}.feed_forward_length", U32, F), (f"{arch}.attention.head_count", U32, nh),
            (f"{arch}.attention.head_count_kv", U32, nkv), (f"{arch}.attention.key_length", U32, hd),
            (f"{arch}.attention.value_length", U32, hd), (f"{arch}.attention.sliding_window", U32, 512),
            (f"{arch}.attention.layer_norm_rms_epsilon", F32, 1e-6),
            ("tokenizer.ggml.model", STR, "llama"), ("tokenizer.ggml.tokens", ARR, (STR, tuple(f"t{i}" for i in range(V)))),
            ("tokenizer.ggml.scores", ARR, (F32, (0.0,) * V)), ("general.alignment", U32, 32)]
    if arch == "gemma4":
        meta += [(f"{arch}.attention.key_length_swa", U32, hd),
                 (f"{arch}.attention.sliding_window_pattern", ARR, (BOOL, [True] * (layers - 1) + [False]))]
    elif arch in ("gemma3", "gemma3n"):
        meta += [(f"{arch}.attention.sliding_window_pattern", ARR, (BOOL, [True, False] * (layers // 2) + [True] * (layers % 2)))]
    t = "F16" if ftype == "F16" else "F32"
    tid, block, size = GGML[t]
    tensors = [("token_embd.weight", [H, V], tid, None, H * V * size), ("output_norm.weight", [H], 0, None, H * 4)]
    for i in range(layers):
        p = f"blk.{i}."
        for n, shape in (("attn_q", [H, nh * hd]), ("attn_k", [H, nkv * hd]), ("attn_v", [H, nkv * hd]), ("attn_output", [nh * hd, H]),
                         ("ffn_gate", [H, F]), ("ffn_up", [H, F]), ("ffn_down", [F, H])):
            tensors.append((p + n + ".weight", shape, tid, None, shape[0] * shape[1] * size))
        for n in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            tensors.append((p + n + ".weight", [H], 0, None, H * 4))
        for n in ("attn_q_norm", "attn_k_norm"):
            tensors.append((p + n + ".weight", [hd], 0, None, hd * 4))
    return meta, tensors


def write_gguf(path: Path, meta: list, tensors: list) -> None:
    align = next((v for k, t, v in meta if k == "general.alignment" and isinstance(v, int)), 32)
    header, data = serialize_gguf(meta, tensors, align)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + min(max(0, data), 1 << 30))  # sparse: the tensor data is never read


def _interesting(rng: random.Random) -> int:
    v = rng.choice(INTERESTING + INTERESTING_SIGNED)
    return v if rng.random() < 0.9 else rng.randrange(-(2**63), 2**64)


def mutate_gguf_structure(rng: random.Random, meta: list, tensors: list) -> tuple[list, list]:
    meta, tensors = copy.deepcopy(meta), copy.deepcopy(tensors)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(12)
        if op < 4 and meta:  # a metadata value of the wrong size, sign or type
            i = rng.randrange(len(meta))
            key, vtype, value = meta[i]
            choice = rng.randrange(7)
            if choice == 0:
                meta[i] = (key, rng.choice([U8, I8, U16, I16, U32, I32, U64, I64]), _interesting(rng) & 0xFF if rng.random() < 0.2 else _interesting(rng))
            elif choice == 1:
                meta[i] = (key, rng.choice([F32, F64]), rng.choice([0.0, -1.0, 1e300, float("nan"), float("inf"), 0.5]))
            elif choice == 2:
                meta[i] = (key, STR, rng.choice(["", "gemma3", "gemma4", "llama", "\x00", "9" * 100]))
            elif choice == 3:
                meta[i] = (key, ARR, (U32, [rng.choice(INTERESTING) & 0xFFFFFFFF for _ in range(rng.randint(0, 70))]))
            elif choice == 4:
                meta[i] = (key, BOOL, rng.random() < 0.5)
            elif choice == 5:
                del meta[i]
            else:
                meta[i] = (key, ARR, (ARR, [(U8, [])] * rng.randint(0, 3)))
        elif op == 4:  # nested arrays
            depth = rng.randint(1, 600)
            v = struct.pack("<IQB", U8, 1, 1)
            for _ in range(depth):
                v = struct.pack("<IQ", ARR, 1) + v
            meta.append((f"fuzz.nested{rng.randrange(9)}", ARR, v))
        elif op == 5:  # a duplicated or extra key
            if meta:
                meta.append(copy.deepcopy(rng.choice(meta)))
        elif op == 6 and tensors:  # dims
            i = rng.randrange(len(tensors))
            name, dims, tid, off, nb = tensors[i]
            n = rng.choice([0, 1, 2, 3, 4, 5, 9]) if rng.random() < 0.4 else len(dims)
            dims = [rng.choice([0, 1, 32, 64, 256, 2**31, 2**40, 2**63]) if rng.random() < 0.5 else (dims[j] if j < len(dims) else 1)
                    for j in range(n)]
            tensors[i] = (name, dims, tid, off, nb)
        elif op == 7 and tensors:  # tensor type id
            i = rng.randrange(len(tensors))
            name, dims, tid, off, nb = tensors[i]
            tensors[i] = (name, dims, rng.choice([2, 3, 6, 8, 12, 14, 15, 16, 23, 29, 30, 31, 39, 40, 99, 2**31]), off, nb)
        elif op == 8 and tensors:  # offset
            i = rng.randrange(len(tensors))
            name, dims, tid, off, nb = tensors[i]
            tensors[i] = (name, dims, tid, rng.choice([1, 3, 31, 2**40, 2**63]), nb)
        elif op == 9 and tensors:  # drop or rename a tensor
            i = rng.randrange(len(tensors))
            if rng.random() < 0.5:
                del tensors[i]
            else:
                name, dims, tid, off, nb = tensors[i]
                tensors[i] = (rng.choice(["blk.99999.attn_q.weight", "blk.x.attn_q.weight", "blk.-1.ffn_up.weight", tensors[0][0], ""]),
                              dims, tid, off, nb)
        elif op == 10:  # alignment
            meta = [m for m in meta if m[0] != "general.alignment"]
            meta.append(("general.alignment", rng.choice([U32, U64, I32, STR]), rng.choice([0, 1, 3, 8, 32, 48, 2**20, 2**31])))
        else:  # architecture swap (keys then belong to another arch)
            meta = [(k, t, rng.choice(["gemma2", "gemma3", "gemma3n", "gemma4", "llama"]) if k == "general.architecture" else v)
                    for k, t, v in meta]
    return meta, tensors


def mutate_gguf_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(b)) if b else 0
        if op == 0:  # an interesting integer over whatever field is there
            width = rng.choice([1, 4, 8])
            v = _interesting(rng) & ((1 << (8 * width)) - 1)
            b[pos:pos + width] = v.to_bytes(width, "little")
        elif op == 1:
            if b:
                b[pos] = rng.randrange(256)
        elif op == 2:
            if b:
                del b[rng.randrange(len(b)):]
        elif op == 3:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            del b[pos:pos + rng.randint(1, 16)]
    return bytes(b)


def gguf_case(rng: random.Random, path: Path) -> None:
    arch = rng.choice(["gemma3", "gemma3", "gemma4", "gemma2", "gemma3n"])
    meta, tensors = gguf_seed(arch, layers=rng.choice([1, 2, 3]))
    if rng.random() < 0.5:
        meta, tensors = mutate_gguf_structure(rng, meta, tensors)
        write_gguf(path, meta, tensors)
    else:
        header, data = serialize_gguf(meta, tensors)
        raw = mutate_gguf_bytes(rng, header)
        with open(path, "wb") as f:
            f.write(raw)
            f.truncate(len(raw) + min(data, 1 << 30))


# ---------------------------------------------------------------- Hugging Face directories

TINY_CONFIG = {"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 256,
               "max_position_embeddings": 2048, "sliding_window": 128}


def hf_tensors(cfg: dict) -> dict:
    """HF names -> (shape, dtype) of a Gemma 3 text checkpoint (transformers Gemma3ForCausalLM)."""
    H, F, V, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    out = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": [q, H], p + "self_attn.k_proj.weight": [kv, H], p + "self_attn.v_proj.weight": [kv, H],
                    p + "self_attn.o_proj.weight": [H, q], p + "self_attn.q_norm.weight": [hd], p + "self_attn.k_norm.weight": [hd],
                    p + "mlp.gate_proj.weight": [F, H], p + "mlp.up_proj.weight": [F, H], p + "mlp.down_proj.weight": [H, F],
                    p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H],
                    p + "pre_feedforward_layernorm.weight": [H], p + "post_feedforward_layernorm.weight": [H]})
    return {n: (s, "BF16") for n, s in out.items()}


def st_header(tensors: dict) -> tuple[dict, int]:
    header, offset = {}, 0
    for name, (shape, dtype) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + 2 * n]}
        offset += 2 * n
    return header, offset


def write_hf_dir(d: Path, config, header=None, body: int = 0, config_text: str | None = None, length_field: int | None = None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for p in d.iterdir():
        p.unlink()
    (d / "config.json").write_text(config_text if config_text is not None else json.dumps(config))
    if header is not None:
        blob = json.dumps(header).encode()
        with open(d / "model.safetensors", "wb") as f:
            f.write(struct.pack("<Q", (len(blob) if length_field is None else length_field) & (2**64 - 1)) + blob)
            f.truncate(8 + len(blob) + max(0, min(body, 1 << 30)))


def catalog_configs() -> list[dict]:
    data = json.loads((ROOT / "planner" / "data" / "models.json").read_text())["models"]
    skip = {"name", "aliases", "hf_repos", "hf_repo", "sources", "notes", "display", "released", "params_published", "params_note",
            "towers_note", "confidence", "vision_params", "audio_params", "family", "arch"}
    return [{k: v for k, v in e.items() if k not in skip} for e in data]


WRONG_VALUES = [0, -1, -(2**31), 1, 2**31, 2**63, 10**9, 1e300, float("nan"), 1.5, "64", "", None, True, [], [1, 2], {}, {"a": 1}]


def mutate_config(rng: random.Random, cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        keys = list(cfg)
        if op < 3 and keys:
            k = rng.choice(keys)
            cfg[k] = rng.choice(WRONG_VALUES + [rng.choice(INTERESTING)])
        elif op == 3 and keys:
            del cfg[rng.choice(keys)]
        elif op == 4:
            cfg = {"model_type": rng.choice(["gemma3", "gemma4", "gemma3n", "gemma4_unified"]), "text_config": rng.choice([cfg, [cfg], "x"])}
        else:
            k = rng.choice(["layer_types", "per_layer_config", "moe", "num_experts", "intermediate_size", "sliding_window_pattern",
                            "num_kv_shared_layers", "global_head_dim", "altup_num_inputs", "laurel_rank", "enable_moe_block"])
            cfg[k] = rng.choice([["full_attention"] * 3, "SSF", {"0": {"head_dim": -1}}, {"num_experts": 8}, [1, 2, 3],
                                 {"num_experts": 4, "top_k_experts": 9, "moe_intermediate_size": 0}, 2**40, -3, [0] * 2])
    return cfg


def mutate_header(rng: random.Random, header: dict) -> tuple[object, int | None]:
    header = copy.deepcopy(header)
    length_field = None
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        names = list(header) if isinstance(header, dict) else []
        if op == 0 and names:
            n = rng.choice(names)
            header[n]["dtype"] = rng.choice(["F32", "I64", "Q4", "", None, 3, "F8_E4M3"])
        elif op == 1 and names:
            n = rng.choice(names)
            header[n]["shape"] = rng.choice([[], [0], [-1, 4], "4,4", [2**40, 2**40], [1, 2, 3, 4, 5], [1.5], None, [64] * 3])
        elif op == 2 and names:
            n = rng.choice(names)
            header[n]["data_offsets"] = rng.choice([[0, 2**63], [5, 1], [0], "0,1", [-1, 4], None, [0, 0]])
        elif op == 3 and names:
            n = rng.choice(names)
            header[n] = rng.choice([[1, 2], "x", None, 5])
        elif op == 4 and names:
            del header[rng.choice(names)]
        elif op == 5 and names:
            n = rng.choice(names)
            header[n.replace("layers.1", "layers.77") + rng.choice(["", ".bias", "_x"])] = header.pop(n)
        elif op == 6:
            header = rng.choice([[1, 2], "x", 3, None, {"__metadata__": {"a": "b"}}])
        else:
            length_field = rng.choice([0, 1, 2**31, 2**63, 100_000_001])
    return header, length_field


def hf_case(rng: random.Random, d: Path, catalog: list[dict]) -> None:
    if rng.random() < 0.5:
        cfg = copy.deepcopy(TINY_CONFIG)
        header, body = st_header(hf_tensors(cfg))
        if rng.random() < 0.6:
            header, length_field = mutate_header(rng, header)
        else:
            length_field = None
        if rng.random() < 0.5:
            cfg = mutate_config(rng, cfg)
        if rng.random() < 0.1:
            body = rng.choice([0, body // 2, 2**40])
        write_hf_dir(d, cfg, header, body, length_field=length_field)
    else:
        cfg = mutate_config(rng, rng.choice(catalog))
        text = json.dumps(cfg)
        if rng.random() < 0.1:
            text = text[: rng.randrange(len(text))] if rng.random() < 0.5 else "[" * 5000 + "]" * 5000
        write_hf_dir(d, cfg, config_text=text)


# ---------------------------------------------------------------- the runner


class _HardStop(BaseException):
    pass


def _alarm(signum, frame):
    raise _HardStop()


_HW = None


def plan_input(path: str):
    """What `gemma-plan estimate` does with a model path: load it, then plan it on a fixed target."""
    global _HW
    import dataclasses

    from planner.formats import parse_format
    from planner.search import plan
    from planner.sources import load_model
    from planner.types import RuntimeSettings
    from profiles.targets import load_target

    if _HW is None:
        _HW = load_target("rtx4090")
    spec, _ = load_model(path)
    fmt = parse_format(spec.gguf_file_type if spec.gguf_file_type not in (None, "GGUF") else "Q4_K_M", "llama.cpp")
    s = dataclasses.replace(RuntimeSettings(), n_ctx=min(4096, spec.ctx_train))
    return plan(spec, fmt, s, copy.deepcopy(_HW))


def run_one(path: str) -> tuple[str, float, int, str]:
    """(outcome, seconds, peak bytes, detail); outcome is plan | typed | internal | hard-stop."""
    from planner.errors import PlanError
    from profiles.errors import ProfileError

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HARD_STOP_S)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        plan_input(path)
        outcome, detail = "plan", ""
    except (PlanError, ProfileError) as exc:
        outcome, detail = "typed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except _HardStop:
        outcome, detail = "hard-stop", ""
    except Exception as exc:  # what the fuzz hunts: anything that is not a plan or a typed error
        outcome, detail = "internal", f"{type(exc).__name__}: {str(exc)[:160]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _clear_caches()
    return outcome, (wall, cpu), maxrss(), detail


def maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _clear_caches() -> None:
    from planner import formats, memory

    formats._SIZES_CACHE.clear()
    memory._WEIGHTS_CACHE.clear()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=int, default=10000, help="mutated GGUF headers")
    ap.add_argument("--hf", type=int, default=2000, help="mutated Hugging Face directories")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=10, help="internal exceptions to print")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    catalog = catalog_configs()
    counts: Counter = Counter()
    slow, big, internal = [], [], []
    worst_s, worst_wall, worst_mem = 0.0, 0.0, 0
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gemma-plan-fuzz-") as tmp:
        root = Path(tmp)
        write_gguf(root / "seed.gguf", *gguf_seed())  # warm-up: imports and the target load are not a run's work
        assert run_one(str(root / "seed.gguf"))[0] == "plan"
        base = maxrss()
        jobs = [("gguf", i) for i in range(args.gguf)] + [("hf", i) for i in range(args.hf)]
        for kind, i in jobs:
            if kind == "gguf":
                path = root / "m.gguf"
                gguf_case(rng, path)
            else:
                path = root / "hf"
                hf_case(rng, path, catalog)
            outcome, (wall, secs), peak, detail = run_one(str(path))
            counts[(kind, outcome)] += 1
            worst_s, worst_wall, worst_mem = max(worst_s, secs), max(worst_wall, wall), max(worst_mem, peak)
            if outcome in ("internal", "hard-stop"):
                internal.append((kind, i, detail))
            if secs > TIME_LIMIT_S or outcome == "hard-stop":
                slow.append((kind, i, secs, detail))
            if peak - base > MEMORY_LIMIT:
                big.append((kind, i, peak))
    total = time.perf_counter() - t_all
    for kind, n in (("gguf", args.gguf), ("hf", args.hf)):
        print(f"{kind:4}: {n:6,} inputs: {counts[(kind, 'plan')]:6,} plans, {counts[(kind, 'typed')]:6,} typed errors, "
              f"{counts[(kind, 'internal')] + counts[(kind, 'hard-stop')]:,} internal exceptions")
    print(f"internal exceptions: {len(internal)}")
    print(f"runs over {TIME_LIMIT_S:g} s of CPU: {len(slow)} (slowest {worst_s:.3f} s CPU, {worst_wall:.3f} s wall)")
    print(f"runs over {MEMORY_LIMIT >> 30} GiB: {len(big)} (peak resident size {worst_mem / 2**20:.0f} MiB, "
          f"{(worst_mem - base) / 2**20:.0f} MiB above the {base / 2**20:.0f} MiB before the first input)")
    print(f"seed {args.seed}, {total:.0f} s in all")
    for kind, i, detail in internal[: args.show]:
        print(f"  {kind} #{i}: {detail}")
    for kind, i, secs, detail in slow[: args.show]:
        print(f"  slow {kind} #{i}: {secs:.2f} s CPU ({detail})")
    return 0 if not (internal or slow or big) else 1


if __name__ == "__main__":
    sys.exit(main())
