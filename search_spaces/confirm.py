"""The confirmation stage: sample the best checkpoints of the top trials again, several seeds each,
and call which differences are real.

A search ranks trials by one evaluation each (a few hundred samples from one sampler seed).
Afterwards (automatically when the spec has a ``confirm`` section or ``run_search.py --confirm``
is given, or on demand with ``python platform/confirm.py <experiment> --top-k K --seeds S
--samples N``) this stage takes the best checkpoint of each of the top K trials and of the warm
starts' trials (the 2019 and NCSNv2 settings of a joint search; the trained-with and technique-4
samplers of a sampler search), and samples each again with S sampler seeds of N images: seed s
of every trial starts from the same initial noise (:func:`trainables.confirm_task.confirm_stream_seed`),
so the trials are paired. It never trains.

Each (trial, seed) is one Ray task with the trials' resources
(:func:`trainables.confirm_task.confirm_sample`); the driver writes its result into
``<experiment>/confirm/trial_<id>/`` as soon as it returns (record, features, sample grid; the
record last, atomically), so an interrupted stage resumes where it stopped: a (trial, seed, N)
already on disk is never sampled again. When every task is in, :func:`summarise` pools the seeds
and compares every trial with the best by a paired bootstrap (:func:`trainables.intervals.compare_samples`)
into ``confirm/summary.json``. File names: :mod:`trainables.layout`.

Defaults sized to the budget (:func:`settings_for`): K = 3, S = 3, N = 4 x the search's
eval_samples in a preview (CPU) and 5,000 with the full budget. Cost (:func:`cost`): network
evaluations = sum over the confirmed trials of S x N x nfe_per_sample; seconds from a measured
time per image per network pass.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.checkpoints import CheckpointInfo, checkpoint_info
from search_spaces.schema import CONFIRM_MAX_SEEDS, MIN_SAMPLES, ConfirmSpec
from trainables.layout import (
    CHECKPOINT_GLOB,
    CONFIRM_DIR,
    CONFIRM_FEATURES_SUFFIX,
    CONFIRM_GRID_SUFFIX,
    CONFIRM_PLAN,
    CONFIRM_RESULT_SUFFIX,
    CONFIRM_SUMMARY,
    CONFIRM_TOP,
    JOINT,
    METRICS_FILE,
    PARAMS_FILE,
    RESULT_FILE,
    SAMPLER_TIME_ATTR,
    STATE_FILE,
    TRIAL_PREFIX,
    WARM_START_NAMES,
    confirm_stem,
    read_search_record,
    trial_dirname,
)
from trainables.metrics import DEFAULT_METRIC, METRICS, metric_mode
from trainables.params import SAMPLER_PARAMS, SETTINGS

Say = Callable[[str], None]
DEFAULT_TOP_K = 3
DEFAULT_SEEDS = 3
PREVIEW_FACTOR = 4  # N = 4 x eval_samples in a preview (CPU)
FULL_SAMPLES = 5000  # N with the full budget (a GPU)
RESAMPLES = 2000  # bootstrap draws behind the confirmed intervals and verdicts


@dataclass(frozen=True)
class ConfirmSettings:
    """How big the confirmation is: the ``top_k`` best trials (plus the warm starts'), ``seeds``
    sampler seeds of ``samples`` images each, ``resamples`` bootstrap draws."""

    top_k: int = DEFAULT_TOP_K
    seeds: int = DEFAULT_SEEDS
    samples: int = 0
    resamples: int = RESAMPLES


def default_samples(budget_mode: str | None, eval_samples: int) -> int:
    """N when none is given: 4 x eval_samples in a preview or smoke run (a CPU), else 5,000."""
    if budget_mode in ("preview", "smoke"):
        return max(MIN_SAMPLES, PREVIEW_FACTOR * int(eval_samples))
    return FULL_SAMPLES


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
        resamples=resamples or RESAMPLES,
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


def _same(a: Any, b: Any) -> bool:
    # the rule analysis.load.warm_label applies: equal, floats to 1e-9 relative
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def _warm_label(config: dict, warm_start: list[dict]) -> str | None:
    for warm in warm_start:
        point = {"checkpoint": warm["checkpoint"]} if warm.get("checkpoint") is not None else {}
        point.update(warm.get("params") or {})
        if point and all(_same(config.get(k), v) for k, v in point.items()):
            return str(warm.get("label"))
    return None


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
                trial_id, trial_dir.name, [], None, best.value, str(best.path), config, False, 0, sampler
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
        match = next((t for t in ranked if _warm_label(t.config, [warm]) == label), None)
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


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def cost_line(settings: ConfirmSettings, trials: int, nfe: int, seconds_per_image_eval: float | None) -> str:
    """One line for the cost estimate before a search: up to ``trials`` trials (top K + warm
    starts) x seeds x samples x ``nfe`` network evaluations, and their seconds."""
    evals = trials * settings.seeds * settings.samples * nfe
    line = (
        f"confirmation stage: up to {trials} trials (top {settings.top_k} + warm starts) x {settings.seeds} seeds x "
        f"{settings.samples} samples x {nfe} network evaluations per sample = {evals:,} network evaluations"
    )
    if seconds_per_image_eval is not None:
        line += f", ~{duration(evals * seconds_per_image_eval)} of one trial's share at the measured rate, plus scoring"
    return line


def search_estimate(estimate: Any, spec: Any, options: Any, warm_starts: int) -> tuple[str, dict]:
    """(the confirmation's line of the cost estimate before a search, what search.json keeps of
    the estimate) for the sized ``spec`` of a joint search with ``warm_starts`` warm-start points."""
    from search_spaces.loading import load_spec

    mode = "smoke" if getattr(options, "smoke_test", False) else "preview" if spec.previewed else "full"
    section = spec.confirm or ConfirmSpec()
    settings = ConfirmSettings(
        top_k=section.top_k,
        seeds=section.seeds,
        samples=section.samples or default_samples(mode, spec.budget.eval_samples),
    )
    trials = min(spec.budget.num_trials, settings.top_k + warm_starts)
    full = None
    if spec.previewed and spec.source and Path(spec.source).is_file():
        full = load_spec(spec.source)  # the file's full budget, for what a real result needs
        if full.budget == spec.budget and full.fixed == spec.fixed:
            full = None  # the spec has no preview: this was its whole budget
    line = cost_line(settings, trials, int(estimate.nfe_per_sample), float(estimate.seconds_per_image_eval))
    if not requested(spec.confirm, getattr(options, "confirm", None)):
        line += " (not requested: the spec's confirm section or --confirm runs it)"
    return line, estimate_record(estimate, settings, trials, full)


def estimate_record(estimate: Any, settings: ConfirmSettings, trials: int, full_spec: Any = None) -> dict:
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
    evals = trials * settings.seeds * settings.samples * int(estimate.nfe_per_sample)
    record = {
        **measured,
        "confirmation": {
            **asdict(settings),
            "trials": trials,
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


# ---------------------------------------------------------------------------------------------
# Files


def confirm_dir(exp_dir: Path) -> Path:
    return Path(exp_dir) / CONFIRM_DIR


def result_paths(exp_dir: Path, trial: str, seed: int, samples: int) -> tuple[Path, Path, Path]:
    """(record, features, grid) of one (trial, seed) at N = ``samples``."""
    stem = Path(exp_dir) / CONFIRM_DIR / trial_dirname(trial) / confirm_stem(seed, samples)
    return (
        stem.with_suffix(CONFIRM_RESULT_SUFFIX),
        stem.with_suffix(CONFIRM_FEATURES_SUFFIX),
        stem.with_suffix(CONFIRM_GRID_SUFFIX),
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a reader never sees half a file


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1, default=str).encode()


def read_result(exp_dir: Path, trial: ConfirmTrial, seed: int, samples: int, search_seed: int) -> dict | None:
    """A (trial, seed) result already on disk for this checkpoint, sampler and protocol seed, or
    None (missing, unreadable, or made for something else: it is sampled again)."""
    record_path, features_path, _ = result_paths(exp_dir, trial.trial_id, seed, samples)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    same = (
        record.get("checkpoint") == str(Path(trial.checkpoint).resolve())
        and record.get("samples") == samples
        and (record.get("noise") or {}).get("search_seed") == search_seed
        and all(_same(record.get("sampler", {}).get(k), v) for k, v in trial.sampler.items())
    )
    if not same or (not record.get("diverged") and not features_path.is_file()):
        return None
    return record


def write_result(exp_dir: Path, trial_id: str, seed: int, samples: int, out: dict) -> None:
    """Write one task's result: features and grid first, the record last (its presence = done)."""
    import torch

    record_path, features_path, grid_path = result_paths(exp_dir, trial_id, seed, samples)
    if out.get("features") is not None:
        buffer = io.BytesIO()
        torch.save({"features": out["features"], "logits": out["logits"]}, buffer)
        _write_atomic(features_path, buffer.getvalue())
    if out.get("grid"):
        _write_atomic(grid_path, out["grid"])
    _write_atomic(record_path, _json_bytes(out["record"]))


# ---------------------------------------------------------------------------------------------
# The stage


@dataclass
class ConfirmPlan:
    """What a confirmation samples: the experiment, its kind and ranking metric, the settings, the
    trials, the search seed (noise streams and quality protocol), the trial resources, the
    notices and the cost."""

    exp_dir: Path
    kind: str
    metric: str
    mode: str
    settings: ConfirmSettings
    trials: list[ConfirmTrial]
    search_seed: int
    resources: dict
    notices: list[str]
    cost: dict

    def jobs(self) -> list[tuple[ConfirmTrial, int]]:
        return [(t, s) for t in self.trials for s in range(self.settings.seeds)]

    def record(self) -> dict:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "mode": self.mode,
            "settings": asdict(self.settings),
            "search_seed": self.search_seed,
            "resources": self.resources,
            "protocol": {
                "samples": self.settings.samples,
                "seeds": self.settings.seeds,
                "quality_seed": self.search_seed,
                "noise": "seed s of every trial: trainables.confirm_task.confirm_stream_seed(search seed, s, chunk)",
                "sampling": "a joint trial's trained-with sampler on its full ladder; a sampler trial's own",
                "weights": "the EMA weights where the run kept an average",
                "intervals": f"bootstrap over the generated images, {self.settings.resamples} draws, paired per seed",
            },
            "trials": [asdict(t) for t in self.trials],
            "notices": self.notices,
            "cost": self.cost,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        }


