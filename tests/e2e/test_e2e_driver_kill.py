"""A killed driver loses nothing (search/durability/): the search's driver is killed with
SIGKILL at four moments (during calibration, right after the first trials start, mid-trial,
during the closing report), its local Ray cluster left running as a real crash leaves it; then
the printed resume command finishes the search with exactly the requested trials, none run
again, none left RUNNING in the Optuna study, no point proposed twice, and the report written.
Disk trouble too: a full disk under the whole experiment, and a checkpoint write that fails in
one trial only."""

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from conftest import run_search_cli, start_search

from search.durability import driver, snapshots
from trainables.contract.layout import (
    DRIVER_FILE,
    ERROR_FILE,
    ORPHANED_DIR,
    REPORT_DIR,
    REPORT_MD,
    SEARCH_FILE,
    STATE_FILE,
)

TRIALS, ITERATIONS = 3, 40


def _trials(exp_dir: Path) -> list[Path]:
    return sorted(p for p in exp_dir.glob("trial_*") if p.is_dir())


def _rows(trial: Path) -> list[dict]:
    path = trial / "result.json"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line being written as the driver died
            pass
    return rows


def _finished(rows: list[dict]) -> bool:
    return bool(rows) and (rows[-1].get("done") is True or rows[-1]["iterations"] >= ITERATIONS)


def _cluster_started(exp_dir: Path) -> bool:
    record = driver.read_driver(exp_dir)
    return bool(record and record.get("cluster"))


def _search(storage: Path, name: str, *extra: str) -> list[str]:
    return [
        "--space",
        "smoke.yaml",
        "--storage-path",
        str(storage),
        "--name",
        name,
        "--no-dashboard",
        *extra,
    ]


def _kill_when(args: list[str], ready, what: str, timeout: float = 300, **env: str) -> str:
    """Start the search, SIGKILL its driver (only the driver) once ``ready()``; its output."""
    proc = start_search(*args, env=dict(os.environ, **env))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert alive, f"the search ended before {what}:\n{out[-3000:]}"
    return out


@pytest.fixture
def leftovers():
    """Stop whatever the killed drivers' clusters left, by PID, whatever the test's outcome."""
    folders: list[Path] = []
    yield folders
    for exp_dir in folders:
        driver.stop_orphaned_cluster(exp_dir, lambda _: None)


