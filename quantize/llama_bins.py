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
        src = _extract_llama_cpp(Path(sdist) if sdist else _sdist_path(root, work, version), work / "src")
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


# The multimodal library (tools/mtmd: clip, the vision/audio encoders, the image/audio preprocessors) is what
# llama-cpp-python's multimodal chat handlers load through ``llama_cpp.mtmd_cpp`` (``MTMD_CPP_LIB`` or
# ``libmtmd.so`` next to its ``libllama.so``). The pinned wheel is built with ``-DLLAVA_BUILD=OFF``, so it is
# not there. It is built here from the same vendored sources against the wheel's own ``libllama.so`` and
# ``libggml*.so`` (imported targets), so ggml and llama are not compiled a second time and the library runs
# in the very process and allocator that llama-cpp-python uses.
MTMD_LIB = "libmtmd.so"
_MTMD_CMAKE = """cmake_minimum_required(VERSION 3.14)
project(gemma_plan_mtmd C CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
set(BUILD_SHARED_LIBS ON)
set(LLAMA_BUILD_TOOLS OFF)
set(LLAMA_SUBPROCESS OFF)
set(LLAMA_VERSION_MAJOR 0)
set(LLAMA_VERSION_BASE 0.5.0)
find_package(Threads REQUIRED)
include(${LLAMA_SRC}/cmake/common.cmake)
foreach(lib ggml-base ggml-cpu ggml llama)
  add_library(${lib} SHARED IMPORTED)
  set_target_properties(${lib} PROPERTIES IMPORTED_LOCATION ${WHEEL_LIB}/lib${lib}.so
    INTERFACE_INCLUDE_DIRECTORIES "${LLAMA_SRC}/include;${LLAMA_SRC}/ggml/include")
endforeach()
set_target_properties(ggml PROPERTIES INTERFACE_LINK_LIBRARIES "ggml-base;ggml-cpu")
set_target_properties(llama PROPERTIES INTERFACE_LINK_LIBRARIES "ggml")
add_subdirectory(${LLAMA_SRC}/vendor vendor)
add_subdirectory(${LLAMA_SRC}/tools/mtmd mtmd)
"""


def wheel_lib_dir() -> Path:
    """``llama_cpp/lib`` of the installed llama-cpp-python (its libllama.so / libggml*.so)."""
    import importlib.util
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        raise SystemExit("llama-cpp-python is not installed: pip install 'gemma-plan[gguf]'")
    return Path(spec.origin).parent / "lib"


def mtmd_lib(version: str = LLAMA_CPP_PYTHON_VERSION) -> Optional[Path]:
    """The built ``libmtmd.so`` for this llama-cpp-python version, or None."""
    f = cache_root(version) / "mtmd" / MTMD_LIB
    return f if f.is_file() else None


def _sdist_path(root: Path, work: Path, version: str) -> Path:
    """The pinned sdist, downloaded once into the cache (moved in whole) and kept for later builds."""
    kept = root / f"llama_cpp_python-{version}.tar.gz"
    if not kept.is_file():
        got = _download_sdist(work / "dl", version)
        shutil.copyfile(got, work / "sdist.part")
        os.replace(work / "sdist.part", kept)
    return kept


def build_mtmd(version: str = LLAMA_CPP_PYTHON_VERSION, sdist: Optional[Path] = None,
               jobs: Optional[int] = None) -> Path:
    """Build ``libmtmd.so`` into ``<cache>/mtmd`` (no-op when there); returns its path."""
    have = mtmd_lib(version)
    if have:
        return have
    root = cache_root(version)
    root.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    wheel = wheel_lib_dir()
    if not (wheel / "libllama.so").is_file():
        raise SystemExit(f"{wheel} has no libllama.so: llama-cpp-python {version} must be installed as a shared build")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="build-mtmd-", dir=root) as tmp:
        work = Path(tmp)
        src = _extract_llama_cpp(Path(sdist) if sdist else _sdist_path(root, work, version), work / "src")
        proj = work / "proj"
        proj.mkdir()
        (proj / "CMakeLists.txt").write_text(_MTMD_CMAKE, encoding="utf-8")
        (proj / "ggml").symlink_to(src / "ggml")  # llama.cpp's cmake/common.cmake includes ggml/cmake/common.cmake
        build_dir = work / "build"
        flags = [f"-DLLAMA_SRC={src}", f"-DWHEEL_LIB={wheel}", "-DCMAKE_BUILD_TYPE=Release"]
        subprocess.run(["cmake", "-S", str(proj), "-B", str(build_dir), *flags], check=True, stdout=sys.stderr)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", "mtmd"],
                       check=True, stdout=sys.stderr)
        built = sorted(build_dir.rglob("libmtmd.so*"), key=lambda f: (f.is_symlink(), len(f.name)))
        real = next((f for f in built if not f.is_symlink()), None)
        if real is None:
            raise SystemExit(f"the build produced no libmtmd.so in {build_dir}")
        staged = work / "mtmd"
        staged.mkdir()
        shutil.copy2(real, staged / MTMD_LIB)
        (staged / "BUILD_INFO").write_text(
            f"llama-cpp-python {version}\nlibmtmd.so against {wheel}\n"
            f"seconds {time.monotonic() - t0:.0f} with -j {jobs}\n", encoding="utf-8")
        final = root / "mtmd"
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)
    print(f"built {MTMD_LIB} in {time.monotonic() - t0:.0f} s (-j {jobs})", file=sys.stderr)
    return root / "mtmd" / MTMD_LIB


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quantize.llama_bins", description=__doc__.split("\n\n")[0])
    ap.add_argument("--where", action="store_true", help="print the bin directory if built; exit 1 if not")
    ap.add_argument("--sdist", type=Path, help="use this llama-cpp-python sdist instead of downloading it")
    ap.add_argument("--jobs", "-j", type=int, help="parallel compile jobs (default: all cores)")
    ap.add_argument("--mtmd", action="store_true",
                    help="build (or with --where: locate) libmtmd.so, the multimodal library llama-cpp-python loads")
    args = ap.parse_args(argv)
    if args.where:
        found = mtmd_lib() if args.mtmd else bin_dir()
        if found is None:
            cmd = "python -m quantize.llama_bins" + (" --mtmd" if args.mtmd else "")
            print(f"not built: run `{cmd}` (cache {cache_root()})", file=sys.stderr)
            return 1
        print(found)
        return 0
    if args.jobs is not None and args.jobs < 1:
        ap.error("--jobs must be at least 1")
    print((build_mtmd if args.mtmd else build)(sdist=args.sdist, jobs=args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
