"""What the confirmation stage confirms and what it costs.

The settings sized to the budget (:func:`settings_for`: K = 3 trials, S = 3 sampler seeds,
N = 4 x the search's eval_samples in a preview (CPU) and 5,000 with the full budget), the trials
chosen from an experiment folder (:func:`select_trials`: the top K by the search's metric and the
warm starts' trials, each with its best checkpoint), and the cost (:func:`cost`: network
evaluations = sum over the confirmed trials of S x N x nfe_per_sample; seconds from a measured
time per image per network pass). :mod:`search.confirmation.stage` runs the stage on them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.checkpoints import CheckpointInfo, checkpoint_info
from trainables.contract.layout import (
    CHECKPOINT_GLOB,
    CONFIRM_TOP,
    JOINT,
    METRICS_FILE,
    PARAMS_FILE,
    RESULT_FILE,
    SAMPLER_TIME_ATTR,
    STATE_FILE,
    TRIAL_PREFIX,
    WARM_START_NAMES,
    read_search_record,
    warm_label,
)
from trainables.contract.metrics import DEFAULT_METRIC, metric_mode
from trainables.contract.params import SAMPLER_PARAMS, SETTINGS, nfe_per_sample

Say = Callable[[str], None]
# ---------------------------------------------------------------------------------------------
# Which trials


@dataclass
class ConfirmTrial:
    """One trial to confirm: its id and folder name, why (``roles``: "top" and/or warm-start
    labels), its rank and value in the search, the checkpoint to sample, its params.json config,
    whether that config's sampler settings are the trial's own (a sampler trial) and the network
    evaluations per sample of its sampler."""

    trial_id: str
    folder: str
    roles: list[str]
    search_rank: int | None
    search_value: float
    checkpoint: str
    config: dict
    use_config_sampler: bool
    nfe_per_sample: int
    sampler: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # a joint trial's checkpoint's original scores


def _rows(trial_dir: Path) -> list[dict]:
    rows = []
    try:
        text = (trial_dir / RESULT_FILE).read_text(errors="replace")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _config(trial_dir: Path) -> dict:
    try:
        config = json.loads((trial_dir / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _trial_id(trial_dir: Path, rows: list[dict]) -> str:
    if rows and rows[-1].get("trial_id"):
        return str(rows[-1]["trial_id"])
    return trial_dir.name.removeprefix(TRIAL_PREFIX)


def _sampler(trained_config: dict, own: dict | None) -> dict:
    """The effective sampler: the trained-with settings, a sampler trial's own over them."""
    keys = SAMPLER_PARAMS
    out = {k: trained_config.get(k, SETTINGS[k].default) for k in keys}
    out.update({k: own[k] for k in keys if own and k in own})
    return out


def _best_checkpoint(trial_dir: Path, metric: str, mode: str) -> CheckpointInfo | None:
    sign = 1.0 if mode == "min" else -1.0
    best = None
    for folder in sorted(trial_dir.glob(CHECKPOINT_GLOB)):
        if not ((folder / STATE_FILE).is_file() and (folder / METRICS_FILE).is_file()):
            continue
        try:
            info = checkpoint_info(folder, metric)
        except ValueError:
            continue
        if math.isfinite(info.value) and (best is None or sign * info.value < sign * best.value):
            best = info
    return best