def plan_confirmation(
    exp_dir: str | Path, settings: ConfirmSettings, seconds_per_image_eval: float | None = None
) -> ConfirmPlan:
    """Everything the stage needs, read from the folder before any cluster starts (``ValueError``,
    one line, for a folder it cannot confirm)."""
    from search_spaces.experiment import resources_for
    from search_spaces.loading import parse_spec

    exp_dir = Path(exp_dir).expanduser().resolve()
    if not exp_dir.is_dir():
        raise ValueError(f"{exp_dir}: no such folder; give the experiment folder run_search.py printed")
    kind, metric, mode, trials, notices = select_trials(exp_dir, settings.top_k)
    search = read_search_record(exp_dir)
    seed = int(((search.get("spec") or {}).get("searcher") or {}).get("seed", 0))
    try:
        spec = parse_spec(search["spec"], file=str(exp_dir / "search.json"), source=search.get("source"))
        resources = resources_for(spec, 1.0)
    except (KeyError, TypeError, ValueError):
        resources = {"cpu": 1.0}
    return ConfirmPlan(
        exp_dir,
        kind,
        metric,
        mode,
        settings,
        trials,
        seed,
        resources,
        notices,
        cost(trials, settings.seeds, settings.samples, seconds_per_image_eval),
    )


def plan_lines(plan: ConfirmPlan) -> list[str]:
    """What the stage will do, for the terminal."""
    s = plan.settings
    lines = [
        f"confirmation of {plan.exp_dir}: {len(plan.trials)} trials x {s.seeds} seeds x {s.samples} samples "
        f"(paired noise per seed), ranked by {plan.metric} ({plan.mode})"
    ]
    for t in plan.trials:
        why = ", ".join(f"top {s.top_k}" if r == CONFIRM_TOP else r for r in t.roles)
        lines.append(
            f"  {t.trial_id} ({why}; search rank {t.search_rank}, {plan.metric} {t.search_value:.4g}): "
            f"{t.nfe_per_sample} network evaluations per sample"
        )
    c = plan.cost
    line = f"cost: {c['network_evals']:,} network evaluations in {c['tasks']} tasks"
    if "sampling_seconds" in c:
        line += (
            f", ~{duration(c['sampling_seconds'])} of sampling at the measured "
            f"{c['seconds_per_image_eval'] * 1e3:.3g} ms per image per pass (one task's share), plus scoring"
        )
    lines.append(line)
    return lines + [f"notice: {n}" for n in plan.notices]


