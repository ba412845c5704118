"""The sampler-only search: tune the Langevin sampler on frozen checkpoints, never retraining.

The step size, steps per level and final denoising change only sampling, so once a joint search
has trained networks, the sampler can be searched on its own at a fraction of the cost:

    python platform/run_search.py --space langevin.yaml --checkpoint runs/langevin [--top-k 3]

``--checkpoint`` names the frozen networks (:mod:`search.checkpoints`). Optuna (the spec's
searcher, seeded) searches the spec's sampler params (``step_lr``, ``n_steps_each``, ``denoise``
where ``params`` searches them) and ``sampler_search.params`` (e.g. the truncated ladder
``skip_levels``, ``level_stride``); with several checkpoints the checkpoint is searched too.
ASHA's time attribute is the number of samples scored (``sampler_search.samples``, e.g. 250 ->
1000 -> 4000). The first trials are the warm starts of every checkpoint: its trained-with
sampler, and the NCSNv2 technique-4 step for its ladder (its sigma_L and ratio gamma, its T) with
the final denoising step. They always run as they are, also where a value lies outside a searched
range (a notice says so; Optuna runs an enqueued value outside its range and the searcher still
samples only inside). Trials run :func:`trainables.sampler_trainable.sampler_trainable`.

The experiment folder (default name ``<spec name>-sampler``) records ``"kind": "sampler"``, the
checkpoints with their original scores and the warm starts in search.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from search.checkpoints import CheckpointInfo, resolve_checkpoints
from search.folder import Say, choose_budget
from search.options import SearchOptions
from search.plan import SearchPlan
from search_spaces.schema import ConfirmSpec, ParamSpec, SamplerSearchSpec, SearchSpec
from search_spaces.space import OptunaSpace
from search_spaces.tuning import runtime_config
from search_spaces.validate import override
from trainables.contract.layout import SAMPLER, SAMPLER_TIME_ATTR, WARM_TECHNIQUE4, WARM_TRAINED_WITH
from trainables.contract.params import JOINT_SAMPLER_PARAMS

KIND = SAMPLER
TIME_ATTR = SAMPLER_TIME_ATTR
# --smoke-test: a tiny sampler search whatever the spec.
SAMPLER_SMOKE = {"num_trials": 3, "max_concurrent": 2, "samples": (16, 32)}


def default_name(spec: SearchSpec) -> str:
    return f"{spec.name}-sampler"


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
    params = {name: p for name, p in spec.params.items() if name in JOINT_SAMPLER_PARAMS}
    params.update(sampler_section(spec).params)
    if not params:
        raise ValueError(
            f"{spec.file}: params searches none of {', '.join(JOINT_SAMPLER_PARAMS)} and there is no "
            f"sampler_search.params: a sampler search would search nothing"
        )
    return params


def ncsnv2_step(checkpoint: CheckpointInfo, n_steps_each: int) -> float:
    """NCSNv2 technique 4: the code-convention step for the checkpoint's ladder (its sigma_L and
    ratio gamma) and T = ``n_steps_each``."""
    from trainables.ncsn.sigmas import ladder_ratio, ncsnv2_step_lr

    sigma_begin, sigma_end, num_levels = checkpoint.ladder
    return ncsnv2_step_lr(sigma_end, ladder_ratio(sigma_begin, sigma_end, num_levels), int(n_steps_each))


def warm_start_settings(checkpoint: CheckpointInfo) -> list[tuple[str, dict]]:
    """(label, full sampler setting) of the checkpoint's two warm starts: its trained-with
    sampler, and the NCSNv2 sampler (technique-4 step for its ladder and its T, final denoising).
    Both visit the full ladder."""
    trained = {**checkpoint.trained_with, "skip_levels": 0, "level_stride": 1}
    steps = int(trained["n_steps_each"])
    ncsnv2 = {**trained, "step_lr": ncsnv2_step(checkpoint, steps), "denoise": True}
    return [(WARM_TRAINED_WITH, trained), (WARM_TECHNIQUE4, ncsnv2)]


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
        raise ValueError(
            f"{file}: sampler_search.params.skip_levels: up to {highest} levels skipped, but "
            f"checkpoint {fewest.trial}/{fewest.path.name} has only {fewest.num_levels} levels; "
            f"keep skip_levels <= {fewest.num_levels - 1}"
        )


def plan_sampler_search(spec: SearchSpec, checkpoints: list[CheckpointInfo]) -> SamplerPlan:
    """The searched space, the warm-start points of every checkpoint (see
    :func:`warm_start_settings`) and the notices.

    ``ValueError`` when nothing is searched or a ladder range does not fit a checkpoint.
    """
    params = sampler_params(spec)
    _check_ladder_ranges(params, checkpoints, spec.file)
    notices: list[str] = []
    constants: dict = runtime_config(spec)
    if len(checkpoints) > 1:
        params = {
            "checkpoint": ParamSpec("checkpoint", "choice", choices=tuple(str(c.path) for c in checkpoints)),
            **params,
        }
    else:
        constants["checkpoint"] = str(checkpoints[0].path)

    warm, seen = [], []
    for checkpoint in checkpoints:
        for label, setting in warm_start_settings(checkpoint):
            point = {"checkpoint": str(checkpoint.path)} if "checkpoint" in params else {}
            point.update({name: setting[name] for name in params if name in setting})
            if point in seen:
                notices.append(
                    f"warm start {label} of {checkpoint.trial} is the same point as an earlier one: proposed once"
                )
                continue
            outside = [
                f"{name}={_show(value)} outside {_show(params[name].to_dict())}"
                for name, value in point.items()
                if not params[name].contains(value)
            ]
            if outside:
                # Run as it is rather than widen the range: a user's range may bound the cost (T).
                notices.append(
                    f"warm start {label} of {checkpoint.trial} runs with {'; '.join(outside)}; "
                    f"the searcher samples only inside the ranges"
                )
            seen.append(point)
            warm.append({"label": label, "checkpoint": str(checkpoint.path), "params": point, "setting": setting})
    return SamplerPlan(list(checkpoints), params, constants, warm, notices)


def sampler_budget(spec: SearchSpec, device: str = "auto"):
    from trainables.sampler_trainable import SamplerBudget

    return SamplerBudget(
        samples=tuple(sampler_section(spec).samples), seed=spec.searcher.seed, device=device, metric=spec.metric
    )


def asha_settings(section: SamplerSearchSpec) -> dict:
    """ASHAScheduler kwargs: rungs at the looks (grace = first look, factor = their growth)."""
    return {
        "time_attr": SAMPLER_TIME_ATTR,
        "max_t": section.samples[-1],
        "grace_period": section.samples[0],
        # one look: no rung below max_t; ASHA still needs a factor > 1
        "reduction_factor": max(2, section.reduction_factor),
    }


def size(spec: SearchSpec, options: SearchOptions, gpus: float, say: Say) -> SearchSpec:
    """The spec with the preview (no GPU), --smoke-test and --num-trials applied to its sampler
    section; its budget's num_trials/max_concurrent mirror the section (what ran)."""
    spec = choose_budget(spec, options, gpus, say)
    section = sampler_section(spec)
    if options.smoke_test:
        section = dataclasses.replace(section, **SAMPLER_SMOKE)
    if options.num_trials is not None:
        section = dataclasses.replace(section, num_trials=options.num_trials)
    spec = override(spec, num_trials=section.num_trials, max_concurrent=section.max_concurrent)
    from search.packing import pack

    return pack(dataclasses.replace(spec, sampler_search=dataclasses.replace(section, preview={})), gpus, say)


