"""The validated search-space file as data: the sections of the file format and their dataclasses.

A search-space file (see :mod:`search_spaces.spec` for the format) becomes a :class:`SearchSpec`;
:mod:`search_spaces.validate` builds it and is the only code that does. What each parameter
means, its kind, default and bounds are in :data:`trainables.contract.params.SETTINGS`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.contract.params import NOISE_INDICES

SPACES_DIR = Path(__file__).resolve().parent
DATASETS = ("mnist",)
SEARCHERS = ("tpe", "random")
SCHEDULERS = ("asha",)
FORMS = ("uniform", "loguniform", "int", "choice")
TOP_KEYS = (
    "name",
    "dataset",
    "metric",
    "mode",
    "searcher",
    "scheduler",
    "budget",
    "preview",
    "params",
    "fixed",
    "resources",
    "sampler_search",
    "runtime",
    "confirm",
)
REQUIRED_TOP = ("name", "metric", "budget", "params")
BUDGET_KEYS = ("num_trials", "max_concurrent", "iterations", "eval_every", "eval_samples")
# What a preview may override besides budget keys and names already in fixed.
SCHEDULER_PREVIEW_KEYS = ("grace_period", "reduction_factor")
SAMPLER_SECTION_KEYS = ("num_trials", "max_concurrent", "samples", "params", "preview")
SAMPLER_PREVIEW_KEYS = ("num_trials", "max_concurrent", "samples", "params")
# quality.point_metrics needs more samples than its k-NN neighbourhoods
MIN_SAMPLES = 6
CONFIRM_KEYS = ("top_k", "seeds", "samples")
CONFIRM_MAX_SEEDS = NOISE_INDICES  # the confirmation's noise streams stay apart for this many seeds


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: form is uniform | loguniform | int | choice.

    low/high are the inclusive bounds of a range form (floats, or ints for ``int``); log is True
    for loguniform and for ``int`` with ``log: true``; choices is the tuple of a choice form.
    """

    name: str
    form: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """Draw this parameter from an ``optuna.Trial`` (or anything with its suggest_* API)."""
        if self.form == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.form == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether the space can propose ``value`` (same kind, inside the range or choices)."""
        if self.form == "choice":
            return any(type(c) is type(value) and c == value for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.form == "int" and value != int(value):
            return False
        return self.low <= value <= self.high

    def bounds(self) -> tuple[Any, Any]:
        """(smallest, largest) value the space can propose (choices must be ordered values)."""
        if self.form == "choice":
            return min(self.choices), max(self.choices)
        return self.low, self.high

    def to_dict(self) -> dict:
        """The file form, e.g. {"loguniform": [0.005, 0.1]}."""
        if self.form == "choice":
            return {"choice": list(self.choices)}
        if self.form == "int":
            return {"int": [self.low, self.high], "log": self.log}
        return {self.form: [self.low, self.high]}


@dataclass(frozen=True)
class SearcherSpec:
    algorithm: str = "tpe"
    seed: int = 0


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA over training iterations; grace_period in iterations."""

    name: str
    grace_period: int
    reduction_factor: float


@dataclass(frozen=True)
class Budget:
    """num_trials, max_concurrent; per trial: iterations (ASHA's max_t), eval_every (iterations
    between sample-quality evaluations), eval_samples (images sampled and scored per evaluation)."""

    num_trials: int
    max_concurrent: int
    iterations: int
    eval_every: int
    eval_samples: int


