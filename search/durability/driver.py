"""One driver per experiment, and what a killed one leaves: ``<experiment>/driver.json``.

The driver's PID, start time and host, the options and spec it was started with, the PIDs of the
local cluster it started, and a heartbeat rewritten every :data:`HEARTBEAT_S` (and copied to a
storage URI) until ``ended`` is set. See :mod:`search.durability` for how a resume uses them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from search.durability.snapshots import periodically, snapshot_trials
from trainables.contract.layout import (
    DRIVER_FILE,
)

Say = Callable[[str], None]


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

    def beat(**changes: Any) -> None:
        with contextlib.suppress(OSError):  # a full disk or a deleted folder: the search decides
            _update_driver(exp_dir, heartbeat=time.time(), **changes)
            if remote is not None:
                storage.upload(exp_dir, remote, (DRIVER_FILE,))

    beat(ended=None)
    try:
        with periodically(beat, HEARTBEAT_S, "driver-heartbeat"):
            yield
    finally:
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
