"""Experiment folders on disk -> tidy pandas DataFrames.

An experiment folder (written by ``platform/run_search.py``) holds ``search.json`` (the resolved
spec, warm-start points, Optuna study name), ``optuna.db``, Ray's ``experiment_state-*.json`` and
one folder per trial with Ray's ``result.json`` (JSON lines, one per report), ``params.json`` (the
trial config), ``error.txt`` when the trial raised, and up to two ``checkpoint_NNNNNN/`` folders.

Two frames come out:

- **evaluations**: one row per report of a trial (a learning-curve point): iterations, loss, every
  quality metric, the protocol id, network evaluations and seconds spent so far, the checkpoint.
- **trials**: one row per trial: status, stop reason, iterations reached, the config
  (``config/<name>`` columns), the metrics of its best evaluation by the ranking metric (with that
  evaluation's checkpoint if Ray kept it), the final value of the ranking metric, and the
  compute and wall time spent.

Compute is counted in network evaluations per image (``evals_total``): a training step on a batch
of B images counts B (forward and backward counted once), a Langevin step on N chains counts N.
``evals_total = train_evals_total + sample_evals_total`` as reported by the trainable.

Only files are read (never Ray's or the searcher's live state), so this works on running,
finished, interrupted and failed experiments: an empty or truncated ``result.json``, missing
checkpoints, a missing ``search.json`` or an unreadable experiment state give warnings, not errors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from search_spaces.runner import SEARCH_FILE, STUDY_FILE
from trainables.quality import METRICS, metric_mode
from trainables.tune_trainable import METRICS_FILE, SAMPLES_FILE

RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
ERROR_FILE = "error.txt"
REPORT_DIR = "report"

# Trial statuses, derived from the files of a trial folder.
FINISHED = "finished"      # reached the budget's iterations
STOPPED = "stopped"        # ended early by ASHA (done, fewer iterations than the budget)
DIVERGED = "diverged"      # a non-finite loss ended it (the trainable's stop_reason says where)
ERRORED = "errored"        # raised (Ray wrote error.txt, or the experiment state says ERROR)
UNFINISHED = "unfinished"  # no final result yet: still running, or its run was interrupted
STATUSES = (FINISHED, STOPPED, DIVERGED, ERRORED, UNFINISHED)

# Report fields kept in the evaluations frame (beside the metrics); Ray's bookkeeping is dropped.
EVAL_FIELDS = (
    "iterations", "loss", "loss_sigma_max", "loss_sigma_min", "kid_std", "protocol_id",
    "nfe_per_sample", "train_iters_per_s", "sample_evals_per_s", "snr_first_level",
    "snr_last_level", "snr_nominal", "diverged", "stop_reason", "evaluations", "train_seconds",
    "sample_seconds", "score_seconds", "sample_evals_total", "train_evals_total",
    "checkpoint_dir_name", "done", "training_iteration", "time_total_s",
)
COMPUTE = "evals_total"


@dataclass
class Experiment:
    """One experiment folder, loaded.

    ``trials`` and ``evaluations`` are the frames described in the module docstring; ``search`` is
    ``search.json`` (``{}`` when missing); ``params`` the searched parameter names with their
    forms from the spec; ``metric``/``mode`` the ranking metric the trial table summarises by.
    """

    exp_dir: Path
    name: str
    search: dict
    params: dict[str, dict]
    metric: str
    mode: str
    budget_iterations: int | None
    trials: pd.DataFrame
    evaluations: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def warm_start(self) -> list[dict]:
        """``[{"label": ..., "params": {...}}]`` from search.json (may be empty)."""
        return list(self.search.get("warm_start") or [])

    @property
    def study_name(self) -> str | None:
        return self.search.get("study_name")


# ---------------------------------------------------------------------------------------------
# Reading files


def read_result_rows(path: Path) -> tuple[list[dict], int]:
    """Ray's ``result.json`` as a list of dicts, and the number of lines that did not parse.

    Blank lines are skipped; a line cut short (a trial killed while Ray was writing) or otherwise
    not a JSON object is counted as bad and skipped. ``Infinity``/``NaN`` parse as floats (a
    diverged trial reports ``inf``). A missing file gives ``([], 0)``.
    """
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return [], 0
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _read_json(path: Path, warnings: list[str]) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        warnings.append(f"{path.name}: unreadable ({err.__class__.__name__}: {err})")
        return {}
    return data if isinstance(data, dict) else {}


def read_trial_states(exp_dir: Path, warnings: list[str] | None = None) -> dict[str, dict]:
    """Ray's trial records from the newest ``experiment_state-*.json``, keyed by trial folder name:
    ``{"trial_id": ..., "status": "TERMINATED" | "ERROR" | "RUNNING" | "PENDING" | ...}``.

    The file is a snapshot Ray writes now and then; it may be missing or behind the trial files.
    """
    warnings = warnings if warnings is not None else []
    states: dict[str, dict] = {}
    for path in sorted(exp_dir.glob("experiment_state-*.json"))[-1:]:
        data = _read_json(path, warnings)
        for entry in data.get("trial_data") or []:
            try:
                trial = json.loads(entry[0]) if isinstance(entry, (list, tuple)) else json.loads(entry)
                logdir = Path(trial.get("relative_logdir") or "").name
                if logdir:
                    states[logdir] = {"trial_id": trial.get("trial_id"), "status": trial.get("status")}
            except (TypeError, ValueError, IndexError, AttributeError) as err:
                warnings.append(f"{path.name}: a trial record did not parse ({err.__class__.__name__})")
    return states


def _error_summary(path: Path) -> str | None:
    """The last non-empty line of error.txt (the exception), or None when there is no error file."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    return lines[-1][:300] if lines else "error.txt is empty"