def run_confirmation(plan: ConfirmPlan, options, say: Say = print) -> Path:
    """Run the tasks of ``plan`` that are not on disk yet on a Ray cluster (``options``: a
    :class:`search_spaces.options.SearchOptions`, for --address and the dashboard), write each
    result as it arrives, then :func:`summarise`. Returns the path of summary.json."""
    exp_dir = plan.exp_dir
    out = confirm_dir(exp_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / CONFIRM_PLAN, _json_bytes(plan.record()))
    s = plan.settings
    missing = [
        (t, seed) for t, seed in plan.jobs() if read_result(exp_dir, t, seed, s.samples, plan.search_seed) is None
    ]
    done = len(plan.jobs()) - len(missing)
    say(f"confirmation: {done} of {len(plan.jobs())} (trial, seed) results already on disk; {len(missing)} to sample")
    failures: list[str] = []
    if missing:
        failures = _run_tasks(plan, missing, options, say)
    path = summarise(exp_dir, plan)
    for failure in failures:
        say(f"confirmation: task failed: {failure}")
    return path


def _job(plan: ConfirmPlan, trial: ConfirmTrial, seed: int) -> dict:
    return {
        "trial_id": trial.trial_id,
        "checkpoint": trial.checkpoint,
        "config": trial.config,
        "use_config_sampler": trial.use_config_sampler,
        "samples": plan.settings.samples,
        "seed": seed,
        "search_seed": plan.search_seed,
        "resamples": 500,
        "threads": max(1, int(plan.resources.get("cpu", 1))),
    }


