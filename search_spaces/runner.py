"""Run a search: a validated spec -> Ray cluster, Optuna searcher, ASHA, Tuner -> experiment folder.

``platform/run_search.py`` is a thin command line over :func:`run_search`. Everything here runs on
the driver; what runs inside a trial lives in :mod:`trainables.tune_trainable`.

Experiment folder ``<storage_path>/<name>/``: Ray's trial folders (result.json, progress.csv,
params.json, TensorBoard events, checkpoints with samples.png and metrics.json), ``optuna.db``
(the Optuna study), ``search.json`` (the resolved spec, budget mode, warm-start points, study
name) and ``spec.yaml`` (the file the search was started from).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from search_spaces.spec import (SearchSpec, make_sampler, make_space_fn, parse_spec, tune_settings,
                                warm_start_points)

SEARCH_FILE = "search.json"
STUDY_FILE = "optuna.db"

# --smoke-test: whatever the spec, a tiny run that finishes in about a minute on a CPU.
SMOKE_BUDGET = {"num_trials": 2, "max_concurrent": 2, "iterations": 20, "eval_every": 10, "eval_samples": 32}
SMOKE_FIXED = {"ngf": 8, "n_steps_each": 2}
SMOKE_SCHEDULER = {"grace_period": 10}


@dataclass
class SearchOptions:
    """What the command line decides; everything else comes from the spec."""

    storage_path: str = "./runs"
    name: str | None = None
    num_trials: int | None = None
    budget: str = "auto"  # auto | preview | full
    address: str | None = None
    resume: bool = False
    smoke_test: bool = False
    dashboard: bool = True
    dashboard_port: int = 8265
    verbose: int = 1
    report: bool = True
    calibrate: bool = True
    checkpoint: str | None = None  # a sampler-only search on this experiment/trial/checkpoint folder
    top_k: int = 1  # with an experiment folder: the best checkpoints of this many trials


def experiment_dir(spec: SearchSpec, options: SearchOptions) -> Path:
    return Path(options.storage_path).expanduser().resolve() / (options.name or spec.name)


def choose_budget(spec: SearchSpec, options: SearchOptions, gpus: float, say: Callable[[str], None]) -> SearchSpec:
    """Apply the CPU preview where there is no GPU (unless ``--budget full``), then overrides."""
    preview = options.budget == "preview" or (options.budget == "auto" and gpus == 0)
    if preview:
        if options.budget == "auto":
            say("notice: no GPU in this Ray cluster, so this runs the spec's CPU preview budget "
                "(fewer, shorter trials); pass --budget full to run the full budget anyway")
        spec = spec.with_preview()
    if options.smoke_test:
        fixed = {k: v for k, v in SMOKE_FIXED.items() if k not in spec.params}
        spec = spec.override(budget=SMOKE_BUDGET, fixed=fixed, scheduler=SMOKE_SCHEDULER)
    if options.num_trials is not None:
        spec = spec.override(budget={"num_trials": options.num_trials})
    if options.name:
        spec = spec.override(name=options.name)
    return spec


def budget_of(spec: SearchSpec, device: str = "auto"):
    from trainables.tune_trainable import Budget

    return Budget(iterations=spec.budget.iterations, eval_every=spec.budget.eval_every,
                  eval_samples=spec.budget.eval_samples, seed=spec.searcher.seed, device=device)


def resources_for(spec: SearchSpec, gpus: float) -> dict[str, float]:
    return {k: float(v) for k, v in tune_settings(spec, gpu_available=gpus > 0)["resources"].items()}


def start_ray(options: SearchOptions, say: Callable[[str], None]) -> dict:
    """Start a local Ray cluster (or join ``options.address``) with the dashboard on 127.0.0.1."""
    import ray

    kwargs: dict[str, Any] = {"log_to_driver": options.verbose >= 2, "configure_logging": True,
                              "logging_level": "WARNING"}
    if options.address:
        kwargs["address"] = options.address
    elif options.dashboard:
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=options.dashboard_port)
    else:
        kwargs["include_dashboard"] = False
    context = ray.init(**kwargs)
    url = getattr(context, "dashboard_url", None)
    if url:
        say(f"Ray dashboard: http://{url}")
        token = Path.home() / ".ray" / "auth_token"
        if token.exists():
            say(f"  token authentication is on: the token is in {token}; the browser asks for it, "
                f"and HTTP clients send 'Authorization: Bearer <token>'")
    return ray.cluster_resources()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def build_tuner(spec: SearchSpec, exp_dir: Path, gpus: float, study_name: str, trainable_wrapper=None):
    """The Tuner for a fresh search (the searcher is seeded; its study lives in ``exp_dir``)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from trainables.tune_trainable import ncsn_trainable

    settings = tune_settings(spec)
    points = [point for _, point in warm_start_points(spec)]
    searcher = OptunaSearch(
        space=make_space_fn(spec, with_defaults=True), metric=settings["metric"], mode=settings["mode"],
        points_to_evaluate=points or None, sampler=make_sampler(spec), study_name=study_name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{exp_dir / STUDY_FILE}"),
    )
    searcher = ConcurrencyLimiter(searcher, max_concurrent=settings["max_concurrent"])
    scheduler = ASHAScheduler(**settings["asha"])
    trainable = tune.with_parameters(ncsn_trainable, budget=budget_of(spec))
    trainable = tune.with_resources(trainable, resources_for(spec, gpus))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=settings["num_trials"],
                                    metric=settings["metric"], mode=settings["mode"],
                                    trial_dirname_creator=trial_dirname),
        run_config=_run_config(spec, exp_dir),
    )


