"""The spec loader and validator under generated input (hypothesis): random YAML structures, a
real spec with one value replaced, text, binary junk, byte-order marks, deep nesting and alias
bombs. Every input validates or is refused with a SpecError of one line naming the file, within
:data:`DEADLINE_MS` and :data:`PEAK_BYTES`; never another exception, never a hang."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import tracemalloc

import pytest
import yaml
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces.errors import SpecError
from search_spaces.loading import load_spec, parse_spec_text, resolve_spec_path
from search_spaces.schema import SearchSpec

DEADLINE_MS = 2000  # per input: the shipped specs validate in a few milliseconds
PEAK_BYTES = 64 * 2**20  # Python allocations while one input is read and validated
EXAMPLES = 300  # per strategy
FUZZ = settings(
    max_examples=EXAMPLES, deadline=DEADLINE_MS, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
SIGMAS = yaml.safe_load(resolve_spec_path("sigmas.yaml").read_text())


def paths(doc, prefix=()):
    """Every (key path) of a nested dict/list document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield (*prefix, i)
            yield from paths(value, (*prefix, i))


SIGMAS_PATHS = sorted(paths(SIGMAS), key=str)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.sampled_from(["loguniform", "choice", "int", "1e400", "-.inf", ".nan", "~", "0x1f", "on"]),
)
keys = st.one_of(st.text(max_size=12), st.sampled_from([*SIGMAS, "uniform", "loguniform", "int", "choice", "log"]))
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=30
)


def check(text: str, file: str = "fuzz.yaml") -> SearchSpec | None:
    """Validate ``text`` under the bounds; None when it was refused with one proper line."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        return parse_spec_text(text, file=file)
    except SpecError as err:
        line = str(err)
        assert "\n" not in line and line.startswith(file), line
        assert "internal error" not in line, line  # a shape the validator has no message for
        return None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < PEAK_BYTES, peak
        assert time.perf_counter() - start < DEADLINE_MS / 1000


@FUZZ
@given(documents)
def test_random_structures_validate_or_are_refused_in_one_line(doc):
    check(yaml.safe_dump(doc, allow_unicode=True))


def _replaced(doc, path, value):
    if not path:
        return value
    head, *rest = path
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[head] = _replaced(copy[head], rest, value)
    return copy


@FUZZ
@given(st.sampled_from(SIGMAS_PATHS), documents)
def test_a_real_spec_with_any_one_value_replaced(path, value):
    spec = check(yaml.safe_dump(_replaced(SIGMAS, path, value), allow_unicode=True))
    assert spec is None or isinstance(spec, SearchSpec)


@FUZZ
@given(st.text(max_size=2000))
def test_any_text(text):
    check(text)


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]))
def test_any_bytes_in_a_file_with_or_without_a_byte_order_mark(tmp_path_factory, junk, bom):
    path = tmp_path_factory.mktemp("fuzz") / "junk.yaml"
    path.write_bytes(bom + junk)
    try:
        load_spec(path)
    except SpecError as err:
        assert "\n" not in str(err) and str(err).startswith(str(path)) and "internal error" not in str(err)


def test_a_byte_order_mark_is_read_past(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + resolve_spec_path("sigmas.yaml").read_bytes())
    assert load_spec(path).name == "sigmas"


BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (BOMB, "anchors and aliases"),  # nine lines expanding to 9^9 items
        ("a: &x 1\nb: *x\n", "anchors and aliases"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 50"),
        ("x: " + "y" * 2_000_000 + "\n", "too large"),
    ],
    ids=["alias-bomb", "alias", "deep", "huge"],
)
def test_hostile_files_are_refused_by_the_cli_at_once(tmp_path, text, words):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    assert len(BOMB.splitlines()) == 9 and math.isclose(9**9, 387_420_489)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "search_spaces.spec", "check", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - start < 20  # the process's imports included; the refusal itself is linear
    assert done.returncode == 2 and done.stdout == "", done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(path)) and words in lines[0], lines
