"""analysis/reporting/report.py with analysis/reporting/sampler.py: the report of a sampler search on frozen
checkpoints, on synthetic folders in the real on-disk format (tests/fake_experiment.py)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from fake_experiment import independent_sampler_order, json_rows, sampler_like, trial_folders

from analysis.reporting.render import fmt
from analysis.reporting.report import write_report
from trainables.contract.layout import ERRORED, UNFINISHED, WARM_TECHNIQUE4, WARM_TRAINED_WITH

PLOTS = ("sampler_vs_step.png", "sampler_front.png", "sampler_samples.png")


@pytest.fixture(scope="module")
def sampler_dir(tmp_path_factory):
    return sampler_like(tmp_path_factory.mktemp("sampler")).exp_dir


@pytest.fixture(scope="module")
def report_dir(sampler_dir):
    write_report(sampler_dir)
    return sampler_dir / "report"


def test_report_shows_quality_against_step_and_compute_beside_the_original_score(sampler_dir, report_dir):
    html, md = (report_dir / "report.html").read_text(), (report_dir / "report.md").read_text()
    for name in PLOTS:
        assert (report_dir / name).stat().st_size > 0 and f'data-file="{name}"' in html and f"({name})" in md
    source = json.loads((sampler_dir / "search.json").read_text())["checkpoints"][0]
    original = json.loads(
        (sampler_dir.parent / "joint" / source["trial"] / "checkpoint_000003" / "metrics.json").read_text()
    )["metrics"]["kid"]
    assert re.search(rf"original score from the joint search \(kid {re.escape(fmt(original))} on 64 samples", md)
    board = pd.read_csv(report_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == len(trial_folders(sampler_dir))
    # ranked ASHA's way: further first, then by kid at the last look reached
    finals = {f.name.removeprefix("trial_"): json_rows(f)[-1] for f in trial_folders(sampler_dir)}
    order = sorted(finals, key=lambda i: (-finals[i]["samples_scored"], finals[i]["kid"]))
    assert list(board["trial_id"]) == order == independent_sampler_order(sampler_dir, "kid")
    assert set(board["warm_start"].dropna()) == {WARM_TRAINED_WITH, WARM_TECHNIQUE4}


def test_the_answer_compares_at_a_common_look(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "best sampler trial 6e1c2_00004" in md and "with kid 0.14 on 64 samples" in md
    assert (
        "Versus the trained-with sampler (trial 6e1c2_00000" in md
        and "at 64 samples the best has 0.14 against 0.27, 1.93x lower (better)" in md
    )
    assert "Versus the NCSNv2 technique-4 sampler (trial 6e1c2_00001" in md
    assert "Notice: warm start trained_with" in md
    odd = md.split("## Trials that did not score every look")[1]
    assert all(t in odd for t in ("6e1c2_00002", "6e1c2_00003", "6e1c2_00005")) and "6e1c2_00004" not in odd


def test_another_metric_ranks_and_answers_by_that_metric(sampler_dir, tmp_path):
    page = write_report(sampler_dir, out_dir=tmp_path, metric="fid")
    board = pd.read_csv(page.with_name("leaderboard.csv"), dtype={"trial_id": str})
    assert list(board["trial_id"]) == independent_sampler_order(sampler_dir, "fid")
    assert list(board["trial_id"]) != independent_sampler_order(sampler_dir, "kid")
    md = page.with_name("report.md").read_text()
    assert "best sampler trial 6e1c2_00001" in md and "with fid 10 on 64 samples" in md
    assert "Ranking metric: fid (min)" in md
    assert "original score from the joint search (fid 30 on 64 samples" in md  # the checkpoint's own fid
    assert "The best sampler is the NCSNv2 technique-4 sampler itself (trial 6e1c2_00001)." in md


def test_trials_under_another_protocol_are_refused_or_ranked_apart(tmp_path):
    exp_dir = sampler_like(tmp_path, families={"6e1c2_00002": "q"}).exp_dir
    with pytest.raises(ValueError, match="2 different evaluation protocols"):
        write_report(exp_dir)
    assert not (exp_dir / "report").exists()
    page = write_report(exp_dir, per_protocol=True)
    board = pd.read_csv(page.with_name("leaderboard.csv"), dtype={"trial_id": str})
    groups = board.groupby("protocol")["trial_id"].apply(list).to_dict()
    assert sorted(map(len, groups.values())) == [1, 5]
    assert board.loc[board["trial_id"] == "6e1c2_00002", "rank"].item() == 1
    md = page.with_name("report.md").read_text()
    assert md.count("## Answer") == 2
    for protocol in groups:
        assert (page.parent / f"sampler_front_{protocol}.png").exists()


def test_errored_and_interrupted_sampler_trials_still_report(tmp_path):
    exp = sampler_like(tmp_path)
    exp.sampler_trial("6e1c2_00006", {"step_lr": 2e-05, "n_steps_each": 2, "skip_levels": 1}, [0.3], ERRORED)
    exp.sampler_trial("6e1c2_00007", {"step_lr": 4e-05, "n_steps_each": 3, "skip_levels": 0}, [0.3, 0.2], UNFINISHED)
    exp.write_state()
    page = write_report(exp.exp_dir)
    board = pd.read_csv(page.with_name("leaderboard.csv"), dtype={"trial_id": str}).set_index("trial_id")
    assert board.loc["6e1c2_00006", "status"] == ERRORED
    assert board.loc["6e1c2_00006", "stop_reason"] == "RuntimeError: simulated failure in the training loop"
    assert board.loc["6e1c2_00007", "status"] == UNFINISHED
    md = page.with_name("report.md").read_text()
    assert "8 trials: 3 finished, 2 stopped early by ASHA, 1 diverged, 1 errored, 1 unfinished" in md
