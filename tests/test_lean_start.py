"""Planning starts lean: no numpy, gguf, torch or huggingface_hub on the recommend path (the hub's exact sizes are
read from their cache without it); the quant-size table it uses instead agrees with gguf-py's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from planner import ggml

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "gguf", "torch", "transformers", "llama_cpp", "huggingface_hub")


def test_quant_sizes_match_gguf():
    gguf = pytest.importorskip("gguf")
    ours = {name: (block, size) for name, (_, block, size) in ggml.GGML_TYPES.items()}
    theirs = {t.name: tuple(v) for t, v in gguf.GGML_QUANT_SIZES.items()}
    assert ours == theirs
    assert {name: tid for name, (tid, _, _) in ggml.GGML_TYPES.items()} == {t.name: t.value for t in gguf.GGML_QUANT_SIZES}


def test_value_types_match_gguf():
    gguf = pytest.importorskip("gguf")
    assert {v.name: v.value for v in ggml.GGUFValueType} == {v.name: v.value for v in gguf.GGUFValueType}


def test_unknown_type_is_an_error():
    with pytest.raises(ggml.UnknownGGMLTypeError):
        ggml.quant_size("Q9_Z")
    with pytest.raises(ggml.UnknownGGMLTypeError):
        ggml.type_name(999)


@pytest.mark.parametrize("argv", [
    ["recommend", "--model", "31b", "--target", "rtx4090"],
    ["recommend", "--model", "31b", "--target", "rtx4090", "--json"],
    ["estimate", "--model", "gemma-3-4b", "--quant", "Q4_K_M", "--target", "rtx4090"],
])
def test_planning_imports_nothing_heavy(argv):
    code = ("import sys\nfrom planner.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            f"print('HEAVY', sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "HEAVY []", out[-400:]
