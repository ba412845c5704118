"""Shared fixtures. ``smoke_experiment`` runs the real search once per test session (the README's
entry point on smoke.yaml: real Ray cluster, real MNIST, real Optuna SQLite study) and hands its
experiment folder to every test that reads one.

Every test under tests/e2e/ is marked ``e2e`` (it starts a real Ray cluster): ``pytest -m "not e2e"``
runs the rest in under two minutes, spread over one pytest-xdist worker per CPU (``-n 0`` runs
everything in this process, for ``--pdb`` or a debugger)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEARCH_TIMEOUT_S = 900
E2E_DIR = Path(__file__).resolve().parent / "e2e"


def pytest_configure(config):
    # pytest-xdist (addopts in pyproject.toml: one worker per CPU) runs the tests in worker
    # processes; torch's default of one thread per CPU in each of them would oversubscribe the
    # machine, so each worker gets its share of the CPUs
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cpus // workers))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures(...)``): many
    small tensors, where a second OpenMP thread only adds wake-ups and spin-waiting (a 64 x 64
    eigendecomposition took 100 ms instead of 1 ms on a busy 2-core machine; Langevin chains of
    tiny ops ran 20x slower), or code that runs as a one-CPU Ray task does."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


E2E_PREFIX = E2E_DIR.relative_to(REPO).as_posix() + "/"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """How pytest-xdist hands out tests: every e2e test in one unit of work, so the real Ray
    searches run one after another on one worker (never two clusters at once on a machine sized
    for one) while the other workers take the rest test by test. (xdist's own --dist loadgroup
    cannot do this under pytest 9: it renames node ids through an attribute pytest 9 no longer
    reads. Grouping the other tests by file balanced worse: 109 s against 98 s.)"""
    from xdist.scheduler import LoadScopeScheduling

    class E2EInOneUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "e2e" if nodeid.startswith(E2E_PREFIX) else nodeid

    return E2EInOneUnit(config, log)


def trial_dirs(exp_dir: Path) -> list[Path]:
    return sorted(p for p in exp_dir.iterdir() if p.is_dir() and p.name.startswith("trial_"))


def result_rows(trial: Path) -> list[dict]:
    """The rows of a trial's result.json (none before its first report)."""
    text = (trial / "result.json").read_text() if (trial / "result.json").exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_for_a_finished_trial(proc: subprocess.Popen, exp_dir: Path, timeout: float = 600) -> None:
    """Wait while the search ``proc`` runs until some trial of ``exp_dir`` has ended; fail, with
    the search's output, when the search ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if exp_dir.exists() and any(r and r[-1].get("done") for r in map(result_rows, trial_dirs(exp_dir))):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before it could be interrupted:\n" + proc.stdout.read()[-2000:]


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM a server a test started, SIGKILL it when it does not end within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def sqlite_locked_by_another_process(path: Path) -> Iterator[int]:
    """While the block runs, another process holds an exclusive lock on the SQLite file ``path``
    (as a second driver or a stray ``sqlite3`` shell would); yields its PID."""
    code = (
        f"import sqlite3, time; db = sqlite3.connect({str(path)!r}, isolation_level=None); "
        "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(300)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together while they are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def ray_node_ports() -> list[str]:
    """`ray start` options giving a node its own free ports (a shared machine runs other Rays)."""
    names = ("node-manager", "object-manager", "dashboard-agent-grpc", "dashboard-agent-listen",
             "runtime-env-agent", "metrics-export")  # fmt: skip
    return [f"--{name}-port={port}" for name, port in zip(names, free_ports(len(names)))]


def processes_under(temp_dir: str) -> list[int]:
    """PIDs of the processes whose command line names this test's temp dir (only ours do)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if temp_dir.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def wait_for_ray_nodes(address: str, n: int, env: dict, log: Path | None = None, timeout: float = 120) -> None:
    """Wait until the cluster at ``address`` has ``n`` live nodes; else fail with what was seen
    (and the tail of ``log``, the `ray start` output)."""
    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR'); "
        "print(sum(1 for node in ray.nodes() if node['Alive']))"
    )
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:  # a head that never came up makes ray.init wait on it for minutes
            out = subprocess.run(
                [sys.executable, "-c", probe, address], capture_output=True, text=True, env=env, timeout=60
            )
        except subprocess.TimeoutExpired:
            seen = "ray.init did not connect within 60 s"
            continue
        if out.returncode == 0 and out.stdout.strip().splitlines() and int(out.stdout.split()[-1]) >= n:
            return
        seen = out.stdout.strip()[-300:] or out.stderr.strip()[-300:]
        time.sleep(1)
    said = f"; ray start said:\n{log.read_text()[-1500:]}" if log is not None and log.exists() else ""
    raise AssertionError(f"the cluster at {address} did not reach {n} live nodes: {seen}{said}")


