"""One driver per experiment: while a search runs, a second fresh search of the same name and a
``--resume`` of it are refused with one line naming the running driver (exit 2, before a cluster
starts, nothing written), and the running search ends as if nothing had happened. Locally, and
for a search kept at a storage URI, where the second driver works from another local copy (as
from another machine) and only the bucket's driver.json, which the heartbeat keeps fresh, can tell
it that a driver runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, result_rows, start_search, trial_dirs

ARGS = ["--space", "smoke.yaml", "--no-dashboard", "--no-calibration", "--no-report", "--no-confirm"]


def _second_driver(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "platform/run_search.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _wait_until(ready, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.3)
    assert proc.poll() is None, "the search ended before a second driver could try:\n" + proc.stdout.read()[-3000:]


def _refused(done: subprocess.CompletedProcess, pid: int, where: str) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{where}: a search is still running in this folder (pid {pid} on this machine)" in lines[0], lines[0]


def test_a_second_driver_on_a_running_search_is_refused_and_the_search_is_not_harmed(tmp_path):
    storage = tmp_path / "runs"
    args = [*ARGS, "--storage-path", str(storage)]
    exp_dir = storage / "smoke"
    proc = start_search(*args)
    try:
        _wait_until(lambda: exp_dir.exists() and any(result_rows(t) for t in trial_dirs(exp_dir)), proc)
        before = sorted(p.relative_to(exp_dir).as_posix() for p in exp_dir.rglob("*"))
        _refused(_second_driver(*args), proc.pid, str(exp_dir))  # a fresh search of the same name
        _refused(_second_driver(*args, "--resume"), proc.pid, str(exp_dir))
        assert not (exp_dir / "orphaned").exists()
        assert set(before) <= {p.relative_to(exp_dir).as_posix() for p in exp_dir.rglob("*")}  # nothing taken away
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    trials = trial_dirs(exp_dir)
    assert len(trials) == 6 and all(result_rows(t)[-1].get("done") for t in trials)
    record = json.loads((exp_dir / "driver.json").read_text())
    assert record["driver"]["pid"] == proc.pid and record["ended"] >= record["heartbeat"] - 1e-3


def test_a_second_driver_from_another_local_copy_is_refused_by_the_buckets_record(s3_bucket, tmp_path):
    uri = f"s3://{s3_bucket.name}/runs"
    args = [*ARGS, "--storage-path", uri]
    proc = start_search(*args)
    try:
        _wait_until(lambda: any("/trial_" in k for k in s3_bucket.keys("runs/smoke/")), proc)
        there = json.loads(s3_bucket.read("runs/smoke/driver.json"))
        assert there["driver"]["pid"] == proc.pid and there["ended"] is None
        elsewhere = dict(os.environ, NCSN_STORAGE_CACHE=str(tmp_path / "another-machine"))
        _refused(_second_driver(*args, "--resume", env=elsewhere), proc.pid, f"{uri}/smoke")
        _refused(_second_driver(*args, env=elsewhere), proc.pid, f"{uri}/smoke")
        assert not Path(tmp_path / "another-machine").exists()  # refused before anything was pulled
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert json.loads(s3_bucket.read("runs/smoke/driver.json"))["ended"] is not None
