"""A real multi-node Ray cluster on this machine, started the documented way (platform/cluster/):
a head and two worker nodes, each its own `ray start` process with ports and a temp dir of this
test's own, token authentication on. A worker node's raylet is killed mid-trial; the search
finishes every trial, the killed trial resumes from its checkpoint on the live node, and the study
holds exactly the requested trials. Torn down by the PIDs the test started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO, free_port, ray_node_ports, result_rows, start_search, stop_ray_nodes, wait_for_ray_nodes

CLUSTER = REPO / "platform" / "cluster"


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="/tmp/rc")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    address = f"127.0.0.1:{port}"
    # the head uses token authentication: every node and every driver that joins says so
    env = dict(os.environ, RAY_TMPDIR=temp_dir, RAY_AUTH_MODE="token")
    head = [str(CLUSTER / "start-head.sh"), f"--port={port}", "--num-cpus=0", "--include-dashboard=false"]
    worker = [str(CLUSTER / "join.sh"), address, "--num-cpus=1"]
    started = []
    try:
        with (Path(temp_dir) / "logs-of-ray-start.txt").open("w") as log:
            for n, command in enumerate([head, worker, worker]):
                command = [*command, f"--temp-dir={temp_dir}", "--block", *ray_node_ports()]
                started.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
                wait_for_ray_nodes(address, n + 1, env, Path(temp_dir) / "logs-of-ray-start.txt")
            yield address, env, temp_dir
    finally:
        stop_ray_nodes(started, temp_dir)


def _trials(exp_dir: Path) -> list[Path]:
    return (
        sorted(p for p in exp_dir.iterdir() if p.is_dir() and p.name.startswith("trial_")) if exp_dir.exists() else []
    )


def test_killing_a_worker_node_mid_trial_loses_no_trial(cluster, tmp_path):
    _, env, temp_dir = cluster  # the search finds the cluster with --address auto (through RAY_TMPDIR)
    space = tmp_path / "fault.yaml"
    space.write_text(
        (REPO / "search_spaces" / "smoke.yaml").read_text().replace("grace_period: 10", "grace_period: 40")
    )
    storage, wanted = tmp_path / "runs", 2
    args = ["--space", str(space), "--storage-path", str(storage), "--address", "auto", "--num-trials", str(wanted),
            "--no-calibration", "--no-report"]  # fmt: skip
    exp_dir = storage / "smoke"
    start = time.monotonic()
    proc = start_search(*args, env=env)
    victim, deadline = None, time.monotonic() + 600
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for trial in _trials(exp_dir):
            rows = result_rows(trial)
            if rows and rows[-1]["iterations"] < 40:
                victim = (trial, rows[-1]["pid"], len(rows))
                break
        time.sleep(0.2)
    assert victim is not None, "no trial reported before the end:\n" + proc.communicate()[0][-3000:]
    trial, pid, rows_before = victim
    raylet = _parent(pid)
    command = Path(f"/proc/{raylet}/cmdline").read_bytes()
    assert b"raylet" in command and temp_dir.encode() in command  # a node of this cluster runs the trial
    os.kill(raylet, signal.SIGKILL)
    out, _ = proc.communicate(timeout=900)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, out[-3000:]
    rows = result_rows(trial)
    steps = [r["iterations"] for r in rows]
    assert len(rows) > rows_before and steps[-1] == 40, steps
    assert steps == sorted(set(steps)), f"the killed trial restarted from 0: {steps}"
    assert len(_trials(exp_dir)) == wanted
    record = json.loads((exp_dir / "search.json").read_text())
    study = optuna.load_study(study_name=record["study_name"], storage=f"sqlite:///{exp_dir / 'optuna.db'}")
    assert len(study.trials) == wanted
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    print(f"multi-node fault test: search took {elapsed:.0f} s; killed raylet {raylet} of trial {trial.name}")
