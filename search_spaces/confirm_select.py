"""What the confirmation stage confirms and what it costs.

The settings sized to the budget (:func:`settings_for`: K = 3 trials, S = 3 sampler seeds,
N = 4 x the search's eval_samples in a preview (CPU) and 5,000 with the full budget), the trials
chosen from an experiment folder (:func:`select_trials`: the top K by the search's metric and the
warm starts' trials, each with its best checkpoint), and the cost (:func:`cost`: network
evaluations = sum over the confirmed trials of S x N x nfe_per_sample; seconds from a measured
time per image per network pass). :mod:`search_spaces.confirm` runs the stage on them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from search_spaces.checkpoints import CheckpointInfo, checkpoint_info
from search_spaces.schema import CONFIRM_MAX_SEEDS, MIN_SAMPLES, ConfirmSpec
from trainables.layout import (
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
from trainables.metrics import CONFIRM_RESAMPLES, DEFAULT_METRIC, metric_mode
from trainables.params import SAMPLER_PARAMS, SETTINGS
from trainables.units import duration

Say = Callable[[str], None]
DEFAULT_TOP_K = 3
DEFAULT_SEEDS = 3
PREVIEW_FACTOR = 4  # N = 4 x eval_samples in a preview (CPU)
PIPELINE_SEEDS = 2  # seeds of a confirmation sized for a pipeline check (paired verdicts need 2)
FULL_SAMPLES = 5000  # N with the full budget (a GPU)


@dataclass(frozen=True)
class ConfirmSettings:
    """How big the confirmation is: the ``top_k`` best trials (plus the warm starts'), ``seeds``
    sampler seeds of ``samples`` images each, ``resamples`` bootstrap draws."""

    top_k: int = DEFAULT_TOP_K
    seeds: int = DEFAULT_SEEDS
    samples: int = 0
    resamples: int = CONFIRM_RESAMPLES


def default_samples(budget_mode: str | None, eval_samples: int) -> int:
    """N when none is given: 4 x eval_samples in a preview or smoke run (a CPU), else 5,000."""
    if budget_mode in ("preview", "smoke"):
        return max(MIN_SAMPLES, PREVIEW_FACTOR * int(eval_samples))
    return FULL_SAMPLES


def pipeline_sized(settings: ConfirmSettings, eval_samples: int) -> ConfirmSettings:
    """The confirmation sized for a pipeline check (the search's best samples far from digits:
    no setting makes digits, so a full-size stage would only confirm noise): the same trials,
    :data:`PIPELINE_SEEDS` seeds of ``eval_samples`` images (at least the k-NN metrics' minimum),
    never more than ``settings`` asks."""
    return replace(
        settings,
        seeds=min(settings.seeds, PIPELINE_SEEDS),
        samples=min(settings.samples, max(MIN_SAMPLES, int(eval_samples))),
    )


def check_request(top_k: int | None, seeds: int | None, samples: int | None, resamples: int | None = None) -> None:
    """Refuse a bad --top-k / --seeds / --samples / --resamples (``ValueError``, one line)."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k {top_k}: must be at least 1")
    if seeds is not None and not 1 <= seeds <= CONFIRM_MAX_SEEDS:
        raise ValueError(f"--seeds {seeds}: must lie in 1..{CONFIRM_MAX_SEEDS}")
    if samples is not None and samples < MIN_SAMPLES:
        raise ValueError(f"--samples {samples}: must be at least {MIN_SAMPLES} (the k-NN metrics need more)")
    if resamples is not None and resamples < 100:
        raise ValueError(f"--resamples {resamples}: must be at least 100 (the 2.5% quantile needs them)")


def settings_for(
    search: dict,
    top_k: int | None = None,
    seeds: int | None = None,
    samples: int | None = None,
    resamples: int | None = None,
) -> ConfirmSettings:
    """The settings of a confirmation of the search recorded in ``search`` (search.json): what is
    given, else the spec's ``confirm`` section, else the defaults sized to its budget."""
    check_request(top_k, seeds, samples, resamples)
    spec = search.get("spec") or {}
    section = spec.get("confirm") or {}
    eval_samples = int((spec.get("budget") or {}).get("eval_samples", 1000))
    n = samples or section.get("samples") or default_samples(search.get("budget_mode"), eval_samples)
    return ConfirmSettings(
        top_k=top_k or int(section.get("top_k", DEFAULT_TOP_K)),
        seeds=seeds or int(section.get("seeds", DEFAULT_SEEDS)),
        samples=int(n),
        resamples=resamples or CONFIRM_RESAMPLES,
    )


def requested(spec_confirm: ConfirmSpec | None, flag: bool | None) -> bool:
    """Whether a search runs the stage when it ends: ``--confirm`` / ``--no-confirm`` when given,
    else whether the spec has a ``confirm`` section."""
    return flag if flag is not None else spec_confirm is not None


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


def _nfe(num_levels: int, settings: dict) -> int:
    """Network evaluations per sample: levels visited x T (+1 for the final denoising step); the
    levels as trainables.sampler_trainable.ladder_levels visits them."""
    skip, stride = int(settings.get("skip_levels", 0)), int(settings.get("level_stride", 1))
    levels = list(range(skip, num_levels, stride))
    if not levels or levels[-1] != num_levels - 1:
        levels.append(num_levels - 1)
    return len(levels) * int(settings["n_steps_each"]) + int(bool(settings.get("denoise")))


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
            trial.nfe_per_sample = _nfe(best.num_levels, sampler)
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
            trial.nfe_per_sample = _nfe(int(trained.get("num_levels", SETTINGS["num_levels"].default)), sampler)
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


def cost_line(
    settings: ConfirmSettings,
    nfes: list[int],
    seconds_per_image_eval: float | None,
    parallel: int = 1,
    task_overhead_s: float = 0.0,
) -> str:
    """One line for the cost estimate before a search: up to ``len(nfes)`` trials (top K + warm
    starts) x seeds x samples, trial i at ``nfes[i]`` network evaluations per sample, and their
    seconds with ``parallel`` tasks at a time, each task paying ``task_overhead_s`` (its start,
    the checkpoint, scoring) besides its sampling."""
    evals = settings.seeds * settings.samples * sum(nfes)
    each = f"{nfes[0]}" if len(set(nfes)) == 1 else f"{min(nfes)}-{max(nfes)}"
    line = (
        f"confirmation stage: up to {len(nfes)} trials (top {settings.top_k} + warm starts) x {settings.seeds} seeds x "
        f"{settings.samples} samples x {each} network evaluations per sample = {evals:,} network evaluations"
    )
    if seconds_per_image_eval is not None:
        rounds = math.ceil(len(nfes) * settings.seeds / max(1, parallel))
        seconds = evals * seconds_per_image_eval / max(1, parallel) + rounds * task_overhead_s
        line += f", ~{duration(seconds)} with {parallel} task(s) at a time at the measured rate"
    return line


def confirm_nfes(estimate: Any, top_k: int, warm: list[dict], num_trials: int) -> list[int]:
    """Network evaluations per sample of each trial a confirmation may sample, largest first:
    each warm start's own (its point over the typical config) and the typical trial's for the
    top K, at most ``num_trials`` of them (a bound: the top K may include warm starts)."""
    config = dict(estimate.config)
    nfes = [_nfe(int({**config, **point}["num_levels"]), {**config, **point}) for point in warm]
    nfes += [int(estimate.nfe_per_sample)] * top_k
    return sorted(nfes, reverse=True)[: max(1, min(num_trials, len(nfes)))]


def search_estimate(estimate: Any, spec: Any, options: Any, warm: list[dict]) -> tuple[str, dict]:
    """(the confirmation's lines of the cost estimate before a search, what search.json keeps of
    the estimate) for the sized ``spec`` of a joint search with the warm-start points ``warm``.
    In a preview or smoke run the stage may be sized as a pipeline check (:func:`pipeline_sized`):
    both sizes are given."""
    from search_spaces.loading import load_spec

    mode = "smoke" if getattr(options, "smoke_test", False) else "preview" if spec.previewed else "full"
    section = spec.confirm or ConfirmSpec()
    settings = ConfirmSettings(
        top_k=section.top_k,
        seeds=section.seeds,
        samples=section.samples or default_samples(mode, spec.budget.eval_samples),
    )
    nfes = confirm_nfes(estimate, settings.top_k, warm, spec.budget.num_trials)
    full = None
    if spec.previewed and spec.source and Path(spec.source).is_file():
        full = load_spec(spec.source)  # the file's full budget, for what a real result needs
        if full.budget == spec.budget and full.fixed == spec.fixed:
            full = None  # the spec has no preview: this was its whole budget
    rate, parallel = float(estimate.seconds_per_image_eval), max(1, spec.budget.max_concurrent)
    overhead = float(getattr(estimate, "startup_s", 0.0)) + float(estimate.seconds_per_scoring)
    line = cost_line(settings, nfes, rate, parallel, overhead)
    if not requested(spec.confirm, getattr(options, "confirm", None)):
        line += " (not requested: the spec's confirm section or --confirm runs it)"
    elif mode != "full" and not section.samples:
        small = pipeline_sized(settings, spec.budget.eval_samples)
        line += (
            "\n  or, where the best samples are far from digits (a pipeline check, as a CPU preview's are): "
            + cost_line(small, nfes, rate, parallel, overhead).removeprefix("confirmation stage: ")
        )
    return line, estimate_record(estimate, settings, nfes, full)


def estimate_record(estimate: Any, settings: ConfirmSettings, nfes: list[int], full_spec: Any = None) -> dict:
    """What search.json keeps of the cost estimate before a search (the report reads it): the
    measured rates, this budget's bounds, the confirmation's cost, and where the search ran a
    preview the spec's full budget projected from the same measurements (:func:`project_full`)."""
    measured = {
        k: getattr(estimate, k)
        for k in (
            "device",
            "seconds_per_iteration",
            "seconds_per_image_eval",
            "seconds_per_scoring",
            "nfe_per_sample",
            "per_trial_s",
            "concurrent",
            "upper_bound_s",
            "asha_floor_s",
        )
        if hasattr(estimate, k)
    }
    measured["config"] = {k: estimate.config.get(k) for k in ("ngf", "batch_size", "num_levels", "n_steps_each")}
    evals = settings.seeds * settings.samples * sum(nfes)
    record = {
        **measured,
        "confirmation": {
            **asdict(settings),
            "trials": len(nfes),
            "network_evals": evals,
            "sampling_seconds": evals * float(estimate.seconds_per_image_eval),
        },
    }
    if full_spec is not None:
        record["full_budget"] = project_full(estimate, full_spec)
    return record


def project_full(estimate: Any, full_spec: Any) -> dict:
    """The spec's full budget, projected from a preview's measurements: a network pass costs
    about ngf^2 (docs/NCSN.md), a training step that times the batch size. Network evaluations
    are exact; seconds are this machine's (one trial's share) and only as good as that scaling."""
    from search_spaces.estimate import typical_config

    full = typical_config(full_spec)
    small = estimate.config
    per_pass = (float(full["ngf"]) / float(small["ngf"])) ** 2
    per_step = per_pass * float(full["batch_size"]) / float(small["batch_size"])
    b = full_spec.budget
    nfe = int(full["num_levels"]) * int(full["n_steps_each"]) + int(bool(full.get("denoise")))
    evaluations = math.ceil(b.iterations / b.eval_every)
    per_trial = (
        b.iterations * estimate.seconds_per_iteration * per_step
        + evaluations * b.eval_samples * nfe * estimate.seconds_per_image_eval * per_pass
    )
    waves = math.ceil(b.num_trials / max(1, b.max_concurrent))
    return {
        "num_trials": b.num_trials,
        "max_concurrent": b.max_concurrent,
        "iterations": b.iterations,
        "eval_samples": b.eval_samples,
        "ngf": int(full["ngf"]),
        "batch_size": int(full["batch_size"]),
        "nfe_per_sample": nfe,
        "network_evals": b.num_trials * (b.iterations * int(full["batch_size"]) + evaluations * b.eval_samples * nfe),
        "per_trial_s": per_trial,
        "search_s": waves * per_trial,
        "device": estimate.device,
        "gpu": float(getattr(full_spec.resources, "gpu", 0) or 0),
    }
