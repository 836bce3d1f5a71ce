"""Named target profiles: the packaged ``profiles/targets/*.toml`` and the user's own.

A target file is flat TOML (format in ``docs/targets.md``). Quantities carry their unit in the key
(``memory_gib`` or ``memory_bytes``, ``bandwidth_gb_s`` or ``bandwidth_bytes_per_s``); the loader
turns every one into bytes, bytes/s or FLOP/s. User targets live in
``platformdirs.user_config_dir("gemma-plan")/targets`` and shadow packaged ones of the same name.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli (pyproject: tomli; python_version < '3.11')
    import tomli as tomllib

from profiles import bounds as B
from profiles.errors import InvalidTargetError, TargetExistsError, UnknownTargetError
from profiles.hardware import CPU, Device, Hardware, Host
from profiles.unified import apple_gpu_limit_bytes
from profiles.units import GB, GiB, TFLOPS

APP_NAME = "gemma-plan"

KINDS = ("desktop", "server", "laptop", "apple", "phone", "sbc", "cluster")
VENDORS = ("nvidia", "amd", "apple", "intel", "qualcomm", "google", "arm", "cpu")
BACKENDS = ("CUDA", "ROCm", "Metal", "Vulkan", "OpenCL", "SYCL", "CPU")
DEVICE_CLASSES = ("consumer_gpu", "datacenter_gpu", "apple", "apu", "cpu", "phone", "sbc")
RAM_BANDWIDTH_SOURCES = ("", "measured", "catalog")

# How a unified device's GPU budget is derived from its physical total when the file gives no memory_*.
MEMORY_RULES: dict[str, Callable[[int], int]] = {
    "apple-default": lambda total: apple_gpu_limit_bytes(total),
}

# A quantity is written with exactly one of these unit suffixes: key = base + "_" + suffix.
_BYTES = {"bytes": 1, "gib": GiB}
_RATE = {"bytes_per_s": 1, "gb_s": GB}
_NETWORK = {"bytes_per_s": 1, "gb_s": GB, "gbit_s": GB // 8}
_FLOPS = {"flops": 1, "tflops": TFLOPS}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: "$" would let a trailing newline through

_TOP_KEYS = {"name", "kind", "source", "hardware_ids", "notes", "cpu", "devices", "hosts",
             "ram_bandwidth_source", "speed"}
_TOP_QUANTITIES = {"ram": _BYTES, "ram_bandwidth": _RATE, "memory_limit": _BYTES, "network": _NETWORK}
_DEVICE_KEYS = {"name", "aliases", "vendor", "backend", "unified", "integrated", "compute_capability",
                "device_class", "notes", "count", "ram_options_gb", "partition", "memory_rule"}
_DEVICE_QUANTITIES = {"memory": _BYTES, "total": _BYTES, "bandwidth": _RATE, "fp16": _FLOPS}
_HOST_KEYS = {"name", "count", "devices"}
_HOST_QUANTITIES = {"ram": _BYTES}
_CPU_KEYS = {"name", "cores_physical", "cores_logical", "flags", "arch"}

PathLike = Union[str, os.PathLike]
# Upper bound of each kind of quantity, in the loader's units (bytes, bytes/s, FLOP/s).
_LIMITS = {id(_BYTES): (B.MAX_MEMORY, "1 PiB"), id(_RATE): (B.MAX_BANDWIDTH, "1 PB/s"),
           id(_NETWORK): (B.MAX_NETWORK, "10 TB/s"), id(_FLOPS): (B.MAX_FLOPS, "1 EFLOP/s")}


# --------------------------------------------------------------------------- locations


def user_targets_dir() -> Path:
    """Where ``detect --save`` writes and where names are looked up first."""
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME)) / "targets"


def _packaged_dir():
    return resources.files("profiles") / "targets"


def packaged_target_names() -> list[str]:
    return sorted(p.name[:-5] for p in _packaged_dir().iterdir() if p.name.endswith(".toml"))


def user_target_names() -> list[str]:
    d = user_targets_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.toml") if _NAME_RE.match(p.stem))


# --------------------------------------------------------------------------- public API


def load_target(name_or_path: PathLike) -> Hardware:
    """A target by name (user config dir first, then packaged) or by path to a ``.toml`` file."""
    text = os.fspath(name_or_path)
    if _looks_like_path(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise UnknownTargetError(text, message=f"no target file at {path}")
        return parse_target_text(_read_text(path), origin=str(path), default_name=path.stem)
    user = user_targets_dir() / f"{text}.toml"
    if _NAME_RE.match(text) and user.is_file():
        return parse_target_text(_read_text(user), origin=str(user), default_name=text)
    if text in packaged_target_names():
        return copy.deepcopy(_load_packaged(text))
    raise UnknownTargetError(text, known=sorted(set(packaged_target_names()) | set(user_target_names())))


def list_targets() -> list[Hardware]:
    """Every target by name, user targets shadowing packaged ones; sorted by name."""
    names = sorted(set(packaged_target_names()) | set(user_target_names()))
    return [load_target(n) for n in names]


def target_save_path(name: str, force: bool = False) -> Path:
    """Where ``save_target`` would write ``name``; raises now if it would refuse (check before slow work)."""
    if not _NAME_RE.match(name):
        err = InvalidTargetError("--save", "name", f"{name!r} is not a target name")
        err.hint = "use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit), e.g. --save my-desktop"
        raise err
    path = user_targets_dir() / f"{name}.toml"
    if not force:
        if path.exists():
            raise TargetExistsError(f"target {name!r} already exists at {path}")
        if name in packaged_target_names():
            raise TargetExistsError(f"{name!r} is a packaged target; saving would shadow it")
    return path


def save_target(hw: Hardware, name: str, force: bool = False) -> Path:
    """Write ``hw`` as the user target ``name`` (atomically); refuses to overwrite or shadow a packaged
    target without ``force``. Detection-only fields (free memory, PCI ids) are not written."""
    path = target_save_path(name, force)
    directory = path.parent
    out = copy.deepcopy(hw)
    out.name = name
    text = hardware_to_toml(out)
    parse_target_text(text, origin=str(path), default_name=name)  # never write what we cannot read back
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".toml.tmp", dir=directory)  # O_EXCL | O_NOFOLLOW
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)  # replaces a link at path, never writes through it
        else:
            try:  # atomic and refuses any existing name: of two concurrent saves one wins
                os.link(tmp, path, follow_symlinks=False)
            except FileExistsError:
                raise TargetExistsError(f"target {name!r} already exists at {path}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def targets_for_hardware_id(ref_id: str) -> list[Hardware]:
    """Packaged targets whose ``hardware_ids`` include ``ref_id`` (an id of hardware_specs.json)."""
    return [copy.deepcopy(_load_packaged(n)) for n in packaged_target_names()
            if ref_id in _load_packaged(n).hardware_ids]


def target_for_hardware_id(ref_id: str, n_devices: Optional[int] = None) -> Optional[Hardware]:
    """The packaged target a calibration row's ``hardware_id`` (and ``n_devices``) stands for.

    Several targets may share an id (``rtx3090`` and ``2x-rtx3090``): the one with ``n_devices``
    devices wins, then the one with the fewest devices, then the first by name.
    """
    found = targets_for_hardware_id(ref_id)
    if not found:
        return None

    def key(hw: Hardware):
        mismatch = n_devices is not None and len(hw.devices) != n_devices
        return (mismatch, len(hw.devices), hw.name)

    return min(found, key=key)


# --------------------------------------------------------------------------- parsing


def parse_target_text(text: str, origin: str = "<string>", default_name: str = "") -> Hardware:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidTargetError(origin, "toml", str(e)) from None
    return parse_target(data, origin=origin, default_name=default_name)


def parse_target(data: dict, origin: str = "<dict>", default_name: str = "") -> Hardware:
    """Build a ``Hardware`` from a parsed target file; raises ``InvalidTargetError`` naming the field."""
    _check_keys(data, _TOP_KEYS, _TOP_QUANTITIES, origin, "")
    name = _str(data, "name", origin, "", default=default_name) or default_name
    if not name:
        raise InvalidTargetError(origin, "name", "missing")
    kind = _choice(data, "kind", KINDS, origin, "")
    source = _str(data, "source", origin, "")
    if not source.strip():
        raise InvalidTargetError(origin, "source", "missing: cite where the facts come from")
    ids = data.get("hardware_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidTargetError(origin, "hardware_ids", "must be a list of strings")
    cpu = _parse_cpu(data.get("cpu", {}), origin)

    hosts: list[Host] = []
    if "hosts" in data:
        if "devices" in data:
            raise InvalidTargetError(origin, "devices", "give devices per host when the target has [[hosts]]")
        hosts = _parse_hosts(data["hosts"], origin)
        devices = [copy.deepcopy(d) for h in hosts for d in h.devices]
    else:
        devices = _parse_devices(data.get("devices", []), origin, "devices")

    ram = _quantity(data, "ram", _BYTES, origin, "", required=not hosts)
    if ram is None:
        ram = sum(h.ram_bytes for h in hosts)
    if kind == "cluster" and len(hosts) < 2:
        raise InvalidTargetError(origin, "hosts", "a cluster target needs two or more hosts")
    if hosts and kind != "cluster":
        raise InvalidTargetError(origin, "kind", "a target with [[hosts]] must have kind = \"cluster\"")
    bw_source = data.get("ram_bandwidth_source", "")
    if bw_source not in RAM_BANDWIDTH_SOURCES:
        raise InvalidTargetError(origin, "ram_bandwidth_source", f"one of {RAM_BANDWIDTH_SOURCES}")
    ram_bw = _quantity(data, "ram_bandwidth", _RATE, origin, "")
    if ram_bw is not None and not bw_source:
        bw_source = "catalog"
    speed = _parse_speed(data.get("speed", []), origin)
    return Hardware(
        name=name,
        devices=devices,
        ram_bytes=ram,
        cpu=cpu,
        ram_bandwidth_bytes_per_s=ram_bw,
        memory_limit_bytes=_quantity(data, "memory_limit", _BYTES, origin, ""),
        kind=kind,
        source=source,
        notes=_str(data, "notes", origin, "", default=""),
        hosts=hosts,
        network_bytes_per_s=_quantity(data, "network", _NETWORK, origin, ""),
        hardware_ids=list(ids),
        ram_bandwidth_source=bw_source,
        speed_basis=speed,
    )


_SPEED_NUMBERS = ("layer_decode_bytes_per_s", "output_decode_bytes_per_s", "prefill_flops_per_s")
_SPEED_KEYS = set(_SPEED_NUMBERS) | {"ftype", "model", "threads", "slice_layers", "decode_tps", "prefill_tps",
                                     "load_average", "engine", "measured_at"}


def _parse_speed(items: Any, origin: str) -> list[dict]:
    """[[speed]]: this machine's llama.cpp rates per file type, written by detect --bench --save."""
    if not isinstance(items, list) or len(items) > 64:
        raise InvalidTargetError(origin, "speed", "must be an array of at most 64 tables ([[speed]])")
    out = []
    for i, t in enumerate(items):
        where = f"speed[{i}]"
        if not isinstance(t, dict):
            raise InvalidTargetError(origin, where, "must be a table")
        unknown = set(t) - _SPEED_KEYS
        if unknown:
            raise InvalidTargetError(origin, f"{where}.{sorted(unknown)[0]}", "unknown key")
        if not isinstance(t.get("ftype"), str) or not t["ftype"]:
            raise InvalidTargetError(origin, f"{where}.ftype", "missing: the GGUF file type measured (e.g. \"Q4_K_M\")")
        t = dict(t)
        t["threads"] = _positive_int(t.get("threads", 0), origin, f"{where}.threads")
        for k in _SPEED_NUMBERS:
            v = t.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1e16:
                raise InvalidTargetError(origin, f"{where}.{k}", "must be a positive number below 1e16")
        out.append(t)
    return out


