"""Analysis on real experiment folders (the session's smoke search) and on small synthetic frames.

The folder tests copy the smoke experiment before changing anything. What they simulate, and how:
- an errored trial: Ray writes ``error.txt`` into the trial folder when a trial raises; the test
  writes one (a traceback text) into a copied trial that had finished, and drops its done rows;
- an interrupted trial: a trial killed mid-run leaves result.json without a done row (possibly
  with a half-written last line), Ray's experiment state saying RUNNING, and not all checkpoints;
  the test cuts a copied trial's result.json after its first report plus half of the second
  line, deletes its checkpoints and sets its state to RUNNING;
- a diverged trial: the test appends the record the trainable reports on a non-finite loss;
- a trial under another evaluation protocol: its rows' protocol_id is rewritten.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from analysis import (best_within_budget, check_protocols, load_experiment, load_experiments, pareto_front,
                      rank_trials, read_result_rows, trial_status, write_report)
from analysis.importance import param_importances
from analysis.load import ERRORED, FINISHED, STOPPED, UNFINISHED
from trainables.quality import METRICS, metric_mode, worst_value

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Helpers (independent of analysis/: plain json over the trial folders)


def trial_folders(exp_dir: Path) -> list[Path]:
    return sorted(p.parent for p in exp_dir.glob("*/result.json"))


def json_rows(folder: Path) -> list[dict]:
    rows = []
    for line in (folder / "result.json").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def independent_ranking(exp_dir: Path, metric: str) -> list[tuple[str, float]]:
    """Trial ids best first: each trial's best non-diverged value (the first one on equal values),
    ties broken by the compute (train + sample evaluations) at that value, then by trial id."""
    sign = 1.0 if metric_mode(metric) == "min" else -1.0
    keyed = []
    for folder in trial_folders(exp_dir):
        rows = [r for r in json_rows(folder) if not r.get("diverged") and math.isfinite(r.get(metric, math.nan))]
        if not rows:
            continue
        best = min(rows, key=lambda r: sign * r[metric])  # min() keeps the first of equal values
        compute = best["train_evals_total"] + best["sample_evals_total"]
        keyed.append((sign * best[metric], compute, best["trial_id"], best[metric]))
    return [(tid, value) for _, _, tid, value in sorted(keyed)]


def copy_experiment(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report"))
    return dst


def set_ray_status(exp_dir: Path, trial_id: str, status: str) -> None:
    path = sorted(exp_dir.glob("experiment_state-*.json"))[-1]
    state = json.loads(path.read_text())
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        if trial["trial_id"] == trial_id:
            trial["status"] = status
            entry[0] = json.dumps(trial)
    path.write_text(json.dumps(state))


def folder_of(exp_dir: Path, trial_id: str) -> Path:
    return next(f for f in trial_folders(exp_dir) if json_rows(f) and json_rows(f)[0]["trial_id"] == trial_id)


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
def report_dir(smoke_experiment, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(smoke_experiment.exp_dir, out_dir=out)
    return out


# ---------------------------------------------------------------------------------------------
# Real experiment folders


def test_search_wrote_its_report(smoke_experiment):
    report = smoke_experiment.exp_dir / "report"
    assert smoke_experiment.returncode == 0, smoke_experiment.output[-3000:]
    for name in ("report.md", "report.html", "leaderboard.csv"):
        assert (report / name).stat().st_size > 0


def test_leaderboard_order_matches_independent_ranking(smoke_experiment, report_dir):
    exp_dir = smoke_experiment.exp_dir
    expected = independent_ranking(exp_dir, "kid")
    board = pd.read_csv(report_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(expected) >= 4
    assert list(board["trial_id"]) == [tid for tid, _ in expected]
    assert np.allclose(board["kid"], [v for _, v in expected], rtol=1e-12)
    # statuses from the same files: ASHA stopped some (done with fewer iterations), the rest finished
    budget = json.loads((exp_dir / "search.json").read_text())["spec"]["budget"]["iterations"]
    for folder in trial_folders(exp_dir):
        last = json_rows(folder)[-1]
        want = FINISHED if last["iterations"] >= budget else STOPPED
        assert board.loc[board["trial_id"] == last["trial_id"], "status"].item() == want
    assert (board["status"] == STOPPED).any() and (board["status"] == FINISHED).any()


@pytest.mark.parametrize("metric", ["fid", "coverage"])
def test_ranking_by_another_metric_matches_independent_ranking(smoke_experiment, metric):
    # coverage is a "max" metric and is 0 for these barely trained models: the tie rule decides
    exp = load_experiment(smoke_experiment.exp_dir, metric=metric)
    ranked = rank_trials(exp.trials)
    assert list(ranked["trial_id"]) == [tid for tid, _ in independent_ranking(smoke_experiment.exp_dir, metric)]
    values = ranked[metric].to_numpy()
    assert list(ranked["rank"]) == [1 + int(np.sum(values < v) if metric_mode(metric) == "min" else np.sum(values > v))
                                    for v in values]


def test_failed_and_interrupted_trials_still_report(smoke_experiment, tmp_path):
    exp_dir = copy_experiment(smoke_experiment.exp_dir, tmp_path / "smoke")
    interrupted, errored, diverged = [independent_ranking(exp_dir, "kid")[i][0] for i in (0, 1, 2)]

    folder = folder_of(exp_dir, interrupted)
    lines = (folder / "result.json").read_text().splitlines()
    assert len(lines) >= 2 and len(json_rows(folder_of(exp_dir, errored))) >= 2
    first = json.loads(lines[0])
    assert not first["done"]
    (folder / "result.json").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    for ckpt in folder.glob("checkpoint_*"):
        shutil.rmtree(ckpt)
    set_ray_status(exp_dir, interrupted, "RUNNING")

    folder = folder_of(exp_dir, errored)
    rows = [line for line in (folder / "result.json").read_text().splitlines() if not json.loads(line)["done"]]
    (folder / "result.json").write_text("\n".join(rows) + "\n")
    error_line = "RuntimeError: simulated failure in the training loop"
    (folder / "error.txt").write_text("Failure # 1 (occurred at 2026-01-01_00-00-00)\nTraceback (most recent call "
                                      "last):\n  File \"tune_trainable.py\", line 1, in ncsn_trainable\n" + error_line + "\n")

    # a divergence record as the trainable reports it: worst metric values, inf loss, the reason
    folder = folder_of(exp_dir, diverged)
    last = json_rows(folder)[-1]
    best_before = min(r["kid"] for r in json_rows(folder))
    reason = f"non-finite loss within iterations {last['iterations']}..{last['iterations'] + 10}"
    record = {**last, **{m: worst_value(m) for m in METRICS}, "iterations": last["iterations"] + 10,
              "loss": math.inf, "diverged": True, "stop_reason": reason, "done": True,
              "training_iteration": last["training_iteration"] + 1, "checkpoint_dir_name": None}
    for key in ("protocol_id", "kid_std"):
        record.pop(key)
    with (folder / "result.json").open("a") as f:
        f.write(json.dumps(record) + "\n")

    fresh = exp_dir / "trial_00000000"  # a trial that had just started: config written, no report yet
    fresh.mkdir()
    (fresh / "params.json").write_text((folder / "params.json").read_text())
    (fresh / "result.json").write_text("")
    (exp_dir / "optuna.db").unlink()

    page = write_report(exp_dir)
    exp = load_experiment(exp_dir)
    trials = exp.trials.set_index("trial_id")
    assert trials.loc[interrupted, "status"] == UNFINISHED
    assert trials.loc[interrupted, "iterations"] == first["iterations"]
    assert trials.loc[interrupted, "bad_lines"] == 1
    assert trials.loc[interrupted, "kid"] == first["kid"]
    assert pd.isna(trials.loc[interrupted, "best_checkpoint"])
    assert trials.loc[errored, "status"] == ERRORED
    assert trials.loc[errored, "stop_reason"] == error_line
    assert trials.loc[diverged, "status"] == "diverged" and trials.loc[diverged, "stop_reason"] == reason
    assert trials.loc[diverged, "kid"] == best_before  # its evaluations before diverging still count
    assert math.isinf(trials.loc[diverged, "kid_last"])
    assert trials.loc["00000000", "status"] == UNFINISHED and trials.loc["00000000", "evaluations"] == 0

    board = pd.read_csv(page.with_name("leaderboard.csv"), dtype={"trial_id": str})
    assert len(board) == len(trial_folders(exp_dir))  # the fresh trial (empty result.json) is listed too
    assert board["trial_id"].iloc[-1] == "00000000" and pd.isna(board["rank"].iloc[-1])
    md = page.with_name("report.md").read_text()
    assert error_line in md and "no Optuna study" in md
    assert reason in md
    assert md.count("## Answer") == 1 and f"Best setting: trial {interrupted}" in md
    assert "1 unreadable line(s) in result.json skipped" in md


def test_mixing_two_protocols_is_refused(smoke_experiment, tmp_path):
    exp_dir = copy_experiment(smoke_experiment.exp_dir, tmp_path / "mixed")
    other = independent_ranking(exp_dir, "kid")[-1][0]
    folder = folder_of(exp_dir, other)
    rows = json_rows(folder)
    original = rows[0]["protocol_id"]
    for row in rows:
        row["protocol_id"] = "0123456789ab"
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))

    exp = load_experiment(exp_dir)
    with pytest.raises(ValueError, match="2 different evaluation protocols") as refusal:
        rank_trials(exp.trials)
    assert original in str(refusal.value) and "0123456789ab" in str(refusal.value)
    with pytest.raises(ValueError, match="protocol"):
        write_report(exp_dir, out_dir=tmp_path / "refused")
    assert not (tmp_path / "refused" / "report.html").exists()
    with pytest.raises(ValueError, match="protocol"):
        pareto_front(exp.evaluations)
    # two experiments: the original folder and the edited copy
    trials, _ = load_experiments([smoke_experiment.exp_dir, exp_dir])
    with pytest.raises(ValueError, match="protocol"):
        rank_trials(trials)

    ranked = rank_trials(exp.trials, per_protocol=True)
    alone = ranked[ranked["protocol"] == "0123456789ab"]
    assert list(alone["trial_id"]) == [other] and list(alone["rank"]) == [1]
    assert sorted(ranked.loc[ranked["protocol"] == original, "rank"]) == list(range(1, len(ranked)))
    page = write_report(exp_dir, out_dir=tmp_path / "per_protocol", per_protocol=True)
    assert (page.parent / "pareto_0123456789ab.png").exists() and (page.parent / f"pareto_{original}.png").exists()

    cli = subprocess.run([sys.executable, "platform/report.py", str(exp_dir), "--out", str(tmp_path / "cli")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1 and "protocol" in cli.stderr and "Traceback" not in cli.stderr


def test_html_names_every_image_it_shows_and_every_image_exists(report_dir):
    page = (report_dir / "report.html").read_text()
    parser = _Images()
    parser.feed(page)
    shown = [img["data-file"] for img in parser.images]
    assert set(shown) == {p.name for p in report_dir.glob("*.png")}
    assert {"metric_vs_params.png", "learning_curves.png", "pareto.png", "samples_vs_mnist.png"} <= set(shown)
    for img, caption in zip(parser.images, parser.captions):
        name = img["data-file"]
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]) == (report_dir / name).read_bytes()
        assert img["alt"].startswith(name) and caption.startswith(name)
    assert len(parser.captions) == len(parser.images)
    assert "http://" not in page and "https://" not in page  # opens offline
    md = (report_dir / "report.md").read_text()
    assert all(f"]({name})" in md for name in shown)


def test_cli_rejects_a_bad_folder_and_metric(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("report_cli", REPO / "platform" / "report.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty")]) == 2
    assert cli.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "not a folder" in err[1] and "neither search.json" in err[0]


def test_cli_rejects_an_unknown_metric(smoke_experiment, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("report_cli", REPO / "platform" / "report.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main([str(smoke_experiment.exp_dir), "--metric", "sharpness", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metric='sharpness'" in err
    assert not any(tmp_path.iterdir())


def test_warm_starts_are_found_and_compared(smoke_experiment, report_dir):
    search = json.loads((smoke_experiment.exp_dir / "search.json").read_text())
    board = pd.read_csv(report_dir / "leaderboard.csv", dtype={"trial_id": str})
    md = (report_dir / "report.md").read_text()
    for point in search["warm_start"]:
        match = board
        for name, value in point["params"].items():
            match = match[np.isclose(match[name], value, rtol=1e-9)]
        assert len(match) == 1
        assert f"trial {match['trial_id'].item()}" in md
    assert "2019 NCSN" in md and "NCSNv2" in md


# ---------------------------------------------------------------------------------------------
# Synthetic frames: closed answers


def _evals(rows, metric="kid"):
    frame = pd.DataFrame(rows, columns=["trial_id", "iterations", "evals_total", metric])
    frame["experiment"], frame["diverged"], frame["protocol_id"], frame["checkpoint"] = "e", False, "p", None
    frame.attrs.update(metric=metric, mode=metric_mode(metric))
    return frame


def test_pareto_front_and_budget_on_hand_made_points():
    ev = _evals([("a", 1, 100, 5.0), ("b", 1, 200, 6.0), ("a", 2, 200, 4.0), ("c", 1, 300, 4.0),
                 ("b", 2, 400, 1.0), ("c", 2, 500, 1.0)])
    front = pareto_front(ev)
    assert list(zip(front["trial_id"], front["evals_total"])) == [("a", 100), ("a", 200), ("b", 400)]
    within = best_within_budget(ev, 300)
    assert list(within["trial_id"]) == ["a", "c", "b"] and list(within["kid"]) == [4.0, 4.0, 6.0]
    assert list(within["rank"]) == [1, 1, 3]  # a and c tie; a got there with less compute
    assert list(best_within_budget(ev, 99)["trial_id"]) == []
    up = _evals([("a", 1, 100, 0.2), ("a", 2, 200, 0.1), ("b", 1, 150, 0.3)], metric="coverage")
    assert list(pareto_front(up)["trial_id"]) == ["a", "b"]


def test_rank_ties_missing_and_diverged_values():
    trials = pd.DataFrame({"trial_id": list("abcde"), "kid": [2.0, 1.0, 1.0, np.nan, np.inf],
                           "best_evals_total": [1, 30, 20, np.nan, 5], "protocol_id": ["p", "p", "p", None, None]})
    ranked = rank_trials(trials, metric="kid")
    assert list(ranked["trial_id"]) == ["c", "b", "a", "e", "d"]
    assert list(ranked["rank"].astype("float").fillna(-1)) == [1, 1, 3, 4, -1]
    assert check_protocols(trials) == "p"
    with pytest.raises(ValueError, match="metric='sharp'"):
        rank_trials(trials, metric="sharp")


def test_result_rows_and_status_from_files(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"iterations": 10, "kid": Infinity}\n\n{"iterations": 20, "ki')
    rows, bad = read_result_rows(path)
    assert bad == 1 and rows == [{"iterations": 10, "kid": math.inf}]
    assert read_result_rows(tmp_path / "none.json") == ([], 0)
    ev = pd.DataFrame({"iterations": [10, 20], "diverged": [False, False], "done": [False, True],
                       "stop_reason": ["", ""]})
    assert trial_status(ev, None, None, 40)[0] == STOPPED
    assert trial_status(ev, None, None, 20)[0] == FINISHED
    assert trial_status(ev.assign(done=False), None, "RUNNING", 40)[0] == UNFINISHED
    assert trial_status(ev, "ValueError: x", None, 20) == (ERRORED, "ValueError: x")
    div = ev.assign(diverged=[False, True], stop_reason=["", "non-finite loss within iterations 10..20"])
    assert trial_status(div, None, None, 40) == ("diverged", "non-finite loss within iterations 10..20")


def test_importance_states_why_when_too_few_trials():
    study = optuna.create_study(direction="minimize")
    dist = optuna.distributions.FloatDistribution(0.1, 10.0, log=True)
    for x, value in ((1.0, 3.0), (2.0, 1.0), (3.0, math.inf)):
        study.add_trial(optuna.trial.create_trial(params={"sigma_begin": x}, distributions={"sigma_begin": dist},
                                                  value=value))
    frame, note = param_importances(study, ["sigma_begin"], "kid")
    assert frame.empty and "2 complete trial(s) with a finite value" in note
    for x, value in ((4.0, 2.0), (5.0, 5.0), (0.5, 0.5)):
        study.add_trial(optuna.trial.create_trial(params={"sigma_begin": x}, distributions={"sigma_begin": dist},
                                                  value=value))
    frame, note = param_importances(study, ["sigma_begin"], "kid")
    assert list(frame["param"]) == ["sigma_begin"] and frame["importance"].item() == pytest.approx(1.0)
    assert "5 complete trials" in note
