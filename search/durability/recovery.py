"""A killed driver loses nothing: what a search keeps itself, and what ``--resume`` reconciles.

Ray keeps a snapshot of the experiment in its folder (``experiment_state-*.json`` and the
searcher's pickled state) and writes it at most every ``TUNE_GLOBAL_CHECKPOINT_S`` seconds (Ray's
own default is at least 10 s; a search here snapshots every :data:`SNAPSHOT_PERIOD_S`). Optuna
writes every proposal and every result to its SQLite study at once. After a SIGKILL of the
driver the two disagree about what happened since the last snapshot. Of the local cluster the
driver started, the GCS, raylet and trial workers end with it (Ray ties their fate to the
driver's), but the agents the raylet started (dashboard, runtime env) live on until they notice.
What Ray's snapshot cannot tell, the runner keeps in ``<experiment>/driver.json``
(:data:`trainables.contract.layout.DRIVER_FILE`):

- the driver's PID, start time and host, and the options and spec it was started with: a folder
  whose driver stopped before Ray's first snapshot (during calibration, say) is started again
  from them;
- a heartbeat, rewritten every :data:`HEARTBEAT_S` while the driver runs (and copied to a storage
  URI), and ``ended`` when it stops: one driver per experiment. A second fresh search or a
  ``--resume`` is refused while the recorded driver lives: on this machine its PID says so, on
  another (a search kept at a storage URI, whose bucket holds the record) a heartbeat under
  :data:`STALE_AFTER_S` old. A dead driver's record never blocks (a PID gone, or reused by another
  process; a heartbeat gone stale). Two drivers started within the same second could both pass the
  check: the record is a file, not a lock;
- the PIDs of the local cluster's processes and of their children at start (the agents):
  ``--resume`` first stops what is left of them and of their children, by PID (checked against
  the recorded start time), so nothing of the killed run still works on the folder.

Before ``Tuner.restore`` (:func:`reconcile`):

- trial folders that Ray's snapshot does not know (trials started after it) move to
  ``orphaned/`` (kept, never counted: Tune runs a replacement for each);
- Optuna trials left RUNNING that no trial of the snapshot will finish are marked FAIL, with the
  reason in their ``orphaned`` user attribute: no trial stays RUNNING. A warm-start point among
  them is enqueued again, so it still runs;
- a snapshot without trials (the driver died before Ray's first trial) restores nothing: the
  search starts again from driver.json (:func:`restart_folder`).

With a storage URI these steps act on the driver's local copy of ``<URI>/<name>/``, which
:mod:`search.durability.mirror` fills from the bucket first and whose changes it writes back before
``Tuner.restore`` reads the bucket.

Proposals are seeded per Optuna trial number (:class:`search.searcher.NumberSeeded`), so a
sampler restored from a lagging snapshot never repeats an earlier trial's proposal. A trial
whose snapshot names a checkpoint deleted since resumes from its newest surviving checkpoint, or
from the start (:func:`trainables.contract.layout.surviving_checkpoint`). A trial that finished after the
snapshot resumes from its last checkpoint and ends at once; Optuna keeps its first value (a
second ``tell`` of a finished trial is refused). A trial that had ended in ERROR (its Optuna
trial FAIL) and finishes on ``--resume`` is never told by Ray's searcher, which counts it as
completed already; after the resumed search :func:`tell_resumed` adds its value to the study as a
COMPLETE trial, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from trainables.contract.layout import (
    DRIVER_FILE,
    EXPERIMENT_STATE_GLOB,
    LAST_SNAPSHOT_DIR,
    ORPHANED_DIR,
    RESULT_FILE,
    SEARCH_COPY,
    SEARCH_FILE,
    STUDY_FILE,
    TRIAL_PREFIX,
    read_search_record,
    search_record_damaged,
    trial_dirname,
)

Say = Callable[[str], None]
SNAPSHOT_PERIOD_S = "1"  # TUNE_GLOBAL_CHECKPOINT_S of a search: Ray's snapshot at most this stale
STOP_WAIT_S = 20.0  # how long --resume waits for an orphaned cluster's processes to go
HEARTBEAT_S = 5.0  # how often a running driver rewrites its driver.json (and copies it to a storage URI)
STALE_AFTER_S = 30.0  # a heartbeat older than this: that driver (on another machine) is gone


# ---------------------------------------------------------------------------------------------
# Processes


def _start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if it is gone. With the
    PID it names one process: a PID reused by another process has another start time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":  # a zombie has ended
        return None
    return int(fields[19])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _process(pid: int) -> dict:
    return {"pid": pid, "start_time": _start_time(pid)}


def _alive(entry: dict) -> bool:
    return entry.get("start_time") is not None and _start_time(int(entry["pid"])) == entry["start_time"]


# ---------------------------------------------------------------------------------------------
# driver.json


def read_driver(exp_dir: Path) -> dict | None:
    """driver.json of ``exp_dir``; None when it is missing or holds no JSON object (a damaged
    record is rewritten by the next driver; nothing else reads it)."""
    try:
        record = json.loads((exp_dir / DRIVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


_RECORD_LOCK = threading.Lock()  # the heartbeat thread and the driver both rewrite driver.json


def _write_driver(exp_dir: Path, record: dict) -> None:
    exp_dir.mkdir(parents=True, exist_ok=True)
    tmp = exp_dir / f"{DRIVER_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, exp_dir / DRIVER_FILE)


def _update_driver(exp_dir: Path, **changes: Any) -> None:
    with _RECORD_LOCK:
        record = read_driver(exp_dir)
        if record is not None:
            _write_driver(exp_dir, {**record, **changes})


def write_driver(exp_dir: Path, spec: Any, options: Any) -> None:
    """Record this driver (before any cluster starts): its PID, host and heartbeat, the options
    and spec it runs."""
    with _RECORD_LOCK:
        _write_driver(
            exp_dir,
            {
                "driver": {**_process(os.getpid()), "host": socket.gethostname(), "argv": sys.argv},
                "heartbeat": time.time(),
                "ended": None,
                "options": dataclasses.asdict(options),
                "spec": spec.to_dict(),
                "source": str(spec.source) if spec.source else None,
                "cluster": [],
            },
        )


def record_cluster(exp_dir: Path, local: bool) -> None:
    """Add the PIDs of the local cluster this driver started (none when it joined one)."""
    record = read_driver(exp_dir)
    if record is None or not local:
        return
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # the node ray.init started here
    pids = []
    for infos in (getattr(node, "all_processes", None) or {}).values():
        pids += [info.process.pid for info in infos if getattr(info, "process", None) is not None]
    pids = sorted(set(pids))
    for pid in list(pids):  # the agents the raylet started
        pids += [child for child in _children(pid) if child not in pids]
    _update_driver(exp_dir, cluster=[_process(pid) for pid in pids])


def running_driver(record: dict | None) -> str | None:
    """Who still works on the folder of this driver.json (None: nobody). On this machine the
    recorded PID decides (checked against its start time: a reused PID is another process); a
    driver on another machine is alive while its heartbeat is under :data:`STALE_AFTER_S` old.
    A driver that ended (``ended`` set) or died holds nothing."""
    if not record or record.get("ended"):
        return None
    driver = record.get("driver") if isinstance(record.get("driver"), dict) else {}
    pid, host = driver.get("pid"), driver.get("host")
    if host == socket.gethostname():
        return f"pid {pid} on this machine" if _alive(driver) else None
    try:
        age = time.time() - float(record.get("heartbeat"))
    except (TypeError, ValueError):
        return None  # a record of a version without heartbeats, or a damaged one
    if abs(age) >= STALE_AFTER_S:  # (abs: a clock far ahead of this one is no proof of life either)
        return None
    return f"pid {pid} on {host}, its last heartbeat {max(age, 0):.0f} s ago"


def remote_driver(storage_path: str | None, exp_dir: Path) -> dict | None:
    """driver.json at ``<URI>/<name>/`` for a search kept at a storage URI (None: none there, no
    URI). A driver on another machine writes it there every :data:`HEARTBEAT_S`."""
    from trainables.contract import storage

    if storage_path is None or not storage.is_uri(storage_path):
        return None
    try:
        fs, path = storage.filesystem(storage.join(storage_path, exp_dir.name, DRIVER_FILE))
        record = json.loads(storage.read_bytes(fs, path))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def check_not_running(exp_dir: Path, storage_path: str | None = None) -> None:
    """Refuse a folder whose recorded driver still works on it, here or (a storage URI) on
    another machine: ``ValueError``, one line naming it. Nothing is written before this check."""
    for where, record in ((exp_dir, read_driver(exp_dir)), ("", remote_driver(storage_path, exp_dir))):
        who = running_driver(record)
        if who is None:
            continue
        place = where or _remote_name(storage_path, exp_dir)
        pid = record["driver"].get("pid")
        stop = f"kill {pid}" if "this machine" in who else "stop it there"
        raise ValueError(
            f"{place}: a search is still running in this folder ({who}); wait for it, or stop it "
            f"({stop}) and pass --resume"
        )


def _remote_name(storage_path: str | None, exp_dir: Path) -> str:
    from trainables.contract import storage

    return storage.join(str(storage_path), exp_dir.name)


@contextlib.contextmanager
def heartbeat(exp_dir: Path, storage_path: str | None = None) -> Iterator[None]:
    """While the block runs, driver.json's ``heartbeat`` is rewritten every :data:`HEARTBEAT_S`
    (and, with a storage URI, copied to ``<URI>/<name>/``), so a driver on another machine sees
    this one is alive; when the block ends, ``ended`` is set and the next driver may start at
    once. A driver that is killed leaves a heartbeat that goes stale after :data:`STALE_AFTER_S`."""
    from trainables.contract import storage

    remote = _remote_name(storage_path, exp_dir) if storage_path and storage.is_uri(storage_path) else None
    stop = threading.Event()

    def beat(**changes: Any) -> None:
        with contextlib.suppress(OSError):  # a full disk or a deleted folder: the search decides
            _update_driver(exp_dir, heartbeat=time.time(), **changes)
            if remote is not None:
                storage.upload(exp_dir, remote, (DRIVER_FILE,))

    def loop() -> None:
        while not stop.wait(HEARTBEAT_S):
            beat()

    beat(ended=None)
    thread = threading.Thread(target=loop, name="driver-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        beat(ended=time.time())


def never_started(exp_dir: Path) -> bool:
    """A folder a driver was started on, but with no snapshot of Ray's holding a trial yet:
    nothing to restore (Ray cannot restore a snapshot without trials)."""
    return read_driver(exp_dir) is not None and not snapshot_trials(exp_dir)


def started_with(exp_dir: Path) -> tuple[dict, str | None, dict]:
    """The spec (as a dict), its source file and the options of the driver that started ``exp_dir``."""
    record = read_driver(exp_dir) or {}
    return record.get("spec") or {}, record.get("source"), record.get("options") or {}


def stop_orphaned_cluster(exp_dir: Path, say: Say) -> int:
    """Stop what is left of the local cluster a killed driver of ``exp_dir`` started, by PID
    (with every child, the trial workers among them); return how many processes were stopped."""
    record = read_driver(exp_dir)
    if not record or record.get("driver", {}).get("host") != socket.gethostname():
        return 0
    alive = [int(e["pid"]) for e in record.get("cluster", []) if _alive(e)]
    if not alive:
        return 0
    doomed = []
    for pid in alive:  # children first listed: a worker is reparented once its raylet is gone
        doomed += [child for child in _children(pid) if child not in doomed]
        doomed.append(pid)
    entries = [_process(pid) for pid in doomed]
    for entry in entries:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(entry["pid"], signal.SIGKILL)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline and any(_alive(e) for e in entries):
        time.sleep(0.1)
    say(f"stopped {len(entries)} process(es) left over from the killed driver's Ray cluster")
    return len(entries)


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


def keep_readable_snapshot(exp_dir: Path) -> bool:
    """Copy Ray's current snapshot files to ``last_snapshot/`` when every one is whole; each copy
    lands atomically, so a write that fails (a full disk) leaves the previous copy. True if copied."""
    files = [p for pattern in SNAPSHOT_GLOBS for p in exp_dir.glob(pattern)]
    if not files or not all(_readable(p) for p in files):
        return False
    keep = exp_dir / LAST_SNAPSHOT_DIR
    try:
        keep.mkdir(exist_ok=True)
        staged = keep / ".staged"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        for path in files:
            shutil.copy2(path, staged / path.name)
        if not all(_readable(staged / p.name) for p in files):
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


@contextlib.contextmanager
def frequent_snapshots(exp_dir: Path) -> Iterator[None]:
    """While the block runs: Ray's experiment snapshot at most :data:`SNAPSHOT_PERIOD_S` old (a
    user's own TUNE_GLOBAL_CHECKPOINT_S wins), and a copy of its last whole version and of the
    Optuna study kept in ``last_snapshot/`` every :data:`KEEP_EVERY_S` (:func:`keep_readable_snapshot`,
    :func:`keep_study`)."""
    import threading

    before = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", SNAPSHOT_PERIOD_S)
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(KEEP_EVERY_S):
            keep_readable_snapshot(exp_dir)
            keep_study(exp_dir)

    thread = threading.Thread(target=keep, name="keep-readable-snapshot", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        keep_readable_snapshot(exp_dir)
        keep_study(exp_dir)
        if before is None:
            os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S", None)


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