def _parse_cpu(table: Any, origin: str) -> CPU:
    if not isinstance(table, dict):
        raise InvalidTargetError(origin, "cpu", "must be a table")
    _check_keys(table, _CPU_KEYS, {}, origin, "cpu.")
    cpu = CPU()
    if "name" in table:
        cpu.name = _str(table, "name", origin, "cpu.")
    for key in ("cores_physical", "cores_logical"):
        if key in table:
            setattr(cpu, key, _positive_int(table[key], origin, f"cpu.{key}"))
    flags = table.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise InvalidTargetError(origin, "cpu.flags", "must be a list of strings")
    cpu.flags = list(flags)
    if "arch" in table:
        cpu.arch = _str(table, "arch", origin, "cpu.")
    return cpu


def _parse_hosts(items: Any, origin: str) -> list[Host]:
    if not isinstance(items, list):
        raise InvalidTargetError(origin, "hosts", "must be an array of tables ([[hosts]])")
    if len(items) > B.MAX_HOSTS:
        raise InvalidTargetError(origin, "hosts", f"more than {B.MAX_HOSTS:,} hosts")
    hosts: list[Host] = []
    for i, table in enumerate(items):
        where = f"hosts[{i}]."
        if not isinstance(table, dict):
            raise InvalidTargetError(origin, f"hosts[{i}]", "must be a table")
        _check_keys(table, _HOST_KEYS, _HOST_QUANTITIES, origin, where)
        name = _str(table, "name", origin, where, default=f"node{i}")
        count = _positive_int(table.get("count", 1), origin, where + "count", B.MAX_HOSTS)
        ram = _quantity(table, "ram", _BYTES, origin, where, required=True)
        devices = _parse_devices(table.get("devices", []), origin, where + "devices")
        if len(hosts) + count > B.MAX_HOSTS or (sum(len(h.devices) for h in hosts) + count * len(devices)) > B.MAX_DEVICES:
            raise InvalidTargetError(origin, where + "count", f"more than {B.MAX_HOSTS:,} hosts or {B.MAX_DEVICES:,} devices in all")
        for k in range(count):
            host_name = f"{name}{k}" if count > 1 else name
            hosts.append(Host(name=host_name, devices=copy.deepcopy(devices), ram_bytes=ram))
    return hosts


