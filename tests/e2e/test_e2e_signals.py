"""Signals a process manager sends: SIGTERM and SIGHUP to the driver end the search as Ctrl-C
does (exit 130, the local cluster it started stopped, resumable), and a second SIGINT during the
graceful stop ends it at once, still resumable."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import result_rows, run_search_cli, start_search, trial_dirs, wait_for_a_finished_trial


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _interrupted(tmp_path: Path, signals: list[signal.Signals], name: str) -> tuple[Path, list[str], str, int]:
    storage = tmp_path / "runs"
    args = ["--space", "smoke.yaml", "--storage-path", str(storage), "--name", name]
    args += ["--no-dashboard", "--no-calibration", "--no-report"]
    exp_dir = storage / name
    proc = start_search(*args)
    wait_for_a_finished_trial(proc, exp_dir)
    cluster = [int(e["pid"]) for e in json.loads((exp_dir / "driver.json").read_text()).get("cluster", [])]
    assert cluster, "the driver recorded no cluster processes"
    for i, sig in enumerate(signals):
        if i:
            time.sleep(1.0)
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    time.sleep(2)
    left = [pid for pid in cluster if _alive(pid)]
    return exp_dir, args, out, proc.returncode if not left else -1000 - len(left)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_process_manager_s_signal_ends_the_search_like_ctrl_c(tmp_path, sig):
    exp_dir, args, out, status = _interrupted(tmp_path, [sig], f"signal-{sig.name.lower()}")
    assert status == 130, out[-3000:]  # interrupted, and no process of its local cluster is left
    assert "--resume" in out
    if sig == signal.SIGTERM:  # and it resumes to the end
        done, _ = run_search_cli(*args, "--resume", timeout=600)
        assert done.returncode == 0, done.stdout[-3000:]
        assert all(result_rows(t)[-1].get("done") for t in trial_dirs(exp_dir))


def test_a_second_ctrl_c_during_the_graceful_stop_ends_it_at_once_still_resumable(tmp_path):
    exp_dir, args, out, status = _interrupted(tmp_path, [signal.SIGINT, signal.SIGINT], "twice")
    assert status == 130, out[-3000:]
    done, _ = run_search_cli(*args, "--resume", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert all(result_rows(t)[-1].get("done") for t in trial_dirs(exp_dir))
