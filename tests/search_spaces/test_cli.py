"""platform/run_search.py refuses every malformed search-space file before a Ray cluster starts:
exit status 2, one line naming the file and the key, nothing written."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import socket

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


def _taken_port(stack: contextlib.ExitStack) -> int:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock.getsockname()[1]


def _bad_invocations(tmp_path, taken: int) -> list[tuple[list[str], str]]:
    """(arguments after --space, the flag the one error line must name)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    sampler_folder = tmp_path / "other" / "smoke"
    sampler_folder.mkdir(parents=True)
    (sampler_folder / "search.json").write_text(json.dumps({"kind": "sampler", "spec": {}}))
    not_an_experiment = tmp_path / "other" / "plain"
    not_an_experiment.mkdir()
    return [
        (["--dashboard-port", "99999"], "--dashboard-port"),
        (["--dashboard-port", "0"], "--dashboard-port"),
        (["--dashboard-port", str(taken)], "--dashboard-port"),
        (["--dashboard-port", "8300", "--no-dashboard"], "--dashboard-port"),
        (["--address", "127.0.0.1:6379", "--dashboard-port", "8300"], "--dashboard-port"),
        (["--address", "not an address"], "--address"),
        (["--storage-path", str(a_file)], "--storage-path"),
        (["--storage-path", str(a_file / "runs")], "--storage-path"),
        (["--storage-path", "/proc/ncsn-runs"], "--storage-path"),
        (["--storage-path", "s4://bucket/runs"], "--storage-path"),
        (["--name", "a/b"], "--name"),
        (["--name", ".hidden"], "--name"),
        (["--num-trials", "0"], "--num-trials"),
        (["--num-trials", "-3"], "--num-trials"),
        (["--num-trials", "three"], "--num-trials"),
        (["--top-k", "0", "--checkpoint", str(tmp_path)], "--top-k"),
        (["--top-k", "2"], "--top-k"),
        (["--verbose", "7"], "--verbose"),
        (["--max-failures", "-1"], "--max-failures"),
        (["--budget", "huge"], "--budget"),
        (["--resume", "--num-trials", "3"], "--num-trials"),
        (["--resume", "--smoke-test"], "--smoke-test"),
        (["--resume", "--storage-path", str(tmp_path / "other"), "--name", "plain"], "--resume"),
        (["--resume", "--storage-path", str(tmp_path / "other"), "--name", "smoke", "--checkpoint", "x"], "--resume"),
        (["--checkpoint", str(tmp_path / "missing")], "--checkpoint"),
        (["--mlflow", f"http://127.0.0.1:{taken}"], "--mlflow"),  # a port that answers no MLflow server
    ]


def test_every_bad_command_line_input_is_refused_in_one_line_before_ray_starts(tmp_path):
    import ray

    with contextlib.ExitStack() as stack:
        cases = _bad_invocations(tmp_path, _taken_port(stack))
        assert len(cases) >= 15
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        for args, flag in cases:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    status = _load_cli().main(["--space", "smoke.yaml", *args])
                except SystemExit as exit_:  # argparse's own refusals (a count that is not a number)
                    status = exit_.code
            lines = err.getvalue().strip().splitlines()
            assert status == 2, (args, lines)
            assert len(lines) == 1 and "Traceback" not in lines[0], (args, lines)
            assert flag in lines[0], (args, lines[0])
            assert not ray.is_initialized(), args
        # nothing was created: no storage folder, no probe file, no experiment folder
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
        assert not (REPO / "runs").exists() or not (REPO / "runs" / "smoke").exists()