def _parse_devices(items: Any, origin: str, where: str) -> list[Device]:
    entries = _device_entries(items, origin, where)
    if sum(e.count for e in entries) > B.MAX_DEVICES:  # checked before copying any device
        raise InvalidTargetError(origin, where, f"more than {B.MAX_DEVICES:,} devices")
    return [d for entry in entries for d in entry.expand()]


@dataclass
class _DeviceEntry:
    """A device of the packaged catalogue, with its aliases and the RAM sizes it ships with."""

    device: Device
    count: int = 1
    aliases: tuple[str, ...] = ()
    ram_options_gb: tuple[int, ...] = ()

    def expand(self) -> list[Device]:
        return [copy.deepcopy(self.device) for _ in range(self.count)]


def _device_entries(items: Any, origin: str, where: str) -> list[_DeviceEntry]:
    if not isinstance(items, list):
        raise InvalidTargetError(origin, where, "must be an array of tables ([[devices]])")
    if len(items) > B.MAX_DEVICES:
        raise InvalidTargetError(origin, where, f"more than {B.MAX_DEVICES:,} devices")
    return [_parse_device(t, origin, f"{where}[{i}].") for i, t in enumerate(items)]


def _parse_device(table: Any, origin: str, where: str) -> _DeviceEntry:
    if not isinstance(table, dict):
        raise InvalidTargetError(origin, where.rstrip("."), "must be a table")
    _check_keys(table, _DEVICE_KEYS, _DEVICE_QUANTITIES, origin, where)
    name = _str(table, "name", origin, where)
    vendor = _choice(table, "vendor", VENDORS, origin, where)
    backend = _choice(table, "backend", BACKENDS, origin, where)
    device_class = _choice(table, "device_class", DEVICE_CLASSES, origin, where, default="consumer_gpu")
    unified = _bool(table, "unified", origin, where)
    total = _quantity(table, "total", _BYTES, origin, where)
    rule = table.get("memory_rule")
    if rule is not None:
        if not isinstance(rule, str) or rule not in MEMORY_RULES:
            raise InvalidTargetError(origin, where + "memory_rule", f"one of {sorted(MEMORY_RULES)}")
        if any(f"memory_{s}" in table for s in _BYTES):
            raise InvalidTargetError(origin, where + "memory_rule", "give memory_rule or memory_*, not both")
        if total is None:
            raise InvalidTargetError(origin, where + "total_gib", "memory_rule needs the physical total")
        memory = MEMORY_RULES[rule](total)
    else:
        memory = _quantity(table, "memory", _BYTES, origin, where, required=True)
    if unified and total is None:
        total = memory
    if total is not None and total < memory:
        raise InvalidTargetError(origin, where + "total", "physical total is smaller than the GPU budget")
    compute = table.get("compute_capability")
    if compute is not None and not isinstance(compute, str):
        raise InvalidTargetError(origin, where + "compute_capability", "must be a string, e.g. \"8.9\"")
    fp16 = _quantity(table, "fp16", _FLOPS, origin, where, integer=False)
    if table.get("partition") is not None and not isinstance(table["partition"], str):
        raise InvalidTargetError(origin, where + "partition", "must be a string, e.g. \"MIG 3g.40gb\"")
    device = Device(
        name=name,
        vendor=vendor,
        backend=backend,
        memory_bytes=memory,
        bandwidth_bytes_per_s=_quantity(table, "bandwidth", _RATE, origin, where),
        fp16_flops=fp16,
        total_bytes=total,
        unified=unified,
        compute_capability=compute,
        device_class=device_class,
        notes=_str(table, "notes", origin, where, default=""),
        integrated=_bool(table, "integrated", origin, where),
        partition=table.get("partition"),
    )
    aliases = table.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise InvalidTargetError(origin, where + "aliases", "must be a list of strings")
    options = table.get("ram_options_gb", [])
    if not isinstance(options, list) or not all(isinstance(o, int) and not isinstance(o, bool) and 0 < o <= B.MAX_MEMORY // GiB
                                                 for o in options):
        raise InvalidTargetError(origin, where + "ram_options_gb", "must be a list of integers")
    count = _positive_int(table.get("count", 1), origin, where + "count", B.MAX_DEVICE_COUNT)
    return _DeviceEntry(device, count, tuple(aliases), tuple(options))


