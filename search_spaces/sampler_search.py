"""Stage two of a two-stage search: tune the Langevin sampler on frozen checkpoints, never retraining.

The step size, steps per level and final denoising change only sampling, so once a joint search
has trained networks, the sampler can be searched on its own at a fraction of the cost:

    python platform/run_search.py --space langevin.yaml --checkpoint runs/langevin [--top-k 3]

``--checkpoint`` takes an experiment folder (its best trial's best checkpoint by the spec's
metric, or the best checkpoints of the top k trials), a trial folder (its best checkpoint) or one
checkpoint folder (``checkpoint_NNNNNN`` holding state.pt and metrics.json).

The search: Optuna (the spec's searcher, seeded, SQLite study in the experiment folder) over the
spec's sampler params (``step_lr``, ``n_steps_each``, ``denoise`` where ``params`` searches them)
and the ``sampler_search.params`` (e.g. the truncated ladder ``skip_levels``, ``level_stride``);
with several checkpoints the checkpoint is searched too. ASHA's time attribute is the number of
samples scored (``sampler_search.samples``, e.g. 250 -> 1000 -> 4000). The first trials are the
warm starts of every checkpoint: its trained-with sampler, and the NCSNv2 technique-4 step for its
ladder (its sigma_L and ratio gamma, its T) with the final denoising step. They always run as
they are, also where a value lies outside a searched range (a notice says so; Optuna runs an
enqueued value outside its range and the searcher still samples only inside). Trials run
:func:`trainables.sampler_trainable.sampler_trainable`.

The experiment folder (default name ``<spec name>-sampler``) holds Ray's trial folders,
``optuna.db`` and ``search.json`` with ``"kind": "sampler"``, the checkpoints with their original
scores and the warm starts; ``analysis.sampler_report`` turns it into the report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from search_spaces.runner import (SEARCH_FILE, STUDY_FILE, _budget_mode, SearchOptions, choose_budget, resources_for,
                                  start_ray, trial_dirname)
from search_spaces.spec import (PARAMS, SAMPLER_KEYS, OptunaSpace, ParamSpec, SamplerSearchSpec, SearchSpec,
                                make_sampler, parse_spec)

SAMPLER_KIND = "sampler"
TIME_ATTR = "samples_scored"
STATE_FILE = "state.pt"          # trainables.tune_trainable's checkpoint layout (not imported:
METRICS_FILE = "metrics.json"    # it brings torch, which resolving a folder does not need)
# --smoke-test: a tiny sampler search whatever the spec.
SAMPLER_SMOKE = {"num_trials": 3, "max_concurrent": 2, "samples": (16, 32)}
WARM_TRAINED = "trained_with"
WARM_NCSNV2 = "ncsnv2_technique4"


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    """A training checkpoint and its original score, read from its metrics.json.

    path: the checkpoint folder; trial: its trial folder name; experiment: its experiment
    folder name; metric/value: the ranking metric and the checkpoint's original value of it;
    samples: how many samples that value was scored on; protocol_id: the scoring protocol;
    iterations: training iterations; config: the trial's flat config (ladder and trained-with
    sampler); metrics: every original metric (numbers only).
    """

    path: Path
    trial: str
    experiment: str
    metric: str
    value: float
    samples: int
    protocol_id: str
    iterations: int
    config: dict
    metrics: dict = field(default_factory=dict)

    @property
    def num_levels(self) -> int:
        return int(self.config.get("num_levels", PARAMS["num_levels"].default))

    @property
    def ladder(self) -> tuple[float, float, int]:
        """(sigma_begin, sigma_end, num_levels) the network was trained on."""
        return (float(self.config.get("sigma_begin", PARAMS["sigma_begin"].default)),
                float(self.config.get("sigma_end", PARAMS["sigma_end"].default)), self.num_levels)

    @property
    def trained_with(self) -> dict:
        """The sampler settings the checkpoint was scored with (defaults where the config has none)."""
        return {key: self.config.get(key, PARAMS[key].default) for key in SAMPLER_KEYS}

    def to_record(self) -> dict:
        """JSON form for search.json (``from_record`` reads it back)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out

    @classmethod
    def from_record(cls, record: dict) -> "CheckpointInfo":
        return cls(**{**record, "path": Path(record["path"])})


