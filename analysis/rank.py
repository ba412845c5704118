"""Ranking trials by sample quality: by a metric, at equal compute, on the Pareto front, at a look.

DataFrames in, DataFrames out (the frames of :mod:`analysis.frames`). Numbers are comparable only
under one evaluation protocol (``trainables.contract.metrics.protocol_id``): every ranking here refuses a
frame that mixes protocol ids with a ``ValueError`` naming them, unless asked to rank per protocol.

Conventions:
- A trial's value is the ranking metric at the evaluation that summarises it (joint: its best;
  sampler: its last look). Lower is better for "min" metrics, higher for "max" ones.
- Ties share a rank (competition ranking: 1, 2, 2, 4); within a tie the trial that got there with
  fewer network evaluations is listed first, then by trial id.
- A trial without a value (no evaluation yet, or diverged before its first) gets no rank (<NA>)
  and is listed last. A diverged joint trial's reported worst value (inf for "min") ranks, last.
- With a ``reach`` column (a sampler search: ``samples_scored``) trials that got further rank
  first, ASHA's way, and only trials with a finite value get a rank.
- Compute is ``evals_total`` (network evaluations per image, training plus sampling; see
  :mod:`analysis.frames`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from analysis.frames import best_index, finite
from analysis.kinds import COMPUTE
from trainables.contract.layout import TRAIN_TIME_ATTR, same_value, warm_point
from trainables.contract.metrics import DEFAULT_METRIC, METRICS, MODES, NO_PROTOCOL, PROTOCOL_ID, metric_mode


def _metric_mode(frame: pd.DataFrame, metric: str | None, mode: str | None) -> tuple[str, str]:
    """The metric to rank by and its direction; ``ValueError`` for an unknown metric or mode, or a
    trials frame summarised at another metric's best evaluation."""
    summarised = frame.attrs.get("metric")
    if metric is None:
        metric = summarised or DEFAULT_METRIC
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: unknown; use one of {sorted(METRICS)}")
    if mode is None:
        mode = frame.attrs.get("mode") if metric == summarised and frame.attrs.get("mode") else metric_mode(metric)
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: use 'min' or 'max'")
    return metric, mode


def protocol_counts(frame: pd.DataFrame) -> pd.Series:
    """Number of rows per protocol id (rows without one, e.g. never evaluated, are left out)."""
    ids = frame[PROTOCOL_ID] if PROTOCOL_ID in frame else pd.Series([], dtype=object)
    ids = ids[ids.map(lambda p: isinstance(p, str) and bool(p))]
    return ids.value_counts()


def check_protocols(frame: pd.DataFrame) -> str | None:
    """The single protocol id of ``frame``'s rows (None if no row has one).

    ``ValueError`` when the rows were scored under different protocols: their numbers are not
    comparable (different reference set, sample count, feature network or seed).
    """
    counts = protocol_counts(frame)
    if len(counts) > 1:
        listing = ", ".join(f"{pid} ({n} rows)" for pid, n in counts.items())
        raise ValueError(
            f"protocol_id: these results were scored under {len(counts)} different evaluation "
            f"protocols ({listing}); their numbers are not comparable. Rank per protocol "
            f"(per_protocol=True, or --per-protocol) or compare runs with one protocol"
        )
    return counts.index[0] if len(counts) else None


def _order_keys(frame: pd.DataFrame, metric: str, mode: str, reach: str | None) -> pd.DataFrame:
    """Sort keys: how far the trial got (negated; 0 without ``reach``), the signed value (lower is
    better; NaN for no value, and for a non-finite one under ``reach``), compute, then id."""
    value = pd.to_numeric(frame[metric], errors="coerce").astype(float)
    keys = pd.DataFrame(index=frame.index)
    keys["reach"] = -pd.to_numeric(frame[reach], errors="coerce").fillna(0) if reach else 0.0
    keys["value"] = value if mode == "min" else -value
    if reach:
        keys["value"] = keys["value"].where(finite(value))
    compute_col = "best_evals_total" if "best_evals_total" in frame else COMPUTE
    keys["compute"] = pd.to_numeric(frame.get(compute_col, np.nan), errors="coerce")
    keys["experiment"] = frame["experiment"].astype(str) if "experiment" in frame else ""
    keys["trial_id"] = frame["trial_id"].astype(str)
    return keys


