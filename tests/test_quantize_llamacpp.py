"""llama.cpp quantization and load-and-measure through llama-cpp-python, on tiny converted models."""

from __future__ import annotations

import collections
import ctypes
from pathlib import Path

import gguf
import numpy as np
import pytest

from quantize.errors import OutputExistsError, QuantizationError

Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def lcpp(llama_cpp_module):
    from quantize import llamacpp

    return llamacpp


def _types(path: Path) -> dict[str, Q]:
    return {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}


def _use_more_bits(i: int, n: int) -> bool:
    # llama-quant.cpp use_more_bits: the layers Q4_K_M / Q5_K_M give Q6_K attn_v and ffn_down
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _expected_q4_k_m(name: str, n_layer: int) -> Q:
    if name.endswith("_norm.weight") or not name.endswith(".weight") or name.startswith("rope_freqs"):
        return Q.F32
    if name == "token_embd.weight":
        return Q.Q6_K  # tied embeddings follow the output tensor rule
    layer = int(name.split(".")[1])
    if name.endswith(("attn_v.weight", "ffn_down.weight")) and _use_more_bits(layer, n_layer):
        return Q.Q6_K
    return Q.Q4_K


def test_ftype_ids_come_from_the_binding(lcpp):
    ids = lcpp.ftype_ids()
    assert (ids["Q4_K_M"], ids["Q8_0"], ids["Q6_K"], ids["IQ4_XS"], ids["F16"], ids["F32"]) == (15, 7, 18, 30, 1, 0)


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q8_0"])
def test_quantize_mix_matches_llama_cpp_rules(ftype, lcpp, tiny_gguf, tmp_path):
    out = lcpp.quantize_gguf(tiny_gguf("gemma3_text", outtype="f16"), tmp_path / f"m.{ftype}.gguf", ftype, nthreads=2)
    types = _types(out)
    if ftype == "Q8_0":
        expected = {n: Q.Q8_0 if t == Q.F16 else t for n, t in _types(tiny_gguf("gemma3_text", outtype="f16")).items()}
    else:
        expected = {n: _expected_q4_k_m(n, 4) for n in types}
    assert types == expected
    hist = collections.Counter(t.name for t in types.values())
    if ftype == "Q4_K_M":  # 4 layers: use_more_bits picks layers 2 and 3
        assert hist == {"F32": 25, "Q4_K": 24, "Q6_K": 5}
    assert gguf.GGUFReader(out).fields["general.file_type"].contents() == lcpp.ftype_ids()[ftype]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_quantize_refusals_leave_files_alone(lcpp, tiny_gguf, tmp_path):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        lcpp.quantize_gguf(tiny_gguf("gemma2"), out, "Q8_0")
    with pytest.raises(QuantizationError, match="unknown file type"):
        lcpp.quantize_gguf(tiny_gguf("gemma2"), tmp_path / "y.gguf", "Q4_K_Z")
    assert out.read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf"]


def test_failed_quantization_cleans_up(lcpp, tiny_gguf, tmp_path):
    with pytest.raises(QuantizationError, match="imatrix"):
        lcpp.quantize_gguf(tiny_gguf("gemma3_text"), tmp_path / "x.gguf", "IQ2_XXS", nthreads=2)
    assert list(tmp_path.iterdir()) == []


