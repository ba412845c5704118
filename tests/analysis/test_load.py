"""analysis/load.py (with analysis/frames.py and analysis/kinds.py): an experiment folder of
either kind -> one Experiment, from the files alone."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fake_experiment import PROTOCOL, SMOKE_TRIALS, FakeExperiment, json_rows, sampler_like, smoke_like

from analysis.load import load_experiment, load_experiments
from trainables.contract import layout
from trainables.contract.layout import (
    DIVERGED,
    FINISHED,
    JOINT,
    SAMPLER,
    STOPPED,
    WARM_2019,
    WARM_NCSNV2,
    WARM_TECHNIQUE4,
    WARM_TRAINED_WITH,
    experiment_kind,
)

REPO = Path(__file__).resolve().parents[2]


def test_a_joint_trial_is_summarised_by_its_best_evaluation(tmp_path):
    exp_dir = smoke_like(tmp_path, study=False).exp_dir
    exp = load_experiment(exp_dir)
    assert exp.kind.name == JOINT and exp.time_attr == "iterations" and exp.budget_end == 40
    assert list(exp.params) == ["sigma_begin", "sigma_end", "step_lr"]
    trials = exp.trials.set_index("trial_id")
    for trial_id, params, kids, end in SMOKE_TRIALS:
        rows = json_rows(exp_dir / f"trial_{trial_id}")
        best = min(rows, key=lambda r: r["kid"])
        row = trials.loc[trial_id]
        assert (row["kid"], row["fid"], row["best_iteration"]) == (best["kid"], best["fid"], best["iterations"])
        assert row["kid_last"] == kids[-1] and row["iterations"] == 10 * len(kids) and row["evaluations"] == len(kids)
        assert row["status"] == end and row["protocol_id"] == PROTOCOL
        assert row["time_total_s"] == rows[-1]["time_total_s"]
        assert row["evals_total"] == rows[-1]["train_evals_total"] + rows[-1]["sample_evals_total"]
        assert row["best_evals_total"] == best["train_evals_total"] + best["sample_evals_total"]
        assert Path(row["best_checkpoint"]).name == best["checkpoint_dir_name"]  # Ray kept the best two
        assert all(row[f"config/{k}"] == v for k, v in params.items())
    assert trials.loc["5d0b1_00000", "warm_start"] == WARM_2019
    assert trials.loc["5d0b1_00001", "warm_start"] == WARM_NCSNV2
    assert (trials["warm_start"] == "").sum() == 4
    assert len(exp.evaluations) == sum(len(k) for _, _, k, _ in SMOKE_TRIALS)


def test_a_sampler_trial_is_summarised_by_its_last_look(tmp_path):
    exp_dir = sampler_like(tmp_path).exp_dir
    exp = load_experiment(exp_dir)
    assert exp.kind.name == SAMPLER and exp.time_attr == "samples_scored" and exp.budget_end == 64
    assert set(exp.params) == {"n_steps_each", "skip_levels", "step_lr"}
    trials = exp.trials.set_index("trial_id")
    for folder in sorted(exp_dir.glob("trial_*")):
        last = json_rows(folder)[-1]
        row = trials.loc[last["trial_id"]]
        assert row["samples_scored"] == last["samples_scored"] and row["kid"] == last["kid"]
        # what the trial reports as "checkpoint" is the frozen network it sampled
        assert row["source_checkpoint"] == last["checkpoint"] == exp.search["checkpoints"][0]["path"]
        assert (row["step_lr"], row["nfe_per_sample"], row["levels"]) == (
            last["step_lr"],
            last["nfe_per_sample"],
            last["levels"],
        )
    assert trials.loc["6e1c2_00000", "warm_start"] == WARM_TRAINED_WITH
    assert trials.loc["6e1c2_00001", "warm_start"] == WARM_TECHNIQUE4
    assert trials.loc["6e1c2_00005", "status"] == DIVERGED and math.isinf(trials.loc["6e1c2_00005", "kid"])
    assert trials.loc["6e1c2_00003", "status"] == STOPPED and trials.loc["6e1c2_00004", "status"] == FINISHED
    # a look's checkpoint folder is the report's own (samples.png), as for a joint trial
    ev = exp.evaluations[exp.evaluations["trial_id"] == "6e1c2_00004"]
    assert list(ev["samples_scored"]) == [16, 32, 64]
    assert all((Path(c) / "samples.png").exists() for c in ev["checkpoint"])
    # a sampler trial's protocol id is its first look's: the one every look shares but for the count
    first = json_rows(exp_dir / "trial_6e1c2_00004")[0]
    assert trials.loc["6e1c2_00004", "protocol_id"] == first["protocol_id"]


def test_a_point_reported_twice_keeps_its_last_copy(tmp_path):
    exp = FakeExperiment(tmp_path)
    folder = exp.joint_trial("aaaaa_00000", {}, [0.3, 0.2], STOPPED)
    rows = json_rows(folder)
    again = {**rows[-1], "kid": 0.1, "done": True}  # e.g. reported again after a resume
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in [*rows, again]))
    loaded = load_experiment(exp.exp_dir)
    assert list(loaded.evaluations["kid"]) == [0.3, 0.1]
    assert loaded.trials["kid"].item() == 0.1


def test_the_kind_comes_from_search_json_and_a_folder_without_it_is_joint(tmp_path):
    legacy = smoke_like(tmp_path / "a", study=False, write_kind=False).exp_dir
    assert "kind" not in json.loads((legacy / "search.json").read_text())
    assert experiment_kind(legacy) == JOINT and load_experiment(legacy).kind.name == JOINT
    no_search = smoke_like(tmp_path / "b", study=False).exp_dir
    (no_search / "search.json").unlink()
    exp = load_experiment(no_search)  # trial folders alone: a joint search, with a warning
    assert exp.kind.name == JOINT and len(exp.trials) == 6 and "search.json missing" in exp.warnings[0]
    sampler = sampler_like(tmp_path / "c").exp_dir
    record = json.loads((sampler / "search.json").read_text())
    del record["sampler"]
    (sampler / "search.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="lists no looks"):
        load_experiment(sampler)


def test_bad_folders_and_metrics_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither search.json nor trial folders"):
        load_experiment(tmp_path / "empty")
    with pytest.raises(ValueError, match="not a folder"):
        load_experiment(tmp_path / "missing")
    exp_dir = smoke_like(tmp_path, study=False).exp_dir
    with pytest.raises(ValueError, match="metric='sharpness'"):
        load_experiment(exp_dir, metric="sharpness")
    fid = load_experiment(exp_dir, metric="fid")
    assert (fid.metric, fid.mode) == ("fid", "min")
    folders = [exp_dir, sampler_like(tmp_path / "s").exp_dir]
    with pytest.raises(ValueError, match="different kinds"):
        load_experiments(folders)


def test_several_folders_load_together_with_their_names(tmp_path):
    a = smoke_like(tmp_path / "a", name="first", study=False).exp_dir
    b = smoke_like(tmp_path / "b", name="second", study=False).exp_dir
    trials, evaluations = load_experiments([a, b])
    assert len(trials) == 12 and set(trials["experiment"]) == {"first", "second"}
    assert trials.attrs["metric"] == "kid" and len(evaluations) == 2 * sum(len(k) for _, _, k, _ in SMOKE_TRIALS)
    assert isinstance(evaluations, pd.DataFrame)


def _analysis_sources() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text()) for p in sorted((REPO / "analysis").glob("*.py"))}


def test_analysis_imports_no_search_code():
    for name, tree in _analysis_sources().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("search_spaces"), name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("search_spaces") for a in node.names), name


def test_analysis_spells_no_name_of_the_on_disk_contract():
    """File names, kinds and warm-start labels come from trainables/contract/layout.py only."""
    contract = {
        v
        for k, v in vars(layout).items()
        if k.isupper()
        and isinstance(v, str)
        and (
            k.endswith(("_FILE", "_DIR", "_HTML", "_MD", "_CSV", "_COPY", "_TENSOR"))
            or k in ("JOINT", "SAMPLER")
            or k.startswith("WARM_")
        )
    }
    assert {"search.json", "result.json", "samples.png", "joint", "ncsn_2019_mnist"} <= contract
    for name, tree in _analysis_sources().items():
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        spelled = {
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
        }
        assert not spelled & contract, (name, spelled & contract)


def test_import_analysis_loads_neither_torch_nor_pandas_and_is_quick():
    code = (
        "import sys, time; t = time.perf_counter(); import analysis; dt = time.perf_counter() - t; "
        "print('torch' in sys.modules, 'pandas' in sys.modules, dt); "
        "import analysis.reporting.report, analysis.reporting.summary; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    first, second = out.stdout.splitlines()
    torch, pandas, seconds = first.split()
    assert (torch, pandas, second) == ("False", "False", "False")
    assert float(seconds) < 0.25