def _competition_rank(keys: pd.DataFrame) -> pd.Series:
    """1 + the number of rows with a strictly better (reach, value), for rows with a value."""
    rated = keys[keys["value"].notna()]
    pairs = list(zip(rated["reach"], rated["value"], strict=True))
    rank = pd.Series(pd.NA, index=keys.index, dtype="Int64")
    for idx, pair in zip(rated.index, pairs, strict=True):
        rank[idx] = 1 + sum(other < pair for other in pairs)
    return rank


def _ranked(frame: pd.DataFrame, metric: str, mode: str, reach: str | None = None) -> pd.DataFrame:
    keys = _order_keys(frame, metric, mode, reach)
    order = keys.sort_values(["reach", "value", "compute", "experiment", "trial_id"], na_position="last").index
    out = frame.loc[order].copy()
    rank = (
        _competition_rank(keys.loc[order])
        if reach
        else keys.loc[order, "value"].rank(method="min", na_option="keep").astype("Int64")
    )
    out.insert(0, "rank", rank)
    return out


def rank_trials(
    trials: pd.DataFrame,
    metric: str | None = None,
    mode: str | None = None,
    per_protocol: bool = False,
    reach: str | None = None,
) -> pd.DataFrame:
    """The trials frame sorted best first, with a ``rank`` column (see the module conventions).

    ``metric`` defaults to the one the frame was summarised by (``trials.attrs["metric"]``, the
    spec's); naming another metric ranks by that metric's value at each trial's summarising
    evaluation, so for a full re-ranking of a joint search load with ``metric=`` instead.
    ``reach`` defaults to ``trials.attrs["reach"]`` (set by :func:`analysis.load.load_experiment`
    for a sampler search). Mixed protocols raise ``ValueError`` unless ``per_protocol``: then each
    protocol is ranked on its own (a ``protocol`` column; trials without a protocol form the group
    ``"none"``), the group holding the overall best trial first.
    """
    metric, mode = _metric_mode(trials, metric, mode)
    reach = reach or trials.attrs.get("reach")
    if not per_protocol:
        check_protocols(trials)
        out = _ranked(trials, metric, mode, reach)
        out.insert(1, "protocol", out[PROTOCOL_ID].fillna(NO_PROTOCOL) if PROTOCOL_ID in out else NO_PROTOCOL)
    else:
        groups = trials[PROTOCOL_ID].fillna(NO_PROTOCOL) if len(trials) else pd.Series([], dtype=object)
        parts = [_ranked(trials[groups == g], metric, mode, reach) for g in groups.unique()]
        parts.sort(key=lambda p: (p["rank"].isna().all(), _first_key(p, metric, mode, reach)))
        out = pd.concat(parts) if parts else _ranked(trials, metric, mode, reach)
        out.insert(1, "protocol", out[PROTOCOL_ID].fillna(NO_PROTOCOL) if len(out) else [])
    out.attrs.update(trials.attrs, metric=metric, mode=mode, reach=reach)
    return out.reset_index(drop=True)


def _first_key(part: pd.DataFrame, metric: str, mode: str, reach: str | None) -> tuple[float, float]:
    if not len(part):
        return (math.inf, math.inf)
    first = _order_keys(part.iloc[:1], metric, mode, reach).iloc[0]
    value = first["value"]
    return (float(first["reach"]), value if not pd.isna(value) else math.inf)


# ---------------------------------------------------------------------------------------------
# Equal compute


def scored_evaluations(evaluations: pd.DataFrame, metric: str, compute: str = COMPUTE) -> pd.DataFrame:
    """Evaluations that measured sample quality: not a divergence record, with a finite ``metric``
    and finite ``compute``."""
    if not len(evaluations):
        return evaluations
    keep = ~evaluations["diverged"].astype(bool) & finite(evaluations[metric]) & finite(evaluations[compute])
    return evaluations[keep]


def best_within_budget(
    evaluations: pd.DataFrame, budget: float, metric: str | None = None, mode: str | None = None, compute: str = COMPUTE
) -> pd.DataFrame:
    """Each trial's best evaluation among those reached within ``budget`` network evaluations
    (``evaluations[compute] <= budget``), ranked: one row per trial that has one, best first.

    Columns: rank, trial_id (and experiment), the metric, iterations, the compute used, checkpoint.
    Refuses mixed protocols (``ValueError``).
    """
    metric, mode = _metric_mode(evaluations, metric, mode)
    if not (isinstance(budget, (int, float)) and budget > 0):
        raise ValueError(f"budget={budget!r}: must be a positive number of network evaluations")
    check_protocols(evaluations)
    within = scored_evaluations(evaluations, metric, compute)
    within = within[within[compute] <= budget]
    picks = [best_index(group[metric], mode) for _, group in within.groupby(["experiment", "trial_id"], sort=False)]
    best = within.loc[[p for p in picks if p is not None]]
    cols = [c for c in ("experiment", "trial_id", metric, TRAIN_TIME_ATTR, compute, "checkpoint") if c in best]
    best = best[cols].rename(columns={compute: "compute"})
    best["best_evals_total"] = best["compute"]
    ranked = _ranked(best, metric, mode).drop(columns=["best_evals_total"])
    ranked.attrs.update(metric=metric, mode=mode, budget=budget)
    return ranked.reset_index(drop=True)


