"""MLflow tracking of a search (``--mlflow URI``, off by default): one parent run per search,
one child run per trial, built on Ray Tune's own :class:`MLflowLoggerCallback`.

- The parent run (tag ``ncsn.experiment``: the experiment folder) holds the spec and the search
  record as artifacts when the search starts, and the report when it ends.
- Each trial's run is a child of it (``mlflow.parentRunId``, tag ``ncsn.trial_id``): the trial's
  parameters, every evaluation's metrics with their 95% intervals (``kid``, ``kid_lo``,
  ``kid_hi``, ...; Ray logs every numeric result at its training iteration) and the sample grid
  of every checkpoint (``samples/<checkpoint>.png``).
- A resumed search finds its runs by those tags and continues them: no run is created twice.

MLflow is an optional dependency (``pip install -e '.[tracking]'``); the URI is checked before
any cluster starts (:func:`check_tracking`).
"""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from trainables.contract.layout import CONFIRM_DIR, CONFIRM_SUMMARY, REPORT_DIR

EXPERIMENT_TAG = "ncsn.experiment"
TRIAL_TAG = "ncsn.trial_id"
PARENT_TAG = "mlflow.parentRunId"


def check_tracking(uri: str | None) -> None:
    """Refuse ``--mlflow`` when MLflow is missing or an http(s) server does not answer
    (``ValueError``, one line with the fix)."""
    if uri is None:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ValueError(
            f"--mlflow {uri}: MLflow is not installed; pip install -e '.[tracking]' (or drop --mlflow)"
        ) from None
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as answer:
                answer.read()
        except (OSError, urllib.error.URLError) as err:
            raise ValueError(
                f"--mlflow {uri}: no MLflow server answers there ({getattr(err, 'reason', err)}); start one "
                f"(mlflow server --host 127.0.0.1 --port 5000) or fix the URI"
            ) from None


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _find_run(client, experiment_id: str, tags: dict[str, str]) -> str | None:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return runs[0].info.run_id if runs else None


def parent_run(uri: str, exp_dir: Path) -> str:
    """The search's parent run: found by its experiment folder (a resumed search), else created;
    the MLflow experiment is named after the folder. Returns its run id."""
    client = _client(uri)
    experiment_id = _experiment_id(client, exp_dir.name)
    tags = {EXPERIMENT_TAG: str(exp_dir)}
    run_id = _find_run(client, experiment_id, tags)
    if run_id is None:
        run_id = client.create_run(experiment_id, tags=tags, run_name=exp_dir.name).info.run_id
    return run_id


def log_files(uri: str, run_id: str, files: list[Path], folder: str | None = None) -> None:
    """Log the ``files`` that exist as artifacts of ``run_id`` (under ``folder``)."""
    client = _client(uri)
    for path in files:
        if path.is_file():
            client.log_artifact(run_id, str(path), artifact_path=folder)


def log_folder(uri: str, run_id: str, folder: Path, name: str) -> None:
    if folder.is_dir():
        _client(uri).log_artifacts(run_id, str(folder), artifact_path=name)


def finish(uri: str, exp_dir: Path, ended: bool) -> None:
    """After the search: the report (and the confirmation's summary) to the parent run, which
    ends when every trial did (an interrupted search's stays open for its resume)."""
    run_id = parent_run(uri, exp_dir)
    log_folder(uri, run_id, exp_dir / REPORT_DIR, REPORT_DIR)
    log_files(uri, run_id, [exp_dir / CONFIRM_DIR / CONFIRM_SUMMARY], CONFIRM_DIR)
    if ended:
        client = _client(uri)
        # a trial that ended while the search stopped on an interrupt never got its end logged,
        # and the resume does not run it again: every trial has ended now, so its run has too
        experiment_id = client.get_run(run_id).info.experiment_id
        for child in client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'"):
            if child.info.status == "RUNNING":
                client.set_terminated(child.info.run_id, status="FINISHED")
        client.set_terminated(run_id, status="FINISHED")


class TrialRuns(MLflowLoggerCallback):
    """Ray's MLflow callback with a parent run, runs found again on a resume, and the sample
    grids of the checkpoints instead of the whole trial folder."""

    def __init__(self, tracking_uri: str, experiment_name: str, parent_run_id: str):
        super().__init__(tracking_uri, experiment_name=experiment_name, tags={PARENT_TAG: parent_run_id})
        self.parent_run_id = parent_run_id

    def log_trial_start(self, trial: Any) -> None:
        if trial not in self._trial_runs:
            client = self.mlflow_util._get_client()
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: str(trial.trial_id)}
            found = _find_run(client, self.mlflow_util.experiment_id, tags)
            if found is not None:  # a resumed search: the trial's run goes on
                client.update_run(found, status="RUNNING")
                self._trial_runs[trial] = found
                return
            self.tags = {**self.tags, TRIAL_TAG: str(trial.trial_id)}
        super().log_trial_start(trial)

    def log_trial_save(self, trial: Any) -> None:
        checkpoint = getattr(trial, "checkpoint", None)
        path = Path(getattr(checkpoint, "path", "") or "")
        grid = path / "samples.png"
        if trial in self._trial_runs and grid.is_file():
            with tempfile.TemporaryDirectory() as folder:
                target = Path(folder) / f"{path.name}.png"  # named by its checkpoint in the artifact store
                target.write_bytes(grid.read_bytes())
                self.mlflow_util._get_client().log_artifact(self._trial_runs[trial], str(target), "samples")
