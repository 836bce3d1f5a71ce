"""Write a recipe document and every recipe's files into a directory.

``plan_files`` says what will be written (paths, sizes, modes) and refuses, before anything is
touched, when a file exists and ``force`` is off; ``write_files`` builds the files in a private directory
and moves the whole set into place at the end (planner.outputs), so a reader never sees half of it.
"""

from __future__ import annotations

import json
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


def write_files(files: list[PlannedFile], force: bool = False) -> list[Path]:
    """All or nothing (planner.outputs.Staged): every file is built in a private directory beside the
    destination and the set is moved into place at the end; 0755 for scripts, 0644 for the rest (before
    the umask). A second run into the same directory at the same time is refused."""
    from planner.outputs import Staged

    if not files:
        return []
    out_dir = files[0].path.parent
    if any(f.path.parent != out_dir for f in files):
        raise RecipeError("all emitted files go into one directory")
    with Staged(out_dir, force=force, flag="--emit") as st:
        for f in files:
            st.write(f.path.name, f.text.encode("utf-8"), executable=f.executable)
        return st.commit([f.path.name for f in files])
