"""The Optuna glue of a search: the sampler, seeded per trial number, and Ray's OptunaSearch made
safe to restore from a lagging snapshot.

The Optuna sampler of a search, seeded per trial number.

A sampler's random state is part of the searcher state Ray pickles into its experiment
snapshot, and that snapshot lags the SQLite study (search/durability/). A plain seeded
sampler restored from it replays the draws it already made after the snapshot: the replacement
of a trial lost with a killed driver gets that trial's point again. :class:`NumberSeeded` draws
the values of trial n from a fresh sampler seeded by (seed, n), so what trial n gets depends on
the seed, n and the study's finished trials (which TPE reads from the study itself), never on
how many draws a restored copy has made. The same spec still proposes the same points.

Ray pickles the searcher into its experiment snapshot; after a killed driver or a full disk the
snapshot can be older than the SQLite study (search/durability/). Tune then resumes a
trial that Optuna had already finished (told COMPLETE, or FAIL when it errored), and Ray's
OptunaSearch reports the trial's next result as an intermediate value of a finished Optuna
trial, which Optuna refuses with ``UpdateFinishedTrialError``: the whole search stopped there.
:class:`ResumableOptunaSearch` drops such a report (the study keeps what it was told first), and
Ray's own ``tell`` of a finished trial is already caught; what such a trial reaches on the resume
is added afterwards by :func:`search.durability.reconcile.tell_resumed` if the study holds it only as
FAIL.
"""

from __future__ import annotations

import logging

from optuna.exceptions import UpdateFinishedTrialError
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from ray.tune.search.optuna import OptunaSearch

from trainables.contract.params import noise_seed

ALGORITHMS = ("tpe", "random")


class NumberSeeded(BaseSampler):
    """TPE or random sampling; the draws of trial n come from a sampler seeded by (seed, n)."""

    def __init__(self, algorithm: str, seed: int):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {algorithm!r}: use one of {ALGORITHMS}")
        self.algorithm, self.seed = algorithm, int(seed)
        self._per_trial: dict[int, BaseSampler] = {}

    def trial_seed(self, number: int) -> int:
        return noise_seed(self.seed, "proposals", number) % 2**32

    def _sampler(self, trial) -> BaseSampler:
        sampler = self._per_trial.get(trial.number)
        if sampler is None:
            seed = self.trial_seed(trial.number)
            sampler = TPESampler(seed=seed) if self.algorithm == "tpe" else RandomSampler(seed=seed)
            self._per_trial[trial.number] = sampler
        return sampler

    def infer_relative_search_space(self, study, trial):
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._sampler(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler(trial).after_trial(study, trial, state, values)
        self._per_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:  # the draws are a function of (seed, trial number) by design
        pass

    def __repr__(self) -> str:
        return f"NumberSeeded({self.algorithm!r}, seed={self.seed})"


log = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch whose intermediate report of an already finished Optuna trial is dropped."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError as err:
            log.info("trial %s: %s (kept what the study was told first)", trial_id, err)


def make_sampler(spec):
    """The Optuna sampler named by ``spec.searcher`` (TPE or random), seeded per trial number
    (:class:`NumberSeeded`: a restored searcher never replays a draw)."""
    return NumberSeeded(spec.searcher.algorithm, spec.searcher.seed)