def dashboard_probe(port: int) -> int | None:
    """HTTP status of the Ray dashboard's version endpoint on 127.0.0.1, or None if closed."""
    headers = {}
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        headers["Authorization"] = f"Bearer {token.read_text().strip()}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/version", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def start_search(*args: str, env: dict | None = None, stderr=subprocess.STDOUT) -> subprocess.Popen:
    """platform/run_search.py started in the background from the repository, output unbuffered
    and piped as text (stderr into stdout unless ``stderr`` says otherwise); ``env`` defaults to
    this process's environment."""
    return subprocess.Popen(
        [sys.executable, "platform/run_search.py", *args],
        cwd=REPO,
        env=dict(os.environ if env is None else env, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def stop_ray_nodes(started: list[subprocess.Popen], temp_dir: str, wait_s: float = 60) -> None:
    """Stop the `ray start --block` processes a test started (SIGTERM, newest first), then kill
    by PID whatever of theirs is left under the test's temp dir."""
    for proc in reversed(started):
        proc.send_signal(signal.SIGTERM)
    for proc in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
    for pid in processes_under(temp_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_search_cli(*args: str, timeout: float = SEARCH_TIMEOUT_S, probe_port: int | None = None):
    """Run platform/run_search.py; return (completed process, dashboard status seen or None)."""
    proc = start_search(*args)
    seen = None
    deadline = time.monotonic() + timeout
    while probe_port is not None and seen != 200 and proc.poll() is None and time.monotonic() < deadline:
        seen = dashboard_probe(probe_port) or seen
        time.sleep(1.0)
    try:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ""), seen


@dataclass
class SmokeExperiment:
    exp_dir: Path
    output: str
    returncode: int
    dashboard_status: int | None
    dashboard_port: int


@pytest.fixture(scope="session")
def smoke_experiment(tmp_path_factory) -> SmokeExperiment:
    storage = tmp_path_factory.mktemp("runs")
    port = free_port()
    done, status = run_search_cli(
        "--space", "smoke.yaml", "--storage-path", str(storage), "--dashboard-port", str(port), probe_port=port
    )
    return SmokeExperiment(storage / "smoke", done.stdout, done.returncode, status, port)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """An S3-compatible server on 127.0.0.1 (moto's server mode, its own process on a free port)
    for the tests of storage URIs; stopped by its PID."""
    pytest.importorskip("moto.server", reason="the test extra (moto[server]) is not installed")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "moto's server did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


@dataclass
class Bucket:
    name: str
    client: object  # a boto3 S3 client on the test server
    cache: Path  # NCSN_STORAGE_CACHE: where this test's local copies of the storage go

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


@pytest.fixture
def s3_bucket(s3_endpoint, tmp_path, monkeypatch) -> Bucket:
    """A new, empty bucket on the test server, with the endpoint and credentials in this process's
    environment (the way a user gives them: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), which the
    searches the test starts inherit."""
    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "NCSN_STORAGE_CACHE": str(tmp_path / "storage-cache"),
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"ncsn-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(name, client, tmp_path / "storage-cache")