def checkpoint_info(folder: str | Path, metric: str) -> CheckpointInfo:
    """Read one checkpoint folder. ``ValueError`` naming the folder when it is not a training
    checkpoint (state.pt and metrics.json) or its metrics.json lacks ``metric``."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / STATE_FILE).is_file() or not (folder / METRICS_FILE).is_file():
        raise ValueError(f"--checkpoint {str(folder)!r}: not a training checkpoint ({STATE_FILE} and "
                         f"{METRICS_FILE} missing)")
    try:
        record = json.loads((folder / METRICS_FILE).read_text())
        metrics = record["metrics"]
        value = float(metrics[metric])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--checkpoint {str(folder)!r}: {METRICS_FILE} holds no {metric} "
                         f"({err.__class__.__name__}: {err})") from None
    config = dict(record.get("config") or {})
    counters = record.get("counters") or {}
    batch = int(config.get("batch_size", PARAMS["batch_size"].default))
    protocol = metrics.get("protocol") or {}
    return CheckpointInfo(
        path=folder, trial=folder.parent.name, experiment=folder.parent.parent.name, metric=metric,
        value=value, samples=int(protocol.get("n", 0)), protocol_id=str(metrics.get("protocol_id", "")),
        # the training trainable counts batch_size network evaluations per iteration
        iterations=int(counters.get("train_evals_total", 0)) // max(batch, 1), config=config,
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
    )


def _better(a: CheckpointInfo, mode: str) -> tuple:
    """Sort key: best value first (non-finite last), then trial and folder name for ties."""
    value = a.value if math.isfinite(a.value) else math.inf if mode == "min" else -math.inf
    return (value if mode == "min" else -value, a.trial, a.path.name)


def _checkpoint_folders(trial_dir: Path) -> list[Path]:
    return sorted(p for p in trial_dir.glob("checkpoint_*")
                  if (p / STATE_FILE).is_file() and (p / METRICS_FILE).is_file())


def _best_of(folders: list[Path], metric: str, mode: str) -> CheckpointInfo | None:
    infos = [checkpoint_info(f, metric) for f in folders]
    infos = [i for i in infos if math.isfinite(i.value)]
    return min(infos, key=lambda i: _better(i, mode)) if infos else None


def resolve_checkpoints(path: str | Path, metric: str, mode: str, top_k: int = 1) -> list[CheckpointInfo]:
    """The checkpoint(s) a ``--checkpoint`` path names, best first.

    A checkpoint folder: itself. A trial folder: its best kept checkpoint by ``metric``. An
    experiment folder: the best checkpoint of each of its ``top_k`` best trials (ranked by that
    checkpoint's value; Ray keeps each trial's best-scored checkpoints, so it is the trial's best
    evaluation). ``ValueError`` (one line, naming the path) for a path that holds none, ``top_k``
    above the trials available or with a single checkpoint, and checkpoints scored under
    different protocols (their values are not comparable).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"--top-k {top_k!r}: must be an integer >= 1")
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"--checkpoint {str(path)!r}: no such folder")
    single = (folder / STATE_FILE).exists() or bool(_checkpoint_folders(folder))
    if single and top_k > 1:
        raise ValueError(f"--top-k {top_k}: {str(folder)!r} is a single trial or checkpoint; "
                         f"give the experiment folder to take the top {top_k} trials")
    if (folder / STATE_FILE).exists():
        return [checkpoint_info(folder, metric)]
    if single:
        best = _best_of(_checkpoint_folders(folder), metric, mode)
        if best is None:
            raise ValueError(f"--checkpoint {str(folder)!r}: no checkpoint of this trial has a finite {metric}")
        return [best]
    trials = [best for trial in sorted(p for p in folder.iterdir() if p.is_dir())
              if (best := _best_of(_checkpoint_folders(trial), metric, mode)) is not None]
    if not trials:
        raise ValueError(f"--checkpoint {str(folder)!r}: holds no training checkpoint ({STATE_FILE} and "
                         f"{METRICS_FILE} in <trial>/checkpoint_*/ with a finite {metric}); give an "
                         f"experiment folder of a joint search, a trial folder or a checkpoint folder")
    protocols = sorted({t.protocol_id for t in trials})
    if len(protocols) > 1:
        raise ValueError(f"--checkpoint {str(folder)!r}: its checkpoints were scored under "
                         f"{len(protocols)} protocols ({', '.join(protocols)}); their {metric} values "
                         f"cannot rank them: pass one trial's checkpoint")
    if top_k > len(trials):
        raise ValueError(f"--top-k {top_k}: {str(folder)!r} has only {len(trials)} trial(s) with a "
                         f"scored checkpoint")
    return sorted(trials, key=lambda t: _better(t, mode))[:top_k]


