"""Snapshots a resume can trust: Ray's experiment snapshot kept fresh and its last whole copy,
the Optuna study's and search.json's copies beside it in ``last_snapshot/``, and a full disk told
apart from other failures. See :mod:`search.durability`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from trainables.contract.layout import (
    EXPERIMENT_STATE_GLOB,
    LAST_SNAPSHOT_DIR,
    SEARCH_COPY,
    SEARCH_FILE,
    STUDY_FILE,
    read_search_record,
    search_record_damaged,
)

Say = Callable[[str], None]


TRIALS_PER_SECOND = 30  # Ray's snapshot every second up to this many trials (snapshot_period)


SNAPSHOT_GLOBS = (EXPERIMENT_STATE_GLOB, "search_gen_state-*.json", "searcher-state-*.pkl")
KEEP_EVERY_S = 2.0  # how often a readable snapshot is copied to last_snapshot/


def _readable(path: Path) -> bool:
    """A whole snapshot file: the experiment state JSON that parses; the searcher's states,
    pickles (search_gen_state-*.json is one too), that end in the STOP opcode."""
    try:
        data = path.read_bytes()
        if path.name.startswith(EXPERIMENT_STATE_GLOB.split("*")[0]):
            json.loads(data)
            return True
        return data.endswith(b".")
    except (OSError, ValueError):
        return False


def keep_study(exp_dir: Path) -> bool:
    """Copy the Optuna study to ``last_snapshot/optuna.db`` when it changed since the last copy,
    with SQLite's online backup (a consistent copy while the driver writes to it), landing
    atomically; the copy a ``--resume`` puts back when the study is damaged or gone
    (:func:`check_study`). True if copied."""
    source, keep = exp_dir / STUDY_FILE, exp_dir / LAST_SNAPSHOT_DIR / STUDY_FILE
    try:
        if keep.exists() and keep.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            return False
        keep.parent.mkdir(exist_ok=True)
        staged = keep.with_name(f".{STUDY_FILE}.staged")
        staged.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=5)) as live:
            with contextlib.closing(sqlite3.connect(staged)) as copy:
                live.backup(copy)
        os.replace(staged, keep)
    except (OSError, sqlite3.Error):
        return False
    return True


def study_problem(path: Path, study_name: str | None) -> str | None:
    """What is wrong with the Optuna study at ``path`` for a resume, in a few words, or None: it
    is missing, locked by another process (named when this machine can see it), no SQLite
    database, damaged (SQLite's quick_check), or holds no study ``study_name``. Reads only."""
    if not path.is_file():
        return "is missing"
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=2, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock Optuna's storage needs, released at once
            db.execute("ROLLBACK")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                return f"is damaged (SQLite: {check[0] if check else 'no answer'})"
            names = {row[0] for row in db.execute("SELECT study_name FROM studies")}
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            holders = [pid for pid in _holders(path) if pid != os.getpid()]
            return "is locked by another process" + (f" (pid {', '.join(map(str, holders))})" if holders else "")
        return f"cannot be read ({err})"
    except sqlite3.DatabaseError as err:
        return f"is no readable SQLite database ({err})"
    if study_name is not None and study_name not in names:
        return f"holds no study named {study_name}"
    return None


def _holders(path: Path) -> list[int]:
    """PIDs of this machine's processes that have ``path`` open (those /proc lets us see)."""
    target, found = str(path.resolve()), []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) == target:
                found.append(int(fd.parts[2]))
    return sorted(set(found))


def check_study(exp_dir: Path, record: dict, say: Say) -> None:
    """Before a resume starts a cluster: the study must be whole. A damaged or missing one is put
    back from ``last_snapshot/optuna.db`` (:func:`keep_study`; the damaged file is kept beside it
    as ``optuna.db.damaged``); the resume then reconciles it like any study that lags Ray's
    snapshot. Where that cannot be done (no whole copy; a lock another process holds),
    ``ValueError`` with one line, and nothing is changed."""
    path = exp_dir / STUDY_FILE
    problem = study_problem(path, record.get("study_name"))
    if problem is None:
        return
    if "locked" in problem:
        raise ValueError(f"--resume: {path} {problem}; let it finish or stop it, then run the same command again")
    backup = exp_dir / LAST_SNAPSHOT_DIR / STUDY_FILE
    if study_problem(backup, record.get("study_name")) is not None:
        raise ValueError(
            f"--resume: {path} {problem}, and {LAST_SNAPSHOT_DIR}/ holds no whole copy of it; nothing was "
            f"changed: put back a copy of the study, or start a new search with --name"
        )
    if path.exists():
        os.replace(path, path.with_name(f"{STUDY_FILE}.damaged"))
    shutil.copy2(backup, path)
    say(
        f"{path} {problem}: put back its last whole copy from {LAST_SNAPSHOT_DIR}/"
        + (f" (the damaged file is kept as {STUDY_FILE}.damaged)" if "missing" not in problem else "")
    )


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def keep_readable_snapshot(exp_dir: Path) -> bool:
    """Copy Ray's current snapshot files to ``last_snapshot/`` when every one is whole and one
    changed since the last copy (a copy keeps its file's size and time); each copy lands
    atomically, so a write that fails (a full disk) leaves the previous copy. True if copied. A
    file is parsed once: its copy is whole when it has the source's size."""
    files = [p for pattern in SNAPSHOT_GLOBS for p in exp_dir.glob(pattern)]
    keep = exp_dir / LAST_SNAPSHOT_DIR
    if not files or all(_stamp(p) == _stamp(keep / p.name) for p in files):
        return False
    if not all(_readable(p) for p in files):
        return False
    try:
        keep.mkdir(exist_ok=True)
        staged = keep / ".staged"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        for path in files:
            shutil.copy2(path, staged / path.name)
            if (staged / path.name).stat().st_size != path.stat().st_size:
                return False
        for path in files:
            os.replace(staged / path.name, keep / path.name)
        shutil.rmtree(staged, ignore_errors=True)
    except OSError:
        return False
    return True


