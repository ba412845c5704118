"""The searcher of a search: Ray's OptunaSearch, made safe to restore from a lagging snapshot.

Ray pickles the searcher into its experiment snapshot; after a killed driver or a full disk the
snapshot can be older than the SQLite study (search_spaces/recovery.py). Tune then resumes a
trial that Optuna had already finished (told COMPLETE, or FAIL when it errored), and Ray's
OptunaSearch reports the trial's next result as an intermediate value of a finished Optuna
trial, which Optuna refuses with ``UpdateFinishedTrialError``: the whole search stopped there.
:class:`ResumableOptunaSearch` drops such a report (the study keeps what it was told first), and
Ray's own ``tell`` of a finished trial is already caught; what such a trial reaches on the resume
is added afterwards by :func:`search_spaces.recovery.tell_resumed` if the study holds it only as
FAIL.
"""

from __future__ import annotations

import logging

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch whose intermediate report of an already finished Optuna trial is dropped."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError as err:
            log.info("trial %s: %s (kept what the study was told first)", trial_id, err)
