"""Property tests over every reader of user files: GGUF headers, Hugging Face directories, target files and
recipe.json. Whatever the bytes, the result is a plan (or a parsed target, a validation) or a typed error,
never anything else, within 2 s of CPU time and 1 GiB of Python allocations. The example budget is fixed
and derandomized so the file runs the same in CI, in well under a minute. bench/fuzz_inputs.py runs the
same readers over 12,000 mutated inputs."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import resource
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from planner.errors import PlanError
from profiles.errors import ProfileError

_spec = importlib.util.spec_from_file_location("fuzz_inputs", Path(__file__).resolve().parents[1] / "bench" / "fuzz_inputs.py")
fz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fz)

TYPED = (PlanError, ProfileError)
WORK = Path(".")  # set by the warm fixture
CPU_LIMIT_S = 2.0
MEMORY_LIMIT = 1 << 30
# GEMMA_PLAN_FUZZ_EXAMPLES=2000 runs a longer, random (not derandomized) search locally
_LONG = os.environ.get("GEMMA_PLAN_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_LONG or 100), deadline=None, derandomize=not _LONG, database=None, phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def warm(tmp_path_factory):
    """Imports and the target load happen once, outside the measured examples; every example writes its
    input into one directory (a directory per example would cost more than the example)."""
    global WORK
    WORK = tmp_path_factory.mktemp("fuzz")
    seed = WORK / "seed.gguf"
    fz.write_gguf(seed, *fz.gguf_seed())
    fz.plan_input(str(seed))


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def bounded(fn, *args):
    """Run fn; it must return or raise a typed error, within the time and memory bounds (the process's peak
    resident size may not grow by the bound: cheaper than tracing every allocation, which bench/fuzz_inputs.py does)."""
    rss0 = _maxrss()
    c0 = time.process_time()
    try:
        result = fn(*args)
    except TYPED as exc:
        result = exc
    cpu = time.process_time() - c0
    assert cpu < CPU_LIMIT_S, f"{cpu:.2f} s of CPU"
    assert _maxrss() - rss0 < MEMORY_LIMIT, f"peak resident size grew by {(_maxrss() - rss0) / 2**20:.0f} MiB"
    return result


# ---------------------------------------------------------------- GGUF

ANY_INT = st.one_of(st.sampled_from(fz.INTERESTING + fz.INTERESTING_SIGNED), st.integers(-(2**63), 2**64 - 1))
META_VALUE = st.one_of(
    st.tuples(st.sampled_from([fz.U8, fz.I8, fz.U16, fz.I16, fz.U32, fz.I32, fz.U64, fz.I64]), ANY_INT),
    st.tuples(st.sampled_from([fz.F32, fz.F64]), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.just(fz.STR), st.text(max_size=12)),
    st.tuples(st.just(fz.BOOL), st.booleans()),
    st.tuples(st.just(fz.ARR), st.tuples(st.just(fz.U32), st.lists(st.integers(0, 2**32 - 1), max_size=80).map(tuple))),
    st.tuples(st.just(fz.ARR), st.tuples(st.just(fz.BOOL), st.lists(st.booleans(), max_size=80).map(tuple))),
)
SEED_META, SEED_TENSORS = fz.gguf_seed("gemma3", layers=2)
TENSOR_EDIT = st.tuples(st.integers(0, len(SEED_TENSORS) - 1),
                        st.one_of(st.none(), st.lists(st.sampled_from([0, 1, 32, 64, 256, 2**31, 2**40, 2**64 - 1]), max_size=5)),
                        st.one_of(st.none(), st.integers(0, 64), st.just(2**31)),
                        st.one_of(st.none(), st.integers(0, 2**64 - 1)))


@FUZZ
@given(arch=st.sampled_from(["gemma2", "gemma3", "gemma3n", "gemma4", "llama"]),
       edits=st.dictionaries(st.sampled_from([k for k, _, _ in SEED_META] + ["gemma3.expert_count", "gemma4.attention.shared_kv_layers"]),
                             st.one_of(st.none(), META_VALUE), max_size=4),
       tensor_edits=st.lists(TENSOR_EDIT, max_size=3))
def test_gguf_metadata_gives_a_plan_or_a_typed_error(tmp_path_factory, arch, edits, tensor_edits):
    meta, tensors = fz.gguf_seed(arch if arch != "llama" else "gemma3", layers=2)
    if arch == "llama":
        meta = [(k, t, "llama" if k == "general.architecture" else v) for k, t, v in meta]
    keys = {k: i for i, (k, _, _) in enumerate(meta)}
    for key, value in edits.items():
        key = key.replace("gemma3.", f"{arch}.") if arch != "llama" else key
        if value is None:
            meta = [m for m in meta if m[0] != key]
        elif key in keys and keys[key] < len(meta) and meta[keys[key]][0] == key:
            meta[keys[key]] = (key, *value)
        else:
            meta.append((key, *value))
    tensors = copy.deepcopy(tensors)
    for i, dims, tid, off in tensor_edits:
        name, d, t, o, nb = tensors[i]
        tensors[i] = (name, d if dims is None else dims, t if tid is None else tid, o if off is None else off, nb)
    path = WORK / "m.gguf"
    fz.write_gguf(path, meta, tensors)
    result = bounded(fz.plan_input, str(path))
    assert isinstance(result, TYPED) or result.memory.total_bytes > 0


SEED_BYTES = fz.serialize_gguf(SEED_META, SEED_TENSORS)


@FUZZ
@given(patches=st.lists(st.tuples(st.integers(0, len(SEED_BYTES[0]) - 1), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, len(SEED_BYTES[0]))))
def test_gguf_bytes_give_a_plan_or_a_typed_error(tmp_path_factory, patches, cut):
    raw = bytearray(SEED_BYTES[0])
    for pos, data in patches:
        raw[pos:pos + len(data)] = data
    if cut is not None:
        del raw[cut:]
    path = WORK / "b.gguf"
    with open(path, "wb") as f:
        f.write(raw)
        f.truncate(len(raw) + SEED_BYTES[1])
    result = bounded(fz.plan_input, str(path))
    assert isinstance(result, TYPED) or result.memory.total_bytes > 0


# ---------------------------------------------------------------- Hugging Face directories

JSON_SCALAR = st.one_of(st.none(), st.booleans(), ANY_INT, st.floats(allow_nan=False), st.text(max_size=8))
JSON_VALUE = st.recursive(JSON_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                          max_leaves=12)
CONFIG_KEYS = sorted(set(fz.TINY_CONFIG) | {"layer_types", "per_layer_config", "moe", "num_experts", "top_k_experts",
                                            "moe_intermediate_size", "num_kv_shared_layers", "global_head_dim",
                                            "hidden_size_per_layer_input", "text_config", "attention_k_eq_v", "enable_moe_block"})
ST_EDIT = st.tuples(st.sampled_from(sorted(fz.hf_tensors(fz.TINY_CONFIG))), st.sampled_from(["dtype", "shape", "data_offsets", None]),
                    JSON_VALUE)


@FUZZ
@given(model_type=st.sampled_from(["gemma2", "gemma3_text", "gemma3n_text", "gemma4_text", "gemma4", "llama", 3]),
       edits=st.dictionaries(st.sampled_from(CONFIG_KEYS), JSON_VALUE, max_size=4),
       header_edits=st.lists(ST_EDIT, max_size=3),
       with_header=st.booleans())
def test_hf_directory_gives_a_plan_or_a_typed_error(tmp_path_factory, model_type, edits, header_edits, with_header):
    cfg = {**fz.TINY_CONFIG, "model_type": model_type, **edits}
    header, body = fz.st_header(fz.hf_tensors(fz.TINY_CONFIG))
    for name, field, value in header_edits:
        if field is None:
            header[name] = value
        elif isinstance(header[name], dict):
            header[name][field] = value
        else:
            header[name] = {field: value}
    d = WORK / "hf"
    fz.write_hf_dir(d, cfg, header if with_header else None, body)
    result = bounded(fz.plan_input, str(d))
    assert isinstance(result, TYPED) or result.memory.total_bytes > 0


# ---------------------------------------------------------------- target files

DEVICE = st.fixed_dictionaries({"name": st.one_of(st.just("GPU"), JSON_SCALAR), "vendor": st.sampled_from(["nvidia", "amd", "x", 3]),
                                "backend": st.sampled_from(["CUDA", "ROCm", "Metal", ""])},
                               optional={"memory_gib": st.one_of(ANY_INT, st.floats(), JSON_VALUE),
                                         "memory_bytes": ANY_INT, "total_gib": st.floats(), "bandwidth_gb_s": st.floats(),
                                         "fp16_tflops": st.floats(), "count": ANY_INT, "unified": JSON_SCALAR,
                                         "memory_rule": st.one_of(st.just("apple-default"), JSON_VALUE),
                                         "partition": JSON_SCALAR, "ram_options_gb": JSON_VALUE, "aliases": JSON_VALUE})
TARGET = st.fixed_dictionaries({"name": st.just("t"), "kind": st.sampled_from(["desktop", "cluster", "phone", "x"]),
                                "source": st.just("fuzz")},
                               optional={"ram_gib": st.one_of(ANY_INT, st.floats()), "ram_bytes": ANY_INT,
                                         "devices": st.lists(DEVICE, max_size=3),
                                         "hosts": st.lists(st.fixed_dictionaries({"ram_gib": st.one_of(ANY_INT, st.floats()),
                                                                                  "count": ANY_INT,
                                                                                  "devices": st.lists(DEVICE, max_size=2)}), max_size=3),
                                         "cpu": st.one_of(JSON_VALUE, st.fixed_dictionaries({"cores_physical": ANY_INT})),
                                         "memory_limit_bytes": ANY_INT, "network_gbit_s": st.floats(),
                                         "hardware_ids": JSON_VALUE, "ram_bandwidth_source": JSON_SCALAR})


@FUZZ
@given(data=TARGET)
def test_target_file_gives_hardware_or_a_typed_error(data):
    from profiles import bounds as B
    from profiles.targets import parse_target

    hw = bounded(parse_target, data, "fuzz.toml")
    if not isinstance(hw, TYPED):
        assert len(hw.devices) <= B.MAX_DEVICES and all(0 < d.memory_bytes <= B.MAX_MEMORY for d in hw.devices)
        assert 0 <= hw.ram_bytes <= B.MAX_MEMORY * B.MAX_HOSTS


# ---------------------------------------------------------------- recipe.json


@pytest.fixture(scope="module")
def recipe_doc(tmp_path_factory):
    from click.testing import CliRunner

    from planner.cli import main

    out = tmp_path_factory.mktemp("emit") / "r"
    assert CliRunner().invoke(main, ["recommend", "--model", "1b", "--target", "rtx4090", "--emit", str(out)]).exit_code == 0
    return json.loads((out / "recipe.json").read_text())


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_recipe_json_gives_a_validation_or_a_typed_error(recipe_doc, tmp_path_factory, data):
    from planner.validate import validate
    from profiles.targets import load_target

    doc = copy.deepcopy(recipe_doc)
    paths = [p for p in _paths(doc) if p[0] in ("plan", "model", "target", "recipes", "schema")]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        node = doc
        try:
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = data.draw(JSON_VALUE)
        except (KeyError, IndexError, TypeError):
            pass
    p = WORK / "recipe.json"
    p.write_text(json.dumps(doc))
    result = bounded(lambda: validate(p, hw=load_target("rtx4090")))
    assert isinstance(result, TYPED) or isinstance(result.ok, bool)


def test_the_seeds_plan(tmp_path):
    """The unmutated seeds are valid inputs: the fuzz starts from files that plan."""
    for arch in ("gemma2", "gemma3", "gemma4"):
        fz.write_gguf(tmp_path / f"{arch}.gguf", *fz.gguf_seed(arch))
        assert fz.run_one(str(tmp_path / f"{arch}.gguf"))[0] == "plan", arch
    header, body = fz.st_header(fz.hf_tensors(fz.TINY_CONFIG))
    fz.write_hf_dir(tmp_path / "hf", fz.TINY_CONFIG, header, body)
    assert fz.run_one(str(tmp_path / "hf"))[0] == "plan"
