"""Loading search-space files: shipped names or paths, YAML read safely with the line of every key.

:func:`load_spec` is the entry point; :func:`parse_spec_text` and :func:`parse_spec` validate a
document given as text or as Python objects. Keys that appear twice are refused (PyYAML would
silently keep the last one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search_spaces.errors import Ctx, SpecError
from search_spaces.schema import SPACES_DIR, SearchSpec
from search_spaces.validate import parse


def shipped_spaces() -> list[str]:
    """File names of the search spaces shipped in this package, sorted."""
    return sorted(p.name for p in SPACES_DIR.glob("*.yaml"))


def resolve_spec_path(name_or_path: str | Path) -> Path:
    """An existing path as given, else a shipped space by name (``sigmas`` or ``sigmas.yaml``).

    Raises SpecError when neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.name == str(name_or_path):  # a bare name, no directory part
        for candidate in (SPACES_DIR / path.name, SPACES_DIR / f"{path.name}.yaml"):
            if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
                return candidate
    raise SpecError(
        str(name_or_path),
        "(file)",
        "no such file or shipped search space",
        fix=f"give a path or one of {', '.join(shipped_spaces())}",
    )


def load_spec(name_or_path: str | Path) -> SearchSpec:
    """Load and validate a search-space file: a path, or a shipped name like ``sigmas.yaml``.

    Raises SpecError (a ValueError) with a one-line message naming the file, key and value.
    """
    path = resolve_spec_path(name_or_path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(file, "(file)", f"cannot read: {err}") from None
    return parse_spec_text(text, file=file, source=str(path.resolve()))


def parse_spec_text(text: str, file: str = "<string>", source: str | None = None) -> SearchSpec:
    """Validate a search-space document given as YAML text (see :func:`load_spec`)."""
    ctx = Ctx(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(file, "(yaml)", f"not valid YAML: {problem}", line=line) from None
    if node is not None:
        _index_lines(node, "", ctx)
    return parse(raw, ctx, source)


def parse_spec(raw: Any, file: str = "<dict>", source: str | None = None) -> SearchSpec:
    """Validate a search-space document already read into Python objects."""
    return parse(raw, Ctx(file), source)


def _index_lines(node: yaml.Node, prefix: str, ctx: Ctx) -> None:
    """Record the line of every key and list item; reject keys that appear twice.

    yaml.safe_load silently keeps the last of two equal keys, which would hide a typo'd file.
    """
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            path = f"{prefix}.{key}" if prefix else key
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SpecError(
                    ctx.file, path, f"key appears twice (lines {seen[key]} and {line})", fix="keep one", line=line
                )
            seen[key] = line
            ctx.lines[path] = line
            _index_lines(value_node, path, ctx)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            ctx.lines[path] = item.start_mark.line + 1
            _index_lines(item, path, ctx)