def _write_imatrix(model: Path, dest: Path) -> Path:
    """A synthetic GGUF-format importance matrix: every 2-D weight's columns weighted 1..ne0."""
    w = gguf.GGUFWriter(dest, "imatrix")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["synthetic"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", 512)
    for t in gguf.GGUFReader(model).tensors:
        if len(t.shape) == 2 and t.name.endswith(".weight") and "norm" not in t.name:
            ne0 = int(t.shape[0])
            w.add_tensor(f"{t.name}.in_sum2", 2.0 * np.arange(1, ne0 + 1, dtype=np.float32).reshape(1, ne0))
            w.add_tensor(f"{t.name}.counts", np.array([[2.0]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dest


def test_quantize_with_importance_matrix(lcpp, tiny_gguf, tmp_path):
    src = tiny_gguf("gemma3_text")
    imatrix = _write_imatrix(src, tmp_path / "imatrix.gguf")
    loaded = lcpp.load_imatrix(imatrix)
    np.testing.assert_array_equal(loaded["blk.0.attn_q.weight"], np.arange(1, 257, dtype=np.float32))  # sums / counts
    out = lcpp.quantize_gguf(src, tmp_path / "iq2.gguf", "IQ2_XXS", nthreads=2, imatrix=imatrix)
    assert Q.IQ2_XXS in set(_types(out).values())


def _kv_row(config_heads: int, head_dim: int) -> int:
    return config_heads * head_dim * 2  # f16 bytes per cell per layer, K or V


def test_load_and_measure_reports_llama_cpp_allocations(lcpp, tiny_gguf):
    # tiny gemma3_text: 4 layers [S,S,S,F], 1 KV head x 128, sliding window 16
    m = lcpp.load_and_measure(tiny_gguf("gemma3_text", outtype="f16"), n_ctx=1000, n_batch=256, n_ubatch=64,
                              flash_attn=True, type_k="f16", type_v="f16", swa_full=False, n_tokens=3)
    assert m.n_ctx == 1024  # padded to 256
    assert [(c.name, c.cells, c.layers) for c in m.kv_caches] == [("non-SWA", 1024, 1), ("SWA", 256, 3)]
    row = 2 * _kv_row(1, 128)
    assert m.kv_bytes == 1024 * 1 * row + 256 * 3 * row  # exact, not the 2-decimal MiB
    assert all(c.exact_bytes is not None for c in m.kv_caches)
    assert abs(m.model_buffers["CPU_Mapped"] - m.model_size) < 64 * 1024
    assert m.compute_buffers["CPU"] > 0 and abs(m.compute_buffers_at_free["CPU"] - m.compute_buffers["CPU"]) < 6000
    assert len(m.generated_tokens) >= 1 and m.prompt_tokens[0] == 2  # BOS added
    assert m.library == "llama-cpp-python 0.3.36"
    assert m.settings["swa_full"] is False and "sched_reserve" in m.log
    assert "log" not in m.to_dict() and m.to_dict()["kv_bytes"] == m.kv_bytes


def test_swa_full_and_kv_sharing_are_visible(lcpp, tiny_gguf):
    full = lcpp.load_and_measure(tiny_gguf("gemma3_text"), n_ctx=1024, n_batch=64, n_ubatch=64, flash_attn=False,
                                 type_k="f16", type_v="f16", swa_full=True, n_tokens=1)
    assert [c.cells for c in full.kv_caches] == [1024, 1024]
    # gemma4_e: 6 layers, last 3 reuse KV; without FA every V row is padded to the widest (256)
    e = lcpp.load_and_measure(tiny_gguf("gemma4_e"), n_ctx=512, n_batch=64, n_ubatch=64, flash_attn=False,
                              type_k="f16", type_v="f16", swa_full=False, n_tokens=1)
    assert e.layers_without_kv == [3, 4, 5]
    assert [(c.name, c.cells, c.layers) for c in e.kv_caches] == [("non-SWA", 512, 1), ("SWA", 256, 2)]
    assert e.kv_caches[1].exact_bytes == 256 * 2 * (128 * 2 + 256 * 2)


def test_quantized_weights_get_a_repacked_copy_on_cpu(lcpp, tiny_gguf, tmp_path):
    q = lcpp.quantize_gguf(tiny_gguf("gemma4_moe"), tmp_path / "q.gguf", "Q4_K_M", nthreads=2)
    m = lcpp.load_and_measure(q, n_ctx=512, n_batch=64, n_ubatch=64, flash_attn=True, type_k="q8_0", type_v="q8_0",
                              swa_full=False, n_tokens=1)
    assert set(m.model_buffers) == {"CPU_Mapped", "CPU_REPACK"}
    assert m.kv_caches[0].k_type == "q8_0" and all(c.exact_bytes for c in m.kv_caches)


def test_quantized_v_without_flash_attention_is_refused(lcpp, tiny_gguf):
    with pytest.raises(QuantizationError, match="context"):
        lcpp.load_and_measure(tiny_gguf("gemma3_text"), n_ctx=256, n_batch=64, n_ubatch=64, flash_attn=False,
                              type_k="f16", type_v="q8_0", swa_full=False)


def test_log_callback_is_restored(lcpp, llama_cpp_module, tiny_gguf):
    lc = llama_cpp_module

    def current() -> int | None:
        cb, ud = lc.llama_log_callback(), ctypes.c_void_p()
        lc.llama_log_get(ctypes.byref(cb), ctypes.byref(ud))
        return ctypes.cast(cb, ctypes.c_void_p).value

    before = current()
    lcpp.load_and_measure(tiny_gguf("gemma2"), n_ctx=256, n_batch=64, n_ubatch=64, flash_attn=False,
                          type_k="f16", type_v="f16", swa_full=False, n_tokens=1)
    assert current() == before


def test_missing_file(lcpp, tmp_path):
    with pytest.raises(QuantizationError, match="does not exist"):
        lcpp.load_and_measure(tmp_path / "nope.gguf", n_ctx=256, n_batch=64, n_ubatch=64, flash_attn=False,
                              type_k="f16", type_v="f16", swa_full=False)
