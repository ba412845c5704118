"""platform/report.py: one command for both kinds; bad input is one line and exit status 2."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fake_experiment import OTHER_PROTOCOL, independent_sampler_order, sampler_like, smoke_like

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("report_cli", REPO / "platform" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_rejects_a_bad_folder(cli, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty")]) == 2
    assert cli.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "neither search.json" in err[0] and "not a folder" in err[1]


@pytest.mark.parametrize("kind", ["joint", "sampler"])
def test_cli_rejects_an_unknown_metric_before_writing(cli, kind, tmp_path, capsys):
    exp = smoke_like(tmp_path, study=False) if kind == "joint" else sampler_like(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main([str(exp.exp_dir), "--metric", "sharpness", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metric='sharpness'" in err
    assert not any(out.iterdir())


def test_cli_refuses_two_protocols_in_one_line(tmp_path):
    exp = smoke_like(tmp_path, study=False, protocols={"5d0b1_00004": OTHER_PROTOCOL})
    done = subprocess.run(
        [sys.executable, "platform/report.py", str(exp.exp_dir), "--out", str(tmp_path / "cli")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "protocol" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "cli").exists()


def test_cli_metric_and_per_protocol_work_on_a_sampler_folder(cli, tmp_path, capsys):
    exp = sampler_like(tmp_path, families={"6e1c2_00003": "q"})
    assert cli.main([str(exp.exp_dir)]) == 2
    assert "2 different evaluation protocols" in capsys.readouterr().err
    assert cli.main([str(exp.exp_dir), "--per-protocol", "--metric", "fid", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"report:      {tmp_path / 'o' / 'report.html'}"
    board = pd.read_csv(tmp_path / "o" / "leaderboard.csv", dtype={"trial_id": str})
    main = board[board["protocol"] == board["protocol"].iloc[0]]
    expected = [t for t in independent_sampler_order(exp.exp_dir, "fid") if t != "6e1c2_00003"]
    assert list(main["trial_id"]) == expected  # ranked by fid within the group
    assert list(board["trial_id"])[-1] == "6e1c2_00003" and board["rank"].iloc[-1] == 1  # its own group
    assert "Ranking metric: fid (min)" in (tmp_path / "o" / "report.md").read_text()
