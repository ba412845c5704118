"""analysis/status.py: one status rule for both kinds, from a trial's files."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.status import status_counts, status_line, trial_status
from trainables.contract.layout import DIVERGED, ERRORED, FINISHED, JOINT, SAMPLER, STATUSES, STOPPED, UNFINISHED


def _evals(time_attr: str, times, done, diverged=None, reasons=None) -> pd.DataFrame:
    n = len(times)
    return pd.DataFrame(
        {time_attr: times, "done": done, "diverged": diverged or [False] * n, "stop_reason": reasons or [""] * n}
    )


def test_joint_statuses_from_reports_error_and_ray_state():
    ev = _evals("iterations", [10, 20], [False, True])
    assert trial_status(ev, None, None, 40) == (STOPPED, "stopped by ASHA at 20 of 40 iterations")
    assert trial_status(ev, None, None, 20) == (FINISHED, "")
    assert trial_status(ev.assign(done=False), None, None, 20)[0] == FINISHED  # reached the budget: done or not
    assert trial_status(ev.assign(done=False), None, "RUNNING", 40)[0] == UNFINISHED
    assert trial_status(ev.assign(done=False), None, "TERMINATED", 40)[0] == STOPPED  # Ray's record says it ended
    # an error.txt left by a failure that a retry or a --resume recovered from: Ray's record wins
    assert trial_status(ev, "OSError: [Errno 28] No space left on device", "TERMINATED", 40)[0] == STOPPED
    assert trial_status(ev, "OSError: [Errno 28] No space left on device", "RUNNING", 40)[0] == ERRORED
    assert trial_status(ev, "ValueError: x", None, 20) == (ERRORED, "ValueError: x")
    assert trial_status(ev, None, "ERROR", 20)[0] == ERRORED
    div = ev.assign(diverged=[False, True], stop_reason=["", "non-finite loss within iterations 10..20"])
    assert trial_status(div, None, None, 40) == (DIVERGED, "non-finite loss within iterations 10..20")
    assert trial_status(div, "RuntimeError: boom", None, 40)[0] == ERRORED  # an error beats divergence
    assert trial_status(ev.iloc[:0], None, "PENDING", 40) == (UNFINISHED, "no result yet (Ray status PENDING)")


def test_sampler_statuses_count_samples_against_the_last_look():
    ev = _evals("samples_scored", [16, 32], [False, True])
    assert trial_status(ev, None, "TERMINATED", 64, SAMPLER) == (STOPPED, "stopped by ASHA at 32 of 64 samples")
    assert trial_status(ev, None, None, 32, SAMPLER)[0] == FINISHED
    assert trial_status(ev.assign(done=False), None, None, 64, SAMPLER) == (
        UNFINISHED,
        "no final result: last report at 32 samples (running or interrupted)",
    )
    with pytest.raises(KeyError):  # a joint rule on a sampler frame: no iterations column
        trial_status(ev, None, None, 64, JOINT)


def test_status_line_counts_every_status():
    trials = pd.DataFrame({"status": [FINISHED, FINISHED, STOPPED, ERRORED]})
    assert status_counts(trials) == {FINISHED: 2, STOPPED: 1, DIVERGED: 0, ERRORED: 1, UNFINISHED: 0}
    assert set(status_counts(trials)) == set(STATUSES)
    assert status_line(trials) == (
        "4 trials: 2 finished, 1 stopped early by ASHA, 0 diverged, 1 errored, 0 unfinished (running or interrupted)"
    )