# --------------------------------------------------------------------------------------------
# The sampler space and its warm starts
# --------------------------------------------------------------------------------------------


def sampler_section(spec: SearchSpec) -> SamplerSearchSpec:
    """The spec's sampler_search section, or one built from its budget when the file has none
    (its num_trials and max_concurrent, one look at eval_samples: no early stopping)."""
    if spec.sampler_search is not None:
        return spec.sampler_search
    b = spec.budget
    return SamplerSearchSpec(num_trials=b.num_trials, max_concurrent=b.max_concurrent, samples=(b.eval_samples,))


def sampler_params(spec: SearchSpec) -> dict[str, ParamSpec]:
    """Searched sampler params: the spec's sampler keys, then sampler_search.params (which may
    replace a range). ``ValueError`` when nothing would be searched."""
    params = {name: p for name, p in spec.params.items() if name in SAMPLER_KEYS}
    params.update(sampler_section(spec).params)
    if not params:
        raise ValueError(f"{spec.file}: params searches none of {', '.join(SAMPLER_KEYS)} and there is no "
                         f"sampler_search.params: a sampler search would search nothing")
    return params


def ncsnv2_step(checkpoint: CheckpointInfo, n_steps_each: int) -> float:
    """NCSNv2 technique 4: the code-convention step for the checkpoint's ladder (its sigma_L and
    ratio gamma) and T = ``n_steps_each``."""
    from trainables.sigmas import ladder_ratio, ncsnv2_step_lr

    sigma_begin, sigma_end, num_levels = checkpoint.ladder
    return ncsnv2_step_lr(sigma_end, ladder_ratio(sigma_begin, sigma_end, num_levels), int(n_steps_each))


def warm_start_settings(checkpoint: CheckpointInfo) -> list[tuple[str, dict]]:
    """(label, full sampler setting) of the checkpoint's two warm starts: its trained-with
    sampler, and the NCSNv2 sampler (technique-4 step for its ladder and its T, final denoising).
    Both visit the full ladder."""
    trained = {**checkpoint.trained_with, "skip_levels": 0, "level_stride": 1}
    steps = int(trained["n_steps_each"])
    ncsnv2 = {**trained, "step_lr": ncsnv2_step(checkpoint, steps), "denoise": True}
    return [(WARM_TRAINED, trained), (WARM_NCSNV2, ncsnv2)]