def _run_tasks(plan: ConfirmPlan, missing: list[tuple[ConfirmTrial, int]], options, say: Say) -> list[str]:
    import ray

    from search_spaces.experiment import ray_cluster, resources_for
    from search_spaces.loading import parse_spec
    from trainables.confirm_task import confirm_sample

    failures = []
    with ray_cluster(options, say) as resources:
        gpus = float(resources.get("GPU", 0))
        search = read_search_record(plan.exp_dir)
        try:
            spec = parse_spec(search["spec"], file=str(plan.exp_dir / "search.json"), source=search.get("source"))
            task_resources = resources_for(spec, gpus)
        except (KeyError, TypeError, ValueError):
            task_resources = {"cpu": 1.0}
        plan.resources = task_resources
        _time_a_pass(plan, missing, say)
        remote = ray.remote(_task).options(
            num_cpus=float(task_resources.get("cpu", 1)), num_gpus=float(task_resources.get("gpu", 0)), max_retries=1
        )
        pending = {remote.remote(confirm_sample, _job(plan, t, seed)): (t, seed) for t, seed in missing}
        finished = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            trial, seed = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as err:  # a task's own error (Ray wraps it): note it, go on with the rest
                failures.append(f"{trial.trial_id} seed {seed}: {str(err).strip().splitlines()[-1][:300]}")
                continue
            write_result(plan.exp_dir, trial.trial_id, seed, plan.settings.samples, result)
            finished += 1
            record = result["record"]
            value = (record.get("metrics") or {}).get(plan.metric)
            say(
                f"confirmation: {finished}/{len(missing)} {trial.trial_id} seed {seed}: {plan.metric} "
                f"{value:.4g}" + (" (diverged)" if record.get("diverged") else "")
            )
    return failures


def _time_a_pass(plan: ConfirmPlan, missing: list[tuple[ConfirmTrial, int]], say: Say) -> None:
    """Time a network pass of the first checkpoint in a task with the trials' resources (as the
    search's cost estimate does) and say what the remaining tasks cost; plan.json keeps it."""
    from trainables.calibrate import measure_frozen, on_trial_resources
    from trainables.confirm_task import MAX_BATCH

    trial = missing[0][0]
    args = (trial.checkpoint, trial.config, max(1, int(plan.resources.get("cpu", 1))), MAX_BATCH)
    try:
        timing = on_trial_resources(measure_frozen, plan.resources, 1, *args)
    except Exception as err:  # the timing is only a forecast: the tasks themselves still run
        say(f"confirmation: could not time a network pass ({err.__class__.__name__}: {err})")
        return
    seconds = float(timing[0]["seconds_per_image_eval"])
    plan.cost = cost(plan.trials, plan.settings.seeds, plan.settings.samples, seconds)
    left = sum(plan.settings.samples * t.nfe_per_sample for t, _ in missing)
    say(
        f"confirmation: {left:,} network evaluations to go, ~{duration(left * seconds)} of one task's share at "
        f"{seconds * 1e3:.3g} ms per image per pass on {timing[0].get('device', '?')}, plus scoring"
    )
    _write_atomic(confirm_dir(plan.exp_dir) / CONFIRM_PLAN, _json_bytes(plan.record()))


def _task(function, job: dict) -> dict:
    """The Ray task: one thread per CPU the task was given, then the job."""
    import torch

    torch.set_num_threads(int(job["threads"]))
    return function(job)


# ---------------------------------------------------------------------------------------------
# Pooling and verdicts


