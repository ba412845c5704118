"""GPU packing: how many trials run at once, sized from the cluster's GPUs.

With ``resources: {cpu: c, trials_per_gpu: n}`` every trial holds 1/n of a GPU and the search runs
``GPUs x n`` trials at once (at most num_trials), so an 8-GPU node runs 8n trials and Ray places n
on each GPU; a fixed ``max_concurrent`` with ``gpu: 1/n`` would instead stop at max_concurrent
trials, all packed onto the first GPUs. On a cluster without GPUs the spec's own max_concurrent
(its CPU preview's, usually) stays. Several processes on one GPU time-slice it; NVIDIA MPS lets
their kernels run side by side (README, "Several trials per GPU").
"""

from __future__ import annotations

import dataclasses
import math

from search_spaces.schema import SearchSpec
from search_spaces.validate import override


def packed_concurrency(spec: SearchSpec, gpus: float, num_trials: int) -> int | None:
    """Trials at once for ``num_trials`` trials on ``gpus`` GPUs, or None when the spec does not
    pack (no trials_per_gpu) or the cluster has no GPU."""
    per_gpu = spec.resources.trials_per_gpu
    if per_gpu is None or gpus < 1:
        return None
    return max(1, min(num_trials, math.floor(gpus) * per_gpu))


def pack(spec: SearchSpec, gpus: float, say=None) -> SearchSpec:
    """``spec`` with max_concurrent (the budget's and the sampler section's) sized from ``gpus``
    where it packs trials onto GPUs; unchanged otherwise."""
    section = spec.sampler_search
    n = packed_concurrency(spec, gpus, spec.budget.num_trials)
    if n is None:
        return spec
    packed = override(spec, max_concurrent=n)
    if section is not None:
        m = packed_concurrency(spec, gpus, section.num_trials)
        packed = dataclasses.replace(packed, sampler_search=dataclasses.replace(section, max_concurrent=m))
    if say is not None:
        share = spec.resources.gpu
        say(
            f"GPU packing: {math.floor(gpus)} GPU(s) x {spec.resources.trials_per_gpu} trials per GPU -> up to {n} "
            f"trials at once, each holding {share:.3g} GPU and {spec.resources.cpu:g} CPU"
        )
    return packed
