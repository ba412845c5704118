"""Damaged and hostile files in a real experiment folder (a copy of the session's smoke search),
met by ``--resume``, ``platform/report.py`` and ``platform/confirm.py``: each either gives one line
naming the file and exits 2 with nothing changed, or is repaired from what the folder still holds
and the command goes on. A checkpoint that is a pickle which would run code is refused and never
executed (its payload would leave a marker file)."""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from conftest import REPO, result_rows, sqlite_locked_by_another_process, trial_dirs

from trainables.contract.layout import LAST_SNAPSHOT_DIR, SEARCH_FILE, STATE_FILE, STUDY_FILE, read_search_record

QUIET = ["--no-dashboard", "--no-calibration", "--no-report", "--no-confirm"]


def _copy(smoke_experiment, tmp_path: Path) -> Path:
    assert smoke_experiment.returncode == 0, smoke_experiment.output[-3000:]
    exp = tmp_path / "runs" / "smoke"
    shutil.copytree(smoke_experiment.exp_dir, exp)
    return exp


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def _resume(exp: Path) -> subprocess.CompletedProcess:
    return _run(
        "platform/run_search.py", "--space", "smoke.yaml", "--storage-path", str(exp.parent), "--resume", *QUIET
    )


def _one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _best_states(exp: Path) -> list[Path]:
    return sorted(exp.glob("trial_*/checkpoint_*/state.pt"))


@pytest.mark.parametrize("damage", ["cut short", "pickle that runs code", "another shape"])
def test_confirm_refuses_a_damaged_checkpoint_in_one_line_before_any_cluster(smoke_experiment, tmp_path, damage):
    exp = _copy(smoke_experiment, tmp_path)
    marker = tmp_path / "payload-ran"
    for path in _best_states(exp):
        if damage == "cut short":
            path.write_bytes(path.read_bytes()[:1000])
        elif damage == "pickle that runs code":
            path.write_bytes(pickle.dumps(_RunsCode(marker)))
        else:  # the weights doubled in width: not what the state's own config builds
            state = torch.load(path, weights_only=True)
            model = {k: torch.cat([v, v]) if v.dim() == 4 else v for k, v in state["model"].items()}
            torch.save({**state, "model": model}, path)
    before = {p: p.read_bytes() for p in _best_states(exp)}
    line = _one_line(_run("platform/confirm.py", str(exp), "--top-k", "1", "--seeds", "1", "--samples", "16"))
    expected = {
        "cut short": "cut short or not a torch checkpoint",
        "pickle that runs code": "holds objects other than tensors and numbers, which a safe load refuses (never",
        "another shape": "holds weights of another network shape than its config says (size mismatch",
    }[damage]
    assert line.startswith("confirm.py: error: trial ") and f"/{STATE_FILE}: {expected}" in line, line
    assert not marker.exists()
    assert {p: p.read_bytes() for p in _best_states(exp)} == before


def test_report_reads_past_a_junk_study_and_a_junk_search_record(smoke_experiment, tmp_path):
    exp = _copy(smoke_experiment, tmp_path)
    (exp / STUDY_FILE).write_bytes(os.urandom(8192))
    (exp / SEARCH_FILE).write_text('{"kind": "joint", "spec": {"na')  # cut mid-write
    done = _run("platform/report.py", str(exp), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "not computed: the Optuna study could not be read" in text
    assert "search.json missing or unreadable: read the copy written with it" in text
    board = (tmp_path / "report" / "leaderboard.csv").read_text().strip().splitlines()
    assert len(board) == 1 + len(trial_dirs(exp)) == 7  # every trial ranked, as from a whole folder


def test_resume_puts_back_a_junk_study_and_search_record_and_trims_a_cut_result(smoke_experiment, tmp_path):
    exp = _copy(smoke_experiment, tmp_path)
    assert (exp / LAST_SNAPSHOT_DIR / STUDY_FILE).exists() and (exp / LAST_SNAPSHOT_DIR / SEARCH_FILE).exists()
    record = read_search_record(exp)
    (exp / STUDY_FILE).write_bytes((exp / STUDY_FILE).read_bytes()[:2048])
    (exp / SEARCH_FILE).write_text("not json at all")
    (exp / "driver.json").write_text("[")
    trial = trial_dirs(exp)[0]
    rows = (trial / "result.json").read_bytes()
    (trial / "result.json").write_bytes(rows + rows[: len(rows) // 3])  # a last line cut mid-write
    done = _resume(exp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "optuna.db is damaged" in done.stdout or "optuna.db is no readable SQLite database" in done.stdout
    assert "put back its last whole copy from last_snapshot/" in done.stdout
    assert f"{exp / SEARCH_FILE} was damaged or missing: put back its copy from last_snapshot/" in done.stdout
    assert "1 result file(s) ended in a line cut short" in done.stdout
    assert (exp / f"{STUDY_FILE}.damaged").exists() and (exp / f"{SEARCH_FILE}.damaged").exists()
    study = optuna.load_study(study_name=record["study_name"], storage=f"sqlite:///{exp / STUDY_FILE}")
    assert len(study.trials) >= 6
    assert read_search_record(exp) == record
    assert all(result_rows(t) for t in trial_dirs(exp))  # every line whole again


def test_resume_refuses_a_study_another_process_holds_locked(smoke_experiment, tmp_path):
    exp = _copy(smoke_experiment, tmp_path)
    before = (exp / STUDY_FILE).read_bytes()
    with sqlite_locked_by_another_process(exp / STUDY_FILE) as pid:
        line = _one_line(_resume(exp))
    assert f"optuna.db is locked by another process (pid {pid}); let it finish or stop it" in line, line
    assert (exp / STUDY_FILE).read_bytes() == before and not (exp / f"{STUDY_FILE}.damaged").exists()
    with sqlite3.connect(exp / STUDY_FILE) as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
