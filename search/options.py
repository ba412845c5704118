"""What the command line decides about a search, checked before anything starts.

:class:`SearchOptions` holds every choice of ``platform/run_search.py`` that is not in the spec;
:func:`check_options` refuses a bad or conflicting one with a ``ValueError`` whose message is one
line naming the flag, the value and a fix. It runs before a Ray cluster starts and creates
nothing on disk. A storage URI must name a filesystem pyarrow has and take a probe file (written,
read back and deleted; an object store may keep an empty folder marker for the prefix).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUDGETS = ("auto", "preview", "full")
VERBOSITY = (0, 1, 2)
# Ray's own forms: "auto", a Ray Client address, or the GCS address of a running head node.
_ADDRESS_RE = re.compile(r"^(auto|local|ray://[^\s/:]+(:\d{1,5})?|[A-Za-z0-9.\-\[\]:]+:\d{1,5})$")
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclass
class SearchOptions:
    """What the command line decides; everything else comes from the spec.

    dashboard_port None lets Ray pick 8265 or the next free port (two searches on one machine
    both start); a port given is used as it is, and refused up front when it is taken.
    """

    storage_path: str = "./runs"
    name: str | None = None
    num_trials: int | None = None
    budget: str = "auto"  # auto | preview | full
    address: str | None = None
    resume: bool = False
    smoke_test: bool = False
    dashboard: bool = True
    dashboard_port: int | None = None
    verbose: int = 1
    report: bool = True
    calibrate: bool = True
    checkpoint: str | None = None  # a sampler-only search on this experiment/trial/checkpoint folder
    top_k: int = 1  # with an experiment folder: the best checkpoints of this many trials
    max_failures: int = 2  # restarts of a trial from its last checkpoint when its worker or node dies
    confirm: bool | None = None  # the confirmation stage after the search: None = as the spec says
    mlflow: str | None = None  # an MLflow tracking URI: runs of the search and its trials (search/tracking.py)


def check_options(options: SearchOptions) -> None:
    """Refuse a bad or conflicting option (``ValueError``, one line: flag, value, fix)."""
    _check_counts(options)
    _check_conflicts(options)
    _check_address(options.address)
    if options.dashboard_port is not None:
        _check_port(options.dashboard_port)
    _check_storage(options.storage_path)
    if options.mlflow is not None:
        from search.tracking import check_tracking

        check_tracking(options.mlflow)


def _check_counts(o: SearchOptions) -> None:
    if o.num_trials is not None and o.num_trials < 1:
        raise ValueError(f"--num-trials {o.num_trials}: must be at least 1")
    if o.top_k < 1:
        raise ValueError(f"--top-k {o.top_k}: must be at least 1")
    if o.max_failures < 0:
        raise ValueError(f"--max-failures {o.max_failures}: must be 0 (a lost worker ends the trial) or more")
    if o.budget not in BUDGETS:
        raise ValueError(f"--budget {o.budget!r}: must be one of {', '.join(BUDGETS)}")
    if o.verbose not in VERBOSITY:
        raise ValueError(f"--verbose {o.verbose}: must be 0 (quiet), 1 (progress) or 2 (trial logs too)")


def _check_conflicts(o: SearchOptions) -> None:
    if o.top_k > 1 and o.checkpoint is None:
        raise ValueError(f"--top-k {o.top_k}: needs --checkpoint <experiment folder>")
    if o.resume:
        # a resumed search goes on with the budget and trials it started with (its search.json)
        for flag, given in (
            ("--num-trials", o.num_trials is not None),
            ("--smoke-test", o.smoke_test),
            ("--budget", o.budget != "auto"),
            ("--top-k", o.top_k != 1),
        ):
            if given:
                raise ValueError(
                    f"{flag} with --resume: a resumed search keeps the budget it started with; "
                    f"drop {flag} (or start a new search with --name)"
                )
    if o.address is not None and (o.dashboard_port is not None or not o.dashboard):
        flag = "--dashboard-port" if o.dashboard_port is not None else "--no-dashboard"
        raise ValueError(
            f"{flag} with --address {o.address}: the dashboard belongs to the cluster you join; drop {flag}"
        )
    if o.dashboard_port is not None and not o.dashboard:
        raise ValueError(f"--dashboard-port {o.dashboard_port} with --no-dashboard: give one of them")


def _check_address(address: str | None) -> None:
    if address is not None and not _ADDRESS_RE.match(address):
        raise ValueError(
            f"--address {address!r}: not a Ray address; give auto, HOST:PORT of the head node's GCS "
            f"(ray start --head prints it) or ray://HOST:PORT"
        )


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(
            f"--dashboard-port {port}: must be a port in 1..65535 (or leave it out: Ray picks a free one from 8265)"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ValueError(
                f"--dashboard-port {port}: 127.0.0.1:{port} is already in use (another search or "
                f"program); give another port or leave it out to get a free one"
            ) from None


def _check_storage(storage_path: str) -> None:
    if _URI_RE.match(storage_path):
        _check_storage_uri(storage_path)
        return
    path = Path(storage_path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--storage-path {storage_path!r}: is a file, not a folder; give a folder")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--storage-path {storage_path!r}: {existing} is a file, so the folder cannot be made")
    try:  # write access as the filesystem sees it (os.access says yes to root even on read-only mounts)
        fd, probe = tempfile.mkstemp(prefix=".ncsn-write-probe-", dir=existing)
    except OSError as err:
        why = "is read-only" if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else err.strerror
        raise ValueError(
            f"--storage-path {storage_path!r}: cannot write in {existing} ({why}); give a folder you can write to"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _check_storage_uri(uri: str) -> None:
    """A URI pyarrow makes a filesystem for, where a probe file can be written, read and deleted
    (trainables/contract/storage.py)."""
    from trainables.contract import storage

    scheme = uri.split("://", 1)[0].lower()
    try:
        storage.filesystem(uri)
    except ValueError as err:
        raise ValueError(
            f"--storage-path {uri!r}: {err}; give a folder, s3://bucket/prefix, gs://bucket/prefix "
            f"or another URI pyarrow supports"
        ) from None
    try:
        storage.probe_within(uri)
    except ValueError as err:
        raise ValueError(f"--storage-path {uri!r}: {err}; {_storage_fix(scheme)}") from None


def _storage_fix(scheme: str) -> str:
    if scheme in ("s3", "s3a"):
        return (
            "check that the bucket exists and the credentials and endpoint in the environment "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL)"
        )
    if scheme in ("gs", "gcs"):
        return "check that the bucket exists and the credentials (GOOGLE_APPLICATION_CREDENTIALS)"
    return "check the URI and that this machine can write there"