def _resume_and_check(args: list[str], exp_dir: Path, before: dict[str, list[dict]]) -> dict:
    done, _ = run_search_cli(*args, "--resume", timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
    trials = _trials(exp_dir)
    assert len(trials) == TRIALS, [t.name for t in trials]
    for trial in trials:
        assert _finished(_rows(trial)), f"{trial.name} did not end: {_rows(trial)[-1:]}"
    for name, rows in before.items():  # a trial that had ended was not run again
        if _finished(rows) and (exp_dir / name).exists():
            assert _rows(exp_dir / name) == rows, f"{name} ran again after the resume"
    study_name = json.loads((exp_dir / SEARCH_FILE).read_text())["study_name"]
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{exp_dir / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == TRIALS, [(t.number, t.state) for t in study.trials]
    points = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(points)) == TRIALS, points  # no point proposed twice
    assert all(t.value is not None for t in complete)
    assert (exp_dir / REPORT_DIR / REPORT_MD).exists(), done.stdout[-2000:]
    return {"out": done.stdout, "study": study}


def test_driver_killed_during_calibration_starts_again_on_resume(tmp_path, leftovers):
    storage, exp_dir = tmp_path / "runs", tmp_path / "runs" / "calib"
    leftovers.append(exp_dir)
    args = _search(storage, "calib", "--num-trials", str(TRIALS))
    _kill_when(args, lambda: _cluster_started(exp_dir) and not (exp_dir / SEARCH_FILE).exists(), "calibration")
    assert (exp_dir / DRIVER_FILE).exists() and not _trials(exp_dir)
    # the printed resume command carries no budget flags: the first start's --num-trials holds
    result = _resume_and_check(_search(storage, "calib"), exp_dir, {})
    assert "starting the search again" in result["out"]
    assert "stopped" in result["out"]  # the orphaned cluster's processes, by PID


def test_driver_killed_right_after_the_first_trials_start(tmp_path, leftovers):
    storage, exp_dir = tmp_path / "runs", tmp_path / "runs" / "start"
    leftovers.append(exp_dir)
    args = _search(storage, "start", "--num-trials", str(TRIALS), "--no-calibration")
    _kill_when(args, lambda: any((t / "params.json").exists() for t in _trials(exp_dir)), "the first trial started")
    before = {t.name: _rows(t) for t in _trials(exp_dir)}
    _resume_and_check(_search(storage, "start"), exp_dir, before)


def test_driver_killed_mid_trial_resumes_it_from_its_checkpoint(tmp_path, leftovers):
    storage, exp_dir = tmp_path / "runs", tmp_path / "runs" / "mid"
    leftovers.append(exp_dir)
    args = _search(storage, "mid", "--num-trials", str(TRIALS), "--no-calibration")

    def two_evaluations_in() -> bool:
        return any(len(_rows(t)) >= 2 and not _finished(_rows(t)) for t in _trials(exp_dir))

    _kill_when(args, two_evaluations_in, "a trial was two evaluations in")
    time.sleep(0.1)
    before = {t.name: _rows(t) for t in _trials(exp_dir)}
    resumed = [name for name, rows in before.items() if len(rows) >= 2 and not _finished(rows)]
    assert resumed
    _resume_and_check(_search(storage, "mid"), exp_dir, before)
    for name in resumed:
        if not (exp_dir / name).exists():  # moved aside as unknown to Ray's snapshot: replaced
            assert (exp_dir / ORPHANED_DIR / name).exists()
            continue
        steps = [r["iterations"] for r in _rows(exp_dir / name)]
        # resumed from a checkpoint, not from iteration 0: its first evaluation was not repeated
        assert steps.count(steps[0]) == 1, (name, steps)
        assert max(steps) == ITERATIONS or _finished(_rows(exp_dir / name))


def test_driver_killed_during_the_closing_report_writes_it_on_resume(tmp_path, leftovers):
    storage, exp_dir = tmp_path / "runs", tmp_path / "runs" / "report"
    leftovers.append(exp_dir)
    args = _search(storage, "report", "--num-trials", str(TRIALS), "--no-calibration")
    _kill_when(args, lambda: (exp_dir / REPORT_DIR).exists(), "the report started")
    assert not (exp_dir / REPORT_DIR / REPORT_MD).exists(), "killed too late: the report was already written"
    before = {t.name: _rows(t) for t in _trials(exp_dir)}
    assert len(before) == TRIALS and all(_finished(rows) for rows in before.values())
    _resume_and_check(_search(storage, "report"), exp_dir, before)


def test_a_full_disk_stops_the_search_with_one_line_and_resume_completes_it(tmp_path, leftovers):
    """The experiment on a 40 MB tmpfs, filled up once the first trial reported: the driver stops
    with one line (exit 75: free space and retry) instead of a traceback; Ray's snapshot, cut short
    as it was written, gives way to the last whole copy; after freeing space --resume completes."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], check=True)
    try:
        storage, exp_dir = disk / "runs", disk / "runs" / "full"
        leftovers.append(exp_dir)
        args = _search(storage, "full", "--num-trials", str(TRIALS), "--no-calibration")
        proc = start_search(*args, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if any(_rows(t) for t in _trials(exp_dir)) and (exp_dir / "last_snapshot").is_dir():
                break
            time.sleep(0.05)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with (disk / "ballast").open("wb") as ballast:  # leave 16 KB
            for _ in range(max(0, free - 16384) // 65536):
                ballast.write(b"\0" * 65536)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 75, (out[-2000:], err[-3000:])
        last = err.strip().splitlines()[-1]
        assert last.startswith("run_search.py: error: ") and "no space left" in last.lower() and "--resume" in last
        (disk / "ballast").unlink()
        files = [p for pattern in snapshots.SNAPSHOT_GLOBS for p in exp_dir.glob(pattern)]
        cut_short = not files or not all(snapshots._readable(p) for p in files)
        before = {t.name: _rows(t) for t in _trials(exp_dir)}
        result = _resume_and_check(_search(storage, "full"), exp_dir, before)
        restored = "restored the last whole one" in result["out"]
        print(f"snapshot cut short by the full disk: {cut_short}; restored from last_snapshot/: {restored}")
        assert restored == cut_short, result["out"][-3000:]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# Loaded by every Python process of the search (the driver, Ray's workers) through PYTHONPATH: the
# atomic rename that completes a checkpoint's training-state file fails with ENOSPC in one trial.
# Ray moves each trial's worker into working_dirs/<trial folder>; the first trial to write a
# checkpoint claims the fault (its folder name in the claim file, created exclusively), and every
# later write of that trial, its retry's too, fails. Real processes and a real OSError; nothing of
# the project is replaced.
_WRITE_ERROR = f"""
import errno, os

_claim = os.environ.get("NCSN_TEST_WRITE_ERROR_CLAIM")


def _is_target(trial):
    try:
        fd = os.open(_claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        with open(_claim) as f:
            return f.read() == trial
    with os.fdopen(fd, "w") as f:
        f.write(trial)
    return True


if _claim:
    _replace = os.replace

    def _replace_or_fail(src, dst, *args, **kwargs):
        trial = os.path.basename(os.getcwd())
        if os.path.basename(os.fspath(dst)) == {STATE_FILE!r} and trial.startswith("trial_") and _is_target(trial):
            raise OSError(errno.ENOSPC, "No space left on device (injected by the test)", os.fspath(dst))
        return _replace(src, dst, *args, **kwargs)

    os.replace = _replace_or_fail
"""


def test_a_failing_checkpoint_write_ends_that_trial_with_its_reason_and_resume_completes_it(tmp_path, leftovers):
    """Every checkpoint write of one trial fails (ENOSPC, injected): that trial alone ends
    errored, after its retry, with the error on record (error.txt, the closing summary); the other
    trials finish and the study holds them, none RUNNING; --resume without the fault runs the
    errored trial again and completes the search: every trial COMPLETE in the study once."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(textwrap.dedent(_WRITE_ERROR))
    storage, exp_dir = tmp_path / "runs", tmp_path / "runs" / "write"
    leftovers.append(exp_dir)
    args = _search(storage, "write", "--num-trials", str(TRIALS), "--no-calibration", "--max-failures", "1")
    path = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, NCSN_TEST_WRITE_ERROR_CLAIM=str(inject / "claim"))
    first = start_search(*args, env=env)
    out, _ = first.communicate(timeout=600)
    trials = _trials(exp_dir)
    assert len(trials) == TRIALS, (first.returncode, out[-4000:])
    broken = [t for t in trials if t.name == (inject / "claim").read_text()]
    assert len(broken) == 1, ((inject / "claim").read_text(), [t.name for t in trials])
    reason = (broken[0] / ERROR_FILE).read_text()
    assert "No space left on device (injected by the test)" in reason, reason[-2000:]
    assert "1 trial(s) errored" in out and "(injected by the test)" in out, out[-3000:]
    assert first.returncode == 0, out[-3000:]  # an errored trial ended; the search itself did not fail
    for trial in trials:
        if trial is not broken[0]:
            assert _finished(_rows(trial)) and not (trial / ERROR_FILE).exists(), trial.name
    study_name = json.loads((exp_dir / SEARCH_FILE).read_text())["study_name"]
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{exp_dir / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == TRIALS - 1, states
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and optuna.trial.TrialState.RUNNING not in states
    before = {t.name: _rows(t) for t in trials}
    result = _resume_and_check(_search(storage, "write"), exp_dir, before)
    assert _finished(_rows(broken[0]))
    assert "trial(s) errored" not in result["out"], result["out"][-2000:]
