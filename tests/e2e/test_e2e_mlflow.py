"""MLflow tracking against a real ``mlflow server`` on 127.0.0.1 (SQLite backend, a local artifact
folder), read back through MLflow's client: a search interrupted and resumed with ``--mlflow``
has one parent run (spec, search record, report) and exactly one child run per trial (its
parameters, every evaluation's metrics with their intervals, its sample grids)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    free_port,
    result_rows,
    run_search_cli,
    start_search,
    stop_process,
    trial_dirs,
    wait_for_a_finished_trial,
)

from search.tracking import EXPERIMENT_TAG, PARENT_TAG, TRIAL_TAG


@pytest.fixture
def mlflow_server(tmp_path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "mlflow.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=log,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "mlflow.log").read_text()
                time.sleep(0.5)
        yield uri
    finally:
        stop_process(proc, timeout=20)
        log.close()


def test_a_resumed_search_logs_one_parent_and_one_run_per_trial(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    storage = tmp_path / "runs"
    args = ["--space", "smoke.yaml", "--storage-path", str(storage), "--name", "tracked"]
    args += ["--num-trials", "4", "--no-dashboard", "--no-calibration", "--mlflow", mlflow_server]
    exp_dir = storage / "tracked"
    proc = start_search(*args)
    wait_for_a_finished_trial(proc, exp_dir)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:]
    resume = [a for i, a in enumerate(args) if a != "--num-trials" and args[i - 1] != "--num-trials"]
    done, _ = run_search_cli(*resume, "--resume", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get(EXPERIMENT_TAG) == str(exp_dir)]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    files = {a.path for a in client.list_artifacts(parent)} | {a.path for a in client.list_artifacts(parent, "report")}
    assert {"spec.yaml", "search.json", "report/report.html", "report/leaderboard.csv"} <= files

    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent]
    trials = {result_rows(t)[-1]["trial_id"]: result_rows(t) for t in trial_dirs(exp_dir)}
    assert len(trials) == 4 and len(runs) == 5  # one parent, one run per trial: none created twice
    assert sorted(r.data.tags[TRIAL_TAG] for r in children) == sorted(trials)
    for run in children:
        rows = trials[run.data.tags[TRIAL_TAG]]
        assert run.info.status == "FINISHED"
        assert {"sigma_begin", "sigma_end", "step_lr"} <= set(run.data.params)
        for name in ("kid", "kid_lo", "kid_hi"):  # every evaluation, with its interval
            history = client.get_metric_history(run.info.run_id, name)
            assert [m.step for m in history] == [r["training_iteration"] for r in rows], name
            assert [m.value for m in history] == pytest.approx([r[name] for r in rows]), name
        grids = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
        assert grids and all(g.startswith("samples/checkpoint_") and g.endswith(".png") for g in grids)
