"""analysis/reporting/summary.py: the closing text of a search, of either kind, from the folder alone."""

from __future__ import annotations

import json
import re

from fake_experiment import (
    ERROR_LINE,
    OTHER_PROTOCOL,
    SMOKE_WARM,
    FakeExperiment,
    independent_ranking,
    json_rows,
    sampler_like,
    smoke_like,
    trial_folders,
)

from analysis.reporting.summary import closing_summary, is_incomplete
from trainables.contract.layout import ERRORED, STOPPED, UNFINISHED


def _table(text: str, title: str) -> list[list[str]]:
    """The column names and the rows (one per trial id) of the plain-text table under ``title``."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    rows = []
    for line in lines[start + 1 :]:
        if not re.fullmatch(r"[0-9a-f]{5}_\d{5}", line.split()[0]):
            break
        rows.append(line.split())
    return [lines[start].split(), *rows]


def test_a_joint_summary_names_the_best_trials_the_report_and_the_commands(tmp_path):
    exp = smoke_like(tmp_path)
    text = closing_summary(exp.exp_dir)
    lines = text.splitlines()
    assert lines[0] == "" and lines[1] == f"6 trials in {exp.exp_dir}"
    assert "best trials by kid (min):" in text
    header, *rows = _table(text, "best trials by kid (min):")
    assert header[:4] == ["trial_id", "kid", "iterations", "status"] and header[4:] == [
        "sigma_begin",
        "sigma_end",
        "step_lr",
    ]
    expected = independent_ranking(exp.exp_dir, "kid")
    assert [r[0] for r in rows] == [tid for tid, _ in expected[:5]]
    best = min(json_rows(exp.exp_dir / f"trial_{expected[0][0]}"), key=lambda r: r["kid"])
    assert rows[0][1:3] == [f"{best['kid']:.4g}", str(best["iterations"])]
    assert "errored" not in text and "incomplete" not in text
    page = exp.exp_dir / "report" / "report.html"
    assert f"report: {page}" in lines and page.exists()
    assert f"TensorBoard: tensorboard --logdir {exp.exp_dir} --host 127.0.0.1" in lines
    assert f"report:      python platform/report.py {exp.exp_dir}" in lines
    assert lines[-1] == (
        f"resume:      python platform/run_search.py --space {exp.search['source']} "
        f"--storage-path {exp.exp_dir.parent} --name {exp.exp_dir.name} --resume"
    )


def test_errored_and_unfinished_trials_make_the_search_incomplete(tmp_path):
    exp = FakeExperiment(tmp_path)
    exp.joint_trial("c0000_00000", SMOKE_WARM[0]["params"], [0.3, 0.2], STOPPED)
    exp.joint_trial("c0000_00001", SMOKE_WARM[1]["params"], [0.3], ERRORED)
    exp.joint_trial("c0000_00002", {"sigma_begin": 2.0, "sigma_end": 0.02, "step_lr": 3e-05}, [0.25], UNFINISHED)
    exp.finish(study=False)
    text = closing_summary(exp.exp_dir, write_report=False)
    assert f"3 trials in {exp.exp_dir}" in text
    assert (
        f"1 trial(s) errored (trial c0000_00001: {ERROR_LINE}); see error.txt in their trial folders; once the "
        "cause is fixed, --resume (the command below) runs them again from their last checkpoint"
    ) in text
    # spec budget: 6 trials; two ended (stopped, errored), one interrupted, three never started
    assert "the search is incomplete (2 of 6 trials ended): resume it with the command below" in text
    assert not (exp.exp_dir / "report").exists() and "report: /" not in text


def test_a_search_kept_at_a_storage_uri_is_resumed_by_naming_the_uri(tmp_path):
    exp = FakeExperiment(tmp_path)
    exp.joint_trial("c0000_00000", SMOKE_WARM[0]["params"], [0.3, 0.2], STOPPED)
    exp.joint_trial("c0000_00001", SMOKE_WARM[1]["params"], [0.3], UNFINISHED)
    record = json.loads((exp.exp_dir / "search.json").read_text())
    (exp.exp_dir / "search.json").write_text(json.dumps({**record, "storage_uri": "s3://lab-bucket/runs"}))
    exp.finish(study=False)
    lines = closing_summary(exp.exp_dir, write_report=False).splitlines()
    assert "the search is incomplete (1 of 6 trials ended): resume it with the command below" in lines
    remote = f"s3://lab-bucket/runs/{exp.exp_dir.name}"
    assert f"stored at:   {remote} (this machine's copy: {exp.exp_dir})" in lines
    assert f"report:      python platform/report.py {remote}" in lines
    # from any machine: the URI, never this machine's copy, is the storage path
    assert lines[-1] == (
        f"resume:      python platform/run_search.py --space {record['source']} "
        f"--storage-path s3://lab-bucket/runs --name {exp.exp_dir.name} --resume"
    )


def test_mixed_protocols_fall_back_to_one_ranking_per_protocol(tmp_path):
    exp = smoke_like(tmp_path, protocols={"5d0b1_00002": OTHER_PROTOCOL})
    text = closing_summary(exp.exp_dir)
    assert "best trials by kid (min), ranked per protocol:" in text
    assert "different evaluation protocols" in text and "writing one ranking per protocol instead" in text
    assert f"report: {exp.exp_dir / 'report' / 'report.html'}" in text.splitlines()
    assert (exp.exp_dir / "report" / f"pareto_{OTHER_PROTOCOL}.png").exists()


def test_a_sampler_summary_counts_asha_stops_and_the_evaluations_spent(tmp_path):
    exp = sampler_like(tmp_path)
    text = closing_summary(exp.exp_dir)
    lines = text.splitlines()
    assert lines[1] == f"6 sampler trials in {exp.exp_dir}"
    assert lines[2] == (
        "ASHA stopped 2 of 6 trials before 64 samples (looks at 16, 32, 64); 1 diverged; 0 did not "
        "end (interrupted or errored)"
    )
    finals = [json_rows(f)[-1] for f in trial_folders(exp.exp_dir)]
    spent = sum(r["sample_evals_total"] for r in finals)
    full = sum(r["nfe_per_sample"] * 64 for r in finals)
    assert lines[3] == (
        f"network evaluations spent: {spent:,} per image in all ({spent / full:.0%} of the {full:,} "
        f"without early stopping)"
    )
    header, *rows = _table(text, "best samplers at 64 samples by kid (min):")
    assert header[:3] == ["trial_id", "kid", "nfe_per_sample"] and "checkpoint_trial" in header
    at_last = sorted((r for r in finals if r["samples_scored"] == 64), key=lambda r: r["kid"])
    assert [r[0] for r in rows] == [r["trial_id"] for r in at_last]
    assert "checkpoint trial_src00_00003/checkpoint_000003: original kid 0.2 on 64 samples" in lines
    assert f"report: {exp.exp_dir / 'report' / 'report.html'}" in lines
    assert (exp.exp_dir / "report" / "sampler_front.png").exists()
    assert lines[-1].startswith("resume:      python platform/run_search.py --space ")
    assert lines[-1].endswith(f"--name {exp.exp_dir.name} --resume")


def test_a_sampler_search_cut_short_is_incomplete(tmp_path):
    exp = sampler_like(tmp_path)
    exp.search["sampler"]["num_trials"] = 8  # two more were planned
    exp.write_search()
    text = closing_summary(exp.exp_dir, write_report=False)
    assert "the search is incomplete (6 of 8 trials ended)" in text


def test_is_incomplete_reads_the_ended_trials_against_the_budget(tmp_path):
    joint = smoke_like(tmp_path / "a")
    sampler = sampler_like(tmp_path / "b")
    assert not is_incomplete(joint.exp_dir) and not is_incomplete(sampler.exp_dir)
    sampler.search["sampler"]["num_trials"] = 8  # two more were planned and never ran
    sampler.write_search()
    joint.search["spec"]["budget"]["num_trials"] += 1
    joint.write_search()
    assert is_incomplete(sampler.exp_dir) and is_incomplete(joint.exp_dir)
