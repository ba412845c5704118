"""The Ray cluster a search (or the confirmation stage) runs on.

Local by default (dashboard on 127.0.0.1), or the one ``--address`` names; shut down however the
block ends. On a cluster of more than one node, every node must see the storage before any trial
starts (:func:`check_every_node`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from search.folder import Say
from search.options import SearchOptions
from trainables.contract import storage


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
