"""Experiment folders on disk -> one :class:`Experiment` (tidy pandas frames), either kind.

An experiment folder (its layout: :mod:`trainables.contract.layout`) holds ``search.json`` (the resolved
spec, the kind, warm-start points, Optuna study name; a sampler search adds its looks and the
checkpoints it samples), ``optuna.db``, Ray's ``experiment_state-*.json`` and one folder per
trial with Ray's ``result.json`` (JSON lines, one per report), ``params.json`` (the trial
config), ``error.txt`` when the trial raised, and ``checkpoint_NNNNNN/`` folders. The frames
are described in :mod:`analysis.frames`; what differs between the kinds in :mod:`analysis.kinds`.

Only files are read (never Ray's or the searcher's live state), so this works on running,
finished, interrupted and failed experiments: an empty or truncated ``result.json``, missing
checkpoints, a missing ``search.json`` or an unreadable experiment state give warnings, not errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.files import error_summary, read_json, read_result_rows, read_trial_states, trial_dirs, trial_id_from_name
from analysis.frames import best_index, eval_columns, evaluation_rows, trial_row
from analysis.kinds import Kind, kind_of
from analysis.runtime import runtime_columns
from analysis.status import trial_status
from trainables.contract.layout import (
    ERROR_FILE,
    PARAMS_FILE,
    RESULT_FILE,
    SAMPLER,
    SAMPLES_FILE,
    SEARCH_COPY,
    SEARCH_FILE,
    STUDY_FILE,
    TRAIN_TIME_ATTR,
    read_search_record,
    search_record_damaged,
    warm_label,
)
from trainables.contract.metrics import DEFAULT_METRIC, METRICS, metric_mode

__all__ = [
    "Experiment",
    "checkpoint_samples",
    "load_experiment",
    "load_experiments",
    "load_study",
    "read_result_rows",
    "read_trial_states",
    "resolve_metric",
]


@dataclass
class Experiment:
    """One experiment folder, loaded.

    ``kind`` is its :class:`analysis.kinds.Kind`; ``trials`` and ``evaluations`` the frames of
    :mod:`analysis.frames`; ``search`` is ``search.json`` (``{}`` when missing); ``params`` the
    searched parameter names with their forms; ``metric``/``mode`` the ranking metric the trial
    table summarises by; ``budget_end`` where a trial that runs to the end stops (joint: the
    budget's iterations; sampler: the last look's sample count).
    """

    exp_dir: Path
    name: str
    kind: Kind
    search: dict
    params: dict[str, dict]
    metric: str
    mode: str
    budget_end: int | None
    trials: pd.DataFrame
    evaluations: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def time_attr(self) -> str:
        return self.kind.time_attr

    @property
    def warm_start(self) -> list[dict]:
        """``[{"label": ..., "params": {...}}]`` from search.json (may be empty); a sampler
        search's points also name their ``checkpoint``."""
        return list(self.search.get("warm_start") or [])

    @property
    def study_name(self) -> str | None:
        return self.search.get("study_name")


def resolve_metric(metric: str | None, search: dict) -> tuple[str, str]:
    """(metric, mode): the named metric with its direction from the metric registry, or the
    spec's metric and mode when ``metric`` is None. ``ValueError`` naming the metric if unknown."""
    spec = search.get("spec") or {}
    if metric is None:
        metric = spec.get("metric") or DEFAULT_METRIC
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} (from {SEARCH_FILE}): unknown; use one of {sorted(METRICS)}")
        return metric, spec.get("mode") or metric_mode(metric)
    return metric, metric_mode(metric)


def _check_folder(exp_dir: Path, dirs: list[Path]) -> None:
    if not exp_dir.is_dir():
        raise ValueError(f"experiment folder {str(exp_dir)!r}: not a folder")
    if not (exp_dir / SEARCH_FILE).exists() and not dirs:
        raise ValueError(
            f"experiment folder {str(exp_dir)!r}: holds neither {SEARCH_FILE} nor trial "
            f"folders; pass the folder run_search.py printed (<storage>/<name>)"
        )


def _read_search(exp_dir: Path, warnings: list[str]) -> tuple[dict, Kind]:
    search = read_search_record(exp_dir)
    if search and search_record_damaged(exp_dir):
        warnings.append(f"{SEARCH_FILE} missing or unreadable: read the copy written with it ({SEARCH_COPY})")
    elif not search:
        read_json(exp_dir / SEARCH_FILE, warnings)  # says why it is unreadable, where it is there
        warnings.append(f"{SEARCH_FILE} missing or unreadable: no spec, budget or warm starts known")
    kind = kind_of(search.get("kind"))
    if kind.name == SAMPLER and kind.budget_end(search) is None:
        raise ValueError(
            f"experiment folder {str(exp_dir)!r}: a sampler search whose {SEARCH_FILE} lists no looks (sampler.samples)"
        )
    return search, kind


