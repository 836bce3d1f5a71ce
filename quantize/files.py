"""File helpers every writer of the quantize stage shares: hashes and atomic JSON writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# The manifest every artifact gets (GGUF: quantize/pipeline.py, GPTQ: quantize/gptq.py); docs/json.md.
MANIFEST_SCHEMA = "gemma-plan.manifest/1"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj: dict, overwrite: bool = True) -> None:
    """A unique temporary name beside the target (O_EXCL, never a symlink), then renamed over it:
    readers never see half a file and a planted link is replaced, not written through."""
    from planner.outputs import write_file

    write_file(Path(path), json.dumps(obj, indent=2, ensure_ascii=False) + "\n", overwrite=overwrite)
