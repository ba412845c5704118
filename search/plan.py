"""A search plan: what the runner needs from a kind of search to build its Tuner.

Both kinds (:mod:`search.joint`, :mod:`search.sampler`) turn a sized spec into a
:class:`SearchPlan`; :mod:`search.runner` does everything else the same way for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from search_spaces.space import OptunaSpace


@dataclass(frozen=True)
class SearchPlan:
    """What one kind of search runs.

    space: the define-by-run space; points: the warm-start points Optuna proposes first; asha:
    ASHAScheduler kwargs (time_attr, max_t, grace_period, reduction_factor); num_trials and
    max_concurrent; trainable and budget: the Tune function and the budget it is given through
    ``tune.with_parameters``; record: what the kind adds to search.json; keep: CheckpointConfig
    kwargs; reuse_actors: whether a finished trial's worker takes the next trial; messages: lines
    to print before the search starts (notices, the cost estimate).
    """

    space: OptunaSpace
    points: list[dict]
    asha: dict
    num_trials: int
    max_concurrent: int
    trainable: Callable
    budget: Any
    record: dict = field(default_factory=dict)
    keep: dict = field(default_factory=dict)
    reuse_actors: bool = False
    messages: list[str] = field(default_factory=list)
