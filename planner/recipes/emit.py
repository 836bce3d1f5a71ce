"""Write a recipe document and every recipe's files into a directory.

``plan_files`` says what will be written (paths, sizes, modes) and refuses, before anything is
touched, when a file exists and ``force`` is off; ``write_files`` writes each file to a temporary name
in the same directory, sets its mode, and renames it into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from planner.recipes.base import EmitExistsError, Recipe, RecipeError

RECIPE_JSON = "recipe.json"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass
class PlannedFile:
    path: Path
    text: str
    executable: bool

    @property
    def nbytes(self) -> int:
        return len(self.text.encode("utf-8"))


def plan_files(out_dir: Path, doc: dict, recipes: dict[str, Recipe], force: bool = False) -> list[PlannedFile]:
    out_dir = Path(out_dir)
    files = [PlannedFile(out_dir / RECIPE_JSON, json.dumps(doc, indent=2) + "\n", False)]
    seen = {RECIPE_JSON: "the recipe document"}
    for name, r in recipes.items():
        for fname, text in r.files.items():
            if not fname or set(fname) - _NAME_OK or fname.startswith("."):
                raise RecipeError(f"recipe {name} has an unsafe file name {fname!r}")
            if fname in seen:
                if text == next(f.text for f in files if f.path.name == fname):
                    continue
                raise RecipeError(f"recipes {seen[fname]} and {name} both write {fname}")
            seen[fname] = name
            files.append(PlannedFile(out_dir / fname, text, fname in r.executable))
    if out_dir.exists() and not out_dir.is_dir():
        raise EmitExistsError(f"{out_dir} exists and is not a directory")
    if not force:
        existing = [f.path.name for f in files if f.path.exists()]
        if existing:
            raise EmitExistsError(f"{out_dir} already has {', '.join(existing[:4])}" + (" ..." if len(existing) > 4 else ""))
    return files


def write_files(files: list[PlannedFile]) -> list[Path]:
    """Temp name + rename for each file; 0755 for scripts, 0644 for the rest (before the umask)."""
    written = []
    for f in files:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{f.path.name}.", suffix=".tmp", dir=f.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
                out.write(f.text)
                out.flush()
                os.fsync(out.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, (0o755 if f.executable else 0o644) & ~umask)
            os.replace(tmp, f.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(f.path)
    return written
