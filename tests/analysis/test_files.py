"""analysis/files.py: reading the files of an experiment folder as a search leaves them."""

from __future__ import annotations

import json
import math

from fake_experiment import FakeExperiment, smoke_like

from analysis.files import (
    checkpoint_record,
    error_summary,
    read_result_rows,
    read_trial_states,
    trial_dirs,
    trial_id_from_name,
)
from trainables.contract.layout import ERRORED, REPORT_DIR, STOPPED


def test_result_rows_skip_blank_and_cut_lines_and_read_infinity(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"iterations": 10, "kid": Infinity}\n\n[1, 2]\n{"iterations": 20, "ki')
    rows, bad = read_result_rows(path)
    assert bad == 2 and rows == [{"iterations": 10, "kid": math.inf}]
    assert read_result_rows(tmp_path / "none.json") == ([], 0)


def test_trial_states_come_from_the_newest_experiment_state_in_rays_format(tmp_path):
    exp = FakeExperiment(tmp_path)
    exp.joint_trial("aaaaa_00000", {"sigma_begin": 1.0}, [0.3, 0.2], STOPPED)
    exp.joint_trial("aaaaa_00001", {"sigma_begin": 2.0}, [0.3], ERRORED)
    exp.write_state({"aaaaa_00000": "RUNNING"})  # an older snapshot
    older = next(exp.exp_dir.glob("experiment_state-*.json"))
    older.rename(exp.exp_dir / "experiment_state-2025-12-31_00-00-00.json")
    exp.write_state()
    states = read_trial_states(exp.exp_dir)
    assert states == {
        "trial_aaaaa_00000": {"trial_id": "aaaaa_00000", "status": "TERMINATED"},
        "trial_aaaaa_00001": {"trial_id": "aaaaa_00001", "status": "ERROR"},
    }


def test_a_broken_experiment_state_is_a_warning_not_an_error(tmp_path):
    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [["{not json", "{}"]]}')
    warnings: list[str] = []
    assert read_trial_states(tmp_path, warnings) == {}
    assert len(warnings) == 1 and "did not parse" in warnings[0]
    (tmp_path / "experiment_state-2026-01-02_00-00-00.json").write_text('{"trial_da')
    assert read_trial_states(tmp_path, warnings) == {} and "unreadable" in warnings[-1]


def test_error_summary_is_the_exception_line(tmp_path):
    exp = FakeExperiment(tmp_path)
    folder = exp.joint_trial("aaaaa_00000", {}, [0.3], ERRORED)
    assert error_summary(folder / "error.txt") == "RuntimeError: simulated failure in the training loop"
    assert error_summary(folder / "missing.txt") is None
    (folder / "error.txt").write_text("\n\n")
    assert error_summary(folder / "error.txt") == "error.txt is empty"


def test_trial_folders_are_those_holding_trial_files(tmp_path):
    exp = smoke_like(tmp_path, study=False)
    (exp.exp_dir / REPORT_DIR).mkdir()
    (exp.exp_dir / REPORT_DIR / "result.json").write_text("{}")  # not a trial, whatever it holds
    (exp.exp_dir / "empty_folder").mkdir()
    fresh = exp.fresh_trial("00000000", {})
    names = [p.name for p in trial_dirs(exp.exp_dir)]
    assert len(names) == 7 and fresh.name in names and REPORT_DIR not in names and "empty_folder" not in names


def test_trial_ids_from_folder_names():
    assert trial_id_from_name("trial_5d0b1_00003") == "5d0b1_00003"  # this project's folders
    assert trial_id_from_name("trial_00000000") == "00000000"
    assert trial_id_from_name("ncsn_trainable_1a2b3_00004_4_sigma_begin=1.2") == "1a2b3"
    assert trial_id_from_name("odd-name") == "odd-name"


def test_checkpoint_record_reads_metrics_json(tmp_path):
    exp = FakeExperiment(tmp_path)
    folder = exp.joint_trial("aaaaa_00000", {}, [0.3, 0.2], STOPPED, keep=1)
    [ckpt] = folder.glob("checkpoint_*")
    record = checkpoint_record(ckpt)
    assert record["metrics"]["kid"] == json.loads((ckpt / "metrics.json").read_text())["metrics"]["kid"] == 0.2
    assert checkpoint_record(tmp_path / "nowhere") == {}
