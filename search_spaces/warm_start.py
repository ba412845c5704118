"""Warm starts of a joint search: the 2019 NCSN MNIST setting and the NCSNv2 recommended
setting as its first trials, restricted to what the spec searches and checked against its ranges."""

from __future__ import annotations

from dataclasses import dataclass, field

from search_spaces.errors import fmt
from search_spaces.schema import SearchSpec
from trainables.contract.layout import WARM_2019, WARM_NCSNV2
from trainables.contract.params import SETTINGS, as_kind


@dataclass(frozen=True)
class WarmStart:
    """A published setting as a first trial.

    label: short name; setting: the full published setting; point: its values of the searched
    parameters (what Optuna enqueues); inside: whether every searched value lies in the space
    (only then is it proposed); reason: why not, or ""; differs: the spec's fixed values that
    differ from the setting, {name: (fixed value, setting's value)}: where non-empty, the trial
    reproduces the setting only in its searched parameters.
    """

    label: str
    setting: dict
    point: dict
    inside: bool
    reason: str = ""
    differs: dict = field(default_factory=dict)


def warm_starts(spec: SearchSpec) -> list[WarmStart]:
    """The 2019 NCSN MNIST setting and the NCSNv2 recommended setting, checked against spec.

    The NCSNv2 step size (technique 4) is computed for the spec's fixed n_steps_each where it
    fixes one (else for the trainable's default when absent, or the recommendation's own T when
    searched). A searched parameter the setting does not define is left to the sampler.
    """
    from trainables.ncsn.recommend import NCSN_2019_MNIST, ncsnv2_mnist_setting

    if "n_steps_each" in spec.params:
        ncsnv2 = ncsnv2_mnist_setting()
    else:
        steps = spec.fixed.get("n_steps_each", SETTINGS["n_steps_each"].default)
        ncsnv2 = ncsnv2_mnist_setting(n_steps_each=steps)
    return [_warm_start(spec, WARM_2019, dict(NCSN_2019_MNIST)), _warm_start(spec, WARM_NCSNV2, dict(ncsnv2))]


def warm_start_points(spec: SearchSpec) -> list[tuple[str, dict]]:
    """(label, point) of each warm start inside the space, in order; the points are
    OptunaSearch's points_to_evaluate. :func:`warm_starts` also lists those left out and why."""
    return [(w.label, w.point) for w in warm_starts(spec) if w.inside]


def _warm_start(spec: SearchSpec, label: str, setting: dict) -> WarmStart:
    point, outside = {}, []
    for name, param in spec.params.items():
        if name not in setting:
            continue
        value = as_kind(name, setting[name])
        point[name] = value
        if not param.contains(value):
            outside.append(f"{name}={fmt(value)} outside {fmt(param.to_dict())}")
    differs = {
        name: (value, setting[name])
        for name, value in spec.fixed.items()
        if name in setting and as_kind(name, setting[name]) != value
    }
    return WarmStart(label, setting, point, not outside, "; ".join(outside), differs)
