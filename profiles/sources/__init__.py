"""Detection sources. Each source is a ``read_*`` function that returns raw text (a tool's output,
or a small dump of the files it read) and a pure ``parse_*`` function over that text, so that
parsers are tested on captured outputs in ``tests/fixtures/hardware/``.

``read_*`` raises ``SourceUnavailable`` when the tool or file is absent; ``parse_*`` raises
``ParseError`` on output it does not understand (including a tool's own error message).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

TOOL_TIMEOUT_S = 3.0


class SourceUnavailable(Exception):
    """The tool, library or file a source reads is not there (no driver, not this OS)."""


class ParseError(ValueError):
    """A source answered with something its parser does not understand."""


def run_tool(argv: Sequence[str], timeout: float = TOOL_TIMEOUT_S, extra_paths: Sequence[str] = ()) -> tuple[int, str, str]:
    """Run a tool and return (exit status, stdout, stderr); never raises for the tool's own failure."""
    exe = shutil.which(argv[0])
    if exe is None:
        for directory in extra_paths:
            candidate = Path(directory) / argv[0]
            if candidate.is_file() and os.access(candidate, os.X_OK):
                exe = str(candidate)
                break
    if exe is None:
        raise SourceUnavailable(f"{argv[0]} not found")
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout,
                              errors="replace", stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"{argv[0]} did not answer within {timeout:g} s") from None
    except OSError as e:
        raise SourceUnavailable(f"{argv[0]}: {e.strerror or e}") from None
    return proc.returncode, proc.stdout, proc.stderr


def read_file(path: str | Path) -> Optional[str]:
    """A small text file's content, or None when it cannot be read."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def dump_sections(sections: list[tuple[str, str]]) -> str:
    """Files read by a source as one text: ``[name]`` lines followed by the content."""
    out = []
    for name, body in sections:
        out.append(f"[{name}]")
        out.append(body.rstrip("\n"))
    return "\n".join(out) + "\n"


def parse_sections(text: str) -> list[tuple[str, str]]:
    """Inverse of ``dump_sections``; text before the first header is an error."""
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]") and len(line) > 2:
            sections.append((line[1:-1], []))
        elif sections:
            sections[-1][1].append(line)
        elif line.strip():
            raise ParseError(f"expected a [section] header, got {line[:60]!r}")
    return [(name, "\n".join(lines)) for name, lines in sections]


def first_line(text: str, limit: int = 160) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""
