"""What --resume reconciles after a killed driver (search/durability/), on a folder holding
a snapshot written with Ray's own Trial state, a real Optuna SQLite study and real processes."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import sqlite_locked_by_another_process
from optuna.trial import TrialState
from ray.tune.experiment.trial import Trial

from search.durability import driver, reconcile, snapshots
from trainables.contract.layout import DRIVER_FILE, ORPHANED_DIR, SEARCH_FILE, STUDY_FILE, trial_dirname

optuna.logging.set_verbosity(optuna.logging.WARNING)
A, B, C, W = ({"sigma_begin": v, "step_lr": 1e-5} for v in (1.0, 2.0, 3.0, 4.0))


def _snapshot(exp_dir, trials: dict[str, tuple[str, dict]]) -> None:
    data = []
    for trial_id, (status, config) in trials.items():
        trial = Trial("ncsn_trainable", config=config, trial_id=trial_id, stub=True)
        trial.status = status
        data.append(list(trial.get_json_state()))
    (exp_dir / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": data}))


DIST = {name: optuna.distributions.FloatDistribution(1e-6, 20.0, log=True) for name in A}


def _running(study: optuna.Study, point: dict) -> None:
    """A RUNNING trial holding ``point``, as a proposal of the sampler leaves it."""
    trial = study.ask()
    for name, value in point.items():
        study._storage.set_trial_param(trial._trial_id, name, DIST[name].to_internal_repr(value), DIST[name])


def _study(exp_dir) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{exp_dir / STUDY_FILE}")
    study.tell(study.ask(DIST), 0.5)
    _running(study, B)  # Tune resumes it
    _running(study, C)  # started after the snapshot: lost
    study.enqueue_trial(W)  # a warm start, asked after the snapshot and lost
    warm = study.ask()
    for name in W:
        warm.suggest_float(name, 1e-6, 20.0, log=True)
    return study


def test_reconcile_moves_unknown_trials_aside_and_fails_their_optuna_trials(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    (exp_dir / SEARCH_FILE).write_text(json.dumps({"study_name": "s"}))
    study = _study(exp_dir)
    first = study.trials[0].params
    _snapshot(exp_dir, {"a": ("TERMINATED", first), "b": ("RUNNING", B)})
    for trial_id in ("a", "b", "c", "w"):
        (exp_dir / trial_dirname(trial_id)).mkdir()
        (exp_dir / trial_dirname(trial_id) / "result.json").write_text("{}\n")
    said = []
    done = reconcile.reconcile(exp_dir, {"study_name": "s"}, said.append)
    assert sorted(done["moved"]) == [trial_dirname("c"), trial_dirname("w")]
    assert sorted(done["moves"]) == [(trial_dirname(t), f"{ORPHANED_DIR}/{trial_dirname(t)}") for t in ("c", "w")]
    assert sorted(p.name for p in (exp_dir / ORPHANED_DIR).iterdir()) == [trial_dirname("c"), trial_dirname("w")]
    assert sorted(p.name for p in exp_dir.glob("trial_*")) == [trial_dirname("a"), trial_dirname("b")]
    after = optuna.load_study(study_name="s", storage=f"sqlite:///{exp_dir / STUDY_FILE}").trials
    assert [t.state for t in after[:4]] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL, TrialState.FAIL]
    assert done["failed"] == [2, 3] and all("orphaned" in t.user_attrs for t in after[2:4])
    assert len(after) == 5 and after[4].state == TrialState.WAITING  # the warm start, queued again
    assert after[4].system_attrs["fixed_params"] == W
    assert "2 trial folder(s)" in said[0] and "2 Optuna trial(s)" in said[0]
    again = reconcile.reconcile(exp_dir, {"study_name": "s"}, said.append)  # a second resume: nothing left
    assert again == {"moved": [], "moves": [], "failed": [], "ended": []}


def test_a_trial_that_ended_after_the_snapshot_is_kept_as_ended_and_told_once(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    study = _study(exp_dir)
    _snapshot(exp_dir, {"a": ("TERMINATED", study.trials[0].params), "b": ("RUNNING", B)})
    for trial_id, row in (("a", {"kid": 0.5, "done": True}), ("b", {"kid": 0.3, "done": True})):
        (exp_dir / trial_dirname(trial_id)).mkdir()
        (exp_dir / trial_dirname(trial_id) / "result.json").write_text(json.dumps(row) + "\n")
    record = {"study_name": "s", "spec": {"metric": "kid"}}
    assert reconcile.reconcile(exp_dir, record, lambda _: None)["ended"] == ["b"]
    assert snapshots.snapshot_trials(exp_dir)["b"]["status"] == "TERMINATED"  # Tune will not run it again
    after = optuna.load_study(study_name="s", storage=f"sqlite:///{exp_dir / STUDY_FILE}").trials
    assert after[1].state == TrialState.COMPLETE and after[1].value == 0.3
    assert reconcile.reconcile(exp_dir, record, lambda _: None)["ended"] == []


def test_a_snapshot_without_trials_is_a_search_that_never_started(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    assert not driver.never_started(exp_dir)  # no driver.json: not a folder a driver started
    (exp_dir / DRIVER_FILE).write_text(json.dumps({"driver": {"pid": 1}}))
    assert driver.never_started(exp_dir)
    _snapshot(exp_dir, {})
    assert driver.never_started(exp_dir)
    _snapshot(exp_dir, {"a": ("RUNNING", A)})
    assert not driver.never_started(exp_dir)


def test_restart_folder_clears_trials_and_fails_every_running_trial(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    _study(exp_dir)
    (exp_dir / SEARCH_FILE).write_text("{}")
    (exp_dir / trial_dirname("x")).mkdir()
    moves = reconcile.restart_folder(exp_dir, lambda _: None)
    assert moves == [(name, f"{ORPHANED_DIR}/{name}") for name in (trial_dirname("x"), SEARCH_FILE)]
    assert not list(exp_dir.glob("trial_*")) and not (exp_dir / SEARCH_FILE).exists()
    assert sorted(p.name for p in (exp_dir / ORPHANED_DIR).iterdir()) == [SEARCH_FILE, trial_dirname("x")]
    states = [t.state for t in optuna.load_study(study_name="s", storage=f"sqlite:///{exp_dir / STUDY_FILE}").trials]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 3


def _record(exp_dir, driver: dict, cluster: list[dict]) -> None:
    import socket

    record = {"driver": {**driver, "host": socket.gethostname()}, "cluster": cluster}
    (exp_dir / DRIVER_FILE).write_text(json.dumps(record))


def test_orphaned_cluster_processes_and_their_children_are_stopped_by_pid(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    sleeper = "import time; time.sleep(60)"
    code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while not driver._children(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = driver._children(parent.pid)
        wrong = {"pid": bystander.pid, "start_time": driver._start_time(bystander.pid) + 1}  # a reused PID
        _record(exp_dir, {"pid": 999999999, "start_time": 1}, [driver._process(parent.pid), wrong])
        assert driver.stop_orphaned_cluster(exp_dir, lambda _: None) == 2
        assert parent.wait(timeout=10) == -signal.SIGKILL
        assert driver._start_time(child) is None
        assert bystander.poll() is None  # another process under a recorded PID is left alone
    finally:
        for proc in (parent, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_folder_whose_driver_is_alive_is_refused(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    _record(exp_dir, driver._process(os.getpid()), [])
    with pytest.raises(ValueError, match=f"still running in this folder \\(pid {os.getpid()} on this machine\\)"):
        driver.check_not_running(exp_dir)
    _record(exp_dir, {"pid": os.getpid(), "start_time": driver._start_time(os.getpid()) + 1}, [])
    driver.check_not_running(exp_dir)  # the PID was reused: that driver is gone


class _Result:  # the attributes of a ray.tune.Result that tell_resumed reads
    def __init__(self, config: dict, metrics: dict, error=None):
        self.config, self.metrics, self.error = config, metrics, error


def test_a_trial_that_errored_and_finished_on_resume_is_told_once(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{exp_dir / STUDY_FILE}")
    study.tell(study.ask(DIST), 0.5)
    errored = study.ask(DIST)
    study.tell(errored, state=TrialState.FAIL)  # what Ray's searcher tells of an errored trial
    point = study.trials[1].params
    lost = study.ask(DIST)  # finished, but the disk was full when Ray told the study
    unreported = study.ask(DIST)  # no result ever reached the study
    results = [
        _Result({**study.trials[0].params, "ngf": 8}, {"kid": 0.5}),  # told already
        _Result({**point, "ngf": 8}, {"kid": 0.25}),  # errored, then finished on the resume
        _Result({**study.trials[2].params, "ngf": 8}, {"kid": 0.75}),
        _Result({**study.trials[3].params, "ngf": 8}, {}, error=RuntimeError("x")),
    ]
    said = []
    assert reconcile.tell_resumed(exp_dir, {"study_name": "s"}, results, "kid", said.append) == [1, lost.number]
    after = optuna.load_study(study_name="s", storage=f"sqlite:///{exp_dir / STUDY_FILE}").trials
    states = [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert [t.state for t in after] == states
    assert after[2].value == 0.75 and after[unreported.number].user_attrs["orphaned"]
    assert after[4].params == point and after[4].value == 0.25 and after[4].user_attrs == {"finished_on_resume_of": 1}
    assert reconcile.tell_resumed(exp_dir, {"study_name": "s"}, results, "kid", said.append) == []  # once


def _other_machine(exp_dir, age_s: float, **extra) -> None:
    """driver.json of a driver on another machine whose last heartbeat is ``age_s`` old."""
    record = {"driver": {"pid": 4242, "start_time": 1, "host": "gpu-node-7"}, "heartbeat": time.time() - age_s}
    (exp_dir / DRIVER_FILE).write_text(json.dumps({**record, **extra}))


def test_a_driver_on_another_machine_blocks_while_its_heartbeat_is_fresh(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    _other_machine(exp_dir, age_s=2)
    with pytest.raises(
        ValueError, match=r"still running in this folder \(pid 4242 on gpu-node-7, its last heartbeat 2 s"
    ):
        driver.check_not_running(exp_dir)
    _other_machine(exp_dir, age_s=driver.STALE_AFTER_S + 1)
    driver.check_not_running(exp_dir)  # a dead driver's stale record never blocks
    _other_machine(exp_dir, age_s=1, ended=time.time())
    driver.check_not_running(exp_dir)  # that driver ended
    _other_machine(exp_dir, age_s=-10 * driver.STALE_AFTER_S)
    driver.check_not_running(exp_dir)  # a heartbeat from far in the future proves nothing


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"a string"', '{"driver": 3}', "\x00\xff" * 9])
def test_a_damaged_driver_record_blocks_nothing_and_reads_as_none(tmp_path, text):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    (exp_dir / DRIVER_FILE).write_text(text, errors="surrogateescape")
    driver.check_not_running(exp_dir)
    assert driver.never_started(exp_dir) is (driver.read_driver(exp_dir) is not None)


def test_the_heartbeat_ticks_while_the_block_runs_and_marks_the_end(tmp_path, monkeypatch):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    _record(exp_dir, driver._process(os.getpid()), [{"pid": 1, "start_time": 2}])
    monkeypatch.setattr(driver, "HEARTBEAT_S", 0.05)
    with driver.heartbeat(exp_dir):
        first = driver.read_driver(exp_dir)["heartbeat"]
        assert driver.read_driver(exp_dir)["ended"] is None
        with pytest.raises(ValueError, match="still running"):  # this process is the live driver
            driver.check_not_running(exp_dir)
        time.sleep(0.5)
        assert driver.read_driver(exp_dir)["heartbeat"] > first
    record = driver.read_driver(exp_dir)
    assert record["ended"] >= record["heartbeat"] - 1e-3 and record["cluster"] == [{"pid": 1, "start_time": 2}]
    driver.check_not_running(exp_dir)  # ended: the next driver may start


def test_the_heartbeat_reaches_the_storage_uri_and_a_remote_driver_blocks(s3_bucket, tmp_path, monkeypatch):
    uri = f"s3://{s3_bucket.name}/runs"
    exp_dir = tmp_path / "local-copy" / "sigmas"
    exp_dir.mkdir(parents=True)
    _record(exp_dir, driver._process(os.getpid()), [])
    monkeypatch.setattr(driver, "HEARTBEAT_S", 0.05)
    with driver.heartbeat(exp_dir, uri):
        time.sleep(0.3)
        there = json.loads(s3_bucket.read("runs/sigmas/driver.json"))
        assert there["ended"] is None and time.time() - there["heartbeat"] < 5
        elsewhere = tmp_path / "another-machine" / "sigmas"  # an empty local copy: only the bucket knows
        with pytest.raises(ValueError, match=f"runs/sigmas: a search is still running .*pid {os.getpid()}"):
            driver.check_not_running(elsewhere, uri)
    assert json.loads(s3_bucket.read("runs/sigmas/driver.json"))["ended"] is not None
    driver.check_not_running(tmp_path / "another-machine" / "sigmas", uri)


def _study_with_trials(exp_dir, n: int) -> list[float]:
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{exp_dir / STUDY_FILE}")
    for i in range(n):
        study.tell(study.ask(DIST), float(i))
    return [t.value for t in study.get_trials()]


def _values(path) -> list[float]:
    return [t.value for t in optuna.load_study(study_name="s", storage=f"sqlite:///{path}").get_trials()]


def test_the_study_is_kept_whole_beside_the_snapshot_only_when_it_changed(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    values = _study_with_trials(exp_dir, 3)
    assert snapshots.keep_study(exp_dir) is True
    assert snapshots.keep_study(exp_dir) is False  # unchanged since the copy
    kept = exp_dir / "last_snapshot" / STUDY_FILE
    assert _values(kept) == values and snapshots.study_problem(kept, "s") is None


@pytest.mark.parametrize("damage", ["junk", "cut", "missing", "other-study"])
def test_a_damaged_or_missing_study_is_put_back_from_its_last_whole_copy(tmp_path, damage):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    values = _study_with_trials(exp_dir, 3)
    snapshots.keep_study(exp_dir)
    path = exp_dir / STUDY_FILE
    data = path.read_bytes()
    if damage == "junk":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "cut":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "missing":
        path.unlink()
    else:
        path.unlink()
        optuna.create_study(study_name="another", storage=f"sqlite:///{path}")
    said = []
    snapshots.check_study(exp_dir, {"study_name": "s"}, said.append)
    assert _values(path) == values
    assert len(said) == 1 and "put back its last whole copy from last_snapshot/" in said[0]
    assert (exp_dir / f"{STUDY_FILE}.damaged").exists() is (damage != "missing")
    snapshots.check_study(exp_dir, {"study_name": "s"}, said.append)  # whole now: nothing to say
    assert len(said) == 1


def test_a_damaged_study_without_a_whole_copy_is_refused_in_one_line_and_left_as_it_is(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    _study_with_trials(exp_dir, 2)
    path = exp_dir / STUDY_FILE
    cut = path.read_bytes()[:3000]
    path.write_bytes(cut)
    with pytest.raises(
        ValueError,
        match=r"^--resume: .*optuna.db is (damaged|no readable SQLite database).*, and "
        r"last_snapshot/ holds no whole copy of it; nothing was changed",
    ) as err:
        snapshots.check_study(exp_dir, {"study_name": "s"}, print)
    assert "\n" not in str(err.value) and path.read_bytes() == cut and sorted(os.listdir(exp_dir)) == [STUDY_FILE]


def test_a_study_another_process_holds_locked_is_refused_naming_it(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    _study_with_trials(exp_dir, 2)
    snapshots.keep_study(exp_dir)
    path = exp_dir / STUDY_FILE
    before = path.read_bytes()
    with sqlite_locked_by_another_process(path) as pid:
        with pytest.raises(ValueError, match=f"is locked by another process \\(pid {pid}\\); let it finish"):
            snapshots.check_study(exp_dir, {"study_name": "s"}, print)
    assert path.read_bytes() == before and not (exp_dir / f"{STUDY_FILE}.damaged").exists()


def test_a_result_file_cut_mid_line_keeps_its_whole_rows_and_sets_the_part_aside(tmp_path):
    exp_dir = tmp_path / "exp"
    trial = exp_dir / trial_dirname("abc12_00000")
    trial.mkdir(parents=True)
    rows = [json.dumps({"iterations": i, "kid": 0.1 * i}) for i in (1, 2, 3)]
    (trial / "result.json").write_text("\n".join(rows[:2]) + "\n" + rows[2][:17])
    (trial / "progress.csv").write_text("iterations,kid\n1,0.1\n2,0.2\n")  # whole: left alone
    said = []
    assert reconcile.trim_cut_rows(exp_dir, said.append) == [f"{trial.name}/result.json"]
    assert (trial / "result.json").read_text() == "\n".join(rows[:2]) + "\n"
    assert (trial / "result.json.cut").read_text() == rows[2][:17]
    assert (trial / "progress.csv").read_text() == "iterations,kid\n1,0.1\n2,0.2\n"
    assert len(said) == 1 and "1 result file(s) ended in a line cut short" in said[0]
    assert reconcile.trim_cut_rows(exp_dir, said.append) == [] and len(said) == 1


@pytest.mark.parametrize("damage", ["{not json", "[]", "", None])
def test_a_damaged_search_record_is_read_from_its_copy_and_put_back_on_resume(tmp_path, damage):
    from search.folder import write_record
    from search_spaces.spec import load_spec
    from trainables.contract.layout import read_search_record

    exp_dir = tmp_path / "exp"
    record = {"kind": "joint", "study_name": "s-1234", "spec": {"name": "smoke"}}
    write_record(exp_dir, load_spec("smoke.yaml"), record)
    path = exp_dir / SEARCH_FILE
    if damage is None:
        path.unlink()
    else:
        path.write_text(damage)
    assert read_search_record(exp_dir) == record  # every reader: the copy written with it
    said = []
    assert snapshots.restore_search_record(exp_dir, said.append) is True
    assert json.loads(path.read_text()) == record and len(said) == 1
    assert (exp_dir / f"{SEARCH_FILE}.damaged").exists() is (damage is not None)
    assert snapshots.restore_search_record(exp_dir, said.append) is False


def test_the_snapshot_period_grows_with_the_trials_so_its_cost_per_second_stays_flat():
    assert [snapshots.snapshot_period(n) for n in (1, 30, 31, 60, 300, 301)] == [1, 1, 2, 2, 10, 11]


def test_the_last_whole_snapshot_is_copied_only_when_it_changed_and_only_whole(tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    state = exp_dir / "experiment_state-2026-01-01_00-00-00.json"
    state.write_text(json.dumps({"trial_data": [], "n": 1}))
    kept = exp_dir / "last_snapshot" / state.name
    assert snapshots.keep_readable_snapshot(exp_dir) is True and kept.read_text() == state.read_text()
    assert snapshots.keep_readable_snapshot(exp_dir) is False  # unchanged: no copy, no parse
    state.write_text(json.dumps({"trial_data": [], "n": 2}))
    os.utime(state, ns=(time.time_ns() + 10**9,) * 2)  # a later write, whatever the clock's grain
    assert snapshots.keep_readable_snapshot(exp_dir) is True and json.loads(kept.read_text())["n"] == 2
    state.write_text('{"trial_data": [')  # cut short: the whole copy stays
    os.utime(state, ns=(time.time_ns() + 2 * 10**9,) * 2)
    assert snapshots.keep_readable_snapshot(exp_dir) is False and json.loads(kept.read_text())["n"] == 2
