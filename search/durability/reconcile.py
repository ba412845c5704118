"""Reconciliation before ``Tuner.restore``: the folder and the Optuna study made to agree with
Ray's last snapshot, and what the resumed search tells the study afterwards. See
:mod:`search.durability`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.durability.snapshots import _readable, snapshot_trials, study_problem
from trainables.contract.layout import (
    EXPERIMENT_STATE_GLOB,
    ORPHANED_DIR,
    RESULT_FILE,
    SEARCH_COPY,
    SEARCH_FILE,
    STUDY_FILE,
    TRIAL_PREFIX,
    trial_dirname,
)

Say = Callable[[str], None]


def _move_aside(exp_dir: Path, folder: Path) -> Path:
    target = exp_dir / ORPHANED_DIR / folder.name
    n = 1
    while target.exists():
        target = exp_dir / ORPHANED_DIR / f"{folder.name}.{n}"
        n += 1
    target.parent.mkdir(exist_ok=True)
    shutil.move(str(folder), str(target))
    return target


def _same_point(params: dict, config: dict) -> bool:
    return all(name in config and config[name] == value for name, value in params.items())


def fail_orphaned_trials(
    study_path: Path, study_name: str | None, keep: list[dict], reason: str, requeue: bool = False
) -> list[int]:
    """Mark FAIL every RUNNING trial of the study whose point is none of ``keep``'s configs (the
    trials Tune will run on); with ``requeue``, enqueue the fixed point of a failed warm start
    again. Return the failed trials' numbers."""
    if not study_path.exists():
        return []
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(f"sqlite:///{study_path}")
    names = [s.study_name for s in storage.get_all_studies()]
    failed = []
    for name in names if study_name is None else [n for n in names if n == study_name]:
        study_id = storage.get_study_id_from_name(name)
        claimed: set[int] = set()
        for trial in storage.get_all_trials(study_id, deepcopy=False):
            if trial.state != TrialState.RUNNING:
                continue
            match = next(
                (i for i, c in enumerate(keep) if i not in claimed and trial.params and _same_point(trial.params, c)),
                None,
            )
            if match is not None:
                claimed.add(match)  # one Optuna trial per Tune trial
                continue
            storage.set_trial_user_attr(trial._trial_id, "orphaned", reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
            fixed = trial.system_attrs.get("fixed_params")
            if requeue and fixed:  # a warm start: it must still run
                optuna.load_study(study_name=name, storage=storage).enqueue_trial(fixed)
    storage.remove_session()
    storage.engine.dispose()
    return failed


ROW_FILES = (RESULT_FILE, "progress.csv")  # Ray appends one line per result to each


def trim_cut_rows(exp_dir: Path, say: Say) -> list[str]:
    """A trial's result.json or progress.csv whose last line was cut mid-write (a kill or a full
    disk: no newline at its end) loses that part line, kept in ``<file>.cut``, so the rows the
    resumed trial appends start on a line of their own; every whole row stays. Return the files
    trimmed, relative to ``exp_dir``."""
    trimmed = []
    for path in sorted(p for name in ROW_FILES for p in exp_dir.glob(f"{TRIAL_PREFIX}*/{name}")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not data or data.endswith(b"\n"):
            continue
        whole = data[: data.rfind(b"\n") + 1]
        path.with_name(f"{path.name}.cut").write_bytes(data[len(whole) :])
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_bytes(whole)
        os.replace(tmp, path)
        trimmed.append(path.relative_to(exp_dir).as_posix())
    if trimmed:
        say(
            f"{len(trimmed)} result file(s) ended in a line cut short ({', '.join(trimmed[:3])}"
            f"{', ...' if len(trimmed) > 3 else ''}): that part line moved to <file>.cut, every whole row kept"
        )
    return trimmed


def reconcile(exp_dir: Path, record: dict, say: Say) -> dict:
    """Make the folder and the Optuna study agree with Ray's snapshot (see the module docstring);
    return what was done: {"moved": [folder names], "moves": [(folder, where it went)], "failed":
    [Optuna trial numbers], "ended": [trial ids kept as ended]}."""
    known = snapshot_trials(exp_dir)
    trim_cut_rows(exp_dir, say)
    on_disk = sorted(p for p in exp_dir.glob(f"{TRIAL_PREFIX}*") if p.is_dir())
    names = {trial_dirname(trial_id) for trial_id in known}
    moves = [(p.name, _move_aside(exp_dir, p).relative_to(exp_dir).as_posix()) for p in on_disk if p.name not in names]
    # every trial of the snapshot keeps its Optuna trial (one that ended, but whose value a full
    # disk kept from the study, is told after the resumed search: tell_resumed)
    configs = [t["config"] for t in known.values()]
    reason = "the driver was killed after Optuna proposed this trial and before Ray's snapshot held it"
    failed = fail_orphaned_trials(exp_dir / STUDY_FILE, record.get("study_name"), configs, reason, requeue=True)
    ended = mark_ended(exp_dir, known, record, say)
    if moves or failed:
        say(
            f"reconciled with Ray's last snapshot: {len(moves)} trial folder(s) it does not know moved to "
            f"{ORPHANED_DIR}/, {len(failed)} Optuna trial(s) left RUNNING marked FAIL"
        )
    return {"moved": [src for src, _ in moves], "moves": moves, "failed": failed, "ended": ended}


def _last_row(trial_dir: Path) -> dict | None:
    try:
        lines = (trial_dir / RESULT_FILE).read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:  # a line cut short
            continue
    return None


def mark_ended(exp_dir: Path, known: dict[str, dict], record: dict, say: Say) -> list[str]:
    """Trials that ended after Ray's snapshot (their result.json's last row is ``done``, the
    snapshot says otherwise) are marked TERMINATED in the snapshot, so Tune does not run them
    again, and a RUNNING Optuna trial of theirs is told that row's value. Return their ids."""
    ended = {}
    for trial_id, trial in known.items():
        row = _last_row(exp_dir / trial_dirname(trial_id))
        if trial["status"] not in ("TERMINATED", "ERROR") and row and row.get("done") is True:
            ended[trial_id] = row
    if not ended:
        return []
    state_file = sorted((p for p in exp_dir.glob(EXPERIMENT_STATE_GLOB) if _readable(p)), key=lambda p: p.name)[-1]
    state = json.loads(state_file.read_text())
    for entry in state.get("trial_data", []):
        trial = json.loads(entry[0])
        if str(trial.get("trial_id")) in ended:
            trial["status"] = "TERMINATED"
            entry[0] = json.dumps(trial, indent=2)
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, state_file)
    metric = (record.get("spec") or {}).get("metric")
    if metric and (exp_dir / STUDY_FILE).exists() and record.get("study_name"):
        import optuna
        from optuna.trial import TrialState

        study = optuna.load_study(study_name=record["study_name"], storage=f"sqlite:///{exp_dir / STUDY_FILE}")
        for trial_id, row in ended.items():
            config, value = known[trial_id]["config"], row.get(metric)
            for ot in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if value is not None and ot.params and _same_point(ot.params, config):
                    study.tell(ot.number, float(value))
                    break
    say(f"{len(ended)} trial(s) that ended after Ray's last snapshot kept as ended (not run again)")
    return sorted(ended)


def restart_folder(exp_dir: Path, say: Say) -> list[tuple[str, str]]:
    """Clear a folder whose driver stopped before Ray's first snapshot, for a fresh start: trial
    folders to ``orphaned/``, its studies' unfinished trials FAIL, search.json aside. Return what
    moved: (from, to), relative to ``exp_dir``."""
    aside = sorted(p for p in exp_dir.glob(f"{TRIAL_PREFIX}*") if p.is_dir())
    aside += [p for p in (exp_dir / SEARCH_FILE, exp_dir / SEARCH_COPY) if p.exists()]
    problem = study_problem(exp_dir / STUDY_FILE, None)
    if problem is not None and "missing" not in problem:  # the new start makes a study of its own
        if "locked" in problem:
            raise ValueError(f"--resume: {exp_dir / STUDY_FILE} {problem}; let it finish or stop it, then run again")
        aside.append(exp_dir / STUDY_FILE)
    elif problem is None:
        fail_orphaned_trials(exp_dir / STUDY_FILE, None, [], "the driver was killed before Ray's first snapshot")
    moves = [(p.name, _move_aside(exp_dir, p).relative_to(exp_dir).as_posix()) for p in aside]
    say(f"{exp_dir}: the driver stopped before its trials were under way; starting the search again")
    return moves


def tell_resumed(exp_dir: Path, record: dict, results: Any, metric: str, say: Say) -> list[int]:
    """After a resumed search, the study learns what Ray's searcher could not tell it. Every
    trial that finished (Ray's ``ResultGrid``: no error, a value of ``metric``) whose Optuna trial
    is still RUNNING (its ``tell`` was lost: a full disk) is told its value; one the study holds
    only as FAIL (it had errored before the resume) becomes one COMPLETE trial with its value.
    A RUNNING trial left after that had no result: FAIL. Return the numbers of the trials told."""
    import optuna
    from optuna.trial import TrialState

    if not (exp_dir / STUDY_FILE).exists() or not record.get("study_name"):
        return []
    study = optuna.load_study(study_name=record["study_name"], storage=f"sqlite:///{exp_dir / STUDY_FILE}")
    trials = study.get_trials(deepcopy=False)
    told = []
    for result in results:
        value = (result.metrics or {}).get(metric)
        if result.error is not None or value is None:
            continue
        matches = [t for t in trials if t.params and _same_point(t.params, result.config or {})]
        if any(t.state == TrialState.COMPLETE for t in matches):
            continue
        running = [t for t in matches if t.state == TrialState.RUNNING]
        if running:
            study.tell(running[0].number, float(value))
            told.append(running[0].number)
            continue
        failed = [t for t in matches if t.state == TrialState.FAIL and "orphaned" not in t.user_attrs]
        if not failed:
            continue
        first = failed[0]
        study.add_trial(
            optuna.trial.create_trial(
                params=first.params,
                distributions=first.distributions,
                value=float(value),
                user_attrs={"finished_on_resume_of": first.number},
            )
        )
        told.append(first.number)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "orphaned", "no result reached the study")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    if told:
        say(f"the study learnt the value of {len(told)} trial(s) whose result Ray's searcher could not tell it")
    return told