@dataclass(frozen=True)
class SamplerPlan:
    """What a sampler search runs: the checkpoints (best first), the searched params
    (``checkpoint`` among them when there are several), the constants of every trial, the warm
    starts ``[{"label", "checkpoint", "params", "setting"}]`` (params: the point Optuna enqueues;
    setting: the full sampler) and the notices to print."""

    checkpoints: list[CheckpointInfo]
    params: dict[str, ParamSpec]
    constants: dict
    warm_starts: list[dict]
    notices: list[str]

    def space(self) -> OptunaSpace:
        return OptunaSpace(tuple(self.params.values()), self.constants)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_ladder_ranges(params: dict[str, ParamSpec], checkpoints: list[CheckpointInfo], file: str) -> None:
    if "skip_levels" not in params:
        return
    fewest = min(checkpoints, key=lambda c: c.num_levels)
    highest = params["skip_levels"].bounds()[1]
    if highest > fewest.num_levels - 1:
        raise ValueError(f"{file}: sampler_search.params.skip_levels: up to {highest} levels skipped, but "
                         f"checkpoint {fewest.trial}/{fewest.path.name} has only {fewest.num_levels} levels; "
                         f"keep skip_levels <= {fewest.num_levels - 1}")


def plan_sampler_search(spec: SearchSpec, checkpoints: list[CheckpointInfo]) -> SamplerPlan:
    """The searched space, the warm-start points of every checkpoint (see
    :func:`warm_start_settings`) and the notices.

    ``ValueError`` when nothing is searched or a ladder range does not fit a checkpoint.
    """
    params = sampler_params(spec)
    _check_ladder_ranges(params, checkpoints, spec.file)
    notices: list[str] = []
    constants: dict = {}
    if len(checkpoints) > 1:
        params = {"checkpoint": ParamSpec("checkpoint", "choice", choices=tuple(str(c.path) for c in checkpoints)),
                  **params}
    else:
        constants["checkpoint"] = str(checkpoints[0].path)

    warm, seen = [], []
    for checkpoint in checkpoints:
        for label, setting in warm_start_settings(checkpoint):
            point = {"checkpoint": str(checkpoint.path)} if "checkpoint" in params else {}
            point.update({name: setting[name] for name in params if name in setting})
            if point in seen:
                notices.append(f"warm start {label} of {checkpoint.trial} is the same point as an earlier "
                               f"one: proposed once")
                continue
            outside = [f"{name}={_show(value)} outside {_show(params[name].to_dict())}"
                       for name, value in point.items() if not params[name].contains(value)]
            if outside:
                # Run as it is rather than widen the range: a user's range may bound the cost (T).
                notices.append(f"warm start {label} of {checkpoint.trial} runs with {'; '.join(outside)}; "
                               f"the searcher samples only inside the ranges")
            seen.append(point)
            warm.append({"label": label, "checkpoint": str(checkpoint.path), "params": point,
                         "setting": setting})
    return SamplerPlan(list(checkpoints), params, constants, warm, notices)


# --------------------------------------------------------------------------------------------
# Budget and Tuner
# --------------------------------------------------------------------------------------------


def sampler_budget(spec: SearchSpec, device: str = "auto"):
    from trainables.sampler_trainable import SamplerBudget

    return SamplerBudget(samples=tuple(sampler_section(spec).samples), seed=spec.searcher.seed,
                         device=device, metric=spec.metric)


def asha_settings(section: SamplerSearchSpec) -> dict:
    """ASHAScheduler kwargs: rungs at the looks (grace = first look, factor = their growth)."""
    return {"time_attr": TIME_ATTR, "max_t": section.samples[-1], "grace_period": section.samples[0],
            # one look: no rung below max_t; ASHA still needs a factor > 1
            "reduction_factor": max(2, section.reduction_factor)}


def _trainable(spec: SearchSpec, gpus: float):
    from ray import tune

    from trainables.sampler_trainable import sampler_trainable

    trainable = tune.with_parameters(sampler_trainable, budget=sampler_budget(spec))
    return tune.with_resources(trainable, resources_for(spec, gpus))


