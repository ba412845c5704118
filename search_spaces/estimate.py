"""Estimate what a search will cost from a short calibration on this machine.

The calibration times a few training iterations and a few sampler network evaluations of a
typical trial (every searched parameter at the middle of its range), and one scoring pass, on the
device a trial would use here. The estimate scales them by the budget:

    per trial  = iterations * t_iter + evaluations * (eval_samples * nfe * t_eval + t_score)
    search     = num_trials * per trial / concurrent trials   (no early stopping: an upper bound)
    ASHA floor = every trial stopped at the first rung (grace_period iterations)

A sampler search (:func:`sampler_cost_bound`) is bounded by every trial scoring the last look
at the largest number of network evaluations per sample, timed on its first checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from search_spaces.schema import ParamSpec, SearchSpec
from trainables.params import defaults


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
    config = {**defaults(), **spec.fixed}
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


def estimate_cost(spec: SearchSpec, budget, warmup: int = 1, iters: int = 3) -> CostEstimate:
    """Measure a typical trial briefly (a few seconds) and scale it to the whole search.

    ``budget`` is the :class:`trainables.tune_trainable.Budget` the trials will get."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.resources.cpu)))  # what one trial gets
    try:
        return _measure(spec, budget, warmup, iters)
    finally:
        torch.set_num_threads(threads)


def _measure(spec: SearchSpec, budget, warmup: int, iters: int) -> CostEstimate:
    import torch

    from trainables import quality
    from trainables.data import load_mnist
    from trainables.train import Trainer
    from trainables.tune_trainable import train_config_from

    config = typical_config(spec)
    images, _ = load_mnist(train=True)
    trainer = Trainer(train_config_from(config, budget), images[:4096])
    trainer.train(warmup)
    seconds_per_iteration = trainer.train(iters)["seconds"] / iters

    score = trainer.score_fn(use_ema=True)
    n = min(budget.eval_samples, 64)
    size = trainer.config.image_size
    x = torch.rand(n, 1, size, size, device=trainer.device)
    level = torch.zeros(n, dtype=torch.long, device=trainer.device)
    with torch.inference_mode():
        score(x, level)
        start = time.perf_counter()
        for _ in range(2):
            score(x, level)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
    seconds_per_image_eval = (time.perf_counter() - start) / (2 * n)

    samples = torch.rand(budget.eval_samples, 1, 28, 28)
    quality.evaluate(samples)  # builds and caches the reference statistics before trials start
    start = time.perf_counter()
    quality.evaluate(samples)
    seconds_per_scoring = time.perf_counter() - start

    nfe = int(config["num_levels"]) * int(config["n_steps_each"]) + int(bool(config.get("denoise")))
    evaluations = math.ceil(spec.budget.iterations / spec.budget.eval_every)
    per_eval = spec.budget.eval_samples * nfe * seconds_per_image_eval + seconds_per_scoring
    per_trial = spec.budget.iterations * seconds_per_iteration + evaluations * per_eval
    concurrent = max(1, spec.budget.max_concurrent)
    waves = math.ceil(spec.budget.num_trials / concurrent)
    first_rung = spec.scheduler.grace_period
    per_trial_floor = first_rung * seconds_per_iteration + math.ceil(first_rung / spec.budget.eval_every) * per_eval
    return CostEstimate(
        device=str(trainer.device),
        seconds_per_iteration=seconds_per_iteration,
        seconds_per_image_eval=seconds_per_image_eval,
        seconds_per_scoring=seconds_per_scoring,
        nfe_per_sample=nfe,
        per_trial_s=per_trial,
        concurrent=concurrent,
        upper_bound_s=waves * per_trial,
        asha_floor_s=waves * per_trial_floor,
        config=config,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_estimate(e: CostEstimate) -> str:
    return "\n".join(
        [
            f"cost estimate (calibrated on {e.device} with a typical trial: ngf={e.config.get('ngf')}, "
            f"batch {e.config.get('batch_size')}, L={e.config.get('num_levels')}, T={e.config.get('n_steps_each')}):",
            f"  training {e.seconds_per_iteration * 1e3:.1f} ms/iteration, sampling "
            f"{e.seconds_per_image_eval * 1e3:.2f} ms per image per network pass ({e.nfe_per_sample} passes/sample), "
            f"scoring {e.seconds_per_scoring:.2f} s per evaluation",
            f"  one full trial ~{_duration(e.per_trial_s)}; the search, {e.concurrent} at a time: "
            f"at most ~{_duration(e.upper_bound_s)} without early stopping, "
            f"~{_duration(e.asha_floor_s)} if ASHA stopped every trial at its first rung "
            f"(measured here; concurrent trials share the cores, so CPU runs take longer)",
        ]
    )


def sampler_cost_bound(
    num_trials: int, samples: tuple[int, ...], nfe: int, max_concurrent: int, checkpoint: Path | None, threads: int
) -> str:
    """One line: the network evaluations of a sampler search without early stopping (every trial
    to the last look at ``nfe`` evaluations per sample), and their time from one measured batch
    on ``checkpoint`` with a trial's ``threads`` (no measurement when it is None)."""
    total = num_trials * samples[-1] * nfe
    line = (
        f"cost bound: {num_trials} trials x {samples[-1]} samples x {nfe} network "
        f"evaluations per sample = {total:,} network evaluations without early stopping; ASHA stops "
        f"most trials after {samples[0]} samples"
    )
    if checkpoint is not None:
        seconds = _seconds_per_image_eval(checkpoint, threads)
        line += (
            f"; measured {seconds * 1e3:.2f} ms per image per network pass here, so at most "
            f"~{total * seconds / 3600:.2f} h of one trial's share, {max_concurrent} trials at a time"
        )
    return line


def _seconds_per_image_eval(checkpoint: Path, threads: int, batch: int = 32) -> float:
    """Seconds per image per network pass of a frozen checkpoint, with a trial's CPU share."""
    import torch

    from trainables.sampler_trainable import FrozenCheckpoint

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        frozen = FrozenCheckpoint(checkpoint)
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
    finally:
        torch.set_num_threads(saved)
