"""Build ``llama-server``, ``llama-cli`` and ``ggml-rpc-server`` from the llama.cpp that llama-cpp-python vendors.

    python -m quantize.llama_bins            # build once (CPU, RPC on, Release) and print the bin directory
    python -m quantize.llama_bins --where    # print the bin directory if the binaries are there, else exit 1

The recipes name these programs, and the tests run the emitted scripts with them, so they come from the
same llama.cpp commit the memory model mirrors: the sources inside the pinned llama-cpp-python sdist
(``pip download --no-deps --no-binary :all: llama-cpp-python==VERSION``). Only those three targets are
built, statically linked, with ``-DGGML_RPC=ON`` and without ``-march=native`` (AVX2/FMA/F16C on x86). The result lives in a cache directory keyed by the
version (``$GEMMA_PLAN_LLAMA_BINS``, default ``~/.cache/gemma-plan/llama-bins-VERSION``) and is built
into a temporary directory first and renamed into place, so a half-finished build is never found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Optional

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
PROGRAMS = ("llama-server", "llama-cli", "ggml-rpc-server")
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release", "-DGGML_RPC=ON", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF", "-DGGML_CUDA=OFF", "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF",
    # not -march=native: on an AMX CPU a native build takes ggml's AMX path for quantized matmuls, which died
    # with SIGILL (`tilezero`) in a Q8_0 generation on the virtual machine this was written on
    "-DGGML_NATIVE=OFF",
]


def cache_root(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    env = os.environ.get("GEMMA_PLAN_LLAMA_BINS")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gemma-plan" / f"llama-bins-{version}"


def bin_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Optional[Path]:
    """The directory holding all three programs, or None when they have not been built."""
    d = cache_root(version) / "bin"
    if all((d / p).is_file() and os.access(d / p, os.X_OK) for p in PROGRAMS):
        return d
    return None


def _download_sdist(dest: Path, version: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(dest),
           f"llama-cpp-python=={version}"]
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    found = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz")) + sorted(dest.glob(f"llama-cpp-python-{version}.tar.gz"))
    if not found:
        raise SystemExit(f"pip download did not produce llama_cpp_python-{version}.tar.gz in {dest}")
    return found[0]


def _extract_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Unpack the sdist (members checked by tarfile's 'data' filter: no links out, no absolute paths)."""
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    roots = [p for p in dest.iterdir() if p.is_dir()]
    src = roots[0] / "vendor" / "llama.cpp" if len(roots) == 1 else None
    if src is None or not (src / "CMakeLists.txt").is_file():
        raise SystemExit(f"{sdist} has no vendor/llama.cpp")
    return src


def build(version: str = LLAMA_CPP_PYTHON_VERSION, sdist: Optional[Path] = None, jobs: Optional[int] = None) -> Path:
    """Build the three programs into the cache (no-op when they are there); returns the bin directory."""
    have = bin_dir(version)
    if have:
        return have
    root = cache_root(version)
    root.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="build-", dir=root) as tmp:
        work = Path(tmp)
        if sdist is None:
            kept = root / f"llama_cpp_python-{version}.tar.gz"
            if not kept.is_file():
                got = _download_sdist(work / "dl", version)
                shutil.copyfile(got, work / "sdist.part")
                os.replace(work / "sdist.part", kept)
            sdist = kept
        src = _extract_llama_cpp(Path(sdist), work / "src")
        build_dir = work / "build"
        subprocess.run(["cmake", "-S", str(src), "-B", str(build_dir), *CMAKE_FLAGS], check=True, stdout=sys.stderr)
        subprocess.run(["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs), "--target", *PROGRAMS],
                       check=True, stdout=sys.stderr)
        staged = work / "bin"
        staged.mkdir()
        for p in PROGRAMS:
            shutil.copy2(build_dir / "bin" / p, staged / p)
        (staged / "BUILD_INFO").write_text(f"llama-cpp-python {version}\ncmake {' '.join(CMAKE_FLAGS)}\n"
                                           f"seconds {time.monotonic() - t0:.0f} with -j {jobs}\n", encoding="utf-8")
        final = root / "bin"
        if final.exists():  # an incomplete earlier result
            shutil.rmtree(final)
        os.replace(staged, final)
    print(f"built {', '.join(PROGRAMS)} in {time.monotonic() - t0:.0f} s (-j {jobs})", file=sys.stderr)
    return root / "bin"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quantize.llama_bins", description=__doc__.split("\n\n")[0])
    ap.add_argument("--where", action="store_true", help="print the bin directory if built; exit 1 if not")
    ap.add_argument("--sdist", type=Path, help="use this llama-cpp-python sdist instead of downloading it")
    ap.add_argument("--jobs", "-j", type=int, help="parallel compile jobs (default: all cores)")
    args = ap.parse_args(argv)
    if args.where:
        d = bin_dir()
        if d is None:
            print(f"not built: run `python -m quantize.llama_bins` (cache {cache_root()})", file=sys.stderr)
            return 1
        print(d)
        return 0
    if args.jobs is not None and args.jobs < 1:
        ap.error("--jobs must be at least 1")
    print(build(sdist=args.sdist, jobs=args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
