"""Where experiments are stored: a local folder, a folder on a shared filesystem, or a storage URI.

``--storage-path`` takes a folder (local, or one every node mounts at the same path) or a URI that
pyarrow makes a filesystem for (``pyarrow.fs.FileSystem.from_uri``: ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``hdfs://...``; see https://arrow.apache.org/docs/python/filesystems.html).
Credentials and the endpoint come from the usual environment of each process: for S3
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and, for an
S3-compatible server, ``AWS_ENDPOINT_URL`` (pyarrow reads them itself); for GCS
``GOOGLE_APPLICATION_CREDENTIALS``.

With a URI, Ray writes the trials there (``RunConfig(storage_path=URI)``), while the driver keeps
the files it writes itself (``search.json``, ``spec.yaml``, ``optuna.db``: SQLite cannot live on an
object store) in a local folder, :func:`local_copy`, and copies them into ``<URI>/<name>/``. After
the search, and for ``platform/report.py <URI>``, :func:`download` brings the experiment into that
local folder (checkpoints without the training state, which a report never reads).

Torch-free and Ray-free, so that ``search_spaces`` and ``analysis`` can both use it; pyarrow is
imported inside the functions that need it. Errors are ``ValueError`` with one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
PROBE_PREFIX = ".ncsn-storage-probe-"
# the training state of a checkpoint (trainables/ncsn/train.py): large, and no report reads it
TRAINING_STATE = "state.pt"
CACHE_ENV = "NCSN_STORAGE_CACHE"
PROBE_TIMEOUT_S = 30.0


def is_uri(storage: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (s3://, gs://, hdfs://, file://, ...), False for a plain path."""
    return bool(_URI_RE.match(str(storage)))


def join(uri: str, *names: str) -> str:
    """``uri/name/...`` (URIs always use ``/``)."""
    return "/".join([uri.rstrip("/"), *(n.strip("/") for n in names)])


def first_line(err: BaseException) -> str:
    """The first line of an error's text, without the request id S3 errors end with."""
    text = str(err).strip().splitlines()
    line = re.sub(r"\s*\(Request ID: [^)]*\)", "", text[0]) if text else err.__class__.__name__
    return line[:300]


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) of a storage URI; ``ValueError`` when pyarrow cannot make a
    filesystem for it (an unknown scheme, a library the scheme needs is missing)."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (ValueError, OSError, TypeError, ImportError) as err:
        scheme = _URI_RE.match(uri)
        raise ValueError(
            f"no filesystem for {scheme.group(1) if scheme else uri!r}:// URIs here ({first_line(err)})"
        ) from None


def location(storage: str | os.PathLike) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of a storage path or URI; a local path made absolute."""
    if is_uri(storage):
        return filesystem(str(storage))
    import pyarrow.fs

    return pyarrow.fs.LocalFileSystem(), str(Path(storage).expanduser().resolve())


def write_bytes(fs: Any, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def read_bytes(fs: Any, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()


def probe(storage: str | os.PathLike, name: str | None = None, expect: bytes | None = None) -> None:
    """Write, read back and delete a small probe file under ``storage`` (a path or URI); with
    ``expect``, first read the file ``name`` there and check it holds ``expect`` (a file another
    process wrote: proof that both see the same storage). ``OSError`` or ``ValueError`` when any
    step fails."""
    fs, root = location(storage)
    if name is not None:
        seen = read_bytes(fs, f"{root}/{name}")
        if seen != expect:
            raise ValueError(f"{name} holds other bytes here than the driver wrote")
    token = uuid.uuid4().hex.encode()
    path = f"{root}/{PROBE_PREFIX}{token.decode()[:12]}"
    write_bytes(fs, path, token)
    try:
        if read_bytes(fs, path) != token:
            raise ValueError("a file written there reads back different")
    finally:
        fs.delete_file(path)


def probe_within(storage: str | os.PathLike, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """:func:`probe` that gives up after ``timeout_s`` (a filesystem whose server never answers
    retries for minutes); ``ValueError`` with one line when the probe fails or does not end."""
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            probe(storage)
            outcome["error"] = None
        except BaseException as err:  # reported below, in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=run, name="storage-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "error" not in outcome:
        raise ValueError(f"no answer within {timeout_s:.0f} s to writing a probe file there")
    err = outcome["error"]
    if err is not None:
        raise ValueError(f"cannot write, read and delete a probe file there ({first_line(err)})")


def node_probe(storage: str, name: str, expect: bytes) -> str | None:
    """Run on one node (a Ray task): None when this node sees the file ``name`` the driver wrote
    under ``storage`` and can write, read and delete its own; else why not, in a few words."""
    try:
        probe(storage, name, expect)
    except FileNotFoundError:
        return "does not see the driver's probe file there"
    except (OSError, ValueError) as err:
        return first_line(err)
    return None


def exists(uri: str) -> bool:
    """True when ``uri`` is a file or holds anything (an object store has no empty folders)."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.File:
        return True
    if info.type == pyarrow.fs.FileType.NotFound:
        return False
    return bool(fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True, recursive=False)))


