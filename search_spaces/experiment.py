"""What every search does with its experiment folder and its Ray cluster, whatever its kind.

The folder ``<storage_path>/<name>/`` (file names in :mod:`trainables.layout`): refused when it
already holds something and ``--resume`` was not given; ``search.json`` (the spec as run, its
kind, budget mode, study name, warm starts and what the kind adds) written atomically before any
trial starts; ``spec.yaml`` a copy of the file the search started from. The Ray cluster is local
(dashboard on 127.0.0.1) unless ``--address`` names one, and is shut down however the search ends.

With a storage URI (:mod:`trainables.storage`) Ray writes the trials to ``<URI>/<name>/`` and the
folder above is the driver's local copy of it (:func:`trainables.storage.local_copy`): the driver's
own files are written there and copied to the URI (:func:`copy_to_storage`, at the start and the
end of ``Tuner.fit`` by :class:`search_spaces.storage_copies.StorageCopies`, and after the report),
and the trials are brought back into it when ``Tuner.fit`` ends (:func:`fetch_from_storage`; a
``--resume`` brings everything first, :mod:`search_spaces.mirror`). On a
cluster of more than one node, every node must see the storage before any trial starts
(:func:`check_every_node`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from search_spaces.loading import parse_spec
from search_spaces.options import SearchOptions
from search_spaces.schema import SearchSpec
from search_spaces.tuning import tune_settings
from search_spaces.validate import override, with_preview
from trainables import storage
from trainables.layout import (
    CONFIRM_DIR,
    DRIVER_FILE,
    REPORT_DIR,
    SEARCH_COPY,
    SEARCH_FILE,
    SPEC_COPY,
    STUDY_FILE,
    experiment_kind,
    read_search_record,
)

Say = Callable[[str], None]

# --smoke-test: whatever the spec, a tiny run that finishes in about a minute on a CPU.
SMOKE_BUDGET = {"num_trials": 2, "max_concurrent": 2, "iterations": 20, "eval_every": 10, "eval_samples": 32}
SMOKE_FIXED = {"ngf": 8, "n_steps_each": 2}
SMOKE_SCHEDULER = {"grace_period": 10}


def experiment_dir(options: SearchOptions, default_name: str) -> Path:
    """``<storage_path>/<--name or default_name>``, absolute; with a storage URI, the driver's
    local copy of ``<URI>/<name>``."""
    name = options.name or default_name
    if storage.is_uri(options.storage_path):
        return storage.local_copy(storage.join(options.storage_path, name))
    return Path(options.storage_path).expanduser().resolve() / name


def ray_storage_path(options: SearchOptions, exp_dir: Path) -> str:
    """What Ray's ``RunConfig(storage_path=...)`` gets: the URI itself, or the folder above
    ``exp_dir``."""
    return options.storage_path if storage.is_uri(options.storage_path) else str(exp_dir.parent)


def _remote(storage_path: str, exp_dir: Path) -> str | None:
    return storage.join(storage_path, exp_dir.name) if storage.is_uri(storage_path) else None


def copy_to_storage(storage_path: str, exp_dir: Path, names=(STUDY_FILE, SEARCH_FILE, REPORT_DIR, CONFIRM_DIR)):
    """With a storage URI, copy the driver's files ``names`` of ``exp_dir`` (those there) into
    ``<URI>/<name>/``; nothing for a folder."""
    remote = _remote(storage_path, exp_dir)
    if remote is not None:
        storage.upload(exp_dir, remote, names)


def fetch_from_storage(storage_path: str, exp_dir: Path, training_state: bool = False) -> None:
    """With a storage URI, bring ``<URI>/<name>/`` into ``exp_dir`` for the closing summary and the
    report: the trials, with the checkpoints' training state only when ``training_state`` (the
    confirmation stage samples them); the driver's own files there are never replaced. Nothing
    for a folder."""
    remote = _remote(storage_path, exp_dir)
    if remote is not None:
        mine = (SEARCH_FILE, SPEC_COPY, STUDY_FILE, DRIVER_FILE)
        storage.download(remote, exp_dir, skip=mine if training_state else (storage.TRAINING_STATE, *mine))


def check_folder(exp_dir: Path, options: SearchOptions, kind: str) -> None:
    """Refuse to start over a folder that holds something, or to resume one that holds no search
    of ``kind``; ``ValueError`` with one line saying what to pass instead."""
    if options.resume:
        found = experiment_kind(exp_dir)
        if found != kind:
            what = "no search" if found is None else f"a {found} search, not a {kind} one"
            raise ValueError(f"--resume: {exp_dir} holds {what} ({SEARCH_FILE}); check --storage-path and --name")
    elif exp_dir.exists() and any(exp_dir.iterdir()):
        raise ValueError(
            f"experiment folder {exp_dir} already exists; pass --resume to continue it or --name to start a new one"
        )
    elif (remote := _remote(options.storage_path, exp_dir)) is not None and storage.exists(remote):
        raise ValueError(
            f"experiment {remote} already exists; pass --resume to continue it or --name to start a new one"
        )


def recorded_spec(exp_dir: Path) -> tuple[SearchSpec, dict]:
    """The spec a search ran with, and its whole search.json, for a resume."""
    record = read_search_record(exp_dir)
    spec = parse_spec(record["spec"], file=str(exp_dir / SEARCH_FILE), source=record.get("source"))
    return spec, record


def write_record(exp_dir: Path, spec: SearchSpec, record: dict) -> None:
    """search.json (atomically: a reader never sees half a file), its copy in last_snapshot/
    (what a reader falls back on when search.json is damaged: :func:`trainables.layout.read_search_record`)
    and the spec file's copy."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    if spec.source and Path(spec.source).exists():
        shutil.copyfile(spec.source, exp_dir / SPEC_COPY)
    text = json.dumps(record, indent=1, default=str)
    for path in (exp_dir / SEARCH_COPY, exp_dir / SEARCH_FILE):
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def base_record(
    spec: SearchSpec, kind: str, options: SearchOptions, gpus: float, study_name: str, time_attr: str
) -> dict:
    """The part of search.json every kind writes."""
    return {
        "kind": kind,
        "spec": spec.to_dict(),
        "source": str(spec.source) if spec.source else None,
        "budget_mode": budget_mode(options, gpus),
        "study_name": study_name,
        "time_attr": time_attr,
        "resources": resources_for(spec, gpus),
        "max_failures": options.max_failures,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        # a storage URI: where the experiment lives (this folder is the driver's copy of it)
        **({"storage_uri": options.storage_path} if storage.is_uri(options.storage_path) else {}),
    }


