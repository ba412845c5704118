"""The joint search: every trial trains an NCSN and samples from it (the default kind).

Optuna proposes the spec's params (the 2019 and NCSNv2 settings first, where they lie inside the
space); ASHA's time attribute is training iterations; each trial runs
:func:`trainables.tune_trainable.ncsn_trainable`.
"""

from __future__ import annotations

from search.folder import Say, choose_budget
from search.options import SearchOptions
from search.plan import SearchPlan
from search_spaces.schema import SearchSpec
from search_spaces.space import make_space_fn
from search_spaces.tuning import runtime_config, tune_settings
from search_spaces.warm_start import warm_start_points
from trainables.contract.layout import JOINT, TRAIN_TIME_ATTR

KIND = JOINT
TIME_ATTR = TRAIN_TIME_ATTR


def default_name(spec: SearchSpec) -> str:
    return spec.name


def prepare(spec: SearchSpec, options: SearchOptions) -> None:
    """Checks that need no cluster: none beyond the spec's own for a joint search."""
    return None


def size(spec: SearchSpec, options: SearchOptions, gpus: float, say: Say) -> SearchSpec:
    """The spec with the budget this cluster and the command line call for, and the trials at
    once its GPUs hold (:func:`search.packing.pack`)."""
    from search.packing import pack

    return pack(choose_budget(spec, options, gpus, say), gpus, say)


def trial_budget(spec: SearchSpec, device: str = "auto"):
    """The per-trial budget every trial gets (:class:`trainables.tune_trainable.Budget`)."""
    from trainables.tune_trainable import Budget

    return Budget(
        iterations=spec.budget.iterations,
        eval_every=spec.budget.eval_every,
        eval_samples=spec.budget.eval_samples,
        seed=spec.searcher.seed,
        device=device,
    )


def trainable(spec: SearchSpec):
    """(the Tune function, its budget) for the trials of ``spec``."""
    from trainables.tune_trainable import ncsn_trainable

    return ncsn_trainable, trial_budget(spec)


def plan(spec: SearchSpec, prepared: None, options: SearchOptions) -> SearchPlan:
    """The joint search of a sized spec, with the cost estimate where ``options.calibrate``."""
    settings = tune_settings(spec)
    warm = warm_start_points(spec)
    messages, record = [], {"warm_start": [{"label": label, "params": point} for label, point in warm]}
    if options.calibrate:
        from search.estimate import estimate_cost, format_estimate, search_estimate

        estimate = estimate_cost(spec, trial_budget(spec))
        messages.append(format_estimate(estimate))
        # what the confirmation stage and the full budget would cost, kept for the report
        points = [point for _, point in warm]
        line, record["cost_estimate"] = search_estimate(estimate, spec, options, points)
        messages.append(line)
    function, budget = trainable(spec)
    return SearchPlan(
        space=make_space_fn(spec, constants=runtime_config(spec), with_defaults=True),
        points=[point for _, point in warm],
        asha=settings["asha"],
        num_trials=settings["num_trials"],
        max_concurrent=settings["max_concurrent"],
        trainable=function,
        budget=budget,
        record=record,
        # an ngf-64 checkpoint with optimiser state is ~90 MB: keep each trial's best two
        keep={"num_to_keep": 2, "checkpoint_score_attribute": spec.metric, "checkpoint_score_order": spec.mode},
        messages=messages,
    )
