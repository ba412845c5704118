"""A trial's status from its files, the same rule for both kinds of search.

The statuses themselves (finished, stopped, diverged, errored, unfinished) are defined in
:mod:`trainables.contract.layout`; here they are derived from what a trial folder holds: error.txt, the
report rows, and Ray's recorded status in the experiment state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.kinds import Kind, kind_of
from trainables.contract.layout import (
    DIVERGED,
    ERRORED,
    FINISHED,
    RAY_ERROR,
    RAY_TERMINATED,
    STATUSES,
    STOPPED,
    UNFINISHED,
)

# How the report names a status where its name alone says too little.
STATUS_WORDS = {STOPPED: "stopped early by ASHA", UNFINISHED: "unfinished (running or interrupted)"}
ENDED = (FINISHED, STOPPED, DIVERGED, ERRORED)  # statuses of a trial that will not run again


def trial_status(
    evals: pd.DataFrame,
    error: str | None,
    state_status: str | None,
    budget_end: int | None,
    kind: Kind | str | None = None,
) -> tuple[str, str]:
    """(status, stop reason) of one trial from its evaluations (rows in time order, with the
    kind's time attribute, ``diverged``, ``done`` and ``stop_reason``), its error.txt summary and
    Ray's recorded status (either may be None); ``budget_end`` is where a trial that runs to the
    end stops (joint: the budget's iterations; sampler: the last look's sample count).

    Precedence: an error beats divergence beats finishing, unless Ray's record says the trial
    ended after it (TERMINATED: a retry or a ``--resume`` finished it; its error.txt stays
    behind); a trial that reached ``budget_end`` finished even if Ray had not yet logged
    ``done``; otherwise ``done`` (or a TERMINATED record) short of it means ASHA stopped it;
    anything else is unfinished (running or interrupted).
    """
    kind = kind if isinstance(kind, Kind) else kind_of(kind)
    if state_status == RAY_ERROR or (error is not None and state_status != RAY_TERMINATED):
        return ERRORED, error or f"Ray recorded status {RAY_ERROR} (no error.txt)"
    if len(evals) and evals["diverged"].any():
        reasons = [r for r in evals.loc[evals["diverged"], "stop_reason"] if isinstance(r, str) and r]
        return DIVERGED, reasons[-1] if reasons else "diverged"
    reached = evals[kind.time_attr].max() if len(evals) else np.nan
    if budget_end is not None and reached >= budget_end:
        return FINISHED, ""
    if len(evals) and (evals["done"].iloc[-1] or state_status == RAY_TERMINATED):
        if budget_end is None:
            return FINISHED, ""
        return STOPPED, f"stopped by ASHA at {int(reached)} of {budget_end} {kind.unit}"
    if len(evals) == 0:
        return UNFINISHED, "no result yet (" + (
            f"Ray status {state_status}" if state_status else "no report on disk"
        ) + ")"
    return UNFINISHED, f"no final result: last report at {int(reached)} {kind.unit} (running or interrupted)"


def status_counts(trials: pd.DataFrame) -> dict[str, int]:
    """{status: number of trials}, every status of :data:`trainables.contract.layout.STATUSES` present."""
    counts = trials["status"].value_counts() if len(trials) else pd.Series(dtype=int)
    return {s: int(counts.get(s, 0)) for s in STATUSES}


def status_line(trials: pd.DataFrame) -> str:
    """ "6 trials: 3 finished, 2 stopped early by ASHA, ..." (every status, zeros included)."""
    counts = status_counts(trials)
    return f"{len(trials)} trials: " + ", ".join(f"{counts[s]} {STATUS_WORDS.get(s, s)}" for s in STATUSES)
