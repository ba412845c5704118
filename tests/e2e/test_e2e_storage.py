"""Storage every node can reach, on real Ray clusters.

A smoke search with ``--storage-path s3://<bucket>/runs`` on an S3-compatible server started on
127.0.0.1 (moto's server mode; endpoint and credentials in the environment as a user gives them):
every trial's results and checkpoints, search.json, the spec copy, the Optuna study and the report
land in the bucket, and ``platform/report.py s3://...`` writes a report from the bucket alone.

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
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO, free_port, ray_node_ports, run_search_cli, stop_ray_nodes, wait_for_ray_nodes

from search_spaces.experiment import SMOKE_BUDGET


def test_a_search_on_s3_stores_everything_in_the_bucket_and_reports_from_it(s3_bucket, tmp_path):
    uri = f"s3://{s3_bucket.name}/runs"
    done, _ = run_search_cli(
        "--space", "smoke.yaml", "--smoke-test", "--storage-path", uri, "--no-dashboard", "--no-calibration",
        "--confirm", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    keys = s3_bucket.keys("runs/smoke/")
    names = {k.removeprefix("runs/smoke/") for k in keys}
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
    assert len(trials) == SMOKE_BUDGET["num_trials"]
    for trial in trials:
        rows = [json.loads(line) for line in s3_bucket.read(f"runs/smoke/{trial}/result.json").splitlines()]
        assert rows and rows[-1]["trial_id"] == trial.removeprefix("trial_")
        checkpoints = sorted({n.split("/")[1] for n in names if n.startswith(f"{trial}/checkpoint_")})
        assert checkpoints, f"{trial} has no checkpoint in the bucket"
        for name in ("state.pt", "samples.png", "metrics.json"):
            assert len(s3_bucket.read(f"runs/smoke/{trial}/{checkpoints[-1]}/{name}")) > 0
    # the study in the bucket is the whole study, copied after the search: every trial COMPLETE
    db = tmp_path / "optuna.db"
    db.write_bytes(s3_bucket.read("runs/smoke/optuna.db"))
    with contextlib.closing(sqlite3.connect(db)) as con:
        states = [s for (s,) in con.execute("SELECT state FROM trials")]
    assert states == ["COMPLETE"] * SMOKE_BUDGET["num_trials"]
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
