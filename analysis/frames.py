"""Report rows -> the two frames of an experiment, for either kind.

- **evaluations**: one row per report of a trial (a learning-curve point, or a look): the kind's
  time attribute, every quality metric, the protocol id, network evaluations and seconds spent
  so far, and ``checkpoint``, the report's checkpoint folder where Ray still keeps it.
- **trials**: one row per trial: status and stop reason, the config (``config/<name>``), the
  metrics of the evaluation that summarises it (joint: its best by the ranking metric; sampler:
  its last look), the final value of the ranking metric, the totals spent, and the columns the
  kind carries over from that evaluation (see :class:`analysis.kinds.Kind`).

Compute is counted in network evaluations per image (``evals_total``): a training step on a batch
of B images counts B (forward and backward counted once), a Langevin step on N chains counts N.
``evals_total = train_evals_total + sample_evals_total`` as reported by the trainables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.kinds import COMPUTE, Kind
from trainables.contract.metrics import KID_STD, METRICS, PROTOCOL_ID, interval_keys

TOTALS = (
    "train_evals_total",
    "sample_evals_total",
    COMPUTE,
    "time_total_s",
    "train_seconds",
    "sample_seconds",
    "score_seconds",
)


def finite(values: pd.Series) -> pd.Series:
    """Boolean mask of finite numbers in ``values`` (NaN, inf and non-numbers are False)."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return pd.Series(np.isfinite(numbers.to_numpy()), index=values.index)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and not pd.isna(value)


def best_index(values: pd.Series, mode: str) -> Any:
    """Index label of the best finite value of ``values`` ("min" or "max"), None if none is finite.
    The first of equal values wins (the earlier evaluation, i.e. less compute)."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    ok = numbers[np.isfinite(numbers.to_numpy())]
    if ok.empty:
        return None
    return ok.idxmin() if mode == "min" else ok.idxmax()


def _scalar(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)


def eval_columns(kind: Kind) -> list[str]:
    return ["experiment", "trial_id", *kind.eval_columns(), "checkpoint", COMPUTE]


def _one_per_time(rows: list[dict], kind: Kind) -> list[dict]:
    """One row per point in time: a row that repeats one (Ray may log a result again; a resumed
    trial may report a point again) replaces the earlier copy."""
    by_time: dict[Any, dict] = {}
    for i, row in enumerate(rows):
        key = row.get(kind.time_attr, row.get("training_iteration", f"row{i}"))
        by_time.pop(key, None)
        by_time[key] = row
    return list(by_time.values())


def evaluation_rows(rows: list[dict], trial_id: str, trial_dir: Path, experiment: str, kind: Kind) -> pd.DataFrame:
    """One trial's report rows -> its part of the evaluations frame (see the module docstring),
    in time order. Every metric of :data:`trainables.contract.metrics.METRICS` is a column (NaN where a
    row lacks it)."""
    records = []
    for row in _one_per_time(rows, kind):
        record = {"experiment": experiment, "trial_id": str(row.get("trial_id") or trial_id)}
        for name in kind.eval_columns():
            record[name] = _scalar(row.get(kind.renamed.get(name, name), np.nan))
        ckpt = row.get("checkpoint_dir_name")
        path = trial_dir / ckpt if isinstance(ckpt, str) and ckpt else None
        record["checkpoint"] = str(path) if path is not None and path.is_dir() else None
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=eval_columns(kind))
    if len(frame):
        for name in kind.numeric:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
        frame["diverged"] = frame["diverged"].map(lambda v: v is True)
        frame["done"] = frame["done"].map(lambda v: v is True)
        frame[COMPUTE] = frame["train_evals_total"].fillna(0) + frame["sample_evals_total"].fillna(0)
        frame = frame.sort_values([kind.time_attr, "training_iteration"], kind="stable", na_position="first")
    return frame.reset_index(drop=True)


def _pick(evals: pd.DataFrame, scored: pd.DataFrame, metric: str, mode: str, kind: Kind) -> pd.Series | None:
    """The evaluation that summarises a trial: its best scored one, or its last report."""
    if kind.summarise_by == "last":
        return evals.iloc[-1] if len(evals) else None
    best = best_index(scored[metric], mode) if len(scored) else None
    return scored.loc[best] if best is not None else None


def _number(row: pd.Series | None, name: str) -> float:
    return float(row[name]) if row is not None and name in row and is_number(row[name]) else np.nan


def trial_row(evals: pd.DataFrame, meta: dict, config: dict, metric: str, mode: str, kind: Kind) -> dict:
    """One row of the trials frame: ``meta`` (experiment, trial_id, trial_dir, status, ...), the
    config as ``config/<name>``, the metrics at the summarising evaluation and the totals.

    A joint trial is summarised by its best evaluation that is not a divergence record (a trial
    with no finite ``metric`` has NaN metrics and no best checkpoint); a sampler trial by its
    last report, a divergence record's worst values included.
    """
    row = dict(meta)
    row.update({f"config/{k}": _scalar(v) for k, v in config.items()})
    scored = evals[~evals["diverged"]] if len(evals) else evals
    pick = _pick(evals, scored, metric, mode, kind)
    for name in METRICS:
        row[name] = _number(pick, name)
    row[KID_STD] = _number(pick, KID_STD)
    for name in interval_keys():  # the 95% intervals of that same evaluation
        row[name] = _number(pick, name)
    if kind.best_at:
        row[kind.best_at] = _number(pick, kind.time_attr)
    row["best_evals_total"] = _number(pick, COMPUTE)
    row["best_checkpoint"] = pick["checkpoint"] if pick is not None else None
    row["best_checkpoint_dir_name"] = pick["checkpoint_dir_name"] if pick is not None else None
    last = evals.iloc[-1] if len(evals) else None
    row[f"{metric}_last"] = _number(last, metric)
    row[kind.time_attr] = float(evals[kind.time_attr].max()) if len(evals) else 0.0
    row["evaluations"] = int(len(scored))
    protocols = [p for p in scored[PROTOCOL_ID] if isinstance(p, str) and p] if len(scored) else []
    row[PROTOCOL_ID] = (protocols[0] if kind.family == "first" else protocols[-1]) if protocols else None
    row["protocols_in_trial"] = len(set(protocols))
    for name in TOTALS:
        row[name] = _number(last, name)
    for column, config_key in kind.carried.items():
        value = pick[column] if pick is not None and column in pick else np.nan
        if (value is None or (isinstance(value, float) and np.isnan(value))) and config_key in config:
            value = _scalar(config[config_key])
        row[column] = value
    return row