def prepare(spec: SearchSpec, options: SearchOptions) -> list[CheckpointInfo]:
    """The checkpoints ``--checkpoint`` names, best first, with the space checked against them:
    everything the user gave is refused here, before a cluster starts (``ValueError``, one line)."""
    if options.checkpoint is None:
        raise ValueError("a sampler search needs --checkpoint <experiment, trial or checkpoint folder>")
    checkpoints = resolve_checkpoints(options.checkpoint, spec.metric, spec.mode, options.top_k)
    plan_sampler_search(spec, checkpoints)
    return checkpoints


def trainable(spec: SearchSpec):
    """(the Tune function, its budget) for the trials of ``spec``."""
    from trainables.sampler_trainable import sampler_trainable

    return sampler_trainable, sampler_budget(spec)


def plan(spec: SearchSpec, checkpoints: list[CheckpointInfo], options: SearchOptions) -> SearchPlan:
    """The sampler search of a sized spec on ``checkpoints``, with the checkpoint lines, the
    notices and the cost bound to print."""
    sampler = plan_sampler_search(spec, checkpoints)
    section = sampler_section(spec)
    messages = [_checkpoint_line(c, spec.metric) for c in checkpoints]
    messages += [f"notice: {notice}" for notice in sampler.notices]
    messages.append(_cost_line(spec, sampler, options.calibrate))
    messages.append(_confirm_line(spec, sampler, options))
    function, budget = trainable(spec)
    record = {
        "checkpoints": [c.to_record() for c in checkpoints],
        "warm_start": sampler.warm_starts,
        "sampler": {
            "samples": list(section.samples),
            "num_trials": section.num_trials,
            "max_concurrent": section.max_concurrent,
            "time_attr": SAMPLER_TIME_ATTR,
            "params": {name: p.to_dict() for name, p in sampler.params.items()},
            "constants": sampler.constants,
        },
        "notices": sampler.notices,
    }
    return SearchPlan(
        space=sampler.space(),
        points=[w["params"] for w in sampler.warm_starts],
        asha=asha_settings(section),
        num_trials=section.num_trials,
        max_concurrent=section.max_concurrent,
        trainable=function,
        budget=budget,
        record=record,
        # every look's grid for the report and samples for a resume; keeping fewer would force an
        # experiment snapshot at nearly every report
        keep={"num_to_keep": None},
        # a sampler trial is short: reusing its worker saves the imports
        reuse_actors=True,
        messages=messages,
    )


