"""What the Tuner of a joint search needs from a spec, as plain data."""

from __future__ import annotations

from search_spaces.schema import SearchSpec
from trainables.contract.layout import TRAIN_TIME_ATTR
from trainables.contract.params import SPEC_RUNTIME, defaults


def runtime_config(spec: SearchSpec) -> dict:
    """Every runtime setting of a trial of ``spec``: the file's ``runtime:`` values, the table's
    defaults for the rest. Part of each trial's config, so params.json records it."""
    return {**defaults(SPEC_RUNTIME), **spec.runtime}


def tune_settings(spec: SearchSpec, gpu_available: bool = True) -> dict:
    """What the Tuner needs, as plain data.

    Returns {"metric", "mode", "asha": ASHAScheduler kwargs (time_attr, max_t, grace_period,
    reduction_factor; metric and mode go in TuneConfig only), "num_trials", "max_concurrent",
    "resources": {"cpu": n, "gpu": share} (gpu dropped when gpu_available is False),
    "searcher": {"algorithm", "seed"}, "iterations", "eval_every", "eval_samples"}.
    """
    resources = {"cpu": spec.resources.cpu}
    if gpu_available and spec.resources.gpu:
        resources["gpu"] = spec.resources.gpu
    return {
        "metric": spec.metric,
        "mode": spec.mode,
        "asha": {
            "time_attr": TRAIN_TIME_ATTR,
            "max_t": spec.budget.iterations,
            "grace_period": spec.scheduler.grace_period,
            "reduction_factor": spec.scheduler.reduction_factor,
        },
        "num_trials": spec.budget.num_trials,
        "max_concurrent": spec.budget.max_concurrent,
        "resources": resources,
        "searcher": {"algorithm": spec.searcher.algorithm, "seed": spec.searcher.seed},
        "iterations": spec.budget.iterations,
        "eval_every": spec.budget.eval_every,
        "eval_samples": spec.budget.eval_samples,
    }
