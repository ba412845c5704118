"""Validation of a search-space document: every section, the preview, and re-validated variants
(:func:`with_preview`, :func:`override`).

:func:`parse` turns the file's mapping into a :class:`search_spaces.schema.SearchSpec` or raises
a one-line :class:`search_spaces.errors.SpecError`. Torch-free: metric names come from
:mod:`trainables.contract.metrics`, parameters from :mod:`trainables.contract.params`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from search_spaces.errors import Ctx, SpecError, check_keys, mapping, number, positive_int
from search_spaces.schema import (
    BUDGET_KEYS,
    CONFIRM_KEYS,
    CONFIRM_MAX_SEEDS,
    DATASETS,
    MIN_SAMPLES,
    REQUIRED_TOP,
    SAMPLER_PREVIEW_KEYS,
    SAMPLER_SECTION_KEYS,
    SCHEDULER_PREVIEW_KEYS,
    SCHEDULERS,
    SEARCHERS,
    TOP_KEYS,
    Budget,
    ConfirmSpec,
    Resources,
    SamplerSearchSpec,
    SchedulerSpec,
    SearcherSpec,
    SearchSpec,
)
from search_spaces.validate_params import (
    check_sigma_order,
    parse_fixed,
    parse_params,
    parse_runtime,
    parse_sampler_params,
)
from trainables.contract.metrics import METRICS
from trainables.contract.params import SPEC_PARAMS

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def apply_preview(raw: Mapping) -> dict:
    """The raw document with its preview overrides moved into budget, scheduler and fixed."""
    out = copy.deepcopy(dict(raw))
    preview = out.pop("preview", None) or {}
    for key, value in preview.items():
        if key in BUDGET_KEYS:
            out.setdefault("budget", {})[key] = value
        elif key in SCHEDULER_PREVIEW_KEYS:
            out["scheduler"] = dict(out.get("scheduler") or {}, **{key: value})
        else:
            out.setdefault("fixed", {})[key] = value
    section = out.get("sampler_search")
    if isinstance(section, dict) and "preview" in section:
        section = dict(section)
        preview = dict(section.pop("preview") or {})
        if isinstance(preview.get("params"), dict):  # per name: the preview narrows some ranges
            preview["params"] = {**(section.get("params") or {}), **preview["params"]}
        out["sampler_search"] = {**section, **preview}
    return out


def parse(raw: Any, ctx: Ctx, source: str | None, previewed: bool = False) -> SearchSpec:
    """Validate a document (the file's mapping); ``previewed`` when its preview is already applied."""
    if raw is None:
        raise ctx.error(
            "(document)",
            "the file is empty",
            fix="see the comments of the shipped files, e.g. search_spaces/sigmas.yaml",
        )
    if not isinstance(raw, dict):
        raise ctx.error("(document)", "must be a mapping of keys", raw)
    check_keys(ctx, "", raw, TOP_KEYS)
    for key in REQUIRED_TOP:
        if key not in raw:
            raise ctx.error(key, "missing required key")

    name = raw["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ctx.error("name", "must be a folder name of letters, digits, '_', '.', '-'", name)
    dataset = raw.get("dataset", "mnist")
    if dataset not in DATASETS:
        raise ctx.error("dataset", f"unknown dataset (known: {', '.join(DATASETS)})", dataset)
    metric, mode = _parse_metric(ctx, raw)
    budget = _parse_budget(ctx, raw["budget"])
    searcher = _parse_searcher(ctx, raw.get("searcher"))
    scheduler = _parse_scheduler(ctx, raw.get("scheduler"), budget)
    params = parse_params(ctx, raw["params"])
    fixed = parse_fixed(ctx, raw.get("fixed"), params)
    resources = _parse_resources(ctx, raw.get("resources"))
    runtime = parse_runtime(ctx, raw.get("runtime"), resources)
    check_sigma_order(ctx, params, fixed)
    sampler_search = _parse_sampler_search(ctx, raw.get("sampler_search"), params, previewed)
    confirm = _parse_confirm(ctx, raw.get("confirm"))
    preview = {}
    if not previewed:
        preview = _parse_preview(ctx, raw.get("preview"), fixed)

    spec = SearchSpec(
        name=name,
        dataset=dataset,
        metric=metric,
        mode=mode,
        searcher=searcher,
        scheduler=scheduler,
        budget=budget,
        preview=preview,
        params=params,
        fixed=fixed,
        resources=resources,
        sampler_search=sampler_search,
        runtime=runtime,
        confirm=confirm,
        source=source,
        previewed=previewed,
        raw=copy.deepcopy(raw),
    )
    if preview:
        _check_preview_applies(ctx, spec)
    return spec


def _metric_modes() -> dict[str, str]:
    """{metric name: 'min' | 'max'} from the metric registry, the one source of metric names."""
    return {name: info.direction for name, info in METRICS.items()}


def _parse_metric(ctx: Ctx, raw: dict) -> tuple[str, str]:
    modes = _metric_modes()
    metric = raw["metric"]
    if not isinstance(metric, str) or metric not in modes:
        raise ctx.error("metric", "unknown metric", metric, fix=f"one of {', '.join(modes)}")
    mode = raw.get("mode", modes[metric])
    if not isinstance(mode, str) or mode not in ("min", "max"):
        raise ctx.error("mode", "must be min or max", mode)
    if mode != modes[metric]:
        better = "lower" if modes[metric] == "min" else "higher"
        raise ctx.error(
            "mode", f"{metric} is better when {better}", mode, fix=f"write mode: {modes[metric]} or leave mode out"
        )
    return metric, mode


def _parse_budget(ctx: Ctx, raw: Any) -> Budget:
    raw = mapping(
        ctx,
        "budget",
        raw,
        "{num_trials: 24, max_concurrent: 4, iterations: 30000, eval_every: 2500, eval_samples: 1000}",
    )
    check_keys(ctx, "budget", raw, BUDGET_KEYS)
    for key in BUDGET_KEYS:
        if key not in raw:
            raise ctx.error(f"budget.{key}", "missing required key")
    values = {key: positive_int(ctx, f"budget.{key}", raw[key]) for key in BUDGET_KEYS}
    if values["eval_every"] > values["iterations"]:
        raise ctx.error(
            "budget.eval_every",
            f"is larger than budget.iterations ({values['iterations']}): no trial would ever be scored",
            values["eval_every"],
            fix="make eval_every <= iterations",
        )
    return Budget(**values)


def _parse_searcher(ctx: Ctx, raw: Any) -> SearcherSpec:
    if raw is None:
        return SearcherSpec()
    raw = mapping(ctx, "searcher", raw, "{algorithm: tpe, seed: 0}")
    check_keys(ctx, "searcher", raw, ("algorithm", "seed"))
    algorithm = raw.get("algorithm", "tpe")
    if algorithm not in SEARCHERS:
        raise ctx.error("searcher.algorithm", "unknown algorithm", algorithm, fix=f"one of {', '.join(SEARCHERS)}")
    seed = number(ctx, "searcher.seed", raw.get("seed", 0), int)
    if seed < 0:
        raise ctx.error("searcher.seed", "must be >= 0", seed)
    return SearcherSpec(algorithm, seed)


def _parse_scheduler(ctx: Ctx, raw: Any, budget: Budget) -> SchedulerSpec:
    raw = {} if raw is None else mapping(ctx, "scheduler", raw, "{name: asha, grace_period: 1000, reduction_factor: 3}")
    check_keys(ctx, "scheduler", raw, ("name", "grace_period", "reduction_factor"))
    name = raw.get("name", "asha")
    if name not in SCHEDULERS:
        raise ctx.error("scheduler.name", "unknown scheduler", name, fix=f"one of {', '.join(SCHEDULERS)}")
    # Without a grace period, a trial is first compared at its first evaluation.
    grace = positive_int(ctx, "scheduler.grace_period", raw.get("grace_period", budget.eval_every))
    if grace > budget.iterations:
        raise ctx.error(
            "scheduler.grace_period",
            f"is larger than budget.iterations ({budget.iterations}): ASHA could never stop a trial",
            grace,
            fix="make grace_period <= iterations",
        )
    factor = number(ctx, "scheduler.reduction_factor", raw.get("reduction_factor", 3))
    if factor <= 1:
        raise ctx.error("scheduler.reduction_factor", "must be > 1", factor)
    if factor == int(factor):
        factor = int(factor)
    return SchedulerSpec(name, grace, factor)


def _parse_resources(ctx: Ctx, raw: Any) -> Resources:
    if raw is None:
        return Resources()
    raw = mapping(ctx, "resources", raw, "{cpu: 1, gpu: 0.25}")
    check_keys(ctx, "resources", raw, ("cpu", "gpu", "trials_per_gpu"))
    if "trials_per_gpu" in raw:
        return _parse_packed(ctx, raw)
    values = {}
    for key, default in (("cpu", 1), ("gpu", 0)):
        value = number(ctx, f"resources.{key}", raw.get(key, default))
        if value < 0:
            raise ctx.error(f"resources.{key}", "must be >= 0", raw[key])
        values[key] = int(value) if value == int(value) else value
    if values["gpu"] > 1 and values["gpu"] != int(values["gpu"]):
        raise ctx.error(
            "resources.gpu",
            "a share above one GPU must be a whole number",
            values["gpu"],
            fix="use a fraction below 1 or a whole number",
        )
    if values["cpu"] == 0 and values["gpu"] == 0:
        raise ctx.error("resources", "a trial needs some CPU or GPU", raw)
    return Resources(**values)


def _parse_packed(ctx: Ctx, raw: dict) -> Resources:
    """resources: {cpu: c, trials_per_gpu: n}: a 1/n GPU share per trial, concurrency from the cluster."""
    if "gpu" in raw:
        raise ctx.error(
            "resources.trials_per_gpu",
            "gpu and trials_per_gpu both set",
            fix="keep trials_per_gpu (each trial gets 1/trials_per_gpu of a GPU) or gpu, not both",
        )
    per_gpu = positive_int(ctx, "resources.trials_per_gpu", raw["trials_per_gpu"])
    cpu = number(ctx, "resources.cpu", raw.get("cpu", 1))
    if cpu < 0:
        raise ctx.error("resources.cpu", "must be >= 0", raw["cpu"])
    return Resources(cpu=int(cpu) if cpu == int(cpu) else cpu, gpu=1.0 / per_gpu, trials_per_gpu=per_gpu)


def _parse_preview(ctx: Ctx, raw: Any, fixed: dict) -> dict:
    if raw is None:
        return {}
    raw = mapping(ctx, "preview", raw, "{num_trials: 6, iterations: 400}")
    allowed = BUDGET_KEYS + SCHEDULER_PREVIEW_KEYS + tuple(fixed)
    for key in raw:
        if key not in allowed:
            fix = (
                f"add {key} to fixed first"
                if key in SPEC_PARAMS
                else f"allowed: budget keys, {', '.join(SCHEDULER_PREVIEW_KEYS)} and names in fixed"
            )
            raise ctx.error(f"preview.{key}", "is not a budget, scheduler or fixed key", fix=fix)
    return dict(raw)


def _check_preview_applies(ctx: Ctx, spec: SearchSpec) -> None:
    """Validate the previewed spec now, naming the preview key that breaks it."""
    try:
        parse(apply_preview(spec.raw), Ctx(ctx.file), spec.source, previewed=True)
    except SpecError as err:
        leaf = re.split(r"[.\[]", err.key.split(".", 1)[-1])[0]
        # The preview caused it: name the overriding key, or the preview as a whole when the
        # clash is with a key it left alone (e.g. the full eval_every above its iterations).
        key, fix = (
            (f"preview.{leaf}", err.fix)
            if leaf in spec.preview
            else (
                "preview",
                f"{err.fix}; override {leaf} in preview too" if err.fix else f"override {leaf} in preview too",
            )
        )
        raise SpecError(
            ctx.file, key, f"with the preview applied, {err.key} {err.problem}", err.value, fix, ctx.lines.get(key)
        ) from None


def _parse_sampler_search(ctx: Ctx, raw: Any, params: dict, previewed: bool) -> SamplerSearchSpec | None:
    """The optional sampler_search section; its preview is checked applied, naming its own key."""
    if raw is None:
        return None
    raw = mapping(ctx, "sampler_search", raw, "{num_trials: 24, max_concurrent: 4, samples: [250, 1000, 4000]}")
    check_keys(ctx, "sampler_search", raw, SAMPLER_SECTION_KEYS)
    for key in ("num_trials", "max_concurrent", "samples"):
        if key not in raw:
            raise ctx.error(f"sampler_search.{key}", "missing required key")
    values = {key: positive_int(ctx, f"sampler_search.{key}", raw[key]) for key in ("num_trials", "max_concurrent")}
    samples = _parse_samples(ctx, "sampler_search.samples", raw["samples"])
    searched = parse_sampler_params(ctx, raw.get("params"), params)
    preview = {}
    if not previewed and raw.get("preview") is not None:
        preview = mapping(ctx, "sampler_search.preview", raw["preview"], "{num_trials: 8, samples: [64, 256]}")
        check_keys(ctx, "sampler_search.preview", preview, SAMPLER_PREVIEW_KEYS)
        for key, value in preview.items():
            pkey = f"sampler_search.preview.{key}"
            if key == "samples":
                _parse_samples(ctx, pkey, value)
            elif key == "params":
                parse_sampler_params(ctx, value, params, pkey)
            else:
                positive_int(ctx, pkey, value)
        preview = dict(preview)
    return SamplerSearchSpec(samples=samples, params=searched, preview=preview, **values)


def _parse_confirm(ctx: Ctx, raw: Any) -> ConfirmSpec | None:
    """The optional confirm section: top_k and seeds (default 3 each), samples (default: sized to
    the budget by search.confirmation.stage)."""
    if raw is None:
        return None
    raw = mapping(ctx, "confirm", raw, "{top_k: 3, seeds: 3}")
    check_keys(ctx, "confirm", raw, CONFIRM_KEYS)
    top_k = positive_int(ctx, "confirm.top_k", raw.get("top_k", 3))
    seeds = positive_int(ctx, "confirm.seeds", raw.get("seeds", 3))
    if seeds > CONFIRM_MAX_SEEDS:
        raise ctx.error("confirm.seeds", f"must be at most {CONFIRM_MAX_SEEDS}", seeds)
    samples = raw.get("samples")
    if samples is not None:
        samples = positive_int(ctx, "confirm.samples", samples)
        if samples < MIN_SAMPLES:
            raise ctx.error(
                "confirm.samples",
                f"must be at least {MIN_SAMPLES} (the k-NN quality metrics need more samples than neighbours)",
                samples,
            )
    return ConfirmSpec(top_k=top_k, seeds=seeds, samples=samples)


def _parse_samples(ctx: Ctx, key: str, raw: Any) -> tuple[int, ...]:
    """ASHA's looks in samples scored: increasing, and geometric with one whole factor, so that
    every look falls on one of ASHA's rungs (grace * factor^k)."""
    if not isinstance(raw, list) or not raw:
        raise ctx.error(key, "must be a non-empty list of sample counts", raw, fix="write e.g. [250, 1000, 4000]")
    samples = tuple(number(ctx, f"{key}[{i}]", v, int) for i, v in enumerate(raw))
    if samples[0] < MIN_SAMPLES:
        raise ctx.error(
            f"{key}[0]",
            f"must be at least {MIN_SAMPLES} (the k-NN quality metrics need more samples than neighbours)",
            samples[0],
        )
    factor = samples[1] // samples[0] if len(samples) > 1 else 1
    if len(samples) > 1 and (factor < 2 or any(b != a * factor for a, b in zip(samples, samples[1:]))):
        raise ctx.error(
            key,
            "must grow by one whole factor >= 2 from look to look (ASHA's rungs)",
            raw,
            fix="write e.g. [250, 1000, 4000]",
        )
    return samples


def with_preview(spec: SearchSpec) -> SearchSpec:
    """``spec`` with the preview overrides applied to budget, scheduler and fixed.

    The result has no preview section and ``previewed=True`` (also when there was nothing to
    apply); the combination was validated when the file was loaded.
    """
    if spec.previewed:
        return spec
    return parse(apply_preview(spec.raw), Ctx(spec.file), spec.source, previewed=True)


def override(
    spec: SearchSpec,
    budget: Mapping | None = None,
    fixed: Mapping | None = None,
    scheduler: Mapping | None = None,
    **changes: Any,
) -> SearchSpec:
    """A re-validated copy with command-line overrides; None values are ignored.

    budget: {budget key: value}; fixed: {parameter: value} (not a searched one); scheduler:
    {grace_period, reduction_factor}; keywords: name, seed and any budget key
    (``override(spec, num_trials=3)`` equals ``override(spec, budget={"num_trials": 3})``).
    A bad value raises SpecError naming its key (e.g. budget.num_trials); a keyword that is
    none of these raises TypeError.
    """
    raw = copy.deepcopy(spec.raw)
    budget = dict(budget or {})
    for key, value in changes.items():
        if key in BUDGET_KEYS:
            budget[key] = value
        elif key not in ("name", "seed"):
            raise TypeError(f"override() got an unexpected keyword argument {key!r}")
    sections = (
        ("budget", budget),
        ("fixed", fixed or {}),
        ("scheduler", scheduler or {}),
        ("searcher", {"seed": changes.get("seed")}),
    )
    for section, values in sections:
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            raw[section] = dict(raw.get(section) or {}, **values)
    if changes.get("name") is not None:
        raw["name"] = changes["name"]
    return parse(raw, Ctx(f"{spec.file} (with overrides)"), spec.source, previewed=spec.previewed)