def restore_readable_snapshot(exp_dir: Path, say: Say) -> bool:
    """Where the newest of Ray's snapshot files is not whole (the disk filled up while Ray wrote
    it), put the last whole copy back; True if it did."""
    states = sorted(exp_dir.glob(EXPERIMENT_STATE_GLOB), key=lambda p: p.name)
    files = [p for pattern in SNAPSHOT_GLOBS for p in exp_dir.glob(pattern)]
    if states and all(_readable(p) for p in files):
        return False
    kept = [p for p in (exp_dir / LAST_SNAPSHOT_DIR).glob("*") if p.is_file() and p.name != STUDY_FILE and _readable(p)]
    if not kept:
        return False
    for path in files:
        if not _readable(path):
            path.unlink()
    for path in kept:
        shutil.copy2(path, exp_dir / path.name)
    say(f"Ray's last snapshot was cut short (a full disk?): restored the last whole one from {LAST_SNAPSHOT_DIR}/")
    return True


def restore_search_record(exp_dir: Path, say: Say) -> bool:
    """Where search.json is damaged or gone and its copy (written with it) reads, put the copy
    back, the damaged file kept as ``search.json.damaged``; True if it did."""
    copy = exp_dir / SEARCH_COPY
    if not search_record_damaged(exp_dir) or not read_search_record(exp_dir):
        return False
    path = exp_dir / SEARCH_FILE
    if path.exists():
        os.replace(path, path.with_name(f"{SEARCH_FILE}.damaged"))
    shutil.copy2(copy, path)
    say(f"{path} was damaged or missing: put back its copy from {LAST_SNAPSHOT_DIR}/")
    return True


def snapshot_period(num_trials: int) -> int:
    """Seconds between Ray's snapshots of a search of ``num_trials`` trials: 1 s up to
    :data:`TRIALS_PER_SECOND` trials, one more second per as many more. A snapshot (and Ray's copy
    of its staging folder after it) costs time in proportion to the trials it holds; a period in
    proportion too keeps the driver's cost per second flat, so the whole search's cost grows
    linearly, not with the square of its trials (platform/scaling_benchmark.py). A resume
    reconciles whatever the snapshot missed (:mod:`search.durability.reconcile`)."""
    return max(1, math.ceil(int(num_trials) / TRIALS_PER_SECOND))


@contextlib.contextmanager
def frequent_snapshots(exp_dir: Path, num_trials: int = 1) -> Iterator[None]:
    """While the block runs: Ray's experiment snapshot at most :func:`snapshot_period` old (a
    user's own TUNE_GLOBAL_CHECKPOINT_S wins), and a copy of its last whole version and of the
    Optuna study kept in ``last_snapshot/`` twice as often as that, and at least every
    :data:`KEEP_EVERY_S` (:func:`keep_readable_snapshot`, :func:`keep_study`)."""

    period = snapshot_period(num_trials)
    before = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(period))

    def keep() -> None:
        keep_readable_snapshot(exp_dir)
        keep_study(exp_dir)

    try:
        with periodically(keep, max(KEEP_EVERY_S, 2.0 * period), "keep-readable-snapshot"):
            yield
    finally:
        if before is None:
            os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S", None)


@contextlib.contextmanager
def periodically(work: Callable[[], None], every_s: float, name: str) -> Iterator[None]:
    """While the block runs, ``work()`` every ``every_s`` seconds on a thread of its own, and once
    more when the block ends (the last word is the block's end state)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            work()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        work()


# ---------------------------------------------------------------------------------------------
# A full disk


class StorageFull(RuntimeError):
    """The experiment's storage (or the driver's disk) ran out of space during the search."""


def storage_full(err: BaseException) -> str | None:
    """What says the disk is full in ``err`` or its causes (an OSError ENOSPC anywhere, SQLite's
    "database or disk is full" behind Optuna's storage error), else None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{os.strerror(err.errno)} ({getattr(err, 'filename', None) or 'a write'})"
        if "database or disk is full" in str(err) or "No space left on device" in str(err):
            return "no space left on device (the Optuna study or a trial's files)"
        err = err.__cause__ or err.__context__
    return None


LOW_SPACE_BYTES = 1 << 20  # less than this free where the experiment lives: the disk is full


def low_space(exp_dir: Path) -> str | None:
    """Where an error names no full disk but the experiment's filesystem has (almost) no space
    left, the disk is why: Ray reads back files it could not finish writing (a cut-short
    error pickle raises UnpicklingError). None while there is room."""
    try:
        free = shutil.disk_usage(exp_dir).free
    except OSError:
        return None
    return f"no space left on device ({free // 1024} KB free)" if free < LOW_SPACE_BYTES else None


# ---------------------------------------------------------------------------------------------
# Reconciliation before Tuner.restore


def snapshot_trials(exp_dir: Path) -> dict[str, dict]:
    """Trial id -> {"status", "config"} in Ray's newest experiment snapshot of ``exp_dir``."""
    states = sorted((p for p in exp_dir.glob(EXPERIMENT_STATE_GLOB) if _readable(p)), key=lambda p: p.name)
    if not states:
        return {}
    trials = {}
    for trial_json, _ in json.loads(states[-1].read_text()).get("trial_data", []):
        state = json.loads(trial_json)
        trials[str(state["trial_id"])] = {"status": state.get("status"), "config": state.get("config") or {}}
    return trials