def _load_trial(
    trial_dir: Path,
    state: dict,
    exp_name: str,
    kind: Kind,
    budget_end: int | None,
    metric: str,
    mode: str,
    warm_start: list[dict],
    warnings: list[str],
) -> tuple[dict, pd.DataFrame]:
    result_rows, bad = read_result_rows(trial_dir / RESULT_FILE)
    trial_id = str(state.get("trial_id") or trial_id_from_name(trial_dir.name))
    if result_rows and result_rows[-1].get("trial_id"):
        trial_id = str(result_rows[-1]["trial_id"])
    if bad:
        warnings.append(f"trial {trial_id}: {bad} unreadable line(s) in {RESULT_FILE} skipped")
    evals = evaluation_rows(result_rows, trial_id, trial_dir, exp_name, kind)
    config = read_json(trial_dir / PARAMS_FILE, warnings) or (
        (result_rows[-1].get("config") or {}) if result_rows else {}
    )
    status, reason = trial_status(evals, error_summary(trial_dir / ERROR_FILE), state.get("status"), budget_end, kind)
    meta = {
        "experiment": exp_name,
        "trial_id": trial_id,
        "trial_dir": str(trial_dir),
        "status": status,
        "stop_reason": reason,
        "ray_status": state.get("status"),
        "bad_lines": bad,
        "warm_start": warm_label(config, warm_start),
    }
    evals["warm_start"] = meta["warm_start"]
    return {**trial_row(evals, meta, config, metric, mode, kind), **runtime_columns(result_rows)}, evals


def load_experiment(exp_dir: str | Path, metric: str | None = None) -> Experiment:
    """Load one experiment folder of either kind (see the module docstring).

    ``metric`` (default: the spec's) chooses the evaluation each joint trial is summarised at (its
    best by that metric's direction) and the value every trial ranks by. ``ValueError`` if
    ``exp_dir`` is not a folder holding ``search.json`` or at least one trial folder, or if
    ``metric`` is unknown.
    """
    exp_dir = Path(exp_dir).expanduser().resolve()
    dirs = trial_dirs(exp_dir) if exp_dir.is_dir() else []
    _check_folder(exp_dir, dirs)
    warnings: list[str] = []
    search, kind = _read_search(exp_dir, warnings)
    metric, mode = resolve_metric(metric, search)
    budget_end = kind.budget_end(search)
    states = read_trial_states(exp_dir, warnings)
    warm_start = list(search.get("warm_start") or [])
    rows, eval_frames = [], []
    for trial_dir in dirs:
        row, evals = _load_trial(
            trial_dir,
            states.get(trial_dir.name, {}),
            exp_dir.name,
            kind,
            budget_end,
            metric,
            mode,
            warm_start,
            warnings,
        )
        rows.append(row)
        eval_frames.append(evals)
    trials = (
        pd.DataFrame.from_records(rows)
        if rows
        else pd.DataFrame(columns=["experiment", "trial_id", "status", "protocol_id", kind.time_attr, *METRICS])
    )
    nonempty = [f for f in eval_frames if len(f)]
    evaluations = (
        pd.concat(nonempty, ignore_index=True)
        if nonempty
        else pd.DataFrame(columns=[*eval_columns(kind), "warm_start"])
    )
    for frame in (trials, evaluations):
        frame.attrs.update(metric=metric, mode=mode, reach=kind.reach)
    name = (search.get("spec") or {}).get("name") or exp_dir.name
    return Experiment(
        exp_dir, name, kind, search, kind.searched(search), metric, mode, budget_end, trials, evaluations, warnings
    )


def load_experiments(exp_dirs: Iterable[str | Path], metric: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Several experiment folders of one kind -> (trials, evaluations), concatenated, with an
    ``experiment`` column (the folder name). Rank them together only if they share one evaluation
    protocol (:func:`analysis.rank.check_protocols` refuses otherwise). ``metric`` default: the
    first experiment's spec metric, applied to all. ``ValueError`` for folders of different kinds."""
    experiments: list[Experiment] = []
    for path in exp_dirs:
        experiments.append(load_experiment(path, metric))
        metric = experiments[0].metric
    if not experiments:
        raise ValueError("exp_dirs: no experiment folder given")
    kinds = sorted({e.kind.name for e in experiments})
    if len(kinds) > 1:
        raise ValueError(
            f"exp_dirs: the folders hold searches of different kinds ({', '.join(kinds)}); their trials do not compare"
        )
    trials = pd.concat([e.trials for e in experiments], ignore_index=True)
    evaluations = (
        pd.concat([e.evaluations for e in experiments if len(e.evaluations)], ignore_index=True)
        if any(len(e.evaluations) for e in experiments)
        else experiments[0].evaluations.copy()
    )
    for frame in (trials, evaluations):
        frame.attrs.update(metric=experiments[0].metric, mode=experiments[0].mode, reach=experiments[0].kind.reach)
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


def checkpoint_samples(
    trial: pd.Series, evaluations: pd.DataFrame, mode: str, metric: str, time_attr: str = TRAIN_TIME_ATTR
) -> tuple[Path | None, str]:
    """The sample grid to show for a trial: the ``samples.png`` of the evaluation that summarises
    it when Ray kept that checkpoint, else the best kept checkpoint's; returns (path or None, a
    note on which one)."""
    unit = time_attr.replace("_", " ")
    best = trial.get("best_checkpoint")
    if isinstance(best, str) and (Path(best) / SAMPLES_FILE).exists():
        at = trial.get("best_iteration", trial.get(time_attr))
        return Path(best) / SAMPLES_FILE, f"best evaluation, {int(at)} {unit}"
    mine = evaluations[(evaluations["trial_id"] == trial["trial_id"]) & evaluations["checkpoint"].notna()]
    mine = mine[[(Path(c) / SAMPLES_FILE).exists() for c in mine["checkpoint"]]]
    if "experiment" in trial and len(mine):
        mine = mine[mine["experiment"] == trial["experiment"]]
    if not len(mine):
        return None, "no checkpoint with samples kept"
    pick = best_index(mine[metric], mode)
    row = mine.loc[pick] if pick is not None else mine.iloc[-1]
    return Path(row["checkpoint"]) / SAMPLES_FILE, f"kept checkpoint at {int(row[time_attr])} {unit}"
