"""Shared fixtures. Tiny random Gemma checkpoints and their GGUFs are built once per session, on first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest


def _key(family: str, kw: dict[str, Any]) -> str:
    return family + "".join(f"-{k}{v}" for k, v in sorted(kw.items()))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Callable[..., Path]:
    """tiny_model(family, **build_kwargs) -> checkpoint dir (quantize.tiny.build_tiny_model)."""
    pytest.importorskip("torch", reason="tiny models need torch (pip install 'gemma-plan[gguf]')")
    pytest.importorskip("transformers", reason="tiny models need transformers")
    pytest.importorskip("sentencepiece", reason="tiny models need sentencepiece")
    from quantize.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    cache: dict[str, Path] = {}

    def get(family: str, **kw: Any) -> Path:
        key = _key(family, kw)
        if key not in cache:
            cache[key] = build_tiny_model(root / key, family, **kw)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model, tmp_path_factory) -> Callable[..., Path]:
    """tiny_gguf(family, outtype="f32", **build_kwargs) -> converted GGUF path."""
    from quantize.convert import convert_hf_to_gguf

    root = tmp_path_factory.mktemp("gguf")
    cache: dict[str, Path] = {}

    def get(family: str, outtype: str = "f32", **kw: Any) -> Path:
        key = _key(family, kw) + f".{outtype}"
        if key not in cache:
            cache[key] = convert_hf_to_gguf(tiny_model(family, **kw), root / f"{key}.gguf", outtype=outtype)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def llama_cpp_module():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'gemma-plan[gguf]')")


def cli_error(r, code: int = 1) -> str:
    """The one-line error of a CliRunner result: the exit code, a handled exit (an unhandled exception would
    be in r.exception; click's runner never prints a traceback into r.output), one line; returns that line."""
    assert r.exit_code == code, r.output
    assert isinstance(r.exception, SystemExit), f"unhandled {type(r.exception).__name__}: {r.exception}"
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    return lines[0]


@pytest.fixture
def one_line_error():
    return cli_error
