"""The planner against the real llama.cpp (llama-cpp-python 0.3.36): KV cells and bytes it allocates."""

import re

import pytest

from planner.formats import parse_format
from planner.memory import llamacpp_memory
from planner.sources import load_model
from planner.types import RuntimeSettings
from profiles.hardware import CPU, Hardware

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is the [gguf] extra")

from test_catalog_cli import _write_gguf  # noqa: E402

KV_LINE = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB \(\s*(\d+) cells,\s+(\d+) layers")


@pytest.mark.parametrize("n_ctx,n_ubatch,swa_full", [(4096, 512, False), (1000, 128, False), (4096, 512, True)])
def test_kv_cells_and_bytes_match_llamacpp(tmp_path, capfd, n_ctx, n_ubatch, swa_full):
    path = _write_gguf(tmp_path / "tiny.gguf")
    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=512, n_ubatch=n_ubatch, flash_attn=True, swa_full=swa_full,
                          n_gpu_layers=0, type_k=1, type_v=1, verbose=True)
    del llm
    log = capfd.readouterr().err
    caches = [(float(mib), int(cells), int(layers)) for mib, cells, layers in KV_LINE.findall(log)]
    spec, _ = load_model(str(path))
    hw = Hardware("cpu", [], 8 << 30, CPU(flags=[]))
    mem = llamacpp_memory(spec, parse_format("F16"), RuntimeSettings(n_ctx=n_ctx, n_ubatch=n_ubatch, swa_full=swa_full), hw)
    cells = mem.kv_cells
    assert sorted(c for _, c, _ in caches) == sorted([cells["full"], cells["swa"]])
    measured = sum(round(mib * (1 << 20)) for mib, _, _ in caches)
    assert abs(measured - mem.kv_bytes) <= 2 * 0.005 * (1 << 20)  # the log prints MiB with two decimals