def build_sampler_tuner(spec: SearchSpec, plan: SamplerPlan, exp_dir: Path, gpus: float, study_name: str):
    """The Tuner of a fresh sampler search (searcher seeded, study in ``exp_dir/optuna.db``)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    section = sampler_section(spec)
    searcher = OptunaSearch(
        space=plan.space(), metric=spec.metric, mode=spec.mode,
        points_to_evaluate=[w["params"] for w in plan.warm_starts] or None, sampler=make_sampler(spec),
        study_name=study_name, storage=optuna.storages.RDBStorage(f"sqlite:///{exp_dir / STUDY_FILE}"),
    )
    searcher = ConcurrencyLimiter(searcher, max_concurrent=section.max_concurrent)
    return tune.Tuner(
        _trainable(spec, gpus),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=ASHAScheduler(**asha_settings(section)),
                                    num_samples=section.num_trials, metric=spec.metric, mode=spec.mode,
                                    trial_dirname_creator=trial_dirname,
                                    # a sampler trial is short: reusing its worker saves the imports
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=exp_dir.name, storage_path=str(exp_dir.parent),
            # every look's grid for the report and samples for a resume; keeping fewer would
            # force an experiment snapshot at nearly every report
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            failure_config=tune.FailureConfig(max_failures=0), verbose=1),
    )


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def is_sampler_experiment(exp_dir: str | Path) -> bool:
    """Whether ``exp_dir`` holds a sampler search (its search.json says kind "sampler")."""
    try:
        return json.loads((Path(exp_dir) / SEARCH_FILE).read_text()).get("kind") == SAMPLER_KIND
    except (OSError, ValueError, AttributeError):
        return False


def sampler_experiment_dir(spec: SearchSpec, options: SearchOptions) -> Path:
    return Path(options.storage_path).expanduser().resolve() / (options.name or f"{spec.name}-sampler")


def _sized(spec: SearchSpec, options: SearchOptions, gpus: float, say: Callable[[str], None]) -> SearchSpec:
    """The spec with the preview (no GPU), --smoke-test and --num-trials applied to its sampler
    section; its budget's num_trials/max_concurrent mirror the section (what ran)."""
    spec = choose_budget(spec, options, gpus, say)
    section = sampler_section(spec)
    if options.smoke_test:
        section = dataclasses.replace(section, **SAMPLER_SMOKE)
    if options.num_trials is not None:
        section = dataclasses.replace(section, num_trials=options.num_trials)
    spec = spec.override(num_trials=section.num_trials, max_concurrent=section.max_concurrent)
    return dataclasses.replace(spec, sampler_search=dataclasses.replace(section, preview={}))


def _cost_line(spec: SearchSpec, plan: SamplerPlan, calibrate: bool) -> str:
    """Upper bound of the network evaluations (every trial to the last look at the largest T
    and every level), and its time from one measured batch where ``calibrate``."""
    section = sampler_section(spec)
    steps = [int(w["setting"]["n_steps_each"]) for w in plan.warm_starts]  # they may lie outside the range
    steps.append(plan.params["n_steps_each"].bounds()[1] if "n_steps_each" in plan.params else max(steps))
    nfe = max(c.num_levels for c in plan.checkpoints) * max(steps) + 1
    total = section.num_trials * section.samples[-1] * nfe
    line = (f"cost bound: {section.num_trials} trials x {section.samples[-1]} samples x {nfe} network "
            f"evaluations per sample = {total:,} network evaluations without early stopping; ASHA stops "
            f"most trials after {section.samples[0]} samples")
    if calibrate:
        seconds = _seconds_per_image_eval(plan.checkpoints[0], threads=max(1, int(spec.resources.cpu)))
        line += (f"; measured {seconds * 1e3:.2f} ms per image per network pass here, so at most "
                 f"~{total * seconds / 3600:.2f} h of one trial's share, {section.max_concurrent} trials at a time")
    return line