@dataclass(frozen=True)
class Resources:
    """Per trial: CPUs and (possibly fractional) GPUs.

    trials_per_gpu (instead of gpu): each trial gets 1/trials_per_gpu of a GPU, and a search
    runs as many trials at once as the cluster's GPUs hold (GPUs x trials_per_gpu, at most
    num_trials): :func:`search.packing.pack`.
    """

    cpu: float = 1
    gpu: float = 0
    trials_per_gpu: int | None = None

    def to_dict(self) -> dict:
        if self.trials_per_gpu is not None:
            return {"cpu": self.cpu, "trials_per_gpu": self.trials_per_gpu}
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass(frozen=True)
class SamplerSearchSpec:
    """The sampler-only search on frozen checkpoints (optional ``sampler_search`` section).

    num_trials, max_concurrent: as in the budget. samples: ASHA's looks, the number of samples
    scored at each (strictly increasing, one whole growth factor, e.g. (250, 1000, 4000)).
    params: name -> ParamSpec searched on top of (or replacing) the spec's sampler params.
    preview: the overrides :func:`search_spaces.validate.with_preview` applies here.
    """

    num_trials: int
    max_concurrent: int
    samples: tuple[int, ...]
    params: dict = field(default_factory=dict)
    preview: dict = field(default_factory=dict)

    @property
    def reduction_factor(self) -> int:
        """Growth factor between looks (ASHA's reduction factor); 1 with a single look."""
        return self.samples[1] // self.samples[0] if len(self.samples) > 1 else 1

    def to_dict(self) -> dict:
        out = {"num_trials": self.num_trials, "max_concurrent": self.max_concurrent, "samples": list(self.samples)}
        if self.params:
            out["params"] = {name: p.to_dict() for name, p in self.params.items()}
        if self.preview:
            out["preview"] = copy.deepcopy(self.preview)
        return out


@dataclass(frozen=True)
class ConfirmSpec:
    """The confirmation stage run after the search (optional ``confirm`` section;
    :mod:`search.confirmation.stage`): the best checkpoints of the ``top_k`` trials (and the warm
    starts') sampled again with ``seeds`` sampler seeds of ``samples`` images each (None: sized to
    the budget, 4 x eval_samples in a preview and 5,000 with the full budget)."""

    top_k: int = 3
    seeds: int = 3
    samples: int | None = None

    def to_dict(self) -> dict:
        out = {"top_k": self.top_k, "seeds": self.seeds}
        if self.samples is not None:
            out["samples"] = self.samples
        return out


@dataclass(frozen=True)
class SearchSpec:
    """A validated search-space file. Build with :func:`search_spaces.loading.load_spec` or
    :func:`search_spaces.loading.parse_spec`.

    params maps name -> ParamSpec in file order; fixed maps name -> value (not searched);
    preview holds the overrides :func:`search_spaces.validate.with_preview` applies; previewed
    says they were applied.
    source is the file path (or None). raw is the file's mapping, used to re-validate variants.
    """

    name: str
    dataset: str
    metric: str
    mode: str
    searcher: SearcherSpec
    scheduler: SchedulerSpec
    budget: Budget
    preview: dict
    params: dict
    fixed: dict
    resources: Resources
    sampler_search: SamplerSearchSpec | None = None
    # runtime settings (trainables.contract.params.SPEC_RUNTIME) the file sets; the rest keep their defaults
    runtime: dict = field(default_factory=dict)
    confirm: ConfirmSpec | None = None  # run the confirmation stage after the search
    source: str | None = field(default=None, compare=False)
    previewed: bool = False
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def file(self) -> str:
        return self.source or f"<{self.name}>"

    def to_dict(self) -> dict:
        """The spec in file form with every default filled in (loads back to an equal spec)."""
        out = {
            "name": self.name,
            "dataset": self.dataset,
            "metric": self.metric,
            "mode": self.mode,
            "searcher": {"algorithm": self.searcher.algorithm, "seed": self.searcher.seed},
            "scheduler": {
                "name": self.scheduler.name,
                "grace_period": self.scheduler.grace_period,
                "reduction_factor": self.scheduler.reduction_factor,
            },
            "budget": {k: getattr(self.budget, k) for k in BUDGET_KEYS},
            "params": {name: p.to_dict() for name, p in self.params.items()},
            "fixed": dict(self.fixed),
            "resources": self.resources.to_dict(),
        }
        if self.runtime:
            out["runtime"] = dict(self.runtime)
        if self.preview:
            out["preview"] = dict(self.preview)
        if self.sampler_search is not None:
            out["sampler_search"] = self.sampler_search.to_dict()
        if self.confirm is not None:
            out["confirm"] = self.confirm.to_dict()
        return out
