"""Validation of the parameters of a search-space file: searched forms, fixed values, the
sigma order, and the sampler search's parameters.

Names, kinds and bounds come from :data:`trainables.contract.params.SETTINGS`; each problem raises a
:class:`search_spaces.errors.SpecError` naming the key.
"""

from __future__ import annotations

from typing import Any

from search_spaces.errors import Ctx, check_keys, fmt, mapping, near, number
from search_spaces.schema import FORMS, ParamSpec
from trainables.contract.params import JOINT_SAMPLER_PARAMS, SAMPLER_PARAMS, SETTINGS, SPEC_PARAMS, SPEC_RUNTIME


def setting_value(ctx: Ctx, key: str, name: str, value: Any) -> Any:
    """A value for known parameter ``name``, type-checked, coerced (int -> float) and bounded;
    an alias (``amp: off``, which YAML reads as false) stands for its value."""
    known = SETTINGS[name]
    value = known.canonical(value)
    if known.kind is bool:
        if not isinstance(value, bool):
            raise ctx.error(key, f"{name} must be true or false", value)
    elif known.kind is str:
        if not isinstance(value, str):
            raise ctx.error(key, f"{name} must be text", value)
    elif known.kind is int:
        value = number(ctx, key, value, int)
    else:
        value = number(ctx, key, value, float)
    problem = known.problem(value)
    if problem:
        raise ctx.error(key, f"{name} {problem} ({known.meaning})", value)
    return value


def check_name(ctx: Ctx, key: str, name: Any, known, problem: str, listing: str) -> None:
    """Refuse a parameter name outside ``known``, suggesting the nearest known one."""
    if name not in known:
        guess = near(str(name), known)
        raise ctx.error(key, problem, fix=f"did you mean {guess!r}?" if guess else f"{listing}: {', '.join(known)}")


def parse_params(ctx: Ctx, raw: Any) -> dict[str, ParamSpec]:
    raw = mapping(ctx, "params", raw, "{sigma_end: {loguniform: [0.005, 0.1]}}")
    if not raw:
        raise ctx.error(
            "params", "no searched parameter", fix="search at least one, e.g. sigma_end: {loguniform: [0.005, 0.1]}"
        )
    params = {}
    for name, form in raw.items():
        key = f"params.{name}"
        check_name(ctx, key, name, SPEC_PARAMS, "unknown parameter", "known")
        params[name] = parse_form(ctx, key, name, form)
    return params


def parse_form(ctx: Ctx, key: str, name: str, raw: Any) -> ParamSpec:
    known = SETTINGS[name]
    example = (
        "{choice: [...]}"
        if known.kind in (bool, str) or known.values
        else ("{int: [lo, hi], log: false}" if known.kind is int else "{loguniform: [lo, hi]}")
    )
    raw = mapping(ctx, key, raw, example)
    forms = [f for f in FORMS if f in raw]
    if len(forms) != 1:
        raise ctx.error(key, f"needs exactly one of {', '.join(FORMS)}", raw, fix=f"write e.g. {name}: {example}")
    form = forms[0]
    check_keys(ctx, key, raw, (form, "log") if form == "int" else (form,))
    if form == "choice":
        return _parse_choice(ctx, f"{key}.choice", name, raw["choice"])

    fkey = f"{key}.{form}"
    if known.values is not None or known.kind in (bool, str):
        raise ctx.error(fkey, f"{name} takes listed values, not a range", fix=f"write {example}")
    if (form == "int") != (known.kind is int):
        raise ctx.error(
            fkey,
            f"{name} is {'an integer' if known.kind is int else 'a real number'} and cannot use {form}",
            fix=f"write e.g. {name}: {example}",
        )
    bounds = raw[form]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ctx.error(fkey, "must be a list [lo, hi]", bounds)
    lo, hi = (number(ctx, f"{fkey}[{i}]", b, known.kind) for i, b in enumerate(bounds))
    if lo >= hi:
        raise ctx.error(
            fkey,
            "empty or inverted range (needs lo < hi)",
            bounds,
            fix=f"write [{fmt(min(lo, hi))}, {fmt(max(lo, hi))}]" if lo != hi else f"move {name} to fixed",
        )
    log = form == "loguniform"
    if form == "loguniform" and lo <= 0:
        raise ctx.error(fkey, "loguniform needs lo > 0", bounds)
    if form == "int":
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise ctx.error(f"{key}.log", "must be true or false", log)
        if log and lo < 1:
            raise ctx.error(fkey, "a log int range needs lo >= 1", bounds)
    for i, bound in enumerate((lo, hi)):
        problem = known.problem(bound)
        if problem:
            raise ctx.error(f"{fkey}[{i}]", f"{name} {problem} ({known.meaning})", bound)
    return ParamSpec(name, form, lo, hi, log)


