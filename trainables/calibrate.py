"""The cost estimate's measurements, made where trials run: in a Ray task that holds one trial's
resources (:func:`on_trial_resources`), on the device that assignment gives, never on the driver.

:func:`measure_joint` times a typical joint trial: training iterations after the warm-up
(compilation and autotuning timed apart), sampler network evaluations at the real evaluation
batch (both precisions the ladder uses, weighted by their share of the levels), and one scoring
pass. :func:`measure_frozen` times a frozen checkpoint's network evaluations at a sampler trial's
batch. Every timed region ends with a device sync before the clock is read. On a CPU the batch is
capped at :data:`CPU_BATCH_CAP`: there the cost per image no longer depends on the batch, and a
full 1,000-image pass of an ngf-64 network would take minutes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

CPU_BATCH_CAP = 128


def on_trial_resources(fn: Callable, resources: Mapping[str, float], copies: int, *args: Any) -> list[dict]:
    """Run ``fn(*args)`` as ``copies`` Ray tasks at once, each holding ``resources`` ({"cpu": c,
    "gpu": g}): with a fractional GPU share they land on one GPU together, as trials do, and the
    measurements see the sharing. Ray must be initialised."""
    import ray

    task = ray.remote(fn).options(
        num_cpus=float(resources.get("cpu", 1)), num_gpus=float(resources.get("gpu", 0)), max_retries=0
    )
    return ray.get([task.remote(*args) for _ in range(max(1, copies))])


def _per_image_eval(trainer, batch: int) -> float:
    """Seconds per image per network pass of the sampler, the amp and fp32 levels weighted by
    their share of the ladder."""
    from trainables.ncsn.timing import level_pass

    score = trainer.score_fn(use_ema=True)
    L, k = trainer.config.num_levels, trainer.amp_levels
    size = trainer.config.image_size
    total = 0.0
    for level, share in ((0, k), (L - 1, L - k)):
        if share:
            total += share * level_pass(score, trainer.device, batch, level, repeats=2, size=size)[0]
    return total / L / batch


def _device_info(trainer) -> dict:
    import torch

    from trainables.tune_trainable import runtime_record

    info = {"device": str(trainer.device), "runtime": runtime_record(trainer), "pid": os.getpid()}
    if trainer.device.type == "cuda":
        info["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(trainer.device))
    return info


def measure_joint(config: dict, budget, threads: int, iters: int = 3) -> dict:
    """Inside a Ray task with one trial's resources: the timings of a typical joint trial."""
    import ray
    import torch

    from trainables.contract.data import load_mnist
    from trainables.ncsn import runtime as rt
    from trainables.ncsn.train import Trainer
    from trainables.scoring import intervals
    from trainables.tune_trainable import train_config_from

    entered = time.perf_counter()
    torch.set_num_threads(max(1, threads))
    device = rt.trial_device(str(config.get("device", budget.device)), ray.get_gpu_ids())
    images, _ = load_mnist(train=True)
    trainer = Trainer(train_config_from({**config, "device": device}, budget), images[:4096])
    setup = time.perf_counter() - entered  # what a trial pays before its first step, as here
    first = trainer.train(2)  # the warm-up (compilation, autotuning) and a step
    steady = trainer.train(iters)
    batch = budget.eval_samples if trainer.device.type == "cuda" else min(budget.eval_samples, CPU_BATCH_CAP)
    size = trainer.config.image_size
    sample_warmup = trainer.score_fn(use_ema=True).warm(torch.zeros(batch, 1, size, size, device=trainer.device))
    per_image_eval = _per_image_eval(trainer, batch)

    samples = torch.rand(budget.eval_samples, 1, 28, 28)
    intervals.evaluate(samples)  # builds and caches the reference statistics before trials start
    start = time.perf_counter()
    intervals.evaluate(samples)  # as every trial scores: intervals included
    return {
        **_device_info(trainer),
        "seconds_per_iteration": steady["seconds"] / iters,
        "warmup_seconds": first["warmup_seconds"] + sample_warmup,
        "seconds_per_image_eval": per_image_eval,
        "sample_batch": batch,
        "seconds_per_scoring": time.perf_counter() - start,
        "setup_seconds": setup,
        "task_seconds": time.perf_counter() - entered,
    }


def measure_frozen(checkpoint: str, runtime: dict, threads: int, batch: int) -> dict:
    """Inside a Ray task with a sampler trial's resources: seconds per image per network pass of
    the frozen checkpoint at ``batch`` (capped on a CPU)."""
    import ray
    import torch

    from trainables.ncsn import runtime as rt
    from trainables.sampler_trainable import FrozenCheckpoint

    torch.set_num_threads(max(1, threads))
    device = rt.trial_device(str(runtime.get("device", "auto")), ray.get_gpu_ids())
    frozen = FrozenCheckpoint(checkpoint, device, runtime=runtime)
    trainer = frozen.trainer
    batch = batch if trainer.device.type == "cuda" else min(batch, CPU_BATCH_CAP)
    return {**_device_info(trainer), "seconds_per_image_eval": _per_image_eval(trainer, batch), "sample_batch": batch}
