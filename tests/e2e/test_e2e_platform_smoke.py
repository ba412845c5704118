"""Every platform script takes ``--smoke-test``: a tiny run of the real thing, which ends with
status 0 and says what it did. The report's and the confirmation's work on a view of the session's
smoke experiment and leave the experiment itself as it was."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from search_spaces.schema import MIN_SAMPLES

SCRIPTS = sorted(p.name for p in (REPO / "platform").glob("*.py"))


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _digest(folder: Path) -> str:
    """Every file's path and bytes under ``folder`` (links not followed)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_every_platform_script_takes_smoke_test():
    for name in SCRIPTS:
        text = (REPO / "platform" / name).read_text()
        assert '"--smoke-test"' in text, f"platform/{name} takes no --smoke-test"
    assert len(SCRIPTS) == 6


def test_prepare_data_smoke_test_checks_the_cached_files_and_fetches_nothing(tmp_path):
    done = _run("platform/prepare_data.py", "--smoke-test")
    assert done.returncode == 0, done.stderr
    counts = "[980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]"  # MNIST's test labels
    assert f"test: 10000 images (1, 28, 28), label counts {counts}" in done.stdout
    empty = _run("platform/prepare_data.py", "--smoke-test", "--root", str(tmp_path))
    assert empty.returncode == 2 and len(empty.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing fetched


def test_report_and_confirm_smoke_tests_leave_the_experiment_as_it_was(smoke_experiment):
    exp = smoke_experiment.exp_dir
    before = _digest(exp)
    report = _run("platform/report.py", str(exp), "--smoke-test")
    assert report.returncode == 0, report.stderr[-3000:]
    board = Path(report.stdout.split("leaderboard: ")[1].split()[0])
    assert board.exists() and len(board.read_text().strip().splitlines()) == 1 + 2  # two trials
    confirm = _run("platform/confirm.py", str(exp), "--smoke-test", "--no-report")
    assert confirm.returncode == 0, confirm.stdout[-3000:] + confirm.stderr[-3000:]
    assert f"x 1 seeds x {MIN_SAMPLES} samples" in confirm.stdout
    view = Path(confirm.stdout.split("smoke test: the smallest confirmation, in ")[1].split()[0])
    summary = json.loads((view / "confirm" / "summary.json").read_text())
    assert summary["settings"]["seeds"] == 1 and summary["settings"]["samples"] == MIN_SAMPLES
    assert _digest(exp) == before


@pytest.mark.parametrize(
    "args",
    [
        ["platform/benchmark.py", "--smoke-test"],
        ["platform/scaling_benchmark.py", "--smoke-test"],
        ["platform/run_search.py", "--space", "sigmas.yaml", "--smoke-test", "--no-dashboard", "--no-calibration"],
    ],
    ids=["benchmark", "scaling_benchmark", "run_search"],
)
def test_the_other_scripts_smoke_tests_end_well(tmp_path, args):
    extra = {
        "platform/benchmark.py": ["--out", str(tmp_path / "bench.json")],
        "platform/scaling_benchmark.py": ["--out", str(tmp_path / "scaling.json")],
        "platform/run_search.py": ["--storage-path", str(tmp_path / "runs")],
    }[args[0]]
    done = _run(*args, *extra, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if args[0] != "platform/run_search.py":
        assert json.loads(Path(extra[1]).read_text())