def summarise(exp_dir: str | Path, plan: ConfirmPlan) -> Path:
    """Pool the seeds of every trial whose S results are all on disk, compare each with the best by
    the paired bootstrap and write ``confirm/summary.json``; return its path. Trials with a
    missing seed are listed as incomplete, a trial whose chain diverged ranks last."""
    import torch

    from trainables import intervals

    exp_dir = Path(exp_dir)
    s = plan.settings
    records: dict[str, list[dict]] = {}
    incomplete = []
    for t in plan.trials:
        found = [read_result(exp_dir, t, seed, s.samples, plan.search_seed) for seed in range(s.seeds)]
        if any(r is None for r in found):
            incomplete.append(t.trial_id)
        else:
            records[t.trial_id] = found
    diverged = [tid for tid, recs in records.items() if any(r.get("diverged") for r in recs)]
    scored = [tid for tid in records if tid not in diverged]
    protocols = sorted({(r.get("metrics") or {}).get("protocol_id") for tid in scored for r in records[tid]})
    comparison: dict[str, Any] = {"best": None, "values": {}, "versus_best": {}}
    if scored:
        if len(protocols) > 1:
            raise ValueError(
                f"{confirm_dir(exp_dir)}: its results were scored under {len(protocols)} protocols "
                f"({', '.join(map(str, protocols))}); remove the folder and confirm again"
            )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        side = intervals.reference_side(s.samples, plan.search_seed, device=device)
        samples = {}
        for tid in scored:
            pairs = []
            for seed in range(s.seeds):
                features = result_paths(exp_dir, tid, seed, s.samples)[1]
                blob = torch.load(features, map_location=device, weights_only=True)
                pairs.append((blob["features"], blob["logits"]))
            samples[tid] = pairs
        comparison = intervals.compare_samples(samples, side, plan.metric, s.resamples)
    trials = []
    for t in plan.trials:
        recs = records.get(t.trial_id) or []
        fid_inf = [r["fid_inf"]["fid_inf"] for r in recs if r.get("fid_inf")]
        entry = {
            **{k: getattr(t, k) for k in ("trial_id", "roles", "search_rank", "search_value", "nfe_per_sample")},
            "checkpoint": t.checkpoint,
            "sampler": t.sampler,
            "status": "incomplete" if t.trial_id in incomplete else "diverged" if t.trial_id in diverged else "scored",
            "values": comparison["values"].get(t.trial_id),
            "versus_best": comparison["versus_best"].get(t.trial_id),
            "fid_inf": _mean_sd(fid_inf),
            "network_evals": sum(int(r.get("network_evals", 0)) for r in recs),
            "sample_seconds": sum(float(r.get("sample_seconds") or 0.0) for r in recs),
            "score_seconds": sum(float(r.get("score_seconds") or 0.0) for r in recs),
        }
        trials.append(entry)
    sign = 1.0 if plan.mode == "min" else -1.0

    def order(entry: dict) -> tuple:
        values = entry["values"]
        if values is None:
            return (1 if entry["status"] == "diverged" else 2, 0.0, entry["trial_id"])
        return (0, sign * values[plan.metric]["value"], entry["trial_id"])

    trials.sort(key=order)
    summary = {
        "kind": plan.kind,
        "metric": plan.metric,
        "mode": plan.mode,
        "settings": asdict(s),
        "protocol_id": protocols[0] if len(protocols) == 1 else None,
        "best": comparison["best"],
        "trials": trials,
        "incomplete": incomplete,
        "network_evals": sum(t["network_evals"] for t in trials),
        "seconds": sum(t["sample_seconds"] + t["score_seconds"] for t in trials),
        "level": comparison.get("level"),
        "resamples": comparison.get("resamples"),
        "metrics": list(METRICS),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = confirm_dir(exp_dir) / CONFIRM_SUMMARY
    _write_atomic(path, _json_bytes(summary))
    return path


def _mean_sd(values: list[float]) -> dict | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "sd": sd, "per_seed": values}


def confirm_after_search(spec: Any, exp_dir: Path, options: Any, say: Say = print) -> bool:
    """Run the stage after a search that ended when the spec or ``options.confirm`` asks for it;
    False when it was asked for and could not run (the reason is said), True otherwise."""
    if not requested(spec.confirm, getattr(options, "confirm", None)):
        return True
    try:
        plan = plan_confirmation(exp_dir, settings_for(read_search_record(exp_dir)))
        for line in plan_lines(plan):
            say(line)
        run_confirmation(plan, options, say)
    except ValueError as err:
        say(f"confirmation: not run: {err}")
        return False
    return True
