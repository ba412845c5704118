"""What the spec and the command line ask of the confirmation stage: how big it is.

:func:`settings_for` sizes it to the budget a search ran (K = 3 trials, S = 3 sampler seeds,
N = 4 x the search's eval_samples in a preview (CPU) and 5,000 with the full budget) unless the
spec's ``confirm`` section or ``--top-k/--seeds/--samples`` say otherwise; :func:`requested`
says whether a search runs the stage when it ends. The stage itself is :mod:`search.confirmation`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from search_spaces.schema import CONFIRM_MAX_SEEDS, MIN_SAMPLES, ConfirmSpec
from trainables.contract.metrics import CONFIRM_RESAMPLES

DEFAULT_TOP_K = 3
DEFAULT_SEEDS = 3
PREVIEW_FACTOR = 4  # N = 4 x eval_samples in a preview (CPU)
PIPELINE_SEEDS = 2  # seeds of a confirmation sized for a pipeline check (paired verdicts need 2)
FULL_SAMPLES = 5000  # N with the full budget (a GPU)


@dataclass(frozen=True)
class ConfirmSettings:
    """How big the confirmation is: the ``top_k`` best trials (plus the warm starts'), ``seeds``
    sampler seeds of ``samples`` images each, ``resamples`` bootstrap draws."""

    top_k: int = DEFAULT_TOP_K
    seeds: int = DEFAULT_SEEDS
    samples: int = 0
    resamples: int = CONFIRM_RESAMPLES


def default_samples(budget_mode: str | None, eval_samples: int) -> int:
    """N when none is given: 4 x eval_samples in a preview or smoke run (a CPU), else 5,000."""
    if budget_mode in ("preview", "smoke"):
        return max(MIN_SAMPLES, PREVIEW_FACTOR * int(eval_samples))
    return FULL_SAMPLES


def pipeline_sized(settings: ConfirmSettings, eval_samples: int) -> ConfirmSettings:
    """The confirmation sized for a pipeline check (the search's best samples far from digits:
    no setting makes digits, so a full-size stage would only confirm noise): the same trials,
    :data:`PIPELINE_SEEDS` seeds of ``eval_samples`` images (at least the k-NN metrics' minimum),
    never more than ``settings`` asks."""
    return replace(
        settings,
        seeds=min(settings.seeds, PIPELINE_SEEDS),
        samples=min(settings.samples, max(MIN_SAMPLES, int(eval_samples))),
    )


def check_request(top_k: int | None, seeds: int | None, samples: int | None, resamples: int | None = None) -> None:
    """Refuse a bad --top-k / --seeds / --samples / --resamples (``ValueError``, one line)."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k {top_k}: must be at least 1")
    if seeds is not None and not 1 <= seeds <= CONFIRM_MAX_SEEDS:
        raise ValueError(f"--seeds {seeds}: must lie in 1..{CONFIRM_MAX_SEEDS}")
    if samples is not None and samples < MIN_SAMPLES:
        raise ValueError(f"--samples {samples}: must be at least {MIN_SAMPLES} (the k-NN metrics need more)")
    if resamples is not None and resamples < 100:
        raise ValueError(f"--resamples {resamples}: must be at least 100 (the 2.5% quantile needs them)")


def settings_for(
    search: dict,
    top_k: int | None = None,
    seeds: int | None = None,
    samples: int | None = None,
    resamples: int | None = None,
) -> ConfirmSettings:
    """The settings of a confirmation of the search recorded in ``search`` (search.json): what is
    given, else the spec's ``confirm`` section, else the defaults sized to its budget."""
    check_request(top_k, seeds, samples, resamples)
    spec = search.get("spec") or {}
    section = spec.get("confirm") or {}
    eval_samples = int((spec.get("budget") or {}).get("eval_samples", 1000))
    n = samples or section.get("samples") or default_samples(search.get("budget_mode"), eval_samples)
    return ConfirmSettings(
        top_k=top_k or int(section.get("top_k", DEFAULT_TOP_K)),
        seeds=seeds or int(section.get("seeds", DEFAULT_SEEDS)),
        samples=int(n),
        resamples=resamples or CONFIRM_RESAMPLES,
    )


def requested(spec_confirm: ConfirmSpec | None, flag: bool | None) -> bool:
    """Whether a search runs the stage when it ends: ``--confirm`` / ``--no-confirm`` when given,
    else whether the spec has a ``confirm`` section."""
    return flag if flag is not None else spec_confirm is not None