def _run_config(spec: SearchSpec, exp_dir: Path):
    from ray import tune

    settings = tune_settings(spec)
    return tune.RunConfig(
        name=exp_dir.name, storage_path=str(exp_dir.parent),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute=settings["metric"],
            checkpoint_score_order=settings["mode"]),
        failure_config=tune.FailureConfig(max_failures=0),
        verbose=1,
    )


def restore_tuner(spec: SearchSpec, exp_dir: Path, gpus: float):
    """Continue an interrupted search: finished trials stay, unfinished ones resume from their
    checkpoints, the searcher (with its Optuna study) proposes only the remaining trials."""
    from ray import tune

    from trainables.tune_trainable import ncsn_trainable

    trainable = tune.with_parameters(ncsn_trainable, budget=budget_of(spec))
    trainable = tune.with_resources(trainable, resources_for(spec, gpus))
    return tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, resume_errored=True)


def run_search(spec: SearchSpec, options: SearchOptions, say: Callable[[str], None] = print):
    """Run (or resume) the search described by ``spec``; return the experiment folder and results."""
    import ray

    from search_spaces.sampler_search import is_sampler_experiment, run_sampler_search

    if options.checkpoint is not None or (options.resume and is_sampler_experiment(experiment_dir(spec, options))):
        return run_sampler_search(spec, options, say)
    exp_dir = experiment_dir(spec, options)
    if options.resume and not (exp_dir / SEARCH_FILE).exists():
        raise ValueError(f"--resume: {exp_dir} holds no search to resume ({SEARCH_FILE} missing); "
                         f"check --storage-path and --name")
    if not options.resume and exp_dir.exists() and any(exp_dir.iterdir()):
        raise ValueError(f"experiment folder {exp_dir} already exists; pass --resume to continue it "
                         f"or --name to start a new one")
    resources = start_ray(options, say)
    try:
        gpus = float(resources.get("GPU", 0))
        if options.resume:
            record = json.loads((exp_dir / SEARCH_FILE).read_text())
            spec = parse_spec(record["spec"], file=str(exp_dir / SEARCH_FILE), source=record["source"])
            say(f"resuming {exp_dir} ({record['budget_mode']} budget)")
            tuner = restore_tuner(spec, exp_dir, gpus)
        else:
            spec = choose_budget(spec, options, gpus, say)
            exp_dir = experiment_dir(spec, options)
            exp_dir.mkdir(parents=True, exist_ok=True)
            if options.calibrate:
                from search_spaces.estimate import estimate_cost, format_estimate

                say(format_estimate(estimate_cost(spec, budget_of(spec))))
            study_name = f"{spec.name}-{uuid.uuid4().hex[:8]}"
            record = {
                "spec": spec.to_dict(), "source": str(spec.source) if spec.source else None,
                "budget_mode": _budget_mode(options, gpus), "study_name": study_name,
                "warm_start": [{"label": label, "params": point} for label, point in warm_start_points(spec)],
                "resources": resources_for(spec, gpus), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            if spec.source and Path(spec.source).exists():
                shutil.copyfile(spec.source, exp_dir / "spec.yaml")
            _write_json_atomic(exp_dir / SEARCH_FILE, record)
            tuner = build_tuner(spec, exp_dir, gpus, study_name)
        say(f"results: {exp_dir}")
        results = tuner.fit()
    finally:
        ray.shutdown()
    return spec, exp_dir, results


def trial_dirname(trial) -> str:
    """Short trial folder names (Ray's default spells out every parameter)."""
    return f"trial_{trial.trial_id}"


def _budget_mode(options: SearchOptions, gpus: float) -> str:
    if options.smoke_test:
        return "smoke"
    if options.budget == "auto":
        return "full" if gpus > 0 else "preview"
    return options.budget


def is_incomplete(spec: SearchSpec, results) -> bool:
    """True when the search was interrupted before every trial ended."""
    return results.num_terminated + results.num_errors < spec.budget.num_trials


def summarize(spec: SearchSpec, exp_dir: Path, results, write_report: bool = True, top: int = 5) -> str:
    """The closing text of a search: best trials, where results are, how to look at them."""
    from search_spaces.sampler_search import is_sampler_experiment, summarize_sampler_search

    if is_sampler_experiment(exp_dir):
        return summarize_sampler_search(spec, exp_dir, results, write_report=write_report, top=top)
    settings = tune_settings(spec)
    metric, mode = settings["metric"], settings["mode"]
    frame = results.get_dataframe(filter_metric=metric, filter_mode=mode)  # each trial's best evaluation
    lines = [f"\n{len(frame)} trials in {exp_dir}"]
    if metric in frame and len(frame):
        ranked = frame.sort_values(metric, ascending=(mode == "min"), na_position="last")
        params = [f"config/{name}" for name in spec.params if f"config/{name}" in frame]
        show = ["trial_id", metric, "iterations", *params]
        lines.append(f"best trials by {metric} ({mode}):")
        lines.append(ranked[[c for c in show if c in ranked]].head(top).to_string(index=False))
    errors = results.num_errors
    if errors:
        lines.append(f"{errors} trial(s) errored; see error.txt in their trial folders")
    if is_incomplete(spec, results):
        lines.append(f"the search is incomplete ({results.num_terminated} of {spec.budget.num_trials} "
                     f"trials finished): resume it with the command below")
    if write_report:
        from analysis.report import write_report as _write

        try:
            report = _write(exp_dir)
        except ValueError as err:  # e.g. trials scored under different protocols
            lines.append(f"report: {err}; writing one ranking per protocol instead")
            report = _write(exp_dir, per_protocol=True)
        lines.append(f"report: {report}")
    lines += [
        f"TensorBoard: tensorboard --logdir {exp_dir} --host 127.0.0.1",
        f"report:      python platform/report.py {exp_dir}",
        f"resume:      python platform/run_search.py --space {spec.source or spec.name} "
        f"--storage-path {exp_dir.parent} --name {exp_dir.name} --resume",
    ]
    return "\n".join(lines)