_TRIAL_ID = (re.compile(r"^trial_([0-9A-Za-z]+)$"), re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z]+)*_([0-9a-f]{5,})_\d+"))


def _trial_id_from_name(name: str) -> str:
    for pattern in _TRIAL_ID:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return name


def trial_dirs(exp_dir: Path) -> list[Path]:
    """Sub-folders of ``exp_dir`` that hold a trial (any of result.json, params.json, error.txt)."""
    out = []
    for child in sorted(exp_dir.iterdir()):
        if child.is_dir() and child.name != REPORT_DIR and any(
                (child / f).exists() for f in (RESULT_FILE, PARAMS_FILE, ERROR_FILE)):
            out.append(child)
    return out


# ---------------------------------------------------------------------------------------------
# Frames


def _scalar(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)


def evaluation_rows(rows: list[dict], trial_id: str, trial_dir: Path, experiment: str) -> pd.DataFrame:
    """One trial's report rows -> its part of the evaluations frame (see the module docstring).

    Rows that repeat a ``training_iteration`` (Ray may log the final result again with
    ``done=True``) keep their last copy. Every metric of :data:`METRICS` is a column (NaN where a
    row lacks it); ``checkpoint`` is the checkpoint folder's path where it still exists on disk.
    """
    by_step: dict[Any, dict] = {}
    for i, row in enumerate(rows):
        by_step[row.get("training_iteration", f"row{i}")] = row
    records = []
    for row in by_step.values():
        record = {"experiment": experiment, "trial_id": str(row.get("trial_id") or trial_id)}
        for name in (*METRICS, *EVAL_FIELDS):
            record[name] = _scalar(row.get(name, np.nan))
        ckpt = row.get("checkpoint_dir_name")
        path = trial_dir / ckpt if isinstance(ckpt, str) and ckpt else None
        record["checkpoint"] = str(path) if path is not None and path.is_dir() else None
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=_eval_columns())
    if len(frame):
        for name in (*METRICS, "iterations", "loss", "train_evals_total", "sample_evals_total", "time_total_s"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
        frame["diverged"] = frame["diverged"].map(lambda v: v is True)
        frame["done"] = frame["done"].map(lambda v: v is True)
        frame[COMPUTE] = frame["train_evals_total"].fillna(0) + frame["sample_evals_total"].fillna(0)
        frame = frame.sort_values(["iterations", "training_iteration"], kind="stable", na_position="first")
    return frame.reset_index(drop=True)


def _eval_columns() -> list[str]:
    return ["experiment", "trial_id", *METRICS, *EVAL_FIELDS, "checkpoint", COMPUTE]


def trial_status(evals: pd.DataFrame, error: str | None, state_status: str | None,
                 budget_iterations: int | None) -> tuple[str, str]:
    """(status, stop reason) of one trial from its evaluations frame, its error.txt summary and
    Ray's recorded status (either may be None). See :data:`STATUSES` for the meanings.

    Precedence: an error beats divergence beats finishing; a trial that reached the budget's
    iterations finished even if Ray had not yet logged ``done``; otherwise ``done`` (or a
    TERMINATED record) with fewer iterations means ASHA stopped it.
    """
    if error is not None or state_status == "ERROR":
        return ERRORED, error or "Ray recorded status ERROR (no error.txt)"
    if len(evals) and evals["diverged"].any():
        reasons = [r for r in evals.loc[evals["diverged"], "stop_reason"] if isinstance(r, str) and r]
        return DIVERGED, reasons[-1] if reasons else "diverged"
    reached = evals["iterations"].max() if len(evals) else np.nan
    if budget_iterations is not None and reached >= budget_iterations:
        return FINISHED, ""
    if len(evals) and (evals["done"].iloc[-1] or state_status == "TERMINATED"):
        if budget_iterations is None:
            return FINISHED, ""
        return STOPPED, f"stopped by the scheduler at {int(reached)} of {budget_iterations} iterations"
    if len(evals) == 0:
        return UNFINISHED, "no result yet (" + (f"Ray status {state_status}" if state_status else "no report on disk") + ")"
    return UNFINISHED, f"no final result: last report at {int(reached)} iterations (running or interrupted)"


def best_index(values: pd.Series, mode: str) -> Any:
    """Index label of the best finite value of ``values`` ("min" or "max"), None if none is finite.
    The first of equal values wins (the earlier evaluation, i.e. less compute)."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    finite = numbers[np.isfinite(numbers.to_numpy())]
    if finite.empty:
        return None
    return finite.idxmin() if mode == "min" else finite.idxmax()


def trial_row(evals: pd.DataFrame, meta: dict, config: dict, metric: str, mode: str) -> dict:
    """One row of the trials frame: ``meta`` (experiment, trial_id, trial_dir, status, ...), the
    config as ``config/<name>``, the metrics at the best evaluation by ``metric`` and totals.

    Diverged rows carry worst values, never a best; a trial with no finite ``metric`` value has
    NaN metrics and no best checkpoint.
    """
    row = dict(meta)
    row.update({f"config/{k}": _scalar(v) for k, v in config.items()})
    scored = evals[~evals["diverged"]] if len(evals) else evals
    best = best_index(scored[metric], mode) if len(scored) else None
    pick = scored.loc[best] if best is not None else None
    for name in METRICS:
        row[name] = float(pick[name]) if pick is not None else np.nan
    row["kid_std"] = float(pick["kid_std"]) if pick is not None and _is_number(pick["kid_std"]) else np.nan
    row["best_iteration"] = float(pick["iterations"]) if pick is not None else np.nan
    row["best_evals_total"] = float(pick[COMPUTE]) if pick is not None else np.nan
    row["best_checkpoint"] = pick["checkpoint"] if pick is not None else None
    row["best_checkpoint_dir_name"] = pick["checkpoint_dir_name"] if pick is not None else None
    last = evals.iloc[-1] if len(evals) else None
    row[f"{metric}_last"] = float(last[metric]) if last is not None else np.nan
    row["iterations"] = float(evals["iterations"].max()) if len(evals) else 0.0
    row["evaluations"] = int(len(scored))
    protocols = [p for p in scored["protocol_id"] if isinstance(p, str) and p] if len(scored) else []
    row["protocol_id"] = protocols[-1] if protocols else None
    row["protocols_in_trial"] = len(set(protocols))
    for name in ("train_evals_total", "sample_evals_total", COMPUTE, "time_total_s", "train_seconds",
                 "sample_seconds", "score_seconds"):
        row[name] = float(last[name]) if last is not None and _is_number(last[name]) else np.nan
    row["checkpoints_kept"] = sum(1 for c in evals["checkpoint"] if c) if len(evals) else 0
    return row


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and not pd.isna(value)


def resolve_metric(metric: str | None, search: dict) -> tuple[str, str]:
    """(metric, mode): the named metric with its direction from :data:`METRICS`, or the spec's
    metric and mode when ``metric`` is None. ``ValueError`` naming the metric if unknown."""
    spec = search.get("spec") or {}
    if metric is None:
        metric = spec.get("metric") or "kid"
        mode = spec.get("mode") or metric_mode(metric)
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} (from search.json): unknown; use one of {sorted(METRICS)}")
        return metric, mode
    return metric, metric_mode(metric)


def load_experiment(exp_dir: str | Path, metric: str | None = None) -> Experiment:
    """Load one experiment folder (see the module docstring for what it holds).

    ``metric`` (default: the spec's) chooses the evaluation each trial is summarised at: its best
    by that metric's direction. ``ValueError`` if ``exp_dir`` is not a folder holding
    ``search.json`` or at least one trial folder, or if ``metric`` is unknown.
    """
    exp_dir = Path(exp_dir).expanduser().resolve()
    if not exp_dir.is_dir():
        raise ValueError(f"experiment folder {str(exp_dir)!r}: not a folder")
    dirs = trial_dirs(exp_dir)
    if not (exp_dir / SEARCH_FILE).exists() and not dirs:
        raise ValueError(f"experiment folder {str(exp_dir)!r}: holds neither {SEARCH_FILE} nor trial "
                         f"folders; pass the folder run_search.py printed (<storage>/<name>)")
    warnings: list[str] = []
    search = _read_json(exp_dir / SEARCH_FILE, warnings)
    if not search:
        warnings.append(f"{SEARCH_FILE} missing or unreadable: no spec, budget or warm starts known")
    spec = search.get("spec") or {}
    metric, mode = resolve_metric(metric, search)
    budget_iterations = (spec.get("budget") or {}).get("iterations")
    states = read_trial_states(exp_dir, warnings)
    name = spec.get("name") or exp_dir.name

    eval_frames, rows = [], []
    for trial_dir in dirs:
        result_rows, bad = read_result_rows(trial_dir / RESULT_FILE)
        state = states.get(trial_dir.name, {})
        trial_id = str(state.get("trial_id") or _trial_id_from_name(trial_dir.name))
        if result_rows and result_rows[-1].get("trial_id"):
            trial_id = str(result_rows[-1]["trial_id"])
        if bad:
            warnings.append(f"trial {trial_id}: {bad} unreadable line(s) in result.json skipped")
        evals = evaluation_rows(result_rows, trial_id, trial_dir, exp_dir.name)
        config = _read_json(trial_dir / PARAMS_FILE, warnings) or (result_rows[-1].get("config") or {} if result_rows else {})
        error = _error_summary(trial_dir / ERROR_FILE)
        status, reason = trial_status(evals, error, state.get("status"), budget_iterations)
        meta = {"experiment": exp_dir.name, "trial_id": trial_id, "trial_dir": str(trial_dir),
                "status": status, "stop_reason": reason, "ray_status": state.get("status"),
                "bad_lines": bad}
        rows.append(trial_row(evals, meta, config, metric, mode))
        eval_frames.append(evals)
    trials = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=["experiment", "trial_id", "status", *METRICS])
    nonempty = [f for f in eval_frames if len(f)]
    evaluations = pd.concat(nonempty, ignore_index=True) if nonempty else pd.DataFrame(columns=_eval_columns())
    for frame in (trials, evaluations):
        frame.attrs.update(metric=metric, mode=mode)
    params = dict(spec.get("params") or {})
    return Experiment(exp_dir, name, search, params, metric, mode, budget_iterations, trials, evaluations, warnings)


def load_experiments(exp_dirs: Iterable[str | Path], metric: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Several experiment folders -> (trials, evaluations), concatenated, with an ``experiment``
    column (the folder name). Rank them together only if they share one evaluation protocol
    (:func:`analysis.rank.check_protocols` refuses otherwise). ``metric`` default: the first
    experiment's spec metric, applied to all."""
    experiments = []
    for path in exp_dirs:
        experiments.append(load_experiment(path, metric))
        metric = experiments[0].metric
    if not experiments:
        raise ValueError("exp_dirs: no experiment folder given")
    trials = pd.concat([e.trials for e in experiments], ignore_index=True)
    evaluations = pd.concat([e.evaluations for e in experiments if len(e.evaluations)], ignore_index=True) \
        if any(len(e.evaluations) for e in experiments) else experiments[0].evaluations.copy()
    for frame in (trials, evaluations):
        frame.attrs.update(metric=experiments[0].metric, mode=experiments[0].mode)
    return trials, evaluations


def load_study(exp: Experiment):
    """The Optuna study stored in ``<exp>/optuna.db`` (read only; None if the file is missing).

    The study name comes from search.json; without it, the database's only study is used.
    """
    import optuna

    path = exp.exp_dir / STUDY_FILE
    if not path.exists():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{path}"
    name = exp.study_name
    if name is None:
        summaries = optuna.get_all_study_summaries(storage)
        if len(summaries) != 1:
            return None
        name = summaries[0].study_name
    return optuna.load_study(study_name=name, storage=storage)


def checkpoint_samples(trial: pd.Series, evaluations: pd.DataFrame, mode: str, metric: str) -> tuple[Path | None, str]:
    """The sample grid to show for a trial: its best evaluation's ``samples.png`` when Ray kept that
    checkpoint, else the best kept checkpoint's; returns (path or None, a note on which one)."""
    best = trial.get("best_checkpoint")
    if isinstance(best, str) and (Path(best) / SAMPLES_FILE).exists():
        return Path(best) / SAMPLES_FILE, f"best evaluation, {int(trial['best_iteration'])} iterations"
    mine = evaluations[(evaluations["trial_id"] == trial["trial_id"]) & evaluations["checkpoint"].notna()]
    mine = mine[[(Path(c) / SAMPLES_FILE).exists() for c in mine["checkpoint"]]]
    if "experiment" in trial and len(mine):
        mine = mine[mine["experiment"] == trial["experiment"]]
    if not len(mine):
        return None, "no checkpoint with samples kept"
    pick = best_index(mine[metric], mode)
    row = mine.loc[pick] if pick is not None else mine.iloc[-1]
    return Path(row["checkpoint"]) / SAMPLES_FILE, f"kept checkpoint at {int(row['iterations'])} iterations"


def checkpoint_record(checkpoint: str | Path) -> dict:
    """``metrics.json`` of a checkpoint folder ({} if missing): full metric record with the class
    histogram and protocol, counters and config."""
    try:
        return json.loads((Path(checkpoint) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def finite(values: pd.Series) -> pd.Series:
    """Boolean mask of finite numbers in ``values`` (NaN, inf and non-numbers are False)."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return pd.Series(np.isfinite(numbers.to_numpy()), index=values.index)
