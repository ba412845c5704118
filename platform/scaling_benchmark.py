"""How the search driver's costs grow with the number of trials: a benchmark, not a test.

    python platform/scaling_benchmark.py                                  # 300 trials, marks 100,200,300
    python platform/scaling_benchmark.py --smoke-test                     # 6 trials, marks 2,4,6: a minute or two
    python platform/scaling_benchmark.py --trials 30 --marks 10,20,30 --keep

It runs the real driver in this process (search.runner.run_search, as platform/run_search.py
does with --smoke-test --num-trials N --no-dashboard --no-calibration --no-report --no-confirm;
each trial is a few seconds of the smoke budget) on a local Ray cluster of its own (a fresh
RAY_TMPDIR, RAY_ADDRESS ignored: never a cluster another program started). A monitor thread
samples the driver every 0.5 s and, each time the number of finished trials reaches a mark, records:

- the driver's CPU seconds (every thread of the process: Tune's loop, Ray's core worker, the
  background copies; not the monitor's own) and its memory (RSS, peak), and the CPU and memory of
  the processes it started (GCS, raylet, ...);
- where the driver's CPU goes, timed around Ray's and the runner's functions: the Tune loop
  (TuneController.step), Ray's experiment snapshot within it (save_to_dir: the trial table as
  JSON and the pickled searcher, every second in a search), the copy of the driver's staging folder
  into the experiment folder after each snapshot, the runner's copies of Ray's snapshot and of the
  Optuna study to last_snapshot/ every 2 s, and Optuna's ask and tell;
- the sizes of the experiment folder, of Ray's snapshot and of the staging folder;

and copies the experiment folder, without the checkpoints' training state (the report never reads
it), to <work>/at_<mark>/. After the search: from Ray's last snapshot, the time from each trial's
end (the driver's receipt of its last result) to the next trial's start (Ray marks a trial RUNNING
once its worker is up), per window; the report (platform/report.py) of each copy, timed as a
subprocess; and, on each copy, one call of each copy the driver repeats every second or two, timed
with nothing else running (the driver's own numbers move with whatever else the machine runs;
these do not).

Each row is a window (the trials finished since the previous mark) and gives its costs per
trial, so growth shows: a per-trial cost that rises from window to window grows faster than
linearly, as does a repeated call whose cost rises with the trials. The smoke test's windows of
two trials only check the flow. Prints the tables and writes JSON (--out). The work folder (under
--storage-path, by default the temp folder) is removed at the end unless --keep or the benchmark
failed. Trials of the smoke budget take 6 to 10 s, two at a time on a 2-core machine: 300 of them
20 to 30 minutes; their folder holds about 5 MB per trial (mostly checkpoints), the copies a
tenth of that.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import fnmatch
import functools
import json
import os
import platform
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NAME = "scaling"  # the experiment's name in <work>/runs/
DEFAULT_TRIALS, SMOKE_TRIALS = 300, 6
SAMPLE_EVERY_S = 0.5  # the monitor's period
TIMELINE_EVERY_S = 5.0  # how often a sample goes into the JSON's timeline
PROGRESS_EVERY_S = 60.0  # a progress line between marks
FEW_TRIALS = 10  # windows smaller than this say little about growth
GROWTH_FLAG = 1.25  # a per-trial cost this many times its first window's is named as growing faster than linearly
MB = 1 << 20


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print its usage first)
        self.exit(2, f"scaling_benchmark.py: error: {message}; see --help\n")


def fail(message: str) -> int:
    print(f"scaling_benchmark.py: error: {message}", file=sys.stderr)
    return 2


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, help=f"trials of the search (default {DEFAULT_TRIALS}; {SMOKE_TRIALS} smoke)")
    p.add_argument(
        "--marks",
        help="increasing trial counts to measure at, the last at most --trials "
        "(default: thirds of --trials, e.g. 100,200,300)",
    )
    p.add_argument("--space", default="smoke.yaml", help="the spec, run on the smoke budget (default smoke.yaml)")
    p.add_argument("--out", default="scaling.json", help="the JSON report (default scaling.json)")
    p.add_argument("--storage-path", default=tempfile.gettempdir(), help="where the work folder goes (default: temp)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (the search and its copies at the marks)")
    p.add_argument("--smoke-test", action="store_true", help=f"{SMOKE_TRIALS} trials, marks 2,4,6: a minute or two")
    args = p.parse_args(argv)
    if args.trials is None:
        args.trials = SMOKE_TRIALS if args.smoke_test else DEFAULT_TRIALS
    if args.trials < 1:
        p.error(f"--trials {args.trials}: must be at least 1")
    if args.marks is None:  # thirds: 100,200,300 of the default, 2,4,6 of the smoke test
        args.marks = sorted({max(1, round(args.trials * k / 3)) for k in (1, 2, 3)})
    else:
        try:
            args.marks = [int(m) for m in args.marks.split(",")]
        except ValueError:
            p.error(f"--marks {args.marks!r}: not a comma list of whole numbers; give e.g. 100,200,300")
    if any(m < 1 for m in args.marks):
        p.error(f"--marks {','.join(map(str, args.marks))}: every mark must be at least 1")
    if any(b <= a for a, b in zip(args.marks, args.marks[1:])):
        p.error(f"--marks {','.join(map(str, args.marks))}: must increase, e.g. 100,200,300")
    if args.marks[-1] > args.trials:
        p.error(f"--marks {','.join(map(str, args.marks))}: the last mark is above --trials {args.trials}")
    return args


def check_paths(args: argparse.Namespace) -> None:
    """Refuse an --out or --storage-path that cannot be written (``ValueError``, one line),
    creating nothing."""
    if "://" in args.storage_path:
        raise ValueError(f"--storage-path {args.storage_path!r}: give a local folder (the benchmark copies it)")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {args.out!r}: is a folder; give a file name such as scaling.json")
    if not out.absolute().parent.is_dir():
        raise ValueError(f"--out {args.out!r}: the folder {out.absolute().parent} does not exist")
    from search.options import SearchOptions, check_options

    check_options(SearchOptions(storage_path=args.storage_path, dashboard=False))


# ---------------------------------------------------------------------------------------------
# What is measured in the driver


class Probe:
    """Calls, CPU seconds (of the calling thread) and wall seconds spent in the functions it wraps."""

    def __init__(self, label: str):
        self.label = label
        self.calls, self.cpu_s, self.wall_s = 0, 0.0, 0.0
        self.installed: list[str] = []
        self._lock = threading.Lock()
        self._restore: list = []

    def wrap(self, owner, name: str) -> None:
        """Time every call of ``owner.name`` (a class's method or a module's function) from now on;
        a name the installed version lacks is left out (and not listed in ``installed``)."""
        original = getattr(owner, name, None)
        if original is None:
            return
        had = name in vars(owner)
        probe = self

        @functools.wraps(original)
        def timed(*args, **kwargs):
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                probe.add(time.thread_time() - cpu, time.perf_counter() - wall)

        setattr(owner, name, timed)
        self.installed.append(f"{getattr(owner, '__name__', owner)}.{name}")
        self._restore.append(lambda: setattr(owner, name, original) if had else delattr(owner, name))

    def add(self, cpu_s: float, wall_s: float) -> None:
        with self._lock:
            self.calls += 1
            self.cpu_s += cpu_s
            self.wall_s += wall_s

    def read(self) -> dict:
        with self._lock:
            return {"calls": self.calls, "cpu_s": self.cpu_s, "wall_s": self.wall_s}

    def remove(self) -> None:
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()


# label -> what it times (JSON and the second table)
PROBES = {
    "loop": "Tune's loop on the driver's main thread (TuneController.step; holds snapshot and searcher)",
    "snapshot": "Ray's experiment snapshot (TuneController.save_to_dir: experiment_state JSON, searcher pickle)",
    "sync": "Ray's copy of the driver's staging folder into the experiment folder after each snapshot "
    "(a background thread; pyarrow's copy threads are not in its CPU, so see its wall time)",
    "keep": "the runner's copy of Ray's snapshot to last_snapshot/ (snapshots.keep_readable_snapshot, every 2 s)",
    "study": "the runner's copy of the Optuna study to last_snapshot/ when it changed (snapshots.keep_study, "
    "every 2 s: SQLite's online backup of the whole study)",
    "searcher": "Optuna's ask and tell (ResumableOptunaSearch.suggest, on_trial_complete; SQLite)",
}


def install_probes() -> dict[str, Probe]:
    """The probes of :data:`PROBES`, wrapped around the installed Ray's and the runner's functions."""
    import ray.train._internal.storage as ray_storage
    from ray.tune.execution.tune_controller import TuneController

    from search.durability import snapshots
    from search.searcher import ResumableOptunaSearch

    probes = {label: Probe(label) for label in PROBES}
    probes["loop"].wrap(TuneController, "step")
    probes["snapshot"].wrap(TuneController, "save_to_dir")
    probes["sync"].wrap(ray_storage, "_upload_to_fs_path")
    probes["keep"].wrap(snapshots, "keep_readable_snapshot")
    probes["study"].wrap(snapshots, "keep_study")
    probes["searcher"].wrap(ResumableOptunaSearch, "suggest")
    probes["searcher"].wrap(ResumableOptunaSearch, "on_trial_complete")
    return probes


def memory_mb(pid: int | str = "self") -> tuple[float | None, float | None]:
    """(RSS, peak RSS) in MB of a process, from /proc/<pid>/status."""
    found = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return found.get("VmRSS"), found.get("VmHWM")


def children_usage(pid: int) -> dict[str, dict]:
    """PID -> name, CPU seconds and RSS (MB) of the processes ``pid`` started (the local
    cluster's GCS, raylet and monitors; the trials' workers are the raylet's)."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    usage: dict[str, dict] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        if int(fields[1]) != pid:
            continue
        usage[stat.parent.name] = {
            "name": name,
            "cpu_s": (int(fields[11]) + int(fields[12])) / tick,  # utime + stime, without reaped children
            "rss_mb": int(fields[21]) * page / MB,
        }
    return usage


def folder_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``: the sum of its files' sizes, as ``du --apparent-size``."""
    total = count = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
                count += 1
    return total, count


def _last_row(result_file: Path) -> dict | None:
    try:
        lines = result_file.read_bytes().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    return None


def _copy_file(src: str, dst: str) -> str:
    """One file of a folder Ray and the runner are writing: an SQLite database through SQLite's
    backup (a plain copy can catch it mid-transaction), Ray's snapshot JSON again until the copy
    parses (Ray's copy into the folder is not atomic), a file gone meanwhile skipped."""
    from trainables.contract.layout import EXPERIMENT_STATE_GLOB

    name = os.path.basename(src)
    try:
        if name.endswith(".db"):
            with contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)) as source:
                with contextlib.closing(sqlite3.connect(dst)) as target:
                    source.backup(target)
            return dst
        for _ in range(10):
            shutil.copy2(src, dst)
            if not fnmatch.fnmatch(name, EXPERIMENT_STATE_GLOB):
                break
            try:
                json.loads(Path(dst).read_bytes())
                break
            except ValueError:
                time.sleep(0.2)
    except FileNotFoundError:
        pass
    return dst


