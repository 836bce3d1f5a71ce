"""Typed errors of the profiles package. Each carries a ``hint``: the next thing to try."""

from __future__ import annotations

import difflib
from typing import Iterable


class ProfileError(Exception):
    """Anything the user can fix by changing the target name, file or flags."""

    hint: str = ""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        if hint:
            self.hint = hint


class UnknownTargetError(ProfileError):
    hint = "run `gemma-plan targets` to list them, or pass a path to a target .toml file"

    def __init__(self, name: str, known: Iterable[str] = (), message: str = ""):
        self.name = name
        self.suggestions = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        if not message:
            message = f"unknown target {name!r}"
            if self.suggestions:
                message += "; did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        super().__init__(message)


class InvalidTargetError(ProfileError):
    """A target file that does not parse or breaks a rule; the message names the file and field."""

    hint = "fix the field named above (docs/targets.md describes the format)"

    def __init__(self, origin: str, field: str, problem: str):
        self.origin = origin
        self.field = field
        super().__init__(f"{origin}: {field}: {problem}")


class TargetExistsError(ProfileError):
    hint = "pass --force to replace it, or choose another name"
