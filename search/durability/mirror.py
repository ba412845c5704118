"""``--resume`` of a search kept at a storage URI: the recovery steps work on a local mirror.

With a URI, Ray's files of a search (its experiment snapshot, the searcher's state, every trial's
results and checkpoints) live in ``<URI>/<name>/``, and ``Tuner.restore`` reads them from there.
The steps of :mod:`search.durability` read and change files in a folder, so a resume first
brings the bucket's copy into the driver's local copy (:func:`pull`: every file but the training
state, which no step reads), lets the steps act on it, and writes what they changed back to the
bucket (:meth:`Mirror.push`) before ``Tuner.restore`` runs: folders moved aside move in the bucket
too (state.pt included, on the server), files rewritten (the snapshot's TERMINATED marks) are
uploaded, files removed are deleted.

The driver's own files (``search.json``, ``spec.yaml``, ``optuna.db``, ``driver.json``) are kept
from the local copy when it holds the same search (the same study name in its search.json): the
local study is newer than the bucket's copy of it. On another machine, or after the local copy was
lost, they come from the bucket (the study is copied there as every trial starts and ends,
:class:`search.durability.storage_copies.StorageCopies`); the steps then reconcile it as they do a
local one. For a folder (local or shared storage) the mirror does nothing: the folder is the
experiment.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from trainables.contract import storage
from trainables.contract.layout import (
    CONFIRM_DIR,
    DRIVER_FILE,
    REPORT_DIR,
    SEARCH_FILE,
    SPEC_COPY,
    STUDY_FILE,
    read_search_record,
)

DRIVER_OWN = (SEARCH_FILE, SPEC_COPY, STUDY_FILE, DRIVER_FILE)


def _listing(exp_dir: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file of ``exp_dir`` but the driver's own."""
    if not exp_dir.is_dir():
        return {}
    return {
        p.relative_to(exp_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in exp_dir.rglob("*")
        if p.is_file() and p.relative_to(exp_dir).as_posix() not in DRIVER_OWN
    }


def _under(relative: str, folder: str) -> bool:
    return relative == folder or relative.startswith(folder.rstrip("/") + "/")


@dataclass
class Mirror:
    """What a resume pulled from ``remote`` into ``exp_dir`` (None: a folder, nothing to mirror)."""

    exp_dir: Path
    remote: str | None = None
    pulled: dict[str, str] = field(default_factory=dict)
    moves: list[tuple[str, str]] = field(default_factory=list)

    def moved(self, moves: list[tuple[str, str]]) -> None:
        """Record folders (or files) the recovery steps moved in ``exp_dir``: (from, to), relative."""
        self.moves += moves

    def push(self) -> dict[str, int]:
        """Write the recovery steps' changes to the bucket; return how many files moved, were
        uploaded and deleted there."""
        if self.remote is None:
            return {"moved": 0, "uploaded": 0, "deleted": 0}
        moved = sum(
            storage.move(storage.join(self.remote, src), storage.join(self.remote, dst)) for src, dst in self.moves
        )
        now = _listing(self.exp_dir)
        touched = [path for move in self.moves for path in move]
        changed = [p for p, h in now.items() if self.pulled.get(p) != h and not any(_under(p, t) for t in touched)]
        gone = [p for p in self.pulled if p not in now and not any(_under(p, t) for t in touched)]
        storage.upload(self.exp_dir, self.remote, changed)
        for path in gone:
            storage.delete(storage.join(self.remote, path))
        self.pulled, self.moves = now, []
        return {"moved": moved, "uploaded": len(changed), "deleted": len(gone)}


def pull(storage_path: str, exp_dir: Path) -> Mirror:
    """With a storage URI, make ``exp_dir`` (the driver's local copy) a copy of ``<URI>/<name>/``
    for the recovery steps: Ray's files replaced by the bucket's, without the training state; the
    driver's own files kept when they belong to the same search, else taken from the bucket.
    Nothing for a folder, or when the bucket holds nothing under that name (the resume is then
    refused as for an empty folder)."""
    if not storage.is_uri(storage_path):
        return Mirror(exp_dir)
    remote = storage.join(storage_path, exp_dir.name)
    if not storage.exists(remote):
        return Mirror(exp_dir)
    same = _same_search(remote, exp_dir)
    if exp_dir.is_dir():
        for entry in exp_dir.iterdir():
            if same and entry.name in DRIVER_OWN:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    exp_dir.mkdir(parents=True, exist_ok=True)
    storage.download(remote, exp_dir, skip=(storage.TRAINING_STATE,), keep=DRIVER_OWN if same else ())
    return Mirror(exp_dir, remote, _listing(exp_dir))


def _same_search(remote: str, exp_dir: Path) -> bool:
    """The local copy holds the search the bucket holds: the same study name in both search.json
    (a local copy without one, but with the driver's record, is a search killed before it wrote
    search.json: its own driver.json is newer than the bucket's)."""
    local = read_search_record(exp_dir)
    if not local:
        return (exp_dir / DRIVER_FILE).exists() and not storage.exists(storage.join(remote, SEARCH_FILE))
    fs, path = storage.filesystem(storage.join(remote, SEARCH_FILE))
    try:
        theirs = json.loads(storage.read_bytes(fs, path))
    except (OSError, ValueError):
        return True  # the bucket has no readable search.json: the local one is all there is
    return isinstance(theirs, dict) and theirs.get("study_name") == local.get("study_name")


# ---------------------------------------------------------------------------------------------
# The driver's own files and the trials, between the local copy and the storage URI


def remote_of(storage_path: str, exp_dir: Path) -> str | None:
    return storage.join(storage_path, exp_dir.name) if storage.is_uri(storage_path) else None


def copy_to_storage(storage_path: str, exp_dir: Path, names=(STUDY_FILE, SEARCH_FILE, REPORT_DIR, CONFIRM_DIR)):
    """With a storage URI, copy the driver's files ``names`` of ``exp_dir`` (those there) into
    ``<URI>/<name>/``; nothing for a folder."""
    remote = remote_of(storage_path, exp_dir)
    if remote is not None:
        storage.upload(exp_dir, remote, names)


def fetch_from_storage(storage_path: str, exp_dir: Path, training_state: bool = False) -> None:
    """With a storage URI, bring ``<URI>/<name>/`` into ``exp_dir`` for the closing summary and the
    report: the trials, with the checkpoints' training state only when ``training_state`` (the
    confirmation stage samples them); the driver's own files there are never replaced. Nothing
    for a folder."""
    remote = remote_of(storage_path, exp_dir)
    if remote is not None:
        mine = (SEARCH_FILE, SPEC_COPY, STUDY_FILE, DRIVER_FILE)
        storage.download(remote, exp_dir, skip=mine if training_state else (storage.TRAINING_STATE, *mine))