def copy_folder(src: Path, dst: Path) -> int:
    """Copy the experiment folder as it is now, without the checkpoints' training state (most of
    its bytes, which the report never reads: a copy mid-search stays small beside the search's
    own I/O); return how many entries vanished mid-copy (checkpoints Ray rotated out,
    last_snapshot/'s staging)."""
    from trainables.contract.layout import STATE_FILE

    try:
        shutil.copytree(
            src, dst, copy_function=_copy_file, ignore=shutil.ignore_patterns(STATE_FILE), dirs_exist_ok=True
        )
    except shutil.Error as err:
        return len(err.args[0]) if err.args and isinstance(err.args[0], list) else 1
    return 0


class Monitor:
    """Samples the driver every :data:`SAMPLE_EVERY_S` from a thread of its own, and records each
    mark as the number of finished trials (trial folders whose result.json's last row is
    ``done``) reaches it. Its own CPU (the copies at the marks included) is kept apart, so the
    driver's CPU is the search's."""

    def __init__(self, exp_dir: Path, work: Path, marks: list[int], probes: dict[str, Probe], say):
        self.exp_dir, self.work, self.marks, self.probes, self.say = exp_dir, work, list(marks), probes, say
        self.done: set[str] = set()
        self._in_folder: set[str] = set()  # of those, the trials whose end the experiment folder holds
        self.own_cpu_s = 0.0
        self.records: list[dict] = []
        self.timeline: list[dict] = []
        self.errors: list[str] = []
        self.start: dict | None = None  # the first trial seen: the search under way
        self.t0 = time.time()
        self._sample_cpu = 0.0  # the monitor's thread CPU when the current sample began
        self._staging: Path | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scaling-monitor", daemon=True)
        self._last_timeline = self._last_progress = -1e9

    def begin(self) -> None:
        self._thread.start()

    def end(self) -> None:
        """Stop the thread and take a last sample: a mark the thread had not seen yet (the
        experiment folder lags Ray by a copy) is recorded now, after the search."""
        self._stop.set()
        self._thread.join()
        self.sample(after_search=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                self.sample()
            except Exception as err:  # a sampling error must not stop the search
                self.errors.append(f"{err.__class__.__name__}: {err}")

    def finished(self) -> int:
        """Trials whose result.json ends in a ``done`` row, or that errored: read in the driver's staging folder,
        where Ray's logger writes each result as it comes (the experiment folder gets it with the
        next copy, a second or more later), while Ray runs; else in the experiment folder."""
        from trainables.contract.layout import ERROR_FILE, RESULT_FILE, TRIAL_PREFIX

        where = self.staging() or self.exp_dir
        try:
            entries = [e for e in os.scandir(where) if e.name.startswith(TRIAL_PREFIX) and e.is_dir()]
        except FileNotFoundError:
            return 0
        if entries and self.start is None:
            self.start = self.reading()
        for entry in entries:
            if entry.name not in self.done:
                row = _last_row(Path(entry.path) / RESULT_FILE)
                # an errored trial has ended too (its error.txt): else a search with one never
                # reaches its last mark (a trial Ray retries counts from its first error)
                if (row is not None and row.get("done") is True) or (Path(entry.path) / ERROR_FILE).exists():
                    self.done.add(entry.name)
        return len(self.done)

    def reading(self) -> dict:
        """The driver now: wall time since the start, CPU without the monitor's, memory."""
        rss, peak = memory_mb()
        return {
            "t_s": time.time() - self.t0,
            "driver_cpu_s": time.process_time() - self.own_cpu_s - time.thread_time() + self._sample_cpu,
            "rss_mb": rss,
            "peak_rss_mb": peak,
        }

    def sample(self, after_search: bool = False) -> None:
        self._sample_cpu = time.thread_time()  # this sample's CPU so far is the monitor's too
        count = self.finished()
        now = self.reading()
        if now["t_s"] - self._last_timeline >= TIMELINE_EVERY_S:
            self.timeline.append({"finished": count, **now})
            self._last_timeline = now["t_s"]
        if now["t_s"] - self._last_progress >= PROGRESS_EVERY_S and not after_search:
            self.say(f"{count} trials finished after {now['t_s']:.0f} s; driver CPU {now['driver_cpu_s']:.1f} s")
            self._last_progress = now["t_s"]
        while self.marks and count >= self.marks[0]:
            self.at_mark(self.marks.pop(0), count, now, after_search)
        self.own_cpu_s += time.thread_time() - self._sample_cpu

    def staging(self) -> Path | None:
        """The driver's staging folder Ray copies into the experiment folder after each snapshot
        (<session>/artifacts/<time>/<name>/driver_artifacts); found while Ray runs."""
        if self._staging is None:
            with contextlib.suppress(Exception):
                import ray

                session = Path(ray._private.worker._global_node.get_session_dir_path())
                found = sorted(session.glob(f"artifacts/*/{self.exp_dir.name}/driver_artifacts"))
                self._staging = found[-1] if found else None
        return self._staging

    def wait_for_folder(self, limit_s: float = 10.0) -> float:
        """Wait (at most ``limit_s``) until the experiment folder holds the end of every trial
        counted in the staging folder (Ray's next copy brings it), so the copy at a mark holds
        the mark's trials; return the seconds waited."""
        from trainables.contract.layout import RESULT_FILE

        started = time.perf_counter()
        while time.perf_counter() - started < limit_s:
            for name in self.done - self._in_folder:
                row = _last_row(self.exp_dir / name / RESULT_FILE)
                if row is not None and row.get("done") is True:
                    self._in_folder.add(name)
            if self._in_folder >= self.done:
                break
            time.sleep(0.2)
        return time.perf_counter() - started

    def at_mark(self, mark: int, count: int, now: dict, after_search: bool) -> None:
        from search.durability.snapshots import SNAPSHOT_GLOBS
        from trainables.contract.layout import EXPERIMENT_STATE_GLOB

        states = sorted(self.exp_dir.glob(EXPERIMENT_STATE_GLOB))
        snapshot = [p for pattern in SNAPSHOT_GLOBS for p in self.exp_dir.glob(pattern)]
        staging = self.staging()
        record = {
            "mark": mark,
            "finished": count,
            "after_search": after_search,
            **now,
            "probes": {label: probe.read() for label, probe in self.probes.items()},
            "ray_processes": children_usage(os.getpid()),
            "experiment_state_mb": states[-1].stat().st_size / MB if states else None,
            "snapshot_mb": sum(p.stat().st_size for p in snapshot if p.exists()) / MB,
            "staging_mb": folder_size(staging)[0] / MB if staging is not None else None,
        }
        copy = self.work / f"at_{mark}"
        record["waited_for_folder_s"] = self.wait_for_folder()
        started = time.perf_counter()
        record["vanished_mid_copy"] = copy_folder(self.exp_dir, copy)
        record["copy_s"] = time.perf_counter() - started
        size, files = folder_size(self.exp_dir)
        record.update(folder_mb=size / MB, folder_files=files, copy=str(copy), copy_mb=folder_size(copy)[0] / MB)
        self.records.append(record)
        self.say(
            f"mark {mark}: {count} trials finished after {now['t_s']:.0f} s; driver CPU {now['driver_cpu_s']:.1f} s, "
            f"RSS {now['rss_mb']:.0f} MB; folder {size / MB:.1f} MB (copied in {record['copy_s']:.1f} s)"
        )


# ---------------------------------------------------------------------------------------------
# After the search


def trial_times(exp_dir: Path) -> tuple[list[dict], dict]:
    """Every trial's start (Ray's ``start_time``: marked RUNNING once its worker is up) and end
    (``last_result_time``: the driver got its last result), driver clock, from Ray's last
    snapshot; and the snapshot's runner data."""
    from trainables.contract.layout import EXPERIMENT_STATE_GLOB

    states = sorted(exp_dir.glob(EXPERIMENT_STATE_GLOB))
    if not states:
        return [], {}
    data = json.loads(states[-1].read_text())
    trials = []
    for entry in data.get("trial_data", []):
        trial, meta = (json.loads(part) if isinstance(part, str) else part for part in entry[:2])
        trials.append(
            {
                "trial_id": trial.get("trial_id"),
                "status": trial.get("status"),
                "start": meta.get("start_time"),
                "end": meta.get("last_result_time"),
                "failures": meta.get("num_failures", 0),
            }
        )
    return trials, data.get("runner_data") or {}


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None of nothing."""
    if not values:
        return None
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def windows(trials: list[dict], marks: list[int]) -> list[dict]:
    """Per window (the trials ranked by end between the previous mark and this one): its wall
    seconds, the trials' median duration, and the gaps from each of its trials' ends to the
    earliest start at or after it (a slot handed to the next trial)."""
    timed = sorted((t for t in trials if t["start"] is not None and t["end"] is not None), key=lambda t: t["end"])
    starts = sorted(t["start"] for t in timed)
    out, previous = [], 0
    for mark in marks:
        chunk = timed[previous:mark]
        if len(chunk) < mark - previous:
            out.append({"mark": mark, "trials": len(chunk), "reached": False})
            previous = mark
            continue
        begin = timed[previous - 1]["end"] if previous else starts[0]
        gaps = []
        for trial in chunk:
            i = bisect.bisect_left(starts, trial["end"])
            if i < len(starts):
                gaps.append(starts[i] - trial["end"])
        durations = [t["end"] - t["start"] for t in chunk]
        out.append(
            {
                "mark": mark,
                "trials": len(chunk),
                "reached": True,
                "wall_s": chunk[-1]["end"] - begin,
                "wall_s_per_trial": (chunk[-1]["end"] - begin) / len(chunk),
                "trial_s_median": percentile(durations, 0.5),
                "gaps": len(gaps),
                "gap_s_median": percentile(gaps, 0.5),
                "gap_s_p90": percentile(gaps, 0.9),
                "gap_s_max": max(gaps) if gaps else None,
            }
        )
        previous = mark
    return out


REPLAYS = 3  # timed calls of each replay (after one untimed)


def _timed(call, repeats: int = REPLAYS) -> dict:
    """The median process CPU and wall seconds of ``call()`` over ``repeats`` calls after one
    untimed (process CPU: a copy's worker threads count too; the process is otherwise idle)."""
    call()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        call()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return {"cpu_s": percentile(cpu, 0.5), "wall_s": percentile(wall, 0.5)}


def replay(folder: Path, scratch: Path) -> dict:
    """One call each, on the folder as it was at a mark, of what the driver repeats while the
    search runs, timed here after the search with nothing else running: Ray's copy of its
    staging folder (the snapshot files and every trial's logs, no checkpoints: rebuilt from the
    folder) into the experiment folder, after every snapshot; the JSON encoding of Ray's
    snapshot (every second); the runner's copies of that snapshot and of the Optuna study to
    last_snapshot/ (every 2 s; the study's whenever it changed, as it does with every trial's
    result). A per-call cost that grows with the trials makes its total grow with their square."""
    import pyarrow.fs
    from ray.train._internal.storage import _upload_to_fs_path
    from ray.tune.utils.serialization import TuneFunctionEncoder

    from search.durability.snapshots import SNAPSHOT_GLOBS, keep_readable_snapshot, keep_study
    from trainables.contract.layout import (
        CHECKPOINT_GLOB,
        EXPERIMENT_STATE_GLOB,
        LAST_SNAPSHOT_DIR,
        STUDY_FILE,
        TRIAL_PREFIX,
    )

    staging, target = scratch / "staging", scratch / "target"
    shutil.rmtree(scratch, ignore_errors=True)
    staging.mkdir(parents=True)
    for pattern in SNAPSHOT_GLOBS:
        for path in folder.glob(pattern):
            shutil.copy2(path, staging / path.name)
    for trial in folder.glob(f"{TRIAL_PREFIX}*"):
        shutil.copytree(trial, staging / trial.name, ignore=shutil.ignore_patterns(CHECKPOINT_GLOB))
    out: dict = {"staging_mb": folder_size(staging)[0] / MB}
    fs = pyarrow.fs.LocalFileSystem()
    out["sync"] = _timed(lambda: _upload_to_fs_path(str(staging), fs, str(target)))
    states = sorted(staging.glob(EXPERIMENT_STATE_GLOB))
    if states:
        data = json.loads(states[-1].read_text())
        encoded = scratch / "state.json"

        def encode() -> None:
            with encoded.open("w") as f:
                json.dump(data, f, cls=TuneFunctionEncoder)

        out["state_json"] = _timed(encode)
    out["keep"] = _timed(lambda: keep_readable_snapshot(staging))
    study = scratch / "study"
    if (folder / STUDY_FILE).exists():
        study.mkdir()
        shutil.copy2(folder / STUDY_FILE, study / STUDY_FILE)  # the copy at the mark: whole already

        def keep_changed_study() -> None:
            (study / LAST_SNAPSHOT_DIR / STUDY_FILE).unlink(missing_ok=True)  # as after a change
            keep_study(study)

        out["study_mb"] = (study / STUDY_FILE).stat().st_size / MB
        out["study"] = _timed(keep_changed_study)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def repeat_periods(trials: int) -> dict[str, float]:
    """Seconds between the driver's repeated copies in a search of ``trials`` trials: Ray's snapshot
    and its staging copy every snapshot period, the runner's copies to last_snapshot/ twice that
    (search/durability/snapshots.py)."""
    from search.durability.snapshots import KEEP_EVERY_S, snapshot_period

    period = float(snapshot_period(trials))
    keep = max(KEEP_EVERY_S, 2.0 * period)
    return {"sync": period, "state_json": period, "keep": keep, "study": keep}


REPORT_SCRIPT = Path(__file__).with_name("report.py")


def time_report(folder: Path, log: Path) -> dict:
    """platform/report.py on ``folder`` as a subprocess: its wall and CPU seconds and exit
    status (its output in ``log``). Not its peak memory: a child's ru_maxrss starts from the
    forking driver's (Linux keeps the pre-exec image's high-water mark)."""
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(REPORT_SCRIPT), str(folder)], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own usage (getrusage sums every child)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if proc.returncode else []
    return {
        "report_s": wall,
        "report_cpu_s": usage.ru_utime + usage.ru_stime,
        "report_rc": proc.returncode,
        **({"report_error": tail[0]} if tail else {}),
    }


def per_window(records: list[dict], start: dict | None) -> list[dict]:
    """Each mark's driver and probe numbers less the previous mark's (the first window from the
    first trial's appearance), per finished trial."""
    rows, before = [], None
    for record in records:
        base_count = before["finished"] if before else 0
        base = before or start or {"driver_cpu_s": 0.0, "rss_mb": record["rss_mb"]}
        trials = max(1, record["finished"] - base_count)
        row = {
            "driver_cpu_s_per_trial": (record["driver_cpu_s"] - base["driver_cpu_s"]) / trials,
            "rss_kb_per_trial": ((record["rss_mb"] or 0) - (base.get("rss_mb") or 0)) * 1024 / trials,
            "probes": {},
        }
        for label, now in record["probes"].items():
            then = (before or {}).get("probes", {}).get(label, {"calls": 0, "cpu_s": 0.0, "wall_s": 0.0})
            calls = now["calls"] - then["calls"]
            row["probes"][label] = {
                "calls": calls,
                "cpu_s_per_trial": (now["cpu_s"] - then["cpu_s"]) / trials,
                "wall_s_per_trial": (now["wall_s"] - then["wall_s"]) / trials,
                "wall_s_per_call": (now["wall_s"] - then["wall_s"]) / calls if calls else None,
            }
        now, then = record["ray_processes"], (before or {}).get("ray_processes", {})
        # a process that ended meanwhile (Ray shutting down at the last mark) took its CPU along
        ended = set(then) - set(now)
        added = sum(p["cpu_s"] - then.get(pid, {}).get("cpu_s", 0.0) for pid, p in now.items())
        row["ray_processes_cpu_s_per_trial"] = None if ended else added / trials
        rows.append(row)
        before = record
    return rows


GROWTH = {  # a row's key -> what it is; a per-trial cost, or one call of something done every second or two
    "wall_s_per_trial": "wall seconds per trial",
    "driver_cpu_s_per_trial": "driver CPU seconds per trial",
    "gap_s_median": "median gap from a trial's end to the next start",
    "trial_s_median": "median trial duration",
    "report_s_added_per_trial": "report seconds added per trial since the previous mark",
    "folder_mb_added_per_trial": "folder MB added per trial since the previous mark",
    "snapshot_cpu_s_per_trial": "Ray's snapshot CPU per trial",
    "sync_wall_s_per_trial": "staging-folder copy wall seconds per trial",
    "keep_cpu_s_per_trial": "last_snapshot copy CPU per trial",
    "study_cpu_s_per_trial": "study copy CPU per trial",
    "searcher_cpu_s_per_trial": "Optuna ask and tell CPU per trial",
    "ray_processes_cpu_s_per_trial": "GCS, raylet, ... CPU per trial",
    "sync_replay_cpu_s": "one staging-folder copy's CPU (replayed)",
    "state_json_replay_cpu_s": "one snapshot JSON encoding's CPU (replayed)",
    "keep_replay_cpu_s": "one last_snapshot copy's CPU (replayed)",
    "study_replay_cpu_s": "one study copy's CPU (replayed)",
}


def growth(rows: list[dict]) -> dict:
    """Each per-trial cost's last window over its first window that has it (1.0: linear in the
    trials; what is added per trial since the previous mark starts at the second window, the
    first holding the report's and the folder's fixed part); the names of those at
    :data:`GROWTH_FLAG` or more."""
    reached = [r for r in rows if r.get("reached")]
    ratios = {}
    for key in GROWTH:
        values = [r.get(key) for r in reached if r.get(key) is not None]
        # what is added per trial can come out at or below 0 where a fixed part hides it: no ratio
        ratios[key] = values[-1] / values[0] if len(values) >= 2 and values[0] > 0 and values[-1] > 0 else None
    flagged = [key for key, ratio in ratios.items() if ratio is not None and ratio >= GROWTH_FLAG]
    return {"last_over_first": ratios, "faster_than_linear": flagged, "flag_at": GROWTH_FLAG}


# ---------------------------------------------------------------------------------------------
# The run


@contextlib.contextmanager
def own_cluster(ray_tmp: Path):
    """A local Ray cluster of the benchmark's own: RAY_TMPDIR a fresh folder (so ray.init finds
    no cluster another program started), RAY_ADDRESS unset; both put back afterwards."""
    before = {key: os.environ.get(key) for key in ("RAY_TMPDIR", "RAY_ADDRESS")}
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    os.environ.pop("RAY_ADDRESS", None)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def machine() -> dict:
    import optuna
    import ray
    import torch

    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gb": int(meminfo[meminfo.index("MemTotal:") + 1]) / MB,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "optuna": optuna.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def say(line: str) -> None:
    print(f"[scaling] {line}", flush=True)


def run(args: argparse.Namespace, spec, work: Path, ray_tmp: Path) -> dict:
    """The search with the monitor, then the gaps and the reports; the JSON report's content."""
    from search.folder import experiment_dir
    from search.options import SearchOptions
    from search.runner import run_search
    from trainables.contract.layout import SEARCH_FILE

    options = SearchOptions(
        storage_path=str(work / "runs"),
        name=NAME,
        num_trials=args.trials,
        smoke_test=True,
        dashboard=False,
        calibrate=False,
        report=False,
        confirm=False,
    )
    exp_dir = experiment_dir(options, spec.name)
    result = {"command": shlex.join([sys.executable, *sys.argv]), "machine": machine(), "work": str(work)}
    probes = install_probes()
    monitor = Monitor(exp_dir, work, args.marks, probes, say)
    say(f"{args.trials} trials of {args.space} (smoke budget), marks {','.join(map(str, args.marks))}; in {work}")
    t0 = monitor.t0 = time.time()
    try:
        with own_cluster(ray_tmp):
            monitor.begin()
            try:
                run_search(spec, options, say)
            finally:
                monitor.end()
    finally:
        for probe in probes.values():
            probe.remove()
    wall = time.time() - t0
    trials, runner = trial_times(exp_dir)
    search = json.loads((exp_dir / SEARCH_FILE).read_text())
    first_start = min((t["start"] for t in trials if t["start"] is not None), default=None)
    statuses: dict[str, int] = {}
    for trial in trials:
        statuses[trial["status"]] = statuses.get(trial["status"], 0) + 1
    result["settings"] = {
        "trials": args.trials,
        "marks": args.marks,
        "space": args.space,
        "budget": search["spec"]["budget"],
        "budget_mode": search.get("budget_mode"),
        "resources": search.get("resources"),
        "reuse_actors": runner.get("_reuse_actors"),
        "snapshot_period_s": runner.get("_checkpoint_period"),
        "probes": {label: {"what": PROBES[label], "wraps": probes[label].installed} for label in PROBES},
        "sample_every_s": SAMPLE_EVERY_S,
    }
    result["search"] = {
        "wall_s": wall,
        "startup_s": first_start - t0 if first_start else None,
        "statuses": statuses,
        "restarts": sum(t["failures"] or 0 for t in trials),
        "driver_cpu_s_at_first_trial": (monitor.start or {}).get("driver_cpu_s"),
        "monitor_cpu_s": monitor.own_cpu_s,
        "monitor_errors": monitor.errors,
        "load_average_at_end": os.getloadavg(),
    }
    rows = windows(trials, args.marks)
    by_mark = {record["mark"]: record for record in monitor.records}
    deltas = dict(zip([r["mark"] for r in monitor.records], per_window(monitor.records, monitor.start)))
    for row in rows:
        record = by_mark.get(row["mark"])
        if record is None:
            continue
        say(f"report of the folder at {row['mark']} trials, and the driver's repeated copies replayed on it ...")
        report = time_report(Path(record["copy"]), work / f"report_{row['mark']}.log")
        replayed = replay(Path(record["copy"]), work / "replay")
        every = repeat_periods(args.trials)  # seconds between calls in this search
        report["replay"] = replayed
        report.update(
            {f"{name}_replay_{k}": replayed.get(name, {}).get(k) for name in every for k in ("cpu_s", "wall_s")}
        )
        report["replay_cpu_per_s"] = sum(
            replayed[name]["cpu_s"] / max(period, replayed[name]["wall_s"])
            for name, period in every.items()
            if name in replayed
        )
        delta = deltas[row["mark"]]
        row.update(
            {
                "at_mark": record,
                **report,
                "folder_mb": record["folder_mb"],
                "driver_cpu_s": record["driver_cpu_s"],
                "rss_mb": record["rss_mb"],
                "peak_rss_mb": record["peak_rss_mb"],
                **{k: v for k, v in delta.items() if k != "probes"},
                "probes": delta["probes"],
                **{f"{label}_cpu_s_per_trial": p["cpu_s_per_trial"] for label, p in delta["probes"].items()},
                **{f"{label}_wall_s_per_trial": p["wall_s_per_trial"] for label, p in delta["probes"].items()},
            }
        )
    measured = [row for row in rows if "report_s" in row]
    for before, row in zip(measured, measured[1:]):
        trials = row["at_mark"]["finished"] - before["at_mark"]["finished"]
        if trials > 0:
            row["report_s_added_per_trial"] = (row["report_s"] - before["report_s"]) / trials
            row["folder_mb_added_per_trial"] = (row["folder_mb"] - before["folder_mb"]) / trials
    result["windows"] = rows
    result["growth"] = growth(rows)
    result["timeline"] = monitor.timeline
    return result


# ---------------------------------------------------------------------------------------------
# The tables


def _f(value, digits: int = 1, width: int = 8) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def format_tables(result: dict) -> str:
    s, search = result["settings"], result["search"]
    m = result["machine"]
    periods = repeat_periods(s["trials"])
    budget = s["budget"]
    lines = [
        f"search driver scaling: {s['trials']} trials of {s['space']} ({s['budget_mode']} budget: "
        f"{budget['iterations']} iterations, {budget['max_concurrent']} at a time), on {m['cpus_usable']} CPUs; "
        f"reuse_actors {s['reuse_actors']}, Ray snapshot every {s['snapshot_period_s']} s",
        f"wall {search['wall_s']:.0f} s (start-up {_f(search['startup_s'], 1, 0)} s); statuses {search['statuses']}; "
        f"load average {m['load_average_at_start'][0]:.1f} at start, {search['load_average_at_end'][0]:.1f} at end",
        "",
        "per trial of the window (the trials finished since the previous mark); totals at the mark"
        + (
            "; the last window holds the search's drain (fewer trials at once)" if s["marks"][-1] == s["trials"] else ""
        ),
        f"{'window':>9} {'wall s/tr':>9} {'CPU s':>8} {'CPU s/tr':>8} {'RSS MB':>8} {'dRSS KB/tr':>10} "
        f"{'gap med':>8} {'gap p90':>8} {'trial med':>9} {'report s':>8} {'folder MB':>9}",
    ]
    previous = 0
    for row in result["windows"]:
        window = f"{previous}-{row['mark']}"
        previous = row["mark"]
        if not row.get("reached"):
            lines.append(f"{window:>9}  not reached ({row['trials']} trials)")
            continue
        lines.append(
            f"{window:>9} {_f(row.get('wall_s_per_trial'), 2, 9)} {_f(row.get('driver_cpu_s'))} "
            f"{_f(row.get('driver_cpu_s_per_trial'), 3)} {_f(row.get('rss_mb'), 0)} "
            f"{_f(row.get('rss_kb_per_trial'), 0, 10)} {_f(row.get('gap_s_median'), 2)} {_f(row.get('gap_s_p90'), 2)} "
            f"{_f(row.get('trial_s_median'), 1, 9)} {_f(row.get('report_s'), 1)} {_f(row.get('folder_mb'), 1, 9)}"
        )
    lines += [
        "",
        "where the driver's time goes, per trial of the window (s); sizes at the mark (MB)",
        f"{'window':>9} {'loop CPU':>8} {'snapshot':>8} {'per call':>8} {'sync wall':>9} {'per call':>8} "
        f"{'keep CPU':>8} {'study CPU':>9} {'searcher':>8} {'Ray procs':>9} {'state MB':>8} {'staging':>8}",
    ]
    previous = 0
    for row in result["windows"]:
        window = f"{previous}-{row['mark']}"
        previous = row["mark"]
        if "probes" not in row:
            continue
        p = row["probes"]
        at = row["at_mark"]
        lines.append(
            f"{window:>9} {_f(p['loop']['cpu_s_per_trial'], 3)} {_f(p['snapshot']['cpu_s_per_trial'], 3)} "
            f"{_f(p['snapshot']['wall_s_per_call'], 4)} {_f(p['sync']['wall_s_per_trial'], 3, 9)} "
            f"{_f(p['sync']['wall_s_per_call'], 4)} {_f(p['keep']['cpu_s_per_trial'], 3)} "
            f"{_f(p['study']['cpu_s_per_trial'], 3, 9)} "
            f"{_f(p['searcher']['cpu_s_per_trial'], 3)} {_f(row.get('ray_processes_cpu_s_per_trial'), 3, 9)} "
            f"{_f(at.get('experiment_state_mb'), 2)} {_f(at.get('staging_mb'), 1)}"
        )
    lines += [
        "",
        "one call, replayed on the folder at the mark after the search (median of 3; CPU of the whole process)",
        f"{'window':>9} {'staging MB':>10} {'sync CPU':>8} {'sync wall':>9} {'JSON CPU':>8} {'keep CPU':>8} "
        f"{'study MB':>8} {'study CPU':>9} {'~CPU s/s':>8}",
    ]
    previous = 0
    for row in result["windows"]:
        window = f"{previous}-{row['mark']}"
        previous = row["mark"]
        if "replay" not in row:
            continue
        lines.append(
            f"{window:>9} {_f(row['replay'].get('staging_mb'), 1, 10)} {_f(row.get('sync_replay_cpu_s'), 3)} "
            f"{_f(row.get('sync_replay_wall_s'), 3, 9)} {_f(row.get('state_json_replay_cpu_s'), 3)} "
            f"{_f(row.get('keep_replay_cpu_s'), 3)} {_f(row['replay'].get('study_mb'), 2)} "
            f"{_f(row.get('study_replay_cpu_s'), 3, 9)} {_f(row.get('replay_cpu_per_s'), 3)}"
        )
    lines.append(
        f"  ~CPU s/s: the four together per second of search at that size (sync, JSON every "
        f"{periods['sync']:g} s; keep, study every {periods['keep']:g} s)"
    )
    g = result["growth"]
    if g["last_over_first"]:
        ratios = ", ".join(
            f"{GROWTH[key]} x{ratio:.2f}" for key, ratio in g["last_over_first"].items() if ratio is not None
        )
        lines += ["", f"last window over the first (x1.00: linear in the trials): {ratios}"]
        flagged = [GROWTH[key] for key in g["faster_than_linear"]]
        smallest = min(row["trials"] for row in result["windows"])
        if smallest < FEW_TRIALS:
            lines.append(f"(windows of {smallest} trials are too few to judge growth by: noise and the drain dominate)")
        lines.append(
            f"faster than linear (x{g['flag_at']:.2f} or more): {'; '.join(flagged)}"
            if flagged
            else f"no per-trial cost rose x{g['flag_at']:.2f} or more"
        )
    errors = [row["report_error"] for row in result["windows"] if row.get("report_error")]
    if errors or search["monitor_errors"]:
        lines.append(f"problems: {'; '.join(errors + search['monitor_errors'][:3])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from search_spaces.spec import SpecError, load_spec

    try:
        check_paths(args)
        spec = load_spec(args.space)
    except (SpecError, ValueError) as err:
        return fail(str(err))
    Path(args.storage_path).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scaling-", dir=args.storage_path)).resolve()
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-scaling-"))  # short: Ray's socket paths must fit 107 bytes
    try:
        result = run(args, spec, work, ray_tmp)
    except BaseException as err:
        print(
            f"scaling_benchmark.py: stopped ({err.__class__.__name__}: {err}); its files are kept in {work} "
            f"and Ray's in {ray_tmp}",
            file=sys.stderr,
        )
        return 130 if isinstance(err, KeyboardInterrupt) else 1
    print(format_tables(result))
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.out}")
    if args.keep:
        print(f"kept {work} (the search: runs/{NAME}/, the copies: at_<mark>/) and Ray's files in {ray_tmp}")
    else:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