def _checkpoint_line(c: CheckpointInfo, metric: str) -> str:
    return (
        f"checkpoint {c.experiment}/{c.trial}/{c.path.name}: {c.iterations} training iterations, "
        f"original {metric} {c.value:.4g} on {c.samples} samples (trained-with sampler "
        f"step_lr={float(c.trained_with['step_lr']):.3g}, n_steps_each={c.trained_with['n_steps_each']}, "
        f"denoise={c.trained_with['denoise']})"
    )


def _confirm_line(spec: SearchSpec, sampler: SamplerPlan, options: SearchOptions) -> str:
    """The confirmation stage's network evaluations (its time follows from the rate above): the
    top K samplers and the warm starts at the warm starts' evaluations per sample."""
    from search import estimate
    from search_spaces import confirm_settings

    section = spec.confirm or ConfirmSpec()
    mode = "smoke" if options.smoke_test else "preview" if spec.previewed else "full"
    samples = section.samples or confirm_settings.default_samples(mode, spec.budget.eval_samples)
    settings = confirm_settings.ConfirmSettings(section.top_k, section.seeds, samples)
    nfe = (
        max(
            c.num_levels * int(w["setting"]["n_steps_each"]) + int(bool(w["setting"].get("denoise")))
            for c in sampler.checkpoints
            for w in sampler.warm_starts
            if w["checkpoint"] == str(c.path)
        )
        if sampler.warm_starts
        else 1
    )
    line = estimate.cost_line(settings, [nfe] * (section.top_k + len(sampler.warm_starts)), None)
    return (
        line
        if confirm_settings.requested(spec.confirm, options.confirm)
        else line + " (not requested: --confirm runs it)"
    )


def _cost_line(spec: SearchSpec, sampler: SamplerPlan, calibrate: bool) -> str:
    """The cost bound: every trial to the last look at the largest T and every level."""
    from search.estimate import sampler_cost_bound

    section = sampler_section(spec)
    steps = [int(w["setting"]["n_steps_each"]) for w in sampler.warm_starts]  # they may lie outside the range
    steps.append(sampler.params["n_steps_each"].bounds()[1] if "n_steps_each" in sampler.params else max(steps))
    nfe = max(c.num_levels for c in sampler.checkpoints) * max(steps) + 1
    resources = None
    if calibrate:  # measured in a Ray task holding a trial's resources, at the trials' batch
        import ray

        from search.folder import resources_for

        resources = resources_for(spec, float(ray.cluster_resources().get("GPU", 0)))
    budget = sampler_budget(spec)
    return sampler_cost_bound(
        section.num_trials,
        section.samples,
        nfe,
        section.max_concurrent,
        sampler.checkpoints[0].path if calibrate else None,
        threads=max(1, int(spec.resources.cpu)),
        runtime=runtime_config(spec),
        resources=resources,
        batch=min(budget.max_batch, section.samples[-1]),
    )
