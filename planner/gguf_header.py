"""A fast GGUF header reader: metadata and tensor infos, no tensor data.

gguf.GGUFReader builds numpy views for every metadata element; on a Gemma GGUF with a 262k-token
vocabulary that takes tens of seconds, too slow for planning. This reader skips string arrays it does
not need (tokens, merges) and reads the rest with struct from a memory map. Layout: gguf-py's
constants.py (GGUFValueType) and the GGUF spec (header, key/values, tensor infos, aligned data).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

GGUF_MAGIC = b"GGUF"
_SCALAR = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
# String arrays longer than this are skipped (vocabularies), their length kept.
MAX_STRING_ARRAY = 4096


class GGUFHeaderError(ValueError):
    pass


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


def read_header(path: str | Path) -> GGUFHeader:
    path = Path(path)
    size = path.stat().st_size
    if size < 24:
        raise GGUFHeaderError("file too short for a GGUF header")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:4] != GGUF_MAGIC:
            raise GGUFHeaderError("GGUF magic invalid")
        r = _Reader(mm)
        r.pos = 4
        version = r.unpack("<I")
        if version not in (2, 3):
            raise GGUFHeaderError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise GGUFHeaderError("implausible tensor or key count")
        fields = {}
        for _ in range(n_kv):
            key = r.string()
            fields[key] = r.value(GGUFValueType(r.unpack("<I")))
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("<I")
            dims = [r.unpack("<Q") for _ in range(n_dims)]
            qtype = GGMLQuantizationType(r.unpack("<I"))
            offset = r.unpack("<Q")
            block, type_size = GGML_QUANT_SIZES[qtype]
            n = 1
            for d in dims:
                n *= d
            tensors.append(TensorInfo(name, tuple(reversed(dims)), qtype.name, offset, n // block * type_size))
        align = int(fields.get("general.alignment", 32))
        data_offset = (r.pos + align - 1) // align * align
    end = max((data_offset + t.offset + t.n_bytes for t in tensors), default=data_offset)
    if end > size:
        raise GGUFHeaderError(f"truncated: tensor data needs {end:,} bytes, the file has {size:,}")
    return GGUFHeader(version, fields, tensors, data_offset, size)


class _Reader:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str):
        try:
            (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        except struct.error:
            raise GGUFHeaderError("truncated header") from None
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise GGUFHeaderError("truncated header")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: GGUFValueType):
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            etype = GGUFValueType(self.unpack("<I"))
            count = self.unpack("<Q")
            if etype == GGUFValueType.STRING:
                if count > MAX_STRING_ARRAY:
                    for _ in range(count):  # skip: only the length matters for planning
                        n = self.unpack("<Q")
                        self.pos += n
                    if self.pos > len(self.buf):
                        raise GGUFHeaderError("truncated header")
                    return _Skipped(count)
                return [self.string() for _ in range(count)]
            if etype == GGUFValueType.ARRAY:
                return [self.value(GGUFValueType.ARRAY) for _ in range(count)]
            fmt = _SCALAR[etype]
            width = struct.calcsize(fmt)
            if self.pos + width * count > len(self.buf):
                raise GGUFHeaderError("truncated header")
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
