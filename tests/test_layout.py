"""Dependency arrows point one way (profiles <- planner <- quantize; only the CLI (planner/cli.py and planner/commands/)
reaches into quantize, lazily, inside a command), and no module imports another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("planner", "profiles", "quantize")


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                yield node.module, a.name


@pytest.mark.parametrize("rel, tree", list(_modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_arrows_and_private_names(rel, tree):
    pkg = rel.split("/")[0]
    for module, name in _imports(tree):
        top = module.split(".")[0]
        if pkg == "profiles":
            assert top not in ("planner", "quantize"), f"{rel} imports {module}: profiles imports nothing of ours"
        if pkg == "planner" and rel != "planner/cli.py" and not rel.startswith("planner/commands/"):
            assert top != "quantize", f"{rel} imports {module}: the planner does not depend on quantize"
        if top in PACKAGES and name and name.startswith("_") and module != rel[:-3].replace("/", "."):
            raise AssertionError(f"{rel} imports the private name {name} from {module}")
