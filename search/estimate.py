"""Estimate what a search will cost from a short calibration where its trials will run.

The calibration (:mod:`trainables.calibrate`) is a Ray task holding one trial's resources, so it
runs on the device a trial gets (a GPU share on a GPU node, never the driver's device; the driver
allocates nothing on a GPU). It times a few training iterations after the warm-up, the sampler's
network evaluations at the real evaluation batch (bf16 and fp32 levels in their share), and one
scoring pass, with a device sync before every clock read; with a fractional GPU share as many
tasks run at once as trials share a GPU. The estimate scales them by the budget, per trial at
that trial's own batch size (t_iter in proportion) and network evaluations per sample:

    trial      = start-up + warm-up + iterations * t_iter * batch / typical batch
                 + evaluations * (eval_samples * nfe * t_eval + t_score)
    search     = (sum over the trials) / concurrent trials   (every trial to the end)
    ASHA floor = the same with every trial stopped at the first rung (grace_period iterations)

The warm starts count at their own settings, the other trials at the mean over 256 draws from
the space; the start-up (a trial process, its imports, MNIST, the network) is the calibration
task's own. Measured against the CPU preview of sigmas.yaml: the estimate without early stopping
was 1.1-1.3x the search's running time, which ASHA shortens by the trials it stops.

A sampler search (:func:`sampler_cost_bound`) is bounded by every trial scoring the last look
at the largest number of network evaluations per sample, timed on its first checkpoint (a Ray
task too, at the trials' batch).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.confirm_settings import ConfirmSettings, default_samples, pipeline_sized, requested
from search_spaces.schema import ConfirmSpec, ParamSpec, SearchSpec
from trainables.contract.params import defaults, nfe_per_sample
from trainables.contract.units import duration


def typical_value(param: ParamSpec):
    """The middle of a parameter's range: geometric for log ranges, the median choice."""
    if param.form == "choice":
        values = list(param.choices)
        try:
            values = sorted(values)
        except TypeError:
            pass
        return values[len(values) // 2]
    lo, hi = param.low, param.high
    mid = math.sqrt(lo * hi) if param.log else (lo + hi) / 2
    return int(round(mid)) if param.form == "int" else float(mid)


def typical_config(spec: SearchSpec) -> dict:
    from search_spaces.tuning import runtime_config

    config = {**defaults(), **spec.fixed, **runtime_config(spec)}
    config.update({name: typical_value(p) for name, p in spec.params.items()})
    return config


@dataclass(frozen=True)
class CostEstimate:
    device: str
    seconds_per_iteration: float
    seconds_per_image_eval: float
    seconds_per_scoring: float
    nfe_per_sample: int
    per_trial_s: float
    concurrent: int
    upper_bound_s: float
    asha_floor_s: float
    config: dict
    warmup_s: float = 0.0  # compilation / autotuning, once per trial process
    sample_batch: int = 0  # the batch the sampler was timed at
    sharing: int = 1  # calibration tasks that ran at once on one GPU, as that many trials would
    runtime: dict = field(default_factory=dict)
    measured_in_pid: int = 0  # the Ray worker that measured (never the driver)
    startup_s: float = 0.0  # a trial process's start, imports, MNIST and network, before its warm-up


def gpu_sharing(resources: dict, concurrent: int) -> int:
    """How many trials share one GPU: 1/share for a fractional share, at most ``concurrent``."""
    share = float(resources.get("gpu", 0))
    if not 0 < share < 1:
        return 1
    return max(1, min(concurrent, round(1 / share)))


def estimate_cost(spec: SearchSpec, budget, iters: int = 3) -> CostEstimate:
    """Measure a typical trial briefly where trials run and scale it to the whole search.

    The measurement is a Ray task with one trial's resources (the driver allocates nothing on a
    GPU), on the device that gives it, at the real evaluation batch; with a fractional GPU share
    as many tasks as trials share a GPU run at once, and their mean rates are what a trial gets.
    ``budget`` is the :class:`trainables.tune_trainable.Budget` the trials will get. Ray must be
    running (the search's cluster)."""
    import ray

    from search.folder import resources_for
    from trainables.calibrate import measure_joint, on_trial_resources

    config = typical_config(spec)
    resources = resources_for(spec, float(ray.cluster_resources().get("GPU", 0)))
    concurrent = max(1, spec.budget.max_concurrent)
    sharing = gpu_sharing(resources, concurrent)
    threads = max(1, int(spec.resources.cpu))  # what one trial gets
    submitted = time.perf_counter()
    runs = on_trial_resources(measure_joint, resources, sharing, config, budget, threads, iters)
    elapsed = time.perf_counter() - submitted
    mean = lambda key: sum(r[key] for r in runs) / len(runs)  # noqa: E731
    seconds_per_iteration = mean("seconds_per_iteration")
    seconds_per_image_eval = mean("seconds_per_image_eval")
    seconds_per_scoring = mean("seconds_per_scoring")
    warmup = max(r["warmup_seconds"] for r in runs)
    # the worker's start and imports (before the task ran) and the task's own set-up
    startup = max(0.0, elapsed - max(r["task_seconds"] for r in runs)) + mean("setup_seconds")

    rates = (seconds_per_iteration, int(config["batch_size"]), seconds_per_image_eval, seconds_per_scoring)
    configs = trial_configs(spec, config)
    per_trial = startup + warmup + trial_seconds(config, spec.budget.iterations, spec.budget, rates)
    total = sum(startup + warmup + trial_seconds(c, spec.budget.iterations, spec.budget, rates) for c in configs)
    first_rung = spec.scheduler.grace_period
    floor = sum(startup + warmup + trial_seconds(c, first_rung, spec.budget, rates) for c in configs)
    longest = max(startup + warmup + trial_seconds(c, spec.budget.iterations, spec.budget, rates) for c in configs)
    nfe = int(_mean_nfe(config))
    return CostEstimate(
        device=runs[0]["device"],
        seconds_per_iteration=seconds_per_iteration,
        seconds_per_image_eval=seconds_per_image_eval,
        seconds_per_scoring=seconds_per_scoring,
        nfe_per_sample=nfe,
        per_trial_s=per_trial,
        concurrent=concurrent,
        upper_bound_s=max(longest, total / concurrent),
        asha_floor_s=floor / concurrent,
        config=config,
        warmup_s=warmup,
        sample_batch=int(runs[0]["sample_batch"]),
        sharing=sharing,
        runtime=runs[0]["runtime"],
        measured_in_pid=int(runs[0]["pid"]),
        startup_s=startup,
    )


def _mean_nfe(config: dict) -> float:
    """Network evaluations per sample: L x T (+1 denoising); a mean config's L may be fractional."""
    return float(config["num_levels"]) * float(config["n_steps_each"]) + int(bool(config.get("denoise")))


def trial_seconds(config: dict, iterations: int, budget, rates: tuple[float, int, float, float]) -> float:
    """Seconds of training ``iterations`` iterations and the evaluations among them, for a trial
    of ``config``; ``rates``: (seconds per iteration, at which batch size; seconds per image per
    network pass; seconds per scoring)."""
    per_iteration, batch, per_image_eval, scoring = rates
    evaluations = math.ceil(iterations / budget.eval_every)
    iteration = per_iteration * int(config.get("batch_size", batch)) / batch
    return iterations * iteration + evaluations * (budget.eval_samples * _mean_nfe(config) * per_image_eval + scoring)


def _draw(param: ParamSpec, rng: random.Random):
    if param.form == "choice":
        return rng.choice(list(param.choices))
    lo, hi = param.low, param.high
    value = math.exp(rng.uniform(math.log(lo), math.log(hi))) if param.log else rng.uniform(lo, hi)
    return int(round(value)) if param.form == "int" else value


def trial_configs(spec: SearchSpec, typical: dict, draws: int = 256) -> list[dict]:
    """The configs the estimate counts, one per trial: each warm start at its own point (over the
    typical config), then the mean trial of the space for the rest: ``draws`` random draws whose
    batch size and network evaluations per sample are averaged (what the cost is linear in)."""
    from search_spaces.warm_start import warm_start_points

    points = [point for _, point in warm_start_points(spec)][: spec.budget.num_trials]
    configs = [{**typical, **point} for point in points]
    rng = random.Random(0)
    drawn = [{**typical, **{name: _draw(p, rng) for name, p in spec.params.items()}} for _ in range(draws)]
    mean = dict(typical)
    mean["batch_size"] = sum(int(c["batch_size"]) for c in drawn) / draws
    # num_levels carries the mean evaluations per sample (n_steps_each 1, no denoising in the mean)
    mean.update(num_levels=sum(_mean_nfe(c) for c in drawn) / draws, n_steps_each=1, denoise=False)
    return configs + [mean] * (spec.budget.num_trials - len(configs))


def format_estimate(e: CostEstimate) -> str:
    r = e.runtime
    shared = f", {e.sharing} calibrations sharing the GPU as {e.sharing} trials will" if e.sharing > 1 else ""
    name = f" ({r['device_name']})" if r.get("device_name") not in (None, "cpu") else ""
    return "\n".join(
        [
            f"cost estimate (calibrated in a Ray task with one trial's resources, on {e.device}{name}"
            f"{shared}; a typical trial: ngf={e.config.get('ngf')}, "
            f"batch {e.config.get('batch_size')}, L={e.config.get('num_levels')}, T={e.config.get('n_steps_each')}; "
            f"amp {r.get('amp', '?')}, compile {r.get('compile_train', '?')}, "
            f"cuda_graphs {r.get('cuda_graphs', '?')}):",
            f"  training {e.seconds_per_iteration * 1e3:.1f} ms/iteration, sampling "
            f"{e.seconds_per_image_eval * 1e3:.3f} ms per image per network pass at batch {e.sample_batch} "
            f"({e.nfe_per_sample} passes/sample), scoring {e.seconds_per_scoring:.2f} s per evaluation, "
            f"warm-up (compilation, autotuning) {e.warmup_s:.0f} s per trial",
            f"  a typical trial ~{duration(e.per_trial_s)} (start-up {e.startup_s:.0f} s); the search, "
            f"{e.concurrent} at a time, warm starts at their own settings and the rest at the space's mean: "
            f"~{duration(e.upper_bound_s)} with every trial run to the end, "
            f"~{duration(e.asha_floor_s)} if ASHA stopped every trial at its first rung"
            + ("" if e.device.startswith("cuda") else " (concurrent CPU trials share the cores, so they take longer)"),
        ]
    )


def sampler_cost_bound(
    num_trials: int,
    samples: tuple[int, ...],
    nfe: int,
    max_concurrent: int,
    checkpoint: Path | None,
    threads: int,
    runtime: dict | None = None,
    resources: dict | None = None,
    batch: int = 500,
) -> str:
    """One line: the network evaluations of a sampler search without early stopping (every trial
    to the last look at ``nfe`` evaluations per sample), and their time from one measured batch
    on ``checkpoint``, measured in a Ray task holding a trial's ``resources`` with the search's
    ``runtime`` settings at the trials' ``batch`` (no measurement when ``checkpoint`` is None)."""
    total = num_trials * samples[-1] * nfe
    line = (
        f"cost bound: {num_trials} trials x {samples[-1]} samples x {nfe} network "
        f"evaluations per sample = {total:,} network evaluations without early stopping; ASHA stops "
        f"most trials after {samples[0]} samples"
    )
    if checkpoint is not None:
        from trainables.calibrate import measure_frozen, on_trial_resources

        resources = resources or {"cpu": threads}
        sharing = gpu_sharing(resources, max_concurrent)
        args = (str(checkpoint), dict(runtime or {}), threads, batch)
        runs = on_trial_resources(measure_frozen, resources, sharing, *args)
        seconds = sum(r["seconds_per_image_eval"] for r in runs) / len(runs)
        line += (
            f"; measured {seconds * 1e3:.3f} ms per image per network pass on {runs[0]['device']} at batch "
            f"{runs[0]['sample_batch']}, so at most ~{total * seconds / 3600:.2f} h of one trial's share, "
            f"{max_concurrent} trials at a time"
        )
    return line


# ---------------------------------------------------------------------------------------------
# The confirmation stage's share of the estimate


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
    nfes = [nfe_per_sample(int({**config, **point}["num_levels"]), {**config, **point}) for point in warm]
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
