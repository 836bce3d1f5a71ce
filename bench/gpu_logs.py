"""Score the llama.cpp memory model against public GPU load logs of Gemma models.

    PYTHONPATH=$PWD python bench/gpu_logs.py [--corpus tests/fixtures/gpu_logs/corpus.json] [--json OUT]

Each load in the corpus names its source, build, backend, settings and the buffer lines it printed
(parsed with quantize.llamacpp.parse_llama_log, the parser the CPU fidelity bench uses). The planner
is run with those settings on a one-GPU target of that backend, and every buffer the log names is
compared: weights on the GPU, KV, device compute, host compute, output. Errors are predicted minus
measured. Loads are split into a scored part and a held-back part by the SHA-256 of their source,
fixed before any rule was compared with them; the held-back part is reported separately.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.catalog import get_model  # noqa: E402
from planner.formats import parse_format  # noqa: E402
from planner.llama_versions import BUILDS, DEFAULT_BUILD, OLDER_RULES  # noqa: E402
from planner.memory import gpu_host_compute_bytes, llamacpp_kv_layout, llamacpp_memory  # noqa: E402
from planner.types import RuntimeSettings  # noqa: E402
from profiles.hardware import CPU, Device, Hardware  # noqa: E402
from quantize.llamacpp import mib_to_bytes, parse_llama_log  # noqa: E402

MIB = 1 << 20
CORPUS = ROOT / "tests" / "fixtures" / "gpu_logs" / "corpus.json"
HOST_BUFFERS = {"CUDA": "CUDA_Host", "ROCm": "ROCm_Host", "Vulkan": "Vulkan_Host", "Metal": "CPU"}
DEVICE_PREFIX = {"CUDA": "CUDA", "ROCm": "ROCm", "Vulkan": "Vulkan", "Metal": "MTL"}
HELD_BACK_FRACTION = 0.25


def source_key(load: dict) -> str:
    """One key per public source (a repository or thread, else the search-index id of a file): all loads
    of one source are held back together, so repeats of a configuration never straddle the split."""
    if load.get("source_group"):
        return load["source_group"]
    m = re.search(r"index id (\d+)", load["source"])
    return m.group(1) if m else load["source"].split()[0]


def held_back(load: dict) -> bool:
    """A quarter of the sources, chosen by the SHA-256 of their key: never used to choose or tune a rule."""
    return int(hashlib.sha256(source_key(load).encode()).hexdigest()[:8], 16) / 16**8 < HELD_BACK_FRACTION


@dataclass
class Row:
    load: str
    backend: str
    buffer: str
    predicted: int
    measured: int
    held_back: bool
    build: str
    claimed: bool  # a build whose graph inputs match the rules the planner claims (b11312)
    config: str = ""  # model, settings and backend: repeats of one configuration share it

    @property
    def error(self) -> int:
        return self.predicted - self.measured

    @property
    def pct(self) -> float:
        return 100.0 * self.error / self.measured if self.measured else 0.0


@dataclass
class Measured:
    """buffer kind -> bytes, as the load printed them."""

    values: dict[str, int] = field(default_factory=dict)


def measured_buffers(load: dict) -> dict[str, int]:
    backend = load["backend"]
    host = HOST_BUFFERS[backend]
    dev = DEVICE_PREFIX[backend]
    out: dict[str, int] = {}
    if load.get("lines"):
        p = parse_llama_log("\n".join(load["lines"]))
        for kind, key in (("model", "weights"), ("KV", "kv"), ("compute", "compute"), ("output", "output")):
            for buf, nbytes in p.by_kind(kind).items():
                if buf == host:
                    if kind in ("compute", "output"):
                        out[f"{key} (host)"] = nbytes
                elif buf.startswith(dev):
                    out[f"{key} (device)"] = out.get(f"{key} (device)", 0) + nbytes
        if not p.by_kind("KV") and p.kv_caches:
            out["kv (device)"] = sum(mib_to_bytes(c.mib) for c in p.kv_caches)
        elif p.kv_caches and "kv (device)" not in out:
            out["kv (device)"] = sum(mib_to_bytes(c.mib) for c in p.kv_caches)
    for name, mib in (load.get("table") or {}).items():
        which = "compute (host)" if name.startswith(("CPU", "CUDA_Host", "Vulkan_Host", "ROCm_Host")) else "compute (device)"
        out[which] = mib_to_bytes(mib)
    return out


def settings_of(load: dict) -> RuntimeSettings:
    st = load["settings"]
    return RuntimeSettings(
        engine="llama.cpp", n_ctx=st["n_ctx"], n_parallel=st["n_parallel"], n_batch=st["n_batch"], n_ubatch=st["n_ubatch"],
        type_k=st["type_k"], type_v=st["type_v"],
        # not stated: llama-server's -fa auto resolves to on for these backends (resolve_fused_ops)
        flash_attn=True if st["flash_attn"] is None else st["flash_attn"],
        swa_full=bool(st.get("swa_full", False)), kv_unified=bool(st["kv_unified"]),
        n_gpu_layers=-1 if st["n_gpu_layers"] in (-1, None) or st["n_gpu_layers"] > 500 else st["n_gpu_layers"],
        n_outputs_max=st.get("n_outputs_max") or 0)


def predicted_buffers(load: dict) -> dict[str, int]:
    spec, _ = get_model(load["model"])
    fmt = parse_format(load.get("quant") or "Q4_K_M", "llama.cpp")
    hw = Hardware("corpus", [Device("gpu", "x", load["backend"], 1 << 40)], 1 << 40, CPU(flags=[]))
    s = settings_of(load)
    mem = llamacpp_memory(spec, fmt, s, hw)
    gpu, host = mem.devices[0], mem.devices[-1]
    out = {"weights (device)": gpu.weights_bytes, "kv (device)": gpu.kv_bytes, "compute (device)": gpu.compute_bytes,
           "compute (host)": host.compute_bytes, "output (host)": host.output_bytes}
    if load.get("rules"):
        # a build older than any --engine-version: its graph inputs follow the rules that ended with it
        old = dataclasses.replace(BUILDS[DEFAULT_BUILD], **OLDER_RULES[load["rules"]])
        out["compute (host)"] = gpu_host_compute_bytes(spec, s, llamacpp_kv_layout(spec, s), old)
    return out


_SOURCE_OF: dict[str, str] = {}


def source_key_of(r: Row) -> str:
    return _SOURCE_OF.get(r.load, "?")


def score(corpus: Path) -> list[Row]:
    rows = []
    for load in json.loads(corpus.read_text())["loads"]:
        _SOURCE_OF[load["id"]] = source_key(load)
        meas = measured_buffers(load)
        pred = predicted_buffers(load)
        config = json.dumps([load["model"], load.get("file"), load["backend"], load["settings"], load.get("rules")], sort_keys=True)
        for buf, m in meas.items():
            if buf == "weights (device)" and not load.get("quant"):
                continue  # the file type is not stated: its weights cannot be planned
            if buf == "kv (device)" and load.get("kv_partial"):
                continue  # the excerpt holds one of the two caches
            if buf in pred:
                rows.append(Row(load["id"], load["backend"], buf, pred[buf], m, held_back(load),
                                load.get("build") or "?", load.get("claimed", True), config))
    return rows


def distinct(rows: list[Row]) -> list[Row]:
    """One row per configuration and buffer (repeated loads of one configuration log the same sizes)."""
    seen: dict = {}
    for r in rows:
        seen.setdefault((r.config, r.buffer, r.measured), r)
    return list(seen.values())


def table(rows: list[Row]) -> list[str]:
    out = ["| part | backend | buffer | loads | configs | median abs % | worst % | worst abs |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(not r.claimed, r.held_back, r.backend, r.buffer) for r in rows})
    for unclaimed, hb, backend, buf in keys:
        every = [r for r in rows if (not r.claimed, r.held_back, r.backend, r.buffer) == (unclaimed, hb, backend, buf)]
        sel = distinct(every)  # medians over configurations, so repeats do not outvote the rest
        worst = max(sel, key=lambda r: abs(r.pct))
        med = statistics.median(abs(r.pct) for r in sel)
        part = ("older build, held back" if hb else "older build") if unclaimed else ("held back" if hb else "scored")
        out.append(f"| {part} | {backend} | {buf} | {len(every)} | {len(sel)} | {med:.1f} | {worst.pct:+.1f} | "
                   f"{worst.error / MIB:+.2f} MiB |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--json", type=Path, help="write every row here")
    ap.add_argument("--rows", action="store_true", help="print every load and buffer")
    a = ap.parse_args(argv)
    rows = score(a.corpus)
    loads = {r.load for r in rows}
    configs = {r.config for r in rows}
    held = {r.load for r in rows if r.held_back}
    print(f"{len(loads)} loads ({len(configs)} distinct configurations), {len(rows)} buffers; "
          f"held back: {len(held)} loads from {len({source_key_of(r) for r in rows if r.held_back})} source(s)")
    print("\n".join(table(rows)))
    if a.rows:
        for r in rows:
            print(f"{'H' if r.held_back else ' '} {r.load:42s} {r.buffer:17s} pred {r.predicted / MIB:9.2f} meas {r.measured / MIB:9.2f} MiB  {r.pct:+6.1f}%")
    if a.json:
        a.json.write_text(json.dumps([r.__dict__ | {"error": r.error, "pct": round(r.pct, 3)} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