def _parse_choice(ctx: Ctx, key: str, name: str, raw: Any) -> ParamSpec:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ctx.error(key, "must be a list of at least two values", raw, fix=f"or move {name} to fixed")
    values = []
    for i, item in enumerate(raw):
        value = setting_value(ctx, f"{key}[{i}]", name, item)
        if any(type(v) is type(value) and v == value for v in values):
            raise ctx.error(f"{key}[{i}]", "repeats an earlier choice", item)
        values.append(value)
    return ParamSpec(name, "choice", choices=tuple(values))


def parse_fixed(ctx: Ctx, raw: Any, params: dict) -> dict:
    if raw is None:
        return {}
    raw = mapping(ctx, "fixed", raw, "{lr: 0.001, ngf: 64}")
    fixed = {}
    for name, value in raw.items():
        key = f"fixed.{name}"
        check_name(ctx, key, name, SPEC_PARAMS, "unknown parameter", "known")
        if name in params:
            raise ctx.error(
                key, f"{name} is also in params", value, fix="keep it in params (searched) or in fixed, not both"
            )
        fixed[name] = setting_value(ctx, key, name, value)
    return fixed


def _sigma_bounds(params: dict, fixed: dict, name: str) -> tuple[float, float, str]:
    """(lowest, highest) value a trial can get for sigma_begin/sigma_end, and the key that sets it."""
    if name in params:
        lo, hi = params[name].bounds()
        return lo, hi, f"params.{name}"
    value = fixed.get(name, SETTINGS[name].default)
    return value, value, f"fixed.{name}" if name in fixed else f"(default) {name}"


def check_sigma_order(ctx: Ctx, params: dict, fixed: dict) -> None:
    """Reject a space that could launch sigma_begin <= sigma_end.

    Ranges are checked statically (sigma_begin's lowest > sigma_end's highest) rather than by a
    dynamic range drawn inside the space: a static space keeps TPE's per-parameter model honest
    and lets warm starts be checked against fixed bounds.
    """
    b_lo, b_hi, b_key = _sigma_bounds(params, fixed, "sigma_begin")
    e_lo, e_hi, e_key = _sigma_bounds(params, fixed, "sigma_end")
    if b_lo > e_hi:
        return
    key = b_key if b_key.startswith("params.") else e_key if e_key.startswith("params.") else b_key
    shown = lambda lo, hi: fmt(lo) if lo == hi else f"[{fmt(lo)}, {fmt(hi)}]"  # noqa: E731
    raise ctx.error(
        key,
        f"could launch sigma_begin <= sigma_end: sigma_begin {shown(b_lo, b_hi)} "
        f"({b_key}) vs sigma_end {shown(e_lo, e_hi)} ({e_key})",
        fix="make every sigma_begin larger than every sigma_end",
    )


def parse_sampler_params(
    ctx: Ctx, raw: Any, params: dict, prefix: str = "sampler_search.params"
) -> dict[str, ParamSpec]:
    """Searched sampler and ladder params of the section; at least one sampler key overall."""
    raw = {} if raw is None else mapping(ctx, prefix, raw, "{skip_levels: {int: [0, 3]}}")
    allowed = SAMPLER_PARAMS
    searched = {}
    for name, form in raw.items():
        key = f"{prefix}.{name}"
        check_name(ctx, key, name, allowed, "is not a sampler parameter", "allowed")
        searched[name] = parse_form(ctx, key, name, form)
    if not searched and not any(name in params for name in JOINT_SAMPLER_PARAMS):
        raise ctx.error(
            "sampler_search",
            "searches nothing: params holds none of "
            f"{', '.join(JOINT_SAMPLER_PARAMS)} and sampler_search.params is empty",
            fix="search e.g. sampler_search.params.step_lr",
        )
    return searched


def parse_runtime(ctx: Ctx, raw: Any, resources) -> dict:
    """The ``runtime:`` section: how every trial runs (never searched). Names and values from
    :data:`trainables.contract.params.SETTINGS` (scope runtime, the seed excepted: it is the searcher's),
    and what contradicts the trials' resources: a CPU device for trials that hold a GPU, CUDA for
    trials that hold none."""
    if raw is None:
        return {}
    raw = mapping(ctx, "runtime", raw, "{amp: bf16, compile: default}")
    runtime = {}
    for name, value in raw.items():
        key = f"runtime.{name}"
        check_name(ctx, key, name, SPEC_RUNTIME, "is not a runtime setting", "known")
        runtime[name] = setting_value(ctx, key, name, value)
    device = runtime.get("device", "auto")
    if device == "cpu" and resources.gpu > 0:
        raise ctx.error(
            "runtime.device",
            "trials that hold a GPU (resources) would leave it idle",
            device,
            fix="use device: auto, or resources.gpu: 0",
        )
    wants_cuda = device.startswith("cuda") or runtime.get("cuda_graphs") == "on"
    if wants_cuda and resources.gpu == 0:
        key = "runtime.device" if device.startswith("cuda") else "runtime.cuda_graphs"
        raise ctx.error(
            key,
            "needs CUDA, but the trials hold no GPU (resources.gpu is 0)",
            runtime[key.split(".")[1]],
            fix="give trials a GPU (resources.gpu or resources.trials_per_gpu) or use auto",
        )
    return runtime
