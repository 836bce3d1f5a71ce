"""GGML tensor types and GGUF value types as plain tables, so planning needs neither gguf nor numpy.

Block layouts are written as the structs of ggml-common.h (``block_q4_K``: d, dmin, scales[12],
qs[QK_K/2]), the way gguf-py's constants.py writes ``GGML_QUANT_SIZES``; bits per weight are derived.
tests/test_ggml_table.py checks every row against ``gguf.GGML_QUANT_SIZES`` and ``gguf.GGUFValueType``.
"""

from __future__ import annotations

from enum import IntEnum

QK_K = 256  # super-block size of the K and IQ quants (ggml-common.h)

# name -> (ggml_type id, elements per block, bytes per block); ids from enum ggml_type (ggml.h)
GGML_TYPES: dict[str, tuple[int, int, int]] = {
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "Q4_0": (2, 32, 2 + 16),
    "Q4_1": (3, 32, 2 + 2 + 16),
    "Q5_0": (6, 32, 2 + 4 + 16),
    "Q5_1": (7, 32, 2 + 2 + 4 + 16),
    "Q8_0": (8, 32, 2 + 32),
    "Q8_1": (9, 32, 4 + 4 + 32),
    "Q2_K": (10, QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    "Q3_K": (11, QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    "Q4_K": (12, QK_K, 2 + 2 + QK_K // 2 + 12),
    "Q5_K": (13, QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    "Q6_K": (14, QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    "Q8_K": (15, QK_K, 4 + QK_K + QK_K // 8),
    "IQ2_XXS": (16, QK_K, 2 + QK_K // 4),
    "IQ2_XS": (17, QK_K, 2 + QK_K // 4 + QK_K // 32),
    "IQ3_XXS": (18, QK_K, 2 + QK_K // 4 + QK_K // 8),
    "IQ1_S": (19, QK_K, 2 + QK_K // 8 + QK_K // 16),
    "IQ4_NL": (20, 32, 2 + 16),
    "IQ3_S": (21, QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    "IQ2_S": (22, QK_K, 2 + QK_K // 4 + QK_K // 16),
    "IQ4_XS": (23, QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    "I8": (24, 1, 1),
    "I16": (25, 1, 2),
    "I32": (26, 1, 4),
    "I64": (27, 1, 8),
    "F64": (28, 1, 8),
    "IQ1_M": (29, QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    "BF16": (30, 1, 2),
    "TQ1_0": (34, QK_K, 2 + 4 * 13),
    "TQ2_0": (35, QK_K, 2 + QK_K // 4),
    "MXFP4": (39, 32, 1 + 16),
    "NVFP4": (40, 64, 4 + 32),
    "Q1_0": (41, 128, 2 + 16),
}
GGML_TYPE_NAMES: dict[int, str] = {tid: name for name, (tid, _, _) in GGML_TYPES.items()}


class UnknownGGMLTypeError(KeyError):
    pass


def quant_size(type_name: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a ggml type name such as 'Q4_K' or 'f16'."""
    row = GGML_TYPES.get(type_name.upper())
    if row is None:
        raise UnknownGGMLTypeError(type_name)
    return row[1], row[2]


def type_name(type_id: int) -> str:
    """ggml_type id -> name; UnknownGGMLTypeError for an id this table does not have."""
    name = GGML_TYPE_NAMES.get(type_id)
    if name is None:
        raise UnknownGGMLTypeError(type_id)
    return name


class GGUFValueType(IntEnum):
    """enum gguf_type (gguf.h); gguf-py's GGUFValueType."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12
