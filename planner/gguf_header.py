"""A fast GGUF header reader: metadata and tensor infos, no tensor data.

gguf.GGUFReader builds numpy views for every metadata element; on a Gemma GGUF with a 262k-token
vocabulary that takes tens of seconds, too slow for planning. This reader skips string arrays it does
not need (tokens, merges) and reads the rest with struct from a memory map. Layout: gguf-py's
constants.py (GGUFValueType, as planner/ggml.py's table) and the GGUF spec (header, key/values, tensor infos, aligned data).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from planner.ggml import GGUFValueType, UnknownGGMLTypeError, quant_size, type_name

from planner.errors import PlanError
from profiles.bounds import MAX_DIMS, MAX_GGUF_ALIGNMENT, MAX_GGUF_ARRAY_DEPTH, MAX_GGUF_KV, MAX_TENSOR_ELEMENTS, MAX_TENSORS

GGUF_MAGIC = b"GGUF"
_SCALAR = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
# String arrays longer than this are skipped (vocabularies), their length kept.
MAX_STRING_ARRAY = 4096
# Smallest encodings, used to refuse counts the rest of the file cannot hold before looping over them.
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, one byte of value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset


class GGUFHeaderError(PlanError, ValueError):
    hint = "the file is damaged or not a GGUF model: download or convert it again"


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (outermost first)
    type_name: str
    offset: int  # from the start of the data section
    n_bytes: int


@dataclass
class GGUFHeader:
    version: int
    fields: dict
    tensors: list[TensorInfo]
    data_offset: int
    file_size: int


class NeedMoreBytes(Exception):
    """Parsing a prefix of the file ran past its end; ``upto`` is a byte count that would get further."""

    def __init__(self, upto: int):
        super().__init__(f"need {upto} bytes")
        self.upto = upto


def read_header(path: str | Path) -> GGUFHeader:
    """Metadata and tensor infos. Every count is checked against the bytes left and profiles.bounds before a
    loop runs, so the work is bounded by the file size; mirrors the checks of gguf_init_from_file_impl (gguf.cpp)."""
    path = Path(path)
    size = path.stat().st_size
    if size < 24:
        raise GGUFHeaderError("file too short for a GGUF header")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return parse_header(mm, size)


def parse_header(buf, size: int) -> GGUFHeader:
    """The header from ``buf``, the first bytes of a GGUF file of ``size`` bytes (all of it, or a prefix read over
    HTTP). Counts are checked against ``size``; reading past the end of a shorter prefix raises NeedMoreBytes."""
    if size < 24:
        raise GGUFHeaderError("file too short for a GGUF header")
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise GGUFHeaderError("GGUF magic invalid")
    r = _Reader(buf, size)
    r.pos = 4
    version = r.unpack("<I")
    if version not in (2, 3):
        raise GGUFHeaderError(f"unsupported GGUF version {version}")
    n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_GGUF_KV:
        raise GGUFHeaderError(f"implausible counts: {n_tensors:,} tensors (at most {MAX_TENSORS:,}), "
                              f"{n_kv:,} keys (at most {MAX_GGUF_KV:,})")
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > r.left():
        raise GGUFHeaderError("truncated header: the key and tensor counts need more bytes than the file has")
    fields = {}
    for _ in range(n_kv):
        key = r.string()
        if key in fields:
            raise GGUFHeaderError(f"duplicate key {key!r}")
        fields[key] = r.value(r.vtype(), 0)
    align = fields.get("general.alignment", 32)
    if isinstance(align, bool) or not isinstance(align, int) or not 0 < align <= MAX_GGUF_ALIGNMENT or align & (align - 1):
        raise GGUFHeaderError(f"general.alignment = {align!r} is not a power of two up to {MAX_GGUF_ALIGNMENT}")
    tensors = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = r.string()
        if name in names:
            raise GGUFHeaderError(f"duplicate tensor {name!r}")
        names.add(name)
        n_dims = r.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFHeaderError(f"tensor {name!r} has {n_dims} dimensions (1..{MAX_DIMS})")
        dims = [r.unpack("<Q") for _ in range(n_dims)]
        raw_type = r.unpack("<I")
        try:
            qname = type_name(raw_type)
            block, type_size = quant_size(qname)
        except UnknownGGMLTypeError:
            raise GGUFHeaderError(f"tensor {name!r} has unknown type id {raw_type}") from None
        offset = r.unpack("<Q")
        n = 1
        for d in dims:
            if d < 1 or d > MAX_TENSOR_ELEMENTS:
                raise GGUFHeaderError(f"tensor {name!r} has a dimension of {d:,}")
            n *= d
        if n > MAX_TENSOR_ELEMENTS:
            raise GGUFHeaderError(f"tensor {name!r} has {n:,} elements (at most {MAX_TENSOR_ELEMENTS:,})")
        if dims[0] % block:
            raise GGUFHeaderError(f"tensor {name!r}: row of {dims[0]} is not a multiple of the {qname} block ({block})")
        if offset % align:
            raise GGUFHeaderError(f"tensor {name!r}: offset {offset} is not aligned to {align}")
        tensors.append(TensorInfo(name, tuple(reversed(dims)), qname, offset, n // block * type_size))
    data_offset = (r.pos + align - 1) // align * align
    end = max((data_offset + t.offset + t.n_bytes for t in tensors), default=data_offset)
    if end > size:
        raise GGUFHeaderError(f"truncated: tensor data needs {end:,} bytes, the file has {size:,}")
    return GGUFHeader(version, fields, tensors, data_offset, size)


class _Reader:
    def __init__(self, buf, size: int):
        self.buf = buf
        self.size = size  # the whole file; len(buf) may be less (a prefix)
        self.pos = 0

    def left(self) -> int:
        return self.size - self.pos

    def _need(self, end: int) -> None:
        """Bytes up to ``end`` must be in the buffer: past the file, the header is truncated; past the prefix, read more."""
        if end > self.size:
            raise GGUFHeaderError("truncated header")
        if end > len(self.buf):
            raise NeedMoreBytes(end)

    def unpack(self, fmt: str):
        self._need(self.pos + struct.calcsize(fmt))
        try:
            (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        except struct.error:
            raise GGUFHeaderError("truncated header") from None
        self.pos += struct.calcsize(fmt)
        return v

    def vtype(self) -> GGUFValueType:
        raw = self.unpack("<I")
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise GGUFHeaderError(f"unknown metadata value type {raw}") from None

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > self.left():
            raise GGUFHeaderError("truncated header")
        self._need(self.pos + n)
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: GGUFValueType, depth: int):
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            if depth >= MAX_GGUF_ARRAY_DEPTH:
                raise GGUFHeaderError(f"arrays nested deeper than {MAX_GGUF_ARRAY_DEPTH}")
            etype = self.vtype()
            count = self.unpack("<Q")
            width = 8 if etype == GGUFValueType.STRING else 12 if etype == GGUFValueType.ARRAY else struct.calcsize(_SCALAR[etype])
            if count * width > self.left():  # every element needs at least `width` bytes
                raise GGUFHeaderError("truncated header: an array is longer than the file")
            if etype == GGUFValueType.STRING:
                if count > MAX_STRING_ARRAY:
                    for _ in range(count):  # skip: only the length matters for planning
                        n = self.unpack("<Q")
                        self.pos += n
                        if self.pos > self.size:
                            raise GGUFHeaderError("truncated header")
                    return _Skipped(count)
                return [self.string() for _ in range(count)]
            if etype == GGUFValueType.ARRAY:
                return [self.value(GGUFValueType.ARRAY, depth + 1) for _ in range(count)]
            fmt = _SCALAR[etype]
            self._need(self.pos + width * count)
            vals = list(struct.unpack_from("<" + fmt[1] * count, self.buf, self.pos))
            self.pos += width * count
            return vals
        return self.unpack(_SCALAR[vtype])


class _Skipped(list):
    """A long string array that was not decoded; len() is its element count."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def __len__(self) -> int:
        return self.count