def _candidates(exp_dir: Path, kind: str, metric: str, mode: str) -> list[tuple[tuple, ConfirmTrial]]:
    """(sort key, trial) for every trial that has something to sample: a joint trial's best kept
    training checkpoint; a sampler trial's source checkpoint at its last look."""
    sign = 1.0 if mode == "min" else -1.0
    out = []
    for trial_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir() and p.name.startswith(TRIAL_PREFIX)):
        rows, config = _rows(trial_dir), _config(trial_dir)
        trial_id = _trial_id(trial_dir, rows)
        if kind == JOINT:
            best = _best_checkpoint(trial_dir, metric, mode)
            if best is None:
                continue
            sampler = _sampler(best.config, None)
            key = (sign * best.value, trial_id)
            trial = ConfirmTrial(
                trial_id, trial_dir.name, [], None, best.value, str(best.path), config, False, 0, sampler, best.metrics
            )
            trial.nfe_per_sample = nfe_per_sample(best.num_levels, sampler)
        else:
            scored = [r for r in rows if not r.get("diverged") and _finite(r.get(metric))]
            source = config.get("checkpoint")
            if not scored or not source or not (Path(source) / STATE_FILE).is_file():
                continue
            last = scored[-1]
            try:
                trained = json.loads((Path(source) / METRICS_FILE).read_text()).get("config") or {}
            except (OSError, ValueError, AttributeError):
                continue
            sampler = _sampler(trained, config)
            key = (-float(last.get(SAMPLER_TIME_ATTR, 0)), sign * float(last[metric]), trial_id)
            trial = ConfirmTrial(
                trial_id, trial_dir.name, [], None, float(last[metric]), str(source), config, True, 0, sampler
            )
            trial.nfe_per_sample = nfe_per_sample(
                int(trained.get("num_levels", SETTINGS["num_levels"].default)), sampler
            )
        out.append((key, trial))
    return sorted(out, key=lambda pair: pair[0])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def select_trials(exp_dir: str | Path, top_k: int) -> tuple[str, str, str, list[ConfirmTrial], list[str]]:
    """(kind, metric, mode, the trials to confirm, notices) of an experiment folder: the ``top_k``
    best trials by the search's own ranking (a joint trial by its best kept checkpoint; a sampler
    trial ASHA's way, by its last look), then each warm start's trial not among them. Torch-free.
    ``ValueError`` (one line) for a folder that holds no search or nothing to sample."""
    exp_dir = Path(exp_dir).expanduser().resolve()
    search = read_search_record(exp_dir)
    if not search:
        raise ValueError(f"{exp_dir}: holds no search (no readable search.json); give the folder run_search.py printed")
    kind = search.get("kind") or JOINT
    spec = search.get("spec") or {}
    metric = spec.get("metric") or DEFAULT_METRIC
    mode = spec.get("mode") or metric_mode(metric)
    ranked = [trial for _, trial in _candidates(exp_dir, kind, metric, mode)]
    if not ranked:
        what = "a scored training checkpoint" if kind == JOINT else "a scored look"
        raise ValueError(f"{exp_dir}: no trial has {what} to sample; let the search run first")
    notices = []
    if top_k > len(ranked):
        notices.append(f"--top-k {top_k}: only {len(ranked)} trial(s) have something to sample; confirming them all")
    for rank, trial in enumerate(ranked, start=1):
        trial.search_rank = rank
    chosen = ranked[:top_k]
    for trial in chosen:
        trial.roles.append(CONFIRM_TOP)
    warm_start = list(search.get("warm_start") or [])
    for warm in warm_start:
        label = str(warm.get("label"))
        match = next((t for t in ranked if warm_label(t.config, [warm]) == label), None)
        if match is None:
            notices.append(f"{WARM_START_NAMES.get(label, label)}: no trial of it has something to sample")
            continue
        if match not in chosen:
            chosen.append(match)
        match.roles.append(label)
    return kind, metric, mode, chosen, notices


# ---------------------------------------------------------------------------------------------
# Cost


def cost(trials: list[ConfirmTrial], seeds: int, samples: int, seconds_per_image_eval: float | None) -> dict:
    """Network evaluations of a confirmation (sum over trials of seeds x samples x nfe_per_sample)
    and, given a measured time per image per network pass, its sampling seconds (one task's
    share; scoring comes on top)."""
    evals = sum(seeds * samples * t.nfe_per_sample for t in trials)
    out: dict[str, Any] = {"network_evals": evals, "tasks": len(trials) * seeds}
    if seconds_per_image_eval is not None:
        out["seconds_per_image_eval"] = seconds_per_image_eval
        out["sampling_seconds"] = evals * seconds_per_image_eval
    return out
