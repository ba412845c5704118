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


# A search-space file is a few dozen lines; the bounds keep a hostile one (an alias bomb, a
# thousand-deep nesting, megabytes of text) from costing more than a refusal.
MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_DEPTH = 50


def parse_spec_text(text: str, file: str = "<string>", source: str | None = None) -> SearchSpec:
    """Validate a search-space document given as YAML text (see :func:`load_spec`). A file
    with YAML anchors or aliases, over :data:`MAX_SPEC_BYTES` or nested deeper than
    :data:`MAX_SPEC_DEPTH` is refused before anything walks it."""
    ctx = Ctx(file)
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(
            file, "(file)", f"{len(text):,} characters: too large for a search-space file", fix="check the path"
        )
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    try:
        _check_events(text, file)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(file, "(yaml)", f"not valid YAML: {' '.join(str(problem).split())[:200]}", line=line) from None
    if node is not None:
        _index_lines(node, "", ctx)
    try:
        return parse(raw, ctx, source)
    except SpecError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as err:
        # a shape the validator does not foresee: still one line, never a traceback (the fuzz
        # test fails on this wording, so each such shape gets its own message)
        problem = f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
        raise SpecError(file, "(document)", f"internal error reading this file ({problem})", fix="report it") from None


def _check_events(text: str, file: str) -> None:
    """Refuse anchors, aliases and deep nesting while reading the event stream (linear in the
    text: an alias bomb of nine lines that expands to 9^9 items is refused at its first anchor)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise SpecError(
                file,
                "(yaml)",
                "YAML anchors and aliases (&name, *name) are not supported",
                fix="write the values out",
                line=line,
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_SPEC_DEPTH:
                raise SpecError(
                    file, "(yaml)", f"nested deeper than {MAX_SPEC_DEPTH} levels", fix="flatten the file", line=line
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


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