def budget_mode(options: SearchOptions, gpus: float) -> str:
    """smoke | preview | full: which budget of the spec ran."""
    if options.smoke_test:
        return "smoke"
    if options.budget == "auto":
        return "full" if gpus > 0 else "preview"
    return options.budget


def choose_budget(spec: SearchSpec, options: SearchOptions, gpus: float, say: Say) -> SearchSpec:
    """Apply the CPU preview where there is no GPU (unless ``--budget full``), then overrides."""
    preview = options.budget == "preview" or (options.budget == "auto" and gpus == 0)
    if preview:
        if options.budget == "auto":
            say(
                "notice: no GPU in this Ray cluster, so this runs the spec's CPU preview budget "
                "(fewer, shorter trials); pass --budget full to run the full budget anyway"
            )
        spec = with_preview(spec)
    if options.smoke_test:
        fixed = {k: v for k, v in SMOKE_FIXED.items() if k not in spec.params}
        spec = override(spec, budget=SMOKE_BUDGET, fixed=fixed, scheduler=SMOKE_SCHEDULER)
    if options.num_trials is not None:
        spec = override(spec, budget={"num_trials": options.num_trials})
    if options.name:
        spec = override(spec, name=options.name)
    return spec


def resources_for(spec: SearchSpec, gpus: float) -> dict[str, float]:
    """A trial's resources: the spec's, without the GPU share where the cluster has no GPU."""
    return {k: float(v) for k, v in tune_settings(spec, gpu_available=gpus > 0)["resources"].items()}


