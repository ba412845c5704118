"""The confirmation stage's files under ``<experiment>/confirm/``: one result per (trial, seed,
sample count), its features and its sample grid, written atomically as each task ends, so an
interrupted stage resumes where it stopped; read back by the stage and by the report.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from search.confirmation.select import ConfirmTrial
from trainables.contract.layout import (
    CONFIRM_DIR,
    CONFIRM_FEATURES_SUFFIX,
    CONFIRM_GRID_SUFFIX,
    CONFIRM_RESULT_SUFFIX,
    confirm_stem,
    same_value,
    trial_dirname,
)


def confirm_dir(exp_dir: Path) -> Path:
    return Path(exp_dir) / CONFIRM_DIR


def result_paths(exp_dir: Path, trial: str, seed: int, samples: int) -> tuple[Path, Path, Path]:
    """(record, features, grid) of one (trial, seed) at N = ``samples``."""
    stem = Path(exp_dir) / CONFIRM_DIR / trial_dirname(trial) / confirm_stem(seed, samples)
    return (
        stem.with_suffix(CONFIRM_RESULT_SUFFIX),
        stem.with_suffix(CONFIRM_FEATURES_SUFFIX),
        stem.with_suffix(CONFIRM_GRID_SUFFIX),
    )


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a reader never sees half a file


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1, default=str).encode()


def read_result(exp_dir: Path, trial: ConfirmTrial, seed: int, samples: int, search_seed: int) -> dict | None:
    """A (trial, seed) result already on disk for this checkpoint, sampler and protocol seed, or
    None (missing, unreadable, or made for something else: it is sampled again)."""
    record_path, features_path, _ = result_paths(exp_dir, trial.trial_id, seed, samples)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    same = (
        record.get("checkpoint") == str(Path(trial.checkpoint).resolve())
        and record.get("samples") == samples
        and (record.get("noise") or {}).get("search_seed") == search_seed
        and all(same_value(record.get("sampler", {}).get(k), v) for k, v in trial.sampler.items())
    )
    if not same or (not record.get("diverged") and not features_path.is_file()):
        return None
    return record


def write_result(exp_dir: Path, trial_id: str, seed: int, samples: int, out: dict) -> None:
    """Write one task's result: features and grid first, the record last (its presence = done)."""
    import torch

    record_path, features_path, grid_path = result_paths(exp_dir, trial_id, seed, samples)
    if out.get("features") is not None:
        buffer = io.BytesIO()
        torch.save({"features": out["features"], "logits": out["logits"]}, buffer)
        write_atomic(features_path, buffer.getvalue())
    if out.get("grid"):
        write_atomic(grid_path, out["grid"])
    write_atomic(record_path, json_bytes(out["record"]))


# ---------------------------------------------------------------------------------------------
# The stage