def _seconds_per_image_eval(checkpoint: CheckpointInfo, threads: int, batch: int = 32) -> float:
    """Seconds per image per network pass, measured on this machine with a trial's CPU share."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _time_forward(checkpoint, batch)
    finally:
        torch.set_num_threads(saved)


def _time_forward(checkpoint: CheckpointInfo, batch: int) -> float:
    import torch

    from trainables.sampler_trainable import FrozenCheckpoint

    frozen = FrozenCheckpoint(checkpoint.path)
    size = frozen.trainer.config.image_size
    x = torch.rand(batch, 1, size, size, device=frozen.trainer.device)
    level = torch.zeros(batch, dtype=torch.long, device=frozen.trainer.device)
    score = frozen.score_fn()
    with torch.inference_mode():
        score(x, level)  # warm-up
        start = time.perf_counter()
        score(x, level)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
    return (time.perf_counter() - start) / batch


def run_sampler_search(spec: SearchSpec, options: SearchOptions, say: Callable[[str], None] = print):
    """Run (or resume) a sampler-only search; return (spec as run, experiment folder, results).

    Everything the user gave is checked before Ray starts (``ValueError``, one line)."""
    import ray

    exp_dir = sampler_experiment_dir(spec, options)
    if options.resume:
        if not is_sampler_experiment(exp_dir):
            raise ValueError(f"--resume: {exp_dir} holds no sampler search to resume; check --storage-path and --name")
        record = json.loads((exp_dir / SEARCH_FILE).read_text())
        spec = parse_spec(record["spec"], file=str(exp_dir / SEARCH_FILE), source=record["source"])
        resources = start_ray(options, say)
        try:
            from ray import tune

            say(f"resuming the sampler search {exp_dir}")
            tuner = tune.Tuner.restore(str(exp_dir), _trainable(spec, float(resources.get("GPU", 0))),
                                       resume_unfinished=True, resume_errored=True)
            results = tuner.fit()
        finally:
            ray.shutdown()
        return spec, exp_dir, results

    if options.checkpoint is None:
        raise ValueError("a sampler search needs --checkpoint <experiment, trial or checkpoint folder>")
    if exp_dir.exists() and any(exp_dir.iterdir()):
        raise ValueError(f"experiment folder {exp_dir} already exists; pass --resume to continue it "
                         f"or --name to start a new one")
    checkpoints = resolve_checkpoints(options.checkpoint, spec.metric, spec.mode, options.top_k)
    plan_sampler_search(spec, checkpoints)  # fail on the space before Ray starts
    resources = start_ray(options, say)
    try:
        gpus = float(resources.get("GPU", 0))
        spec = _sized(spec, options, gpus, say)
        plan = plan_sampler_search(spec, checkpoints)
        exp_dir.mkdir(parents=True, exist_ok=True)
        for c in checkpoints:
            say(f"checkpoint {c.experiment}/{c.trial}/{c.path.name}: {c.iterations} training iterations, "
                f"original {spec.metric} {c.value:.4g} on {c.samples} samples (trained-with sampler "
                f"step_lr={float(c.trained_with['step_lr']):.3g}, n_steps_each={c.trained_with['n_steps_each']}, "
                f"denoise={c.trained_with['denoise']})")
        for notice in plan.notices:
            say(f"notice: {notice}")
        say(_cost_line(spec, plan, options.calibrate))
        study_name = f"{exp_dir.name}-{uuid.uuid4().hex[:8]}"
        section = sampler_section(spec)
        record = {
            "kind": SAMPLER_KIND, "spec": spec.to_dict(), "source": str(spec.source) if spec.source else None,
            "budget_mode": _budget_mode(options, gpus), "study_name": study_name,
            "checkpoints": [c.to_record() for c in checkpoints],
            "warm_start": plan.warm_starts,
            "sampler": {"samples": list(section.samples), "num_trials": section.num_trials,
                        "max_concurrent": section.max_concurrent, "time_attr": TIME_ATTR,
                        "params": {name: p.to_dict() for name, p in plan.params.items()},
                        "constants": plan.constants},
            "notices": plan.notices, "resources": resources_for(spec, gpus),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if spec.source and Path(spec.source).exists():
            shutil.copyfile(spec.source, exp_dir / "spec.yaml")
        tmp = exp_dir / f"{SEARCH_FILE}.tmp"
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, exp_dir / SEARCH_FILE)
        tuner = build_sampler_tuner(spec, plan, exp_dir, gpus, study_name)
        say(f"results: {exp_dir}")
        results = tuner.fit()
    finally:
        ray.shutdown()
    return spec, exp_dir, results



def summarize_sampler_search(spec: SearchSpec, exp_dir: Path, results, write_report: bool = True,
                             top: int = 5) -> str:
    """The closing text of a sampler search: best samplers at the last look beside each
    checkpoint's original score, ASHA's stops, network evaluations spent, where things are."""
    record = json.loads((exp_dir / SEARCH_FILE).read_text())
    samples = record["sampler"]["samples"]
    metric, mode = spec.metric, spec.mode
    frame = results.get_dataframe()
    lines = [f"\n{len(frame)} sampler trials in {exp_dir}"]
    ended_count = results.num_terminated
    if len(frame) and TIME_ATTR in frame:
        from analysis.load import read_trial_states

        # Ray's recorded status tells an ASHA stop (TERMINATED early) from an interruption
        states = {s.get("trial_id"): s.get("status") for s in read_trial_states(exp_dir).values()}
        ended = frame["trial_id"].map(states) == "TERMINATED"
        reached = frame[TIME_ATTR]
        diverged = frame["diverged"].fillna(False).astype(bool) if "diverged" in frame else reached * 0 > 0
        stopped = int(((reached < samples[-1]) & ~diverged & ended).sum())
        ended_count = int(ended.sum())
        lines.append(f"ASHA stopped {stopped} of {len(frame)} trials before {samples[-1]} samples "
                     f"(looks at {', '.join(map(str, samples))}); {int(diverged.sum())} diverged; "
                     f"{int((~ended).sum())} did not end (interrupted or errored)")
        spent = float(frame.get("sample_evals_total", reached * 0).fillna(0).sum())
        full = float((frame["nfe_per_sample"].fillna(0) * samples[-1]).sum()) if "nfe_per_sample" in frame else math.nan
        lines.append(f"network evaluations spent: {spent:,.0f} per image in all"
                     + (f" ({spent / full:.0%} of the {full:,.0f} without early stopping)" if full > 0 else ""))
        last = frame[reached == samples[-1]]
        if metric in last and len(last):
            ranked = last.sort_values(metric, ascending=(mode == "min"))
            show = [c for c in ("trial_id", metric, "nfe_per_sample", "step_lr", "n_steps_each", "denoise",
                                "skip_levels", "level_stride", "checkpoint_trial") if c in ranked]
            lines.append(f"best samplers at {samples[-1]} samples by {metric} ({mode}):")
            lines.append(ranked[show].head(top).to_string(index=False))
    for c in record["checkpoints"]:
        lines.append(f"checkpoint {c['trial']}/{Path(c['path']).name}: original {metric} {c['value']:.4g} "
                     f"on {c['samples']} samples")
    if results.num_errors:
        lines.append(f"{results.num_errors} trial(s) errored; see error.txt in their trial folders")
    if results.num_terminated + results.num_errors < spec.budget.num_trials or ended_count < spec.budget.num_trials:
        lines.append(f"the search is incomplete ({ended_count} of {spec.budget.num_trials} trials "
                     f"ended): resume it with the command below")
    if write_report:
        from analysis.sampler_report import write_sampler_report

        lines.append(f"report: {write_sampler_report(exp_dir)}")
    lines += [
        f"report:      python -m analysis.sampler_report {exp_dir}",
        f"resume:      python platform/run_search.py --space {spec.source or spec.name} "
        f"--storage-path {exp_dir.parent} --name {exp_dir.name} --resume",
    ]
    return "\n".join(lines)