def _check_keys(table: dict, plain: set, quantities: dict, origin: str, where: str) -> None:
    allowed = set(plain)
    for base, units in quantities.items():
        allowed |= {f"{base}_{s}" for s in units}
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            extra = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidTargetError(origin, where + key, f"unknown key{extra}")


def _quantity(table: dict, base: str, units: dict, origin: str, where: str,
              required: bool = False, integer: bool = True):
    present = [s for s in units if f"{base}_{s}" in table]
    if len(present) > 1:
        keys = " and ".join(f"{base}_{s}" for s in present)
        raise InvalidTargetError(origin, where + base, f"give one of {keys}, not both")
    if not present:
        if required:
            raise InvalidTargetError(origin, where + f"{base}_{next(iter(units))}", "missing")
        return None
    key = f"{base}_{present[0]}"
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidTargetError(origin, where + key, f"must be a positive number, got {value!r}")
    factor = units[present[0]]
    if factor == 1 and integer and not isinstance(value, int):
        raise InvalidTargetError(origin, where + key, "bytes must be an integer")
    result = value * factor
    limit, what = _LIMITS[id(units)]
    if result > limit:
        raise InvalidTargetError(origin, where + key, f"{value!r} is above the bound of {what} (profiles/bounds.py)")
    return int(round(result)) if integer else float(result)


