"""How the trials ran (their resolved runtime settings) reaches the trials frame, the leaderboard
and the report's opening list; a folder from before the record says what the spec asked for."""

from __future__ import annotations

import json

from fake_experiment import smoke_like, trial_folders

from analysis.load import load_experiment
from analysis.runtime import runtime_line
from trainables.contract.layout import RESULT_FILE, RUNTIME_KEY

GPU = {
    "device": "cuda:0",
    "device_name": "NVIDIA H200",
    "amp": "bf16",
    "amp_min_sigma": 0.1,
    "amp_levels": 5,
    "compile_train": "default",
    "compile_sample": "default",
    "cuda_graphs": "on",
    "channels_last": True,
    "threads": 1,
}
CPU = {**GPU, "device": "cpu", "device_name": "cpu", "amp": "off", "amp_levels": 0, "compile_train": "off"}
CPU.update(compile_sample="off", cuda_graphs="off")


def add_runtime(trial_dir, record):
    path = trial_dir / RESULT_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps({**row, RUNTIME_KEY: record}) + "\n" for row in rows))


def test_the_report_says_how_the_trials_ran(tmp_path):
    exp = smoke_like(tmp_path, study=False)
    folders = trial_folders(exp.exp_dir)
    for i, folder in enumerate(folders):
        add_runtime(folder, GPU if i < 2 else CPU)
    loaded = load_experiment(exp.exp_dir)
    assert sorted(loaded.trials["runtime/device"]) == sorted(["cuda:0"] * 2 + ["cpu"] * (len(folders) - 2))
    line = runtime_line(loaded.trials, loaded.search)
    assert f"device cpu ({len(folders) - 2} trials), cuda:0 (2 trials)" in line
    assert "NVIDIA H200 (2 trials)" in line and "compile off (4 trials), default (2 trials)" in line

    from analysis.reporting.report import write_report

    write_report(exp.exp_dir)
    md = (exp.exp_dir / "report" / "report.md").read_text()
    assert "Runtime (as the trials resolved it)" in md
    csv = (exp.exp_dir / "report" / "leaderboard.csv").read_text().splitlines()[0]
    assert "runtime/amp" in csv and "runtime/cuda_graphs" in csv


def test_one_runtime_for_all_trials_is_said_once(tmp_path):
    exp = smoke_like(tmp_path, study=False)
    for folder in trial_folders(exp.exp_dir):
        add_runtime(folder, GPU)
    line = runtime_line(load_experiment(exp.exp_dir).trials, {})
    assert line == (
        "Runtime (as the trials resolved it): device cuda:0 (NVIDIA H200, 1 threads); amp bf16 for sigma >= 0.1 "
        "(5 levels), fp32 below; compile default (training) / default (sampling); CUDA graphs on; channels_last true"
    )


def test_a_folder_without_records_shows_what_the_spec_asked_for(tmp_path):
    exp = smoke_like(tmp_path, study=False)
    loaded = load_experiment(exp.exp_dir)
    assert runtime_line(loaded.trials, {"spec": {"runtime": {"amp": "bf16"}}}) == (
        "Runtime: amp bf16 requested (no trial recorded how it ran)"
    )
    assert "the defaults requested" in runtime_line(loaded.trials, loaded.search)
