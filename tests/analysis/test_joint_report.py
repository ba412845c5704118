"""analysis/reporting/report.py with analysis/reporting/joint.py: the report of a joint search, on synthetic folders
written in the real on-disk format (tests/fake_experiment.py).

Beside a finished smoke search, the failure test writes what broken trials leave: an errored
trial (Ray's error.txt, no done row, status ERROR), an interrupted one (one report and half of
the next line, no checkpoint kept, status RUNNING), a diverged one (the trainable's divergence
record after its evaluations), one that had just started (config, empty result.json) and no
optuna.db.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from fake_experiment import (
    ERROR_LINE,
    OTHER_PROTOCOL,
    PROTOCOL,
    SMOKE_WARM,
    FakeExperiment,
    independent_ranking,
    json_rows,
    smoke_like,
    trial_folders,
)

from analysis.load import load_experiment
from analysis.reporting.report import write_report
from trainables.contract.layout import DIVERGED, ERRORED, FINISHED, STOPPED, UNFINISHED


class _Images(HTMLParser):
    """Collects <img> attributes and figcaption texts of an HTML page."""

    def __init__(self):
        super().__init__()
        self.images, self.captions, self._in_caption = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        self._in_caption = self._in_caption or tag == "figcaption"
        if tag == "figcaption":
            self.captions.append("")

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        if self._in_caption:
            self.captions[-1] += data


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    return smoke_like(tmp_path_factory.mktemp("joint")).exp_dir


@pytest.fixture(scope="module")
def report_dir(smoke_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_report(smoke_dir, out_dir=out)
    return out


def test_leaderboard_order_matches_independent_ranking(smoke_dir, report_dir):
    expected = independent_ranking(smoke_dir, "kid")
    board = pd.read_csv(report_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(expected) >= 4
    assert list(board["trial_id"]) == [tid for tid, _ in expected]
    assert np.allclose(board["kid"], [v for _, v in expected], rtol=1e-12)
    # statuses from the same files: ASHA stopped some (done with fewer iterations), the rest finished
    budget = json.loads((smoke_dir / "search.json").read_text())["spec"]["budget"]["iterations"]
    for folder in trial_folders(smoke_dir):
        last = json_rows(folder)[-1]
        want = FINISHED if last["iterations"] >= budget else STOPPED
        assert board.loc[board["trial_id"] == last["trial_id"], "status"].item() == want
    assert (board["status"] == STOPPED).any() and (board["status"] == FINISHED).any()


def test_html_names_every_image_it_shows_and_every_image_exists(report_dir):
    page = (report_dir / "report.html").read_text()
    parser = _Images()
    parser.feed(page)
    shown = [img["data-file"] for img in parser.images]
    assert set(shown) == {p.name for p in report_dir.glob("*.png")}
    assert {
        "metric_vs_params.png",
        "learning_curves.png",
        "pareto.png",
        "samples_vs_mnist.png",
        "importance.png",
    } <= set(shown)
    for img, caption in zip(parser.images, parser.captions, strict=True):
        name = img["data-file"]
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]) == (report_dir / name).read_bytes()
        assert img["alt"].startswith(name) and caption.startswith(name)
    assert len(parser.captions) == len(parser.images)
    assert "http://" not in page and "https://" not in page  # opens offline
    md = (report_dir / "report.md").read_text()
    assert all(f"]({name})" in md for name in shown)


def test_warm_starts_are_found_and_compared(smoke_dir, report_dir):
    search = json.loads((smoke_dir / "search.json").read_text())
    board = pd.read_csv(report_dir / "leaderboard.csv", dtype={"trial_id": str})
    md = (report_dir / "report.md").read_text()
    for point in search["warm_start"]:
        match = board
        for name, value in point["params"].items():
            match = match[np.isclose(match[name], value, rtol=1e-9)]
        assert len(match) == 1
        assert f"trial {match['trial_id'].item()}" in md
        assert match["warm_start"].item() == point["label"]
    assert "2019 NCSN" in md and "NCSNv2" in md


def test_importance_comes_from_the_stored_study(smoke_dir, report_dir):
    md = (report_dir / "report.md").read_text()
    study = json.loads((smoke_dir / "search.json").read_text())["study_name"]
    assert f"PED-ANOVA (Optuna's PedAnovaImportanceEvaluator) on 6 complete trials of study '{study}'" in md
    assert "Most important parameter by PED-ANOVA" in md


def test_failed_and_interrupted_trials_still_report(tmp_path):
    exp = FakeExperiment(tmp_path)
    interrupted, errored, diverged = "c0000_00000", "c0000_00001", "c0000_00002"
    exp.joint_trial(interrupted, SMOKE_WARM[0]["params"], [0.05], UNFINISHED, cut_line=True)
    exp.joint_trial(errored, {"sigma_begin": 2.0, "sigma_end": 0.02, "step_lr": 3e-05}, [0.2, 0.15], ERRORED)
    exp.joint_trial(diverged, {"sigma_begin": 4.0, "sigma_end": 0.03, "step_lr": 9e-05}, [0.3, 0.25], DIVERGED)
    exp.joint_trial("c0000_00003", {"sigma_begin": 5.0, "sigma_end": 0.01, "step_lr": 1e-05}, [0.2, 0.1, 0.09, 0.08])
    exp.finish(study=False)
    exp.fresh_trial("00000000", {"sigma_begin": 8.0, "sigma_end": 0.02, "step_lr": 4e-06})

    page = write_report(exp.exp_dir)
    trials = load_experiment(exp.exp_dir).trials.set_index("trial_id")
    first = json_rows(exp.exp_dir / f"trial_{interrupted}")[0]
    assert trials.loc[interrupted, "status"] == UNFINISHED
    assert trials.loc[interrupted, "iterations"] == first["iterations"]
    assert trials.loc[interrupted, "bad_lines"] == 1
    assert trials.loc[interrupted, "kid"] == first["kid"]
    assert pd.isna(trials.loc[interrupted, "best_checkpoint"])
    assert trials.loc[errored, "status"] == ERRORED
    assert trials.loc[errored, "stop_reason"] == ERROR_LINE
    reason = json_rows(exp.exp_dir / f"trial_{diverged}")[-1]["stop_reason"]
    assert trials.loc[diverged, "status"] == DIVERGED and trials.loc[diverged, "stop_reason"] == reason
    assert trials.loc[diverged, "kid"] == 0.25  # its evaluations before diverging still count
    assert math.isinf(trials.loc[diverged, "kid_last"])
    assert trials.loc["00000000", "status"] == UNFINISHED and trials.loc["00000000", "evaluations"] == 0

    board = pd.read_csv(page.with_name("leaderboard.csv"), dtype={"trial_id": str})
    assert len(board) == len(trial_folders(exp.exp_dir)) == 5  # the fresh trial (empty result.json) is listed too
    assert board["trial_id"].iloc[-1] == "00000000" and pd.isna(board["rank"].iloc[-1])
    md = page.with_name("report.md").read_text()
    assert ERROR_LINE in md and "no Optuna study" in md
    assert reason in md
    assert md.count("## Answer") == 1 and f"Best setting: trial {interrupted}" in md
    assert "1 unreadable line(s) in result.json skipped" in md


def test_mixed_protocols_are_refused_before_anything_is_written_or_reported_apart(tmp_path):
    other = "5d0b1_00004"
    exp_dir = smoke_like(tmp_path, name="mixed", protocols={other: OTHER_PROTOCOL}).exp_dir
    with pytest.raises(ValueError, match="protocol"):
        write_report(exp_dir, out_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    page = write_report(exp_dir, out_dir=tmp_path / "per_protocol", per_protocol=True)
    for protocol in (OTHER_PROTOCOL, PROTOCOL):
        assert (page.parent / f"pareto_{protocol}.png").exists()
        assert (page.parent / f"samples_vs_mnist_{protocol}.png").exists()
    assert not (page.parent / "importance.png").exists()
    md = page.with_name("report.md").read_text()
    assert md.count("## Answer") == 2 and f"# Protocol {OTHER_PROTOCOL} (1 trials, ranked on their own)" in md
    assert "not computed: the trials were scored under several evaluation protocols" in md
    board = pd.read_csv(page.with_name("leaderboard.csv"), dtype={"trial_id": str})
    assert board.loc[board["trial_id"] == other, ["protocol", "rank"]].values.tolist() == [[OTHER_PROTOCOL, 1]]


def test_a_new_report_removes_the_plots_it_does_not_redraw(smoke_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "pareto_0123456789ab.png").write_bytes(b"old")
    (out / "mine.png").write_bytes(b"not a report plot")
    write_report(smoke_dir, out_dir=out)
    assert not (out / "pareto_0123456789ab.png").exists() and (out / "mine.png").exists()


def test_a_report_with_real_digits_is_written_without_torch(tmp_path):
    """The report's sample panel reads MNIST as numpy (trainables.contract.data.load_mnist_arrays): a
    report written in a fresh process loads no torch, which would cost seconds on every report."""
    exp = smoke_like(tmp_path)
    code = (
        "import sys; from analysis.reporting.report import write_report; "
        "write_report(sys.argv[1]); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(exp.exp_dir)], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-1] == "False", out.stdout + out.stderr
    assert (exp.exp_dir / "report" / "samples_vs_mnist.png").stat().st_size > 0