def upload(local: Path, uri: str, names: Iterable[str]) -> list[str]:
    """Copy the files and folders ``names`` of the local folder ``local`` to ``uri/<name>``
    (those that exist); return the names copied."""
    fs, root = filesystem(uri)
    copied = []
    for name in names:
        source = local / name
        if source.is_file():
            files = [source]
        elif source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file())
        else:
            continue
        for path in files:
            write_bytes(fs, f"{root}/{path.relative_to(local).as_posix()}", path.read_bytes())
        copied.append(name)
    return copied


def _files(uri: str) -> tuple[Any, list[tuple[str, str]]]:
    """(filesystem, [(path on it, path relative to ``uri``)]) of every file under ``uri``."""
    import pyarrow.fs

    fs, root = filesystem(uri)
    root = root.rstrip("/")
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True, recursive=True))
    found = []
    for info in infos:
        relative = info.path[len(root) :].lstrip("/")
        if info.type == pyarrow.fs.FileType.File and relative and ".." not in Path(relative).parts:
            found.append((info.path, relative))
    return fs, found


def download(uri: str, local: Path, skip: Iterable[str] = (TRAINING_STATE,), keep: Iterable[str] = ()) -> int:
    """Copy every file under ``uri`` into the folder ``local`` (made if missing), but files named
    as in ``skip``, and the paths ``keep`` (relative to ``local``) where ``local`` has them
    already; return how many were copied. ``ValueError`` when ``uri`` holds nothing."""
    fs, files = _files(uri)
    if not files:
        raise ValueError(f"{uri} holds no files; check the URI (an experiment is <storage-path>/<name>)")
    skip, keep = set(skip), set(keep)
    count = 0
    for path, relative in files:
        if Path(relative).name in skip or (relative in keep and (local / relative).exists()):
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.part")
        tmp.write_bytes(read_bytes(fs, path))
        os.replace(tmp, target)
        count += 1
    return count


def move(source: str, target: str) -> int:
    """Move the file or every file under the URI ``source`` to ``target`` (on an object store, a
    copy on the server and a delete); return how many files moved."""
    fs, files = _files(source)
    _, target_root = filesystem(target)
    target_root = target_root.rstrip("/")
    if not files:  # a file, or nothing
        _, path = filesystem(source)
        import pyarrow.fs

        if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
            return 0
        files = [(path, "")]
    for path, relative in files:
        fs.copy_file(path, f"{target_root}/{relative}" if relative else target_root)
        fs.delete_file(path)
    if files[0][1]:  # a folder: no empty folder markers left behind on an object store
        with contextlib.suppress(OSError):
            fs.delete_dir(filesystem(source)[1])
    return len(files)


def delete(uri: str) -> None:
    """Delete the file ``uri`` (nothing when it is not there)."""
    fs, path = filesystem(uri)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def cache_root() -> Path:
    """Where local copies of URI storage live: ``$NCSN_STORAGE_CACHE``, else ``storage/`` in the
    user's cache folder (``~/.cache/ncsn-search/storage`` on Linux, beside the MNIST copy)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ncsn-search")) / "storage"


def local_copy(uri: str) -> Path:
    """The local folder that stands for ``uri`` on this machine: ``<cache_root>/<scheme>/<rest>``
    (``s3://bucket/runs/sigmas`` -> ``.../storage/s3/bucket/runs/sigmas``)."""
    match = _URI_RE.match(uri)
    if match is None:
        raise ValueError(f"{uri!r} is not a storage URI")
    rest = [p for p in uri[match.end() :].split("/") if p and p not in (".", "..")]
    return cache_root().joinpath(match.group(1).lower(), *rest)
