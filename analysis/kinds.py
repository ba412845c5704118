"""What differs between the two kinds of experiment folder when they are read and ranked.

A joint search (:data:`trainables.contract.layout.JOINT`) trains networks and samples from them: its
time attribute is training iterations, a trial is summarised by its best evaluation, and trials
rank by that value. A sampler search (:data:`trainables.contract.layout.SAMPLER`) samples frozen
checkpoints at growing sample counts ("looks"): its time attribute is the samples scored, a
trial is summarised by its last look, and trials rank ASHA's way, the further first (values at
different sample counts are different protocols, so only trials at the same look compare).
Everything else (reading, statuses, ranking, rendering, plots) is shared and reads a
:class:`Kind` for these few facts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from trainables.contract.layout import JOINT, SAMPLER, SAMPLER_TIME_ATTR, TRAIN_TIME_ATTR
from trainables.contract.metrics import KID_STD, METRICS, PROTOCOL_ID, interval_keys
from trainables.contract.params import SAMPLER_PARAMS

# Report fields of every kind kept in the evaluations frame beside the metrics (Ray's bookkeeping
# such as hostname or pid is dropped).
COMMON_FIELDS = (
    *interval_keys(),  # <metric>_lo, <metric>_hi: the 95% interval of each metric
    KID_STD,
    PROTOCOL_ID,
    "nfe_per_sample",
    "sample_evals_total",
    "train_evals_total",
    "sample_seconds",
    "score_seconds",
    "snr_nominal",
    "diverged",
    "stop_reason",
    "done",
    "training_iteration",
    "checkpoint_dir_name",
    "time_total_s",
)
COMPUTE = "evals_total"  # network evaluations per image so far: training plus sampling


@dataclass(frozen=True)
class Kind:
    """The named part of one experiment kind.

    fields: report fields (beside :data:`COMMON_FIELDS`) kept per evaluation; renamed: frame column
    -> report key where the report's name means something else here; carried: evaluation columns
    copied into the trial row from the evaluation that summarises it (``config_key``: the config
    key to fall back on); summarise_by: "best" (the best evaluation by the ranking metric) or
    "last"; family: which scored evaluation gives the trial's protocol id ("last" or "first");
    reach: the column that ranks further trials first (None: rank by value alone); best_at: the
    trial column holding the time attribute of the summarising evaluation.
    """

    name: str
    time_attr: str
    unit: str
    trials_word: str
    fields: tuple[str, ...]
    budget_end: Callable[[dict], int | None]
    searched: Callable[[dict], dict]
    num_trials: Callable[[dict], int | None]
    summarise_by: str
    family: str
    reach: str | None = None
    best_at: str | None = None
    renamed: dict[str, str] = field(default_factory=dict)
    carried: dict[str, str | None] = field(default_factory=dict)

    @property
    def numeric(self) -> tuple[str, ...]:
        """Evaluation columns coerced to numbers."""
        extra = tuple(c for c in ("loss", "step_lr") if c in self.fields)
        return (
            *METRICS,
            *interval_keys(),
            self.time_attr,
            *extra,
            "nfe_per_sample",
            "train_evals_total",
            "sample_evals_total",
            "time_total_s",
        )

    def eval_columns(self) -> tuple[str, ...]:
        return (*METRICS, *COMMON_FIELDS, *self.fields)


def _spec(search: dict) -> dict:
    return search.get("spec") or {}


def sampler_section(search: dict) -> dict:
    """The sampler search's own section of search.json (keyed by its kind): looks, params, ..."""
    return search.get(SAMPLER) or {}


def _joint_budget_end(search: dict) -> int | None:
    return (_spec(search).get("budget") or {}).get("iterations")


def _sampler_budget_end(search: dict) -> int | None:
    looks = sampler_section(search).get("samples") or []
    return int(looks[-1]) if looks else None


def _joint_num_trials(search: dict) -> int | None:
    return (_spec(search).get("budget") or {}).get("num_trials")


def _sampler_num_trials(search: dict) -> int | None:
    return sampler_section(search).get("num_trials") or _joint_num_trials(search)


JOINT_KIND = Kind(
    name=JOINT,
    time_attr=TRAIN_TIME_ATTR,
    unit="iterations",
    trials_word="trials",
    fields=(
        TRAIN_TIME_ATTR,
        "loss",
        "loss_sigma_max",
        "loss_sigma_min",
        "train_iters_per_s",
        "sample_evals_per_s",
        "snr_first_level",
        "snr_last_level",
        "evaluations",
        "train_seconds",
    ),
    budget_end=_joint_budget_end,
    searched=lambda search: dict(_spec(search).get("params") or {}),
    num_trials=_joint_num_trials,
    summarise_by="best",
    family="last",
    best_at="best_iteration",
)

# The sampler trial reports the frozen checkpoint it sampled as "checkpoint"; here "checkpoint"
# is the report's own checkpoint folder (as for a joint trial), so that one is "source_checkpoint".
_SAMPLER_CARRIED = (
    "source_checkpoint",
    *SAMPLER_PARAMS,
    "levels",
    "levels_visited",
    "nfe_per_sample",
    "checkpoint_trial",
    "checkpoint_iterations",
    "used_ema",
    "weights_sha256",
)
SAMPLER_KIND = Kind(
    name=SAMPLER,
    time_attr=SAMPLER_TIME_ATTR,
    unit="samples",
    trials_word="sampler trials",
    fields=(
        SAMPLER_TIME_ATTR,
        *SAMPLER_PARAMS,
        "levels",
        "levels_visited",
        "source_checkpoint",
        "checkpoint_trial",
        "checkpoint_iterations",
        "used_ema",
        "weights_sha256",
        "looks",
    ),
    budget_end=_sampler_budget_end,
    searched=lambda search: dict(sampler_section(search).get("params") or {}),
    num_trials=_sampler_num_trials,
    summarise_by="last",
    family="first",
    reach=SAMPLER_TIME_ATTR,
    renamed={"source_checkpoint": "checkpoint"},
    carried={
        name: ("checkpoint" if name == "source_checkpoint" else name if name in SAMPLER_PARAMS else None)
        for name in _SAMPLER_CARRIED
    },
)

KINDS = {JOINT: JOINT_KIND, SAMPLER: SAMPLER_KIND}


def kind_of(name: str | None) -> Kind:
    """The :class:`Kind` named ``name`` (None: a folder from before the kind was recorded, joint)."""
    try:
        return KINDS[name or JOINT]
    except KeyError:
        raise ValueError(f"kind={name!r}: unknown experiment kind; known: {sorted(KINDS)}") from None