def compute_budgets(
    evaluations: pd.DataFrame, n: int = 4, metric: str | None = None, compute: str = COMPUTE
) -> list[int]:
    """``n`` budgets (network evaluations), geometric from the smallest budget within which every
    evaluated trial has an evaluation (the largest first-evaluation compute) to the most compute
    any trial spent. Empty when nothing was evaluated."""
    metric = metric or evaluations.attrs.get("metric") or DEFAULT_METRIC
    scored = scored_evaluations(evaluations, metric, compute)
    if not len(scored):
        return []
    per_trial = scored.groupby(["experiment", "trial_id"])[compute]
    lo, hi = float(per_trial.min().max()), float(per_trial.max().max())
    if hi <= lo or n <= 1:
        return [int(round(hi))]
    grid = np.geomspace(lo, hi, n)
    return sorted({int(round(b)) for b in grid})


def equal_compute_table(
    evaluations: pd.DataFrame,
    budgets: Iterable[float],
    metric: str | None = None,
    mode: str | None = None,
    compute: str = COMPUTE,
) -> pd.DataFrame:
    """For each budget: how many trials had an evaluation within it, the best trial, its value,
    iterations and compute, and the runner-up's value. One row per budget."""
    metric, mode = _metric_mode(evaluations, metric, mode)
    rows = []
    for budget in budgets:
        ranked = best_within_budget(evaluations, budget, metric, mode, compute)
        top = ranked.iloc[0] if len(ranked) else None
        rows.append(
            {
                "budget_evals": int(budget),
                "trials_within": len(ranked),
                "best_trial": top["trial_id"] if top is not None else None,
                metric: float(top[metric]) if top is not None else np.nan,
                TRAIN_TIME_ATTR: float(top[TRAIN_TIME_ATTR]) if top is not None else np.nan,
                "compute": float(top["compute"]) if top is not None else np.nan,
                f"runner_up_{metric}": float(ranked.iloc[1][metric]) if len(ranked) > 1 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def pareto_front(
    evaluations: pd.DataFrame, metric: str | None = None, mode: str | None = None, compute: str = COMPUTE
) -> pd.DataFrame:
    """Evaluations on the quality-versus-compute Pareto front: no other evaluation reached a better
    ``metric`` with the same or less compute. Sorted by compute (ascending); each step improves
    the metric strictly. Diverged records and non-finite values are left out; mixed protocols
    raise ``ValueError``."""
    metric, mode = _metric_mode(evaluations, metric, mode)
    check_protocols(evaluations)
    points = scored_evaluations(evaluations, metric, compute)
    if not len(points):
        return points.copy()
    signed = points[metric].astype(float) * (1 if mode == "min" else -1)
    order = (
        pd.DataFrame({"compute": points[compute].astype(float), "signed": signed})
        .sort_values(["compute", "signed"], kind="stable")
        .index
    )
    keep, best = [], math.inf
    for idx in order:
        if signed[idx] < best:
            keep.append(idx)
            best = signed[idx]
    front = points.loc[keep].copy()
    front.attrs.update(metric=metric, mode=mode)
    return front.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Warm starts


def match_warm_starts(ranked: pd.DataFrame, warm_start: list[dict]) -> pd.DataFrame:
    """Which trial ran each warm-start point: ``warm_start`` is search.json's list of
    ``{"label", "params"}`` (a sampler search's points also name their ``checkpoint``); a trial
    matches when every value of the point equals its ``config/<name>`` (floats to 1e-9
    relative). Returns one row per point: label, trial_id (missing, NaN, if no trial matches;
    the best ranked if several do)."""
    rows = []
    for point in warm_start:
        values = warm_point(point)
        match = None
        for _, trial in ranked.iterrows():
            if values and all(same_value(trial.get(f"config/{k}"), v) for k, v in values.items()):
                match = trial["trial_id"]
                break
        rows.append({"label": point.get("label"), "trial_id": match})
    return pd.DataFrame(rows, columns=["label", "trial_id"])


def best_up_to(evaluations: pd.DataFrame, trial_id: str, iterations: float, metric: str, mode: str) -> float:
    """The best ``metric`` of one joint trial among its evaluations at or before ``iterations``."""
    mine = scored_evaluations(evaluations[evaluations["trial_id"] == trial_id], metric)
    mine = mine[mine[TRAIN_TIME_ATTR] <= iterations]
    pick = best_index(mine[metric], mode) if len(mine) else None
    return float(mine.loc[pick, metric]) if pick is not None else math.nan


def _warm_row(
    label: str,
    trial_id: Any,
    ranked: pd.DataFrame,
    evaluations: pd.DataFrame,
    best: pd.Series | None,
    metric: str,
    mode: str,
) -> dict:
    trial_id = trial_id if isinstance(trial_id, str) else None  # pandas turns a missing id into NaN
    row: dict[str, Any] = {"setting": label, "trial_id": trial_id}
    trial = ranked[ranked["trial_id"] == trial_id].iloc[0] if trial_id is not None else None
    for key in ("rank", "status", TRAIN_TIME_ATTR, "best_iteration", metric):
        row[key] = trial[key] if trial is not None else None
    value = float(trial[metric]) if trial is not None else math.nan
    best_value = float(best[metric]) if best is not None else math.nan
    row["ratio"] = value / best_value if best_value != 0.0 and not math.isnan(best_value) else math.nan
    both = trial is not None and best is not None
    row["best_at_same_iterations"] = (
        best_up_to(evaluations, best["trial_id"], float(trial[TRAIN_TIME_ATTR]), metric, mode) if both else math.nan
    )
    return row


def compare_with_warm_starts(
    ranked: pd.DataFrame,
    evaluations: pd.DataFrame,
    warm_start: list[dict],
    metric: str | None = None,
    mode: str | None = None,
) -> pd.DataFrame:
    """The best trial beside each warm-start setting (e.g. the 2019 NCSN and NCSNv2 MNIST
    settings) of a joint search: one row per setting with its trial, rank, status, iterations
    reached, its value, ``ratio`` = its value / the best trial's value, and
    ``best_at_same_iterations``: the best trial's value using only its evaluations up to the
    iterations that setting reached (a fair comparison when ASHA stopped the setting early).
    Settings no trial ran have no trial_id."""
    metric, mode = _metric_mode(ranked, metric, mode)
    matches = match_warm_starts(ranked, warm_start)
    best = ranked.iloc[0] if len(ranked) and not pd.isna(ranked.iloc[0]["rank"]) else None
    settings = [
        ("best found", best["trial_id"] if best is not None else None),
        *matches.itertuples(index=False, name=None),
    ]
    out = pd.DataFrame(
        [_warm_row(label, trial_id, ranked, evaluations, best, metric, mode) for label, trial_id in settings]
    )
    out.attrs.update(metric=metric, mode=mode)
    return out


# ---------------------------------------------------------------------------------------------
# One look of a sampler search (one sample count: one protocol)


def at_look(evaluations: pd.DataFrame, look: int, metric: str, mode: str, time_attr: str) -> pd.DataFrame:
    """The scored evaluations at one look (``evaluations[time_attr] == look``), best first; ties
    by network evaluations per sample, then trial id."""
    rows = scored_evaluations(evaluations, metric)
    rows = rows[rows[time_attr] == look]
    signed = pd.to_numeric(rows[metric], errors="coerce").astype(float) * (1 if mode == "min" else -1)
    return rows.assign(_key=signed).sort_values(["_key", "nfe_per_sample", "trial_id"]).drop(columns="_key")


def compare_at_common_look(
    evaluations: pd.DataFrame, a: str, b: str, metric: str, time_attr: str
) -> tuple[int | None, float, float]:
    """(largest look both trials reached with a finite value, a's value there, b's value there);
    (None, nan, nan) when they share no look."""
    rows = scored_evaluations(evaluations, metric)
    common = sorted(set(rows.loc[rows["trial_id"] == a, time_attr]) & set(rows.loc[rows["trial_id"] == b, time_attr]))
    if not common:
        return None, math.nan, math.nan
    at = rows[rows[time_attr] == common[-1]].set_index("trial_id")[metric]
    return int(common[-1]), float(at[a]), float(at[b])
