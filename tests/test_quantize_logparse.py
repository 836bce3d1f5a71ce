"""Pure parsing of llama.cpp's log, on logs captured from llama-cpp-python 0.3.36 (tests/fixtures/llama_logs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantize.llamacpp import KVCache, KVLayout, exact_kv_bytes, mib_to_bytes, parse_llama_log

LOGS = Path(__file__).parent / "fixtures" / "llama_logs"
MIB = 2**20


def _log(name: str) -> str:
    return (LOGS / f"{name}.log").read_text()


# fixture -> (model buffers MiB, [(cache, cells, layers, n_stream, MiB)], compute MiB, reason)
CASES = {
    "gemma3_iswa_nofa": ({"CPU_Mapped": 10.02}, [("non-SWA", 4096, 1, 1, 2.00), ("SWA", 256, 3, 1, 0.38)], 3.38,
                         "swa_full=False: SWA cache = pad256(window 16 + n_ubatch 64) = 256 cells"),
    "gemma3_swa_full": ({"CPU_Mapped": 10.02}, [("non-SWA", 4096, 1, 1, 2.00), ("SWA", 4096, 3, 1, 6.00)], 4.44,
                        "swa_full=True (the C default): SWA layers get the full context"),
    "gemma3_fa_q8_0": ({"CPU_Mapped": 10.02}, [("non-SWA", 4096, 1, 1, 1.06), ("SWA", 256, 3, 1, 0.20)], 1.25,
                       "q8_0 K and V need flash attention; 34/32 bytes per element"),
    "gemma4e_kvshare_nofa": ({"CPU_Mapped": 30.04}, [("non-SWA", 2048, 1, 1, 2.00), ("SWA", 256, 2, 1, 0.38)], 5.13,
                             "6 layers, 3 share KV: only 1 full + 2 sliding layers hold a cache"),
    "gemma4moe_q4km_repack": ({"CPU_Mapped": 3.14, "CPU_REPACK": 2.32}, [("non-SWA", 1024, 1, 1, 1.00),
                              ("SWA", 512, 3, 1, 1.50)], 3.26,
                              "Q4_K on CPU is repacked into a second, real buffer"),
    "gemma2_2seq": ({"CPU_Mapped": 10.02}, [("non-SWA", 1536, 2, 2, 3.00), ("SWA", 768, 2, 2, 1.50)], 6.77,
                    "n_seq_max=2, not unified: 2 streams of n_ctx/2 cells; SWA pad256(16 + 512) per stream"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_captured_logs(name):
    model, caches, compute, _reason = CASES[name]
    p = parse_llama_log(_log(name))
    assert p.by_kind("model") == {k: mib_to_bytes(v) for k, v in model.items()}
    assert [(c.name, c.cells, c.layers, c.n_stream, c.mib) for c in p.kv_caches] == caches
    assert p.by_kind("KV") == {"CPU": sum(mib_to_bytes(c[4]) for c in caches)}
    assert p.by_kind("compute") == {"CPU": mib_to_bytes(compute)}
    # the destructor repeats the compute size with 4 decimals
    assert abs(p.compute_at_free["CPU"] - mib_to_bytes(compute)) <= 0.005 * MIB
    assert p.context["n_ctx"] == str(caches[0][1] * caches[0][3])
    # each KV buffer line is attributed to the cache created just before it
    assert [c.buffers for c in p.kv_caches] == [{"CPU": mib_to_bytes(c[4])} for c in caches]


def test_layers_without_kv_are_listed():
    assert parse_llama_log(_log("gemma4e_kvshare_nofa")).layers_without_kv == [3, 4, 5]
    assert parse_llama_log(_log("gemma3_iswa_nofa")).layers_without_kv == []


def test_kv_types_and_seq_fields():
    c = parse_llama_log(_log("gemma3_fa_q8_0")).kv_caches[0]
    assert (c.k_type, c.v_type, c.k_mib, c.v_mib, c.n_seq_max) == ("q8_0", "q8_0", 0.53, 0.53, 1)


def test_older_prefixes_and_garbage_lines():
    p = parse_llama_log(_log("older_prefixes_handwritten"))
    # split files print one CPU_Mapped line each: summed
    assert p.by_kind("model") == {"CUDA0": mib_to_bytes(1234.56), "CPU_Mapped": mib_to_bytes(1000.0)}
    # one non-iSWA cache split over two devices
    assert [(c.name, c.cells, c.layers) for c in p.kv_caches] == [("", 4096, 32)]
    assert p.kv_caches[0].buffers == {"CUDA0": mib_to_bytes(160.0), "CPU": mib_to_bytes(96.0)}
    # a later reserve replaces an earlier one
    assert p.by_kind("compute") == {"CUDA0": mib_to_bytes(296.0), "CUDA_Host": mib_to_bytes(16.01)}
    assert p.by_kind("output") == {"CUDA_Host": mib_to_bytes(0.98)}
    assert p.output_realloc_mib == 250.50


def test_empty_log():
    p = parse_llama_log("")
    assert p.entries == [] and p.kv_caches == [] and p.by_kind("model") == {}


def _cache(name, cells, layers, mib, k="f16", v="f16", n_stream=1):
    return KVCache(name=name, cells=cells, layers=layers, n_seq_max=n_stream, n_stream=n_stream, mib=mib,
                   k_type=k, k_mib=0, v_type=v, v_mib=0)


# tiny gemma4_e: 6 layers [S,S,F,S,S,F], last 3 share KV, 1 KV head, head 128 (sliding) / 256 (full)
G4E = KVLayout(k_width=(128, 128, 256, 128, 128, 256), v_width=(128, 128, 256, 128, 128, 256),
               is_swa=(True, True, False, True, True, False), has_kv=(True, True, True, False, False, False))


@pytest.mark.parametrize("cache, v_trans, expected, reason", [
    (_cache("non-SWA", 2048, 1, 2.00), True, 2048 * (512 + 512), "one full layer, K and V 256 wide f16"),
    (_cache("SWA", 256, 2, 0.38), True, 256 * 2 * (256 + 512), "no FA: V padded to the widest V (256)"),
    (_cache("SWA", 256, 2, 0.25), False, 256 * 2 * (256 + 256), "FA: V keeps its own width"),
    (_cache("SWA", 256, 2, 0.38), False, None, "printed MiB disagrees: not derivable"),
    (_cache("SWA", 256, 3, 0.38), True, None, "layer count disagrees with the layout"),
    (_cache("non-SWA", 2048, 1, 1.06, "q8_0", "q8_0"), False, 2048 * 2 * (256 // 32 * 34), "q8_0: 34 B per 32"),
])
def test_exact_kv_bytes(cache, v_trans, expected, reason):
    assert exact_kv_bytes(cache, G4E, v_trans) == expected, reason


def test_exact_kv_bytes_counts_streams():
    layout = KVLayout(k_width=(128,) * 4, v_width=(128,) * 4, is_swa=(True, False) * 2, has_kv=(True,) * 4)
    assert exact_kv_bytes(_cache("non-SWA", 1536, 2, 3.00, n_stream=2), layout, False) == 2 * 1536 * 2 * 512
