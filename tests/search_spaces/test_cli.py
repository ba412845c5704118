"""platform/run_search.py refuses every malformed search-space file before a Ray cluster starts:
exit status 2, one line naming the file and the key, nothing written."""

from __future__ import annotations

import contextlib
import importlib.util
import io

import pytest
from conftest import REPO

BAD_SPECS = sorted((REPO / "tests" / "data" / "bad_specs").glob("*.yaml"))


def _load_cli():
    spec = importlib.util.spec_from_file_location("run_search_cli", REPO / "platform" / "run_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", BAD_SPECS, ids=[p.stem for p in BAD_SPECS])
def test_malformed_spec_fails_before_ray_starts(path, tmp_path):
    import ray

    expected_key = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
    storage = tmp_path / "runs"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = _load_cli().main(["--space", str(path), "--storage-path", str(storage)])
    lines = err.getvalue().strip().splitlines()
    assert status == 2
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert path.name in lines[0]
    if expected_key != "(yaml)":
        assert expected_key in lines[0]
    assert not ray.is_initialized() and not storage.exists()