def _keeping_signal_handlers(start):
    """``start()`` (ray.init), with the Python handlers of SIGTERM and SIGHUP the process had
    put back afterwards: the driver's core worker installs its own (print a stack, die), which
    would bypass the command line's graceful stop (platform/run_search.py)."""
    import signal
    import threading

    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return start()
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in kept.items():
                if callable(handler):  # a Python handler (not the default or ignore)
                    signal.signal(sig, handler)


@contextlib.contextmanager
def ray_cluster(options: SearchOptions, say: Say) -> Iterator[dict]:
    """Start a local Ray cluster (or join ``options.address``) with the dashboard on 127.0.0.1;
    yield its resources ({"CPU": n, "GPU": m, ...}); shut Ray down however the block ends."""
    import ray

    kwargs: dict[str, Any] = {
        "log_to_driver": options.verbose >= 2,
        "configure_logging": True,
        "logging_level": "WARNING",
    }
    if options.address:
        kwargs["address"] = options.address
    elif options.dashboard:
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1")
        if options.dashboard_port is not None:  # else Ray takes 8265 or the next free port
            kwargs["dashboard_port"] = options.dashboard_port
    else:
        kwargs["include_dashboard"] = False
    context = _keeping_signal_handlers(lambda: ray.init(**kwargs))
    try:
        url = getattr(context, "dashboard_url", None)
        if url:
            say(f"Ray dashboard: http://{url}")
            token = Path.home() / ".ray" / "auth_token"
            if token.exists():
                say(
                    f"  token authentication is on: the token is in {token}; the browser asks for it, "
                    f"and HTTP clients send 'Authorization: Bearer <token>'"
                )
        check_every_node(options.storage_path)
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


class StorageUnreachable(ValueError):
    """A node of the cluster cannot use ``--storage-path``: raised before any trial starts."""


def check_every_node(storage_path: str, timeout_s: float = 120.0) -> None:
    """On a cluster of more than one alive node, a tiny task on each node (pinned to it) reads a
    probe file the driver wrote under the storage and writes, reads and deletes one of its own;
    :class:`StorageUnreachable` with one line naming the first node that cannot, before any trial starts. A
    local folder that is not on a filesystem every node mounts fails here."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    fs, root = storage.location(storage_path)
    token = uuid.uuid4().hex
    name = f"{storage.PROBE_PREFIX}driver-{token[:12]}"
    storage.write_bytes(fs, f"{root}/{name}", token.encode())
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(storage.node_probe)
        where = storage_path if storage.is_uri(storage_path) else root  # as the nodes resolve it
        refs = [
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                where, name, token.encode()
            )
            for n in nodes
        ]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        answers = [_answer(r, r in ready, timeout_s) for r in refs]
    finally:
        fs.delete_file(f"{root}/{name}")
    for node, why in zip(nodes, answers):
        if why is None:
            continue
        at = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        if storage.is_uri(storage_path):
            raise StorageUnreachable(
                f"--storage-path {where}: {at} cannot use it ({why}); give every node the "
                f"credentials and endpoint in its environment, or another storage"
            )
        raise StorageUnreachable(
            f"--storage-path {where}: {at} {why} (a local folder, not a filesystem every node "
            f"mounts); give a folder on NFS or another shared filesystem mounted at the same path "
            f"on every node, or a storage URI such as s3://bucket/prefix"
        )


def _answer(ref, ready: bool, timeout_s: float) -> str | None:
    import ray

    if not ready:
        return f"gave no answer within {timeout_s:.0f} s"
    try:
        return ray.get(ref)
    except Exception as err:  # the task itself failed (this package missing on the node, ...)
        return f"could not run the probe task ({storage.first_line(err)})"
