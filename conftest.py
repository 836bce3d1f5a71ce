"""Hermetic test runs: no test reads or writes the user's config, caches or home, and none reaches the network.

pytest loads this file before tests/conftest.py and before any test module, so the environment below is in
place before anything imports huggingface_hub (which reads HF_HUB_OFFLINE and HF_HOME once, at import).

- One session directory holds HOME, the XDG dirs, the Hugging Face cache, matplotlib's config and the
  torch/GPTQModel extension build caches (GPTQModel compiles ``pack_block_cpu`` under
  ``GPTQMODEL_TORCH_EXTENSIONS_DIR``, by default ``~/.cache/gemma-plan/..``); it is removed at the end.
  A build cache the caller names explicitly (``GPTQMODEL_TORCH_EXTENSIONS_DIR``, ``TORCH_EXTENSIONS_DIR``)
  is kept, so CI can reuse one.
- Every test then gets its own HOME and XDG config/cache dirs, so a target saved by one test (or a user
  target named like a packaged one) is never seen by another.
- llama.cpp's programs are a deliberate build cache outside the temp dirs (``python -m quantize.llama_bins``):
  their location is taken from the real environment before it is redirected and passed on as
  ``GEMMA_PLAN_LLAMA_BINS``.
- Outbound sockets are refused except loopback and Unix sockets (tests run local servers and a local hub).
- hypothesis keeps its example database in the session dir (``HYPOTHESIS_STORAGE_DIRECTORY`` to keep one).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

# A plugin imported it first: its constants already point at the user's cache. (An earlier pytest session in the
# same process, as mutmut runs them, imported it after redirecting HF_HOME to that session's dir: that is hermetic.)
_EARLIER_SESSION = os.environ.get("HF_HOME", "").startswith(os.path.join(tempfile.gettempdir(), "gemma-plan-tests-"))
if "huggingface_hub" in sys.modules and not _EARLIER_SESSION:
    raise RuntimeError("huggingface_hub was imported before the root conftest.py; the hermetic setup cannot apply")

# The llama.cpp programs (pytest has put this directory first on sys.path): resolved against the real HOME/XDG_CACHE_HOME before they are redirected.
if not os.environ.get("GEMMA_PLAN_LLAMA_BINS"):
    from quantize.llama_bins import cache_root  # stdlib only

    os.environ["GEMMA_PLAN_LLAMA_BINS"] = str(cache_root())

_SESSION = Path(tempfile.mkdtemp(prefix="gemma-plan-tests-"))
_HOME_VARS = ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")


def _home_env(base: Path) -> dict[str, str]:
    return {"HOME": str(base / "home"), "XDG_CONFIG_HOME": str(base / "config"), "XDG_CACHE_HOME": str(base / "cache"),
            "XDG_DATA_HOME": str(base / "data"), "XDG_STATE_HOME": str(base / "state")}


_ENV = {
    **_home_env(_SESSION),
    "HF_HOME": str(_SESSION / "hf"),
    "HF_HUB_CACHE": str(_SESSION / "hf" / "hub"),
    "HF_TOKEN_PATH": str(_SESSION / "hf" / "token"),
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MPLCONFIGDIR": str(_SESSION / "matplotlib"),
    "TRITON_CACHE_DIR": str(_SESSION / "triton"),
    "TORCHINDUCTOR_CACHE_DIR": str(_SESSION / "inductor"),
}
for _var, _dir in (("TORCH_EXTENSIONS_DIR", "torch_extensions"), ("GPTQMODEL_TORCH_EXTENSIONS_DIR", "gptqmodel_extensions")):
    _ENV[_var] = os.environ.get(_var) or str(_SESSION / _dir)
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
    os.environ.pop(_var, None)
os.environ.update(_ENV)
for _var in _HOME_VARS:
    Path(os.environ[_var]).mkdir(parents=True, exist_ok=True)


# hypothesis keeps its examples and constants in the session dir too (default: .hypothesis/ in the working
# directory); its pytest plugin is loaded before this file, so the directory is also set directly
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(_SESSION / "hypothesis"))
try:
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(os.environ["HYPOTHESIS_STORAGE_DIRECTORY"])
except ImportError:
    pass


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION, ignore_errors=True)


@pytest.fixture(autouse=True)
def _hermetic_home(tmp_path_factory, monkeypatch):
    """A fresh HOME and XDG config/cache for each test (platformdirs reads them on every call)."""
    base = tmp_path_factory.mktemp("home", numbered=True)
    for var, value in _home_env(base).items():
        Path(value).mkdir()
        monkeypatch.setenv(var, value)
    yield base


# ---------------------------------------------------------------- network: loopback and Unix sockets only


class NetworkBlockedError(OSError):
    pass


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX path or abstract name
        return True
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS


_real_connect, _real_connect_ex = socket.socket.connect, socket.socket.connect_ex


def _guarded(real):
    def connect(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
            raise NetworkBlockedError(f"tests may not reach the network (connect to {address!r}); use a local server")
        return real(self, address, *args)

    return connect


socket.socket.connect = _guarded(_real_connect)
socket.socket.connect_ex = _guarded(_real_connect_ex)
