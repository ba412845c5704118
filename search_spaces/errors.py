"""Errors of a search-space file, and the small checks that raise them.

Every problem raises :class:`SpecError`, a ValueError whose message is one line naming the file
(and line), the dotted key, the value and the fix. :class:`Ctx` knows the file being checked and
the line of every dotted key, so a check only names the key.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

# The last part of a dotted key: ".name" or "[3]".
_LAST_PART_RE = re.compile(r"(\.[^.\[]+|\[\d+\])$")
# PyYAML (YAML 1.1) reads 1e-3 as a string; recognise it to say so.
_NUMBER_TEXT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

NO_VALUE = object()


class SpecError(ValueError):
    """A search-space file is invalid. ``str(err)`` is one line: file[:line]: key: problem.

    Attributes: file, line (or None), key (dotted path such as params.sigma_end.loguniform),
    problem, value, fix.
    """

    def __init__(
        self, file: str, key: str, problem: str, value: Any = NO_VALUE, fix: str = "", line: int | None = None
    ):
        self.file, self.key, self.problem, self.value, self.fix, self.line = (file, key, problem, value, fix, line)
        where = f"{file}:{line}" if line else file
        text = f"{where}: {key}: {problem}"
        if value is not NO_VALUE:
            text += f", got {fmt(value)}"
        if fix:
            text += f"; {fix}"
        super().__init__(" ".join(text.split()))


def fmt(value: Any, limit: int = 80) -> str:
    """A short, YAML-like rendering of a value for an error line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(fmt(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {fmt(v, limit)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Ctx:
    """The file being parsed: its display name and the line of every dotted key."""

    def __init__(self, file: str, lines: dict[str, int] | None = None):
        self.file = file
        self.lines = lines or {}

    def error(self, key: str, problem: str, value: Any = NO_VALUE, fix: str = "") -> SpecError:
        # The line of the key, or of its nearest parent that is in the file.
        probe, line = key, None
        while probe and line is None:
            line = self.lines.get(probe)
            parent = _LAST_PART_RE.sub("", probe)
            probe = parent if parent != probe else ""
        return SpecError(self.file, key, problem, value, fix, line)


def check_keys(ctx: Ctx, prefix: str, section: dict, allowed) -> None:
    """Refuse a key of ``section`` (at dotted ``prefix``) outside ``allowed``, with the nearest."""
    for key in section:
        if key not in allowed:
            path = f"{prefix}.{key}" if prefix else str(key)
            guess = near(str(key), allowed)
            raise ctx.error(
                path,
                "unknown key",
                fix=f"did you mean {guess!r}?" if guess else f"allowed: {', '.join(map(str, allowed))}",
            )


def near(word: str, options) -> str | None:
    """The option closest to ``word`` (a likely typo), or None."""
    found = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.7)
    return found[0] if found else None


def mapping(ctx: Ctx, key: str, value: Any, example: str) -> dict:
    """``value`` if it is a mapping, else an error showing ``example``."""
    if not isinstance(value, dict):
        raise ctx.error(key, "must be a mapping", value, fix=f"write e.g. {key}: {example}")
    return value


def number(ctx: Ctx, key: str, value: Any, kind: type = float) -> Any:
    """value as int (kind=int) or float; YAML's 1e-3-as-text and bools are rejected."""
    if isinstance(value, str) and _NUMBER_TEXT_RE.match(value.strip()):
        raise ctx.error(key, "is text, not a number", value, fix="YAML reads 1e-3 as text: write 1.0e-3")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(key, "must be an integer", value)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ctx.error(key, "must be a finite number", value)
    return float(value)


def positive_int(ctx: Ctx, key: str, value: Any) -> int:
    value = number(ctx, key, value, int)
    if value < 1:
        raise ctx.error(key, "must be a positive integer", value)
    return value
