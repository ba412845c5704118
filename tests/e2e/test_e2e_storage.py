"""Storage every node can reach, on real Ray clusters.

A smoke search with ``--storage-path s3://<bucket>/runs`` on an S3-compatible server started on
127.0.0.1 (moto's server mode; endpoint and credentials in the environment as a user gives them),
its driver killed mid-trial and resumed with another local cache (as from another machine): every
trial's results and checkpoints, search.json, the spec copy, the Optuna study, the confirmation
stage and the report land in the bucket, and ``platform/report.py s3://...`` writes a report from
the bucket alone.

A two-node cluster whose worker node sees another filesystem at the storage path (its own mount
namespace with an empty tmpfs there, as a node without the NFS mount would): the search is refused
with one line before any trial starts. Ray is started with a temp dir and ports of the test's own,
and torn down by PID."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO, free_port, ray_node_ports, run_search_cli, start_search, stop_ray_nodes, wait_for_ray_nodes

from search.durability import driver
from search.folder import SMOKE_BUDGET
from trainables.contract.layout import ORPHANED_DIR


def _bucket_rows(bucket, key: str) -> list[dict]:
    rows = []
    with contextlib.suppress(Exception):  # not there yet
        for line in bucket.read(key).splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def _killed_mid_trial(bucket, args: list[str]) -> dict[str, list[dict]]:
    """Start the search; SIGKILL its driver once the bucket holds a trial with a checkpoint and a
    result that is not its last; the trials' rows in the bucket then."""
    proc = start_search(*args)
    deadline, rows = time.monotonic() + 300, {}
    while time.monotonic() < deadline and proc.poll() is None:
        keys = bucket.keys("runs/smoke/trial_")
        trials = sorted({k.split("/")[2] for k in keys})
        rows = {t: _bucket_rows(bucket, f"runs/smoke/{t}/result.json") for t in trials}
        if any(
            r and not r[-1].get("done") and any(k.startswith(f"runs/smoke/{t}/checkpoint_") for k in keys)
            for t, r in rows.items()
        ):
            break
        time.sleep(0.2)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert alive, f"the search ended before a trial was mid-way:\n{out[-3000:]}"
    return rows


