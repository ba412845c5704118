"""The Optuna side of a spec: a picklable define-by-run space (the seeded sampler that draws from it
is the search's: :func:`search.searcher.make_sampler`)."""

from __future__ import annotations

from collections.abc import Mapping

from search_spaces.schema import ParamSpec, SearchSpec
from trainables.contract.params import defaults


class OptunaSpace:
    """A picklable define-by-run space for Optuna / Ray's OptunaSearch(space=...).

    Calling it with an ``optuna.Trial`` suggests every searched parameter and returns the full
    trial config: {**searched values, **fixed, **constants}. It holds only plain data, so Ray
    can pickle the searcher state (a closure or lambda could not be restored).
    """

    def __init__(self, params: tuple[ParamSpec, ...], constants: dict):
        self.params = tuple(params)
        self.constants = dict(constants)

    def __call__(self, trial) -> dict:
        config = {p.name: p.suggest(trial) for p in self.params}
        config.update(self.constants)
        return config

    def __repr__(self) -> str:
        return f"OptunaSpace({[p.name for p in self.params]}, constants={sorted(self.constants)})"


def make_space_fn(spec: SearchSpec, constants: Mapping | None = None, with_defaults: bool = False) -> OptunaSpace:
    """The define-by-run space of ``spec``: searched params, then fixed values and ``constants``.

    constants are extra config entries for every trial (e.g. the budget's eval_every); a
    constant may not shadow a searched parameter. with_defaults adds every known parameter the
    file leaves out, at its :data:`trainables.contract.params.SETTINGS` default, so each trial's config is complete.
    """
    constants = dict(constants or {})
    clash = sorted(set(constants) & set(spec.params))
    if clash:
        raise ValueError(f"constants {clash} would shadow searched parameters")
    base = {k: v for k, v in defaults().items() if k not in spec.params} if with_defaults else {}
    return OptunaSpace(tuple(spec.params.values()), {**base, **spec.fixed, **constants})