def _str(table: dict, key: str, origin: str, where: str, default: Optional[str] = None) -> str:
    if key not in table:
        if default is None:
            raise InvalidTargetError(origin, where + key, "missing")
        return default
    value = table[key]
    if not isinstance(value, str):
        raise InvalidTargetError(origin, where + key, f"must be a string, got {value!r}")
    return value


def _choice(table: dict, key: str, choices: tuple, origin: str, where: str, default: Optional[str] = None) -> str:
    value = _str(table, key, origin, where, default=default)
    if value not in choices:
        raise InvalidTargetError(origin, where + key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _bool(table: dict, key: str, origin: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise InvalidTargetError(origin, where + key, "must be true or false")
    return value


def _positive_int(value: Any, origin: str, field_name: str, hi: int = B.MAX_CORES) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise InvalidTargetError(origin, field_name, f"must be an integer 1..{hi:,}, got {value!r}")
    return value


def _looks_like_path(text: str) -> bool:
    return text.endswith(".toml") or os.sep in text or "/" in text or text.startswith("~")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidTargetError(str(path), "file", f"cannot read: {e}") from None


@lru_cache(maxsize=None)
def _load_packaged(name: str) -> Hardware:
    res = _packaged_dir() / f"{name}.toml"
    return parse_target_text(res.read_text(encoding="utf-8"), origin=f"profiles/targets/{name}.toml",
                             default_name=name)


# --------------------------------------------------------------------------- writing


def hardware_to_toml(hw: Hardware) -> str:
    """The target file for ``hw``: exact bytes, no detection-only fields (free memory, PCI ids)."""
    lines = [f"# gemma-plan target profile ({'detected machine' if hw.detected else 'saved'}).", ""]
    top: list[tuple[str, Any]] = [
        ("name", hw.name),
        ("kind", hw.kind),
        ("source", hw.source or "saved by gemma-plan"),
        ("hardware_ids", list(hw.hardware_ids)),
        ("notes", hw.notes),
        ("ram_bytes", hw.ram_bytes),
        ("ram_bandwidth_bytes_per_s", hw.ram_bandwidth_bytes_per_s),
        ("ram_bandwidth_source", hw.ram_bandwidth_source),
        ("memory_limit_bytes", hw.memory_limit_bytes),
        ("network_bytes_per_s", hw.network_bytes_per_s),
    ]
    lines += _kv_lines(top)
    lines += ["", "[cpu]"]
    lines += _kv_lines([
        ("name", hw.cpu.name),
        ("cores_physical", hw.cpu.cores_physical),
        ("cores_logical", hw.cpu.cores_logical),
        ("flags", list(hw.cpu.flags)),
        ("arch", hw.cpu.arch),
    ])
    for b in getattr(hw, "speed_basis", None) or []:
        lines += ["", "[[speed]]"]
        lines += _kv_lines([(k, b[k]) for k in sorted(b) if k in _SPEED_KEYS and b[k] is not None])
    if hw.hosts:
        for host in hw.hosts:
            lines += ["", "[[hosts]]"]
            lines += _kv_lines([("name", host.name), ("ram_bytes", host.ram_bytes)])
            for d in host.devices:
                lines += ["", "[[hosts.devices]]"] + _device_lines(d)
    else:
        for d in hw.devices:
            lines += ["", "[[devices]]"] + _device_lines(d)
    return "\n".join(lines) + "\n"


def _device_lines(d: Device) -> list[str]:
    return _kv_lines([
        ("name", d.name),
        ("vendor", d.vendor),
        ("backend", d.backend),
        ("memory_bytes", d.memory_bytes),
        ("total_bytes", d.total_bytes),
        ("bandwidth_bytes_per_s", d.bandwidth_bytes_per_s),
        ("fp16_flops", d.fp16_flops),
        ("unified", d.unified),
        ("integrated", d.integrated),
        ("compute_capability", d.compute_capability),
        ("device_class", d.device_class),
        ("partition", d.partition),
        ("notes", d.notes),
    ])


def _kv_lines(pairs: list[tuple[str, Any]]) -> list[str]:
    out = []
    for key, value in pairs:
        if value is None or value == "" or value == []:
            continue
        if key in ("unified", "integrated") and value is False:
            continue
        line = f"{key} = {_toml_value(value)}"
        if key.endswith("_bytes_per_s"):
            line += f"  # {value / GB:.1f} GB/s"
        elif key.endswith("_bytes"):
            line += f"  # {value / GiB:.2f} GiB"
        out.append(line)
    return out


def _toml_value(value: Any) -> str:
    # TOML basic strings accept JSON's escapes; ensure_ascii keeps the file 7-bit.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


# --------------------------------------------------------------------------- device catalog


@dataclass(frozen=True)
class CatalogDevice:
    """One known accelerator from the packaged targets, for matching what detection finds."""

    target: str
    device: Device
    aliases: tuple[str, ...] = ()
    ram_options_gb: tuple[int, ...] = ()
    hardware_ids: tuple[str, ...] = field(default=())

    @property
    def names(self) -> tuple[str, ...]:
        return (self.device.name,) + self.aliases


@lru_cache(maxsize=1)
def catalog_devices() -> tuple[CatalogDevice, ...]:
    """Every distinct device of the packaged targets (single-device targets first)."""
    entries: list[tuple[int, str, CatalogDevice]] = []
    for name in packaged_target_names():
        res = _packaged_dir() / f"{name}.toml"
        data = tomllib.loads(res.read_text(encoding="utf-8"))
        hw = _load_packaged(name)
        tables = data.get("devices", [])
        for host in data.get("hosts", []):
            tables = tables + host.get("devices", [])
        for i, table in enumerate(tables):
            entry = _parse_device(table, f"profiles/targets/{name}.toml", f"devices[{i}].")
            entries.append((len(hw.devices), name, CatalogDevice(
                name, entry.device, entry.aliases, entry.ram_options_gb, tuple(hw.hardware_ids))))
    seen: set[tuple[str, int]] = set()
    out = []
    for _, _, cat in sorted(entries, key=lambda e: (e[0], e[1])):
        key = (_norm(cat.device.name), cat.device.memory_bytes)
        if key not in seen:
            seen.add(key)
            out.append(cat)
    return tuple(out)


# Words a driver adds to a product name without changing the part. Any other extra word
# ("Laptop", "Ti", "SUPER", "Max", "SXM4") may be a different chip, so it blocks a match.
_NOISE_WORDS = {"nvidia", "amd", "ati", "geforce", "radeon", "apple", "intel", "graphics", "gpu",
                "corporation", "inc", "tm", "r"}


def _tokens(name: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", name.lower()))


def _norm(name: str) -> str:
    return "".join(re.findall(r"[a-z0-9]+", name.lower()))


def match_catalog_device(name: str, memory_bytes: Optional[int] = None,
                         ram_bytes: Optional[int] = None) -> Optional[CatalogDevice]:
    """The catalog device a detected ``name`` is, or None when unknown or ambiguous.

    A catalog name (or alias) matches when the detected name has the same words, give or take
    vendor words ("NVIDIA", "GeForce"); names drivers spell differently are listed as ``aliases``
    in the target files. Discrete cards must also agree on memory within 10 %; unified
    devices are told apart by the RAM sizes they ship with (``ram_options_gb``).
    """
    detected = _tokens(name)
    scored: list[tuple[int, int, CatalogDevice]] = []
    for cat in catalog_devices():
        best = 0
        for candidate in cat.names:
            words = _tokens(candidate)
            if _norm(candidate) == _norm(name):
                best = max(best, 1000)
            elif words and words <= detected and (detected - words) <= _NOISE_WORDS:
                best = max(best, len(words))
        if not best:
            continue
        fit = 0
        if cat.device.unified and ram_bytes is not None:
            if cat.ram_options_gb:
                fit = 1 if round(ram_bytes / GiB) in cat.ram_options_gb else -1
            if cat.device.total_bytes and round(cat.device.total_bytes / GiB) == round(ram_bytes / GiB):
                fit += 1  # the very configuration a target describes
        elif memory_bytes is not None:
            if abs(memory_bytes - cat.device.memory_bytes) > 0.10 * cat.device.memory_bytes:
                continue
        scored.append((best, fit, cat))
    if not scored:
        return None
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    return scored[0][2]