def test_a_search_on_s3_killed_mid_trial_resumes_from_the_bucket_and_stores_everything_there(
    s3_bucket, tmp_path, monkeypatch
):
    """The driver is SIGKILLed mid-trial; --resume runs with another local cache (as on another
    machine: the driver's own files come from the bucket too) and finishes the search from the
    bucket: the killed trial goes on from its checkpoint there, the study holds exactly the
    requested trials, and everything lands in the bucket."""
    uri = f"s3://{s3_bucket.name}/runs"
    args = ["--space", "smoke.yaml", "--smoke-test", "--storage-path", uri, "--no-dashboard", "--no-calibration"]
    before = _killed_mid_trial(s3_bucket, args)
    mid = [t for t, r in before.items() if r and not r[-1].get("done")]
    first_copy = s3_bucket.cache / "s3" / s3_bucket.name / "runs" / "smoke"
    monkeypatch.setenv("NCSN_STORAGE_CACHE", str(tmp_path / "resume-cache"))
    exp_dir = tmp_path / "resume-cache" / "s3" / s3_bucket.name / "runs" / "smoke"
    try:
        again = [a for a in args if a != "--smoke-test"]  # a resume keeps the budget it started with
        done, _ = run_search_cli(*again, "--resume", "--confirm", timeout=600)
    finally:  # what the killed driver's cluster left, by PID
        driver.stop_orphaned_cluster(first_copy, lambda _: None)
    assert done.returncode == 0, done.stdout[-4000:]
    assert f"resuming from {uri}/smoke" in done.stdout
    keys = s3_bucket.keys("runs/smoke/")
    names = {k.removeprefix("runs/smoke/") for k in keys}
    for trial in mid:  # resumed from its checkpoint in the bucket, not from iteration 0
        if f"{trial}/result.json" not in names:  # unknown to Ray's snapshot: moved aside, replaced
            assert f"{ORPHANED_DIR}/{trial}/result.json" in names
            continue
        steps = [r["iterations"] for r in _bucket_rows(s3_bucket, f"runs/smoke/{trial}/result.json")]
        assert steps.count(steps[0]) == 1 and steps[-1] == SMOKE_BUDGET["iterations"], (trial, steps)
    for trial, rows in before.items():  # a trial that had ended did not run again
        if rows and rows[-1].get("done") and f"{trial}/result.json" in names:
            assert _bucket_rows(s3_bucket, f"runs/smoke/{trial}/result.json") == rows, trial
    assert (exp_dir / "search.json").exists()  # the resume's local copy is the new cache's
    assert {"search.json", "spec.yaml", "optuna.db", "report/report.html", "report/leaderboard.csv"} <= names
    # the confirmation stage ran on the checkpoints fetched from the bucket, and its results went back there
    assert {"confirm/plan.json", "confirm/summary.json"} <= names, sorted(names)
    plan = json.loads(s3_bucket.read("runs/smoke/confirm/plan.json"))
    summary = json.loads(s3_bucket.read("runs/smoke/confirm/summary.json"))
    assert summary["incomplete"] == [] and summary["best"] in {t["trial_id"] for t in plan["trials"]}
    for trial in plan["trials"]:  # every (trial, seed) record is in the bucket
        for seed in range(summary["settings"]["seeds"]):
            prefix = f"confirm/trial_{trial['trial_id']}/seed{seed}_"
            assert any(n.startswith(prefix) and n.endswith(".json") for n in names), prefix
    assert "Confirmation: the top trials sampled again" in s3_bucket.read("runs/smoke/report/report.md").decode()
    assert json.loads(s3_bucket.read("runs/smoke/search.json"))["storage_uri"] == uri
    trials = sorted({n.split("/")[0] for n in names if n.startswith("trial_")})
    assert len(trials) == SMOKE_BUDGET["num_trials"], trials
    for trial in trials:
        rows = [json.loads(line) for line in s3_bucket.read(f"runs/smoke/{trial}/result.json").splitlines()]
        assert rows and rows[-1]["trial_id"] == trial.removeprefix("trial_")
        checkpoints = sorted({n.split("/")[1] for n in names if n.startswith(f"{trial}/checkpoint_")})
        assert checkpoints, f"{trial} has no checkpoint in the bucket"
        for name in ("state.pt", "samples.png", "metrics.json"):
            assert len(s3_bucket.read(f"runs/smoke/{trial}/{checkpoints[-1]}/{name}")) > 0
    # the study in the bucket is the whole study, copied after the search: exactly the requested
    # trials COMPLETE, at distinct points; any other is one the resume failed as orphaned
    db = tmp_path / "optuna.db"
    db.write_bytes(s3_bucket.read("runs/smoke/optuna.db"))
    study = optuna.load_study(study_name=json.loads(s3_bucket.read("runs/smoke/search.json"))["study_name"],
                              storage=f"sqlite:///{db}")  # fmt: skip
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == SMOKE_BUDGET["num_trials"], [(t.number, t.state) for t in study.trials]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == len(complete)
    assert all(t.state == optuna.trial.TrialState.FAIL and "orphaned" in t.user_attrs
               for t in study.trials if t not in complete)  # fmt: skip
    assert f"report:      python platform/report.py {uri}/smoke" in done.stdout

    # a report from the bucket alone: a new machine's copy (another cache), into --out
    out = tmp_path / "report-from-s3"
    env = dict(os.environ, NCSN_STORAGE_CACHE=str(tmp_path / "another-machine"))
    report = subprocess.run(
        [sys.executable, "platform/report.py", f"{uri}/smoke", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    copy = tmp_path / "another-machine" / "s3" / s3_bucket.name / "runs" / "smoke"
    assert (copy / "optuna.db").exists() and not list(copy.rglob("state.pt"))
    with (out / "leaderboard.csv").open() as f:
        ranked = [row["trial_id"] for row in csv.DictReader(f)]
    assert sorted(ranked) == sorted(t.removeprefix("trial_") for t in trials)
    assert all(t.removeprefix("trial_") in (out / "report.md").read_text() for t in trials)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -m` (a mount namespace) for a node's own view")
def test_a_local_storage_path_a_worker_node_cannot_see_is_refused_before_any_trial(tmp_path, monkeypatch):
    storage = tmp_path / "runs"
    storage.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="/tmp/rs")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    address = f"127.0.0.1:{port}"
    ray_start = [sys.executable, "-m", "ray.scripts.scripts", "start", f"--temp-dir={temp_dir}", "--block"]
    head = [*ray_start, "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false", *ray_node_ports()]
    # the worker node: its own mount namespace, where the storage folder is an empty tmpfs
    worker = ["unshare", "-m", "--propagation", "private", "sh", "-c",
              f'mount -t tmpfs tmpfs "{storage}" && exec "$@"', "sh",
              *ray_start, f"--address={address}", "--num-cpus=1", *ray_node_ports()]  # fmt: skip
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # Ray's default for a cluster; the driver joins with it too
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env = dict(os.environ, RAY_TMPDIR=temp_dir)
    started = []
    try:
        with (Path(temp_dir) / "ray-start.log").open("w") as log:
            for n, command in enumerate([head, worker]):
                started.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
                wait_for_ray_nodes(address, n + 1, env, Path(temp_dir) / "ray-start.log")
        done, _ = run_search_cli(
            "--space", "smoke.yaml", "--smoke-test", "--storage-path", str(storage), "--address", address,
            "--no-calibration", timeout=300,
        )  # fmt: skip
    finally:
        stop_ray_nodes(started, temp_dir, wait_s=30)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 2, done.stdout[-3000:]
    errors = [line for line in done.stdout.splitlines() if line.startswith("run_search.py: error:")]
    assert len(errors) == 1, done.stdout[-3000:]
    assert re.search(rf"--storage-path {re.escape(str(storage))}: node \S+ \([0-9a-f]{{8}}\) ", errors[0]), errors[0]
    assert "does not see the driver's probe file there" in errors[0] and "not a filesystem every node" in errors[0]
    assert "Traceback" not in done.stdout and "Trial status" not in done.stdout
    assert not list(storage.iterdir()), list(storage.rglob("*"))  # not even the experiment folder
