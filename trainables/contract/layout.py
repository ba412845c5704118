"""The on-disk contract of an experiment folder: every file and folder name, the experiment
kinds, the time attributes, the warm-start labels and the trial statuses.

Written by the searches (``search_spaces``) and the trainables, read by ``analysis``. This module
is the only place those strings are defined; it imports nothing heavy (no torch, Ray or pandas),
so every layer can depend on it. ::

    <storage_path>/<name>/
        search.json               the resolved spec, kind, budget mode, warm starts, study name
        spec.yaml                 a copy of the file the search was started from
        optuna.db                 the Optuna study (SQLite)
        experiment_state-*.json   Ray's snapshots of the trial table
        driver.json               the driver's PID, options and spec, its cluster's PIDs
                                  (search/durability/: what --resume reconciles)
        orphaned/                 trial folders a killed driver's snapshot lost (never counted)
        last_snapshot/            the last whole copy of Ray's snapshot files
        report/                   report.html, report.md, leaderboard.csv, *.png
        compile_cache/            inductor's caches, shared by the trials (with compile on)
        confirm/                  the confirmation stage (search/confirmation/stage.py; never trains)
            plan.json             what it samples: settings, protocol, the trials and why, the cost
            summary.json          the confirmed ranking: values, 95% intervals, paired verdicts
            trial_<id>/seed<s>_n<N>.json, .pt, .png   one (trial, seed): metrics and FID_inf;
                                  features and logits (the paired bootstrap); 64 of its samples
        trial_<id>/               one folder per trial (Ray writes the first four files)
            result.json           JSON lines, one per report
            progress.csv
            params.json           the trial config
            error.txt             only when the trial raised
            events.out.tfevents.*
            checkpoint_NNNNNN/    state.pt, metrics.json, samples.png, trajectory.png
                                  (a sampler trial: samples.pt, metrics.json, samples.png)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# --- the experiment folder ------------------------------------------------------------------
SEARCH_FILE = "search.json"
SPEC_COPY = "spec.yaml"
STUDY_FILE = "optuna.db"
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
REPORT_DIR = "report"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
LEADERBOARD_CSV = "leaderboard.csv"
COMPILE_CACHE_DIR = "compile_cache"  # TORCHINDUCTOR_CACHE_DIR of every trial of the search
DRIVER_FILE = "driver.json"  # the driver, its options and its cluster's PIDs (search/durability/)
LAST_SNAPSHOT_DIR = "last_snapshot"  # the last whole copy of Ray's snapshot (a full disk cuts one short)
ORPHANED_DIR = "orphaned"  # trial folders Ray's snapshot lost when a driver was killed (never counted)

# --- the confirmation stage: <experiment>/confirm/ -------------------------------------------
CONFIRM_DIR = "confirm"
CONFIRM_PLAN = "plan.json"
CONFIRM_SUMMARY = "summary.json"
CONFIRM_RESULT_SUFFIX = ".json"  # one (trial, seed): its record, written last (its presence = done)
CONFIRM_FEATURES_SUFFIX = ".pt"  # its features and logits (torch.load with weights_only=True)
CONFIRM_GRID_SUFFIX = ".png"  # its first 64 samples
CONFIRM_TOP = "top"  # why a trial is confirmed: among the search's top K (else its warm-start labels)

# --- a trial folder (Ray's files) -----------------------------------------------------------
TRIAL_PREFIX = "trial_"
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
ERROR_FILE = "error.txt"
CHECKPOINT_GLOB = "checkpoint_*"

# --- a checkpoint folder (the trainables' files) --------------------------------------------
STATE_FILE = "state.pt"  # training state: model, EMA, optimiser, step, RNG
METRICS_FILE = "metrics.json"  # {"metrics", "counters", "config", "runtime"[, "sampler"]}
# The runtime settings as resolved in a trial (device, amp, compile, ...): a key of metrics.json
# and of every result row.
RUNTIME_KEY = "runtime"
SAMPLES_FILE = "samples.png"  # the scored sample grid
TRAJECTORY_FILE = "trajectory.png"  # a Langevin trajectory strip
SAMPLES_TENSOR = "samples.pt"  # a sampler trial's samples so far (resumes a look)

# --- experiment kinds, written into search.json as "kind" -----------------------------------
JOINT = "joint"  # trains networks and samples from them
SAMPLER = "sampler"  # tunes only the sampler on frozen checkpoints
KINDS = (JOINT, SAMPLER)

# --- ASHA's time attribute of each kind (a key of every reported result) ---------------------
TRAIN_TIME_ATTR = "iterations"  # training iterations
SAMPLER_TIME_ATTR = "samples_scored"  # samples drawn and scored so far
TIME_ATTRS = {JOINT: TRAIN_TIME_ATTR, SAMPLER: SAMPLER_TIME_ATTR}

# --- warm-start labels ----------------------------------------------------------------------
WARM_2019 = "ncsn_2019_mnist"  # joint: the 2019 NCSN MNIST setting
WARM_NCSNV2 = "ncsnv2_mnist"  # joint: the NCSNv2 recommended setting
WARM_TRAINED_WITH = "trained_with"  # sampler: the checkpoint's own sampler
WARM_TECHNIQUE4 = "ncsnv2_technique4"  # sampler: NCSNv2 technique-4 step, final denoising
WARM_START_NAMES = {
    WARM_2019: "the 2019 NCSN MNIST setting (Song & Ermon 2019)",
    WARM_NCSNV2: "the NCSNv2 recommended setting (Song & Ermon 2020)",
    WARM_TRAINED_WITH: "the trained-with sampler",
    WARM_TECHNIQUE4: "the NCSNv2 technique-4 sampler",
}


def warm_point(warm: dict) -> dict:
    """The config values a warm-start entry of search.json fixes (its checkpoint, where it names
    one, and its params)."""
    point = {"checkpoint": warm["checkpoint"]} if warm.get("checkpoint") is not None else {}
    return {**point, **(warm.get("params") or {})}


def same_value(a: Any, b: Any) -> bool:
    """Whether a trial's config value is a warm start's value: equal, numbers to 1e-9 relative
    (a value that went through JSON or Optuna's float storage compares equal)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def warm_label(config: dict, warm_start: list[dict]) -> str:
    """The label of the first warm start a trial config reproduces ("" if none): every value of
    its point must match (:func:`same_value`)."""
    for warm in warm_start:
        point = warm_point(warm)
        if point and all(same_value(config.get(k), v) for k, v in point.items()):
            return str(warm.get("label") or "")
    return ""


# --- trial statuses, derived from a trial folder's files ------------------------------------
FINISHED = "finished"  # reached the budget (iterations, or the last look)
STOPPED = "stopped"  # ended early by ASHA
DIVERGED = "diverged"  # a non-finite loss or chain ended it (stop_reason says where)
ERRORED = "errored"  # raised (Ray wrote error.txt, or the experiment state says ERROR)
UNFINISHED = "unfinished"  # no final result yet: still running, or its run was interrupted
STATUSES = (FINISHED, STOPPED, DIVERGED, ERRORED, UNFINISHED)

# Ray's own trial statuses as recorded in experiment_state-*.json
RAY_TERMINATED = "TERMINATED"
RAY_ERROR = "ERROR"


def surviving_checkpoint(folder: str | Path, marker: str) -> Path | None:
    """``folder`` if it holds its ``marker`` file (the training state, the sampler's samples),
    else the newest sibling checkpoint that does (Ray's snapshot may name a checkpoint that
    ``num_to_keep`` deleted since), else None: the trial starts over."""
    folder = Path(folder)
    if (folder / marker).is_file():
        return folder
    found = [p for p in folder.parent.glob(CHECKPOINT_GLOB) if (p / marker).is_file()]
    return max(found, key=lambda p: p.name) if found else None


def trial_dirname(trial_id: str) -> str:
    """The folder name of a trial (Ray's default spells out every parameter)."""
    return f"{TRIAL_PREFIX}{trial_id}"


def confirm_stem(seed: int, samples: int) -> str:
    """File stem of one confirmation result under ``confirm/trial_<id>/``: seed index and sample
    count, so confirmations at different N never overwrite each other."""
    return f"seed{seed}_n{samples}"


SEARCH_COPY = f"{LAST_SNAPSHOT_DIR}/{SEARCH_FILE}"  # search.json's copy, written with it


def _json_object(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def read_search_record(exp_dir: str | Path) -> dict:
    """``search.json`` of an experiment folder; where it is missing or not a JSON object (a file
    cut short, overwritten), the copy written with it (:data:`SEARCH_COPY`); ``{}`` when neither
    reads."""
    return _json_object(Path(exp_dir) / SEARCH_FILE) or _json_object(Path(exp_dir) / SEARCH_COPY)


def search_record_damaged(exp_dir: str | Path) -> bool:
    """search.json is there but unreadable, or gone while its copy is there."""
    exp_dir = Path(exp_dir)
    return not _json_object(exp_dir / SEARCH_FILE) and (
        (exp_dir / SEARCH_FILE).exists() or (exp_dir / SEARCH_COPY).exists()
    )


def experiment_kind(exp_dir: str | Path) -> str | None:
    """The kind of the search in ``exp_dir`` (:data:`JOINT` or :data:`SAMPLER`), None without a
    readable search.json. Folders written before the kind was recorded are joint searches."""
    record = read_search_record(exp_dir)
    if not record:
        return None
    return record.get("kind") or JOINT


def linked_view(exp_dir: str | Path, target: str | Path, trials: int | None = None, leave_out: tuple = ()) -> Path:
    """A folder ``target`` that reads as ``exp_dir`` (each entry a symbolic link to the original),
    with only its first ``trials`` trial folders (all with None) and without the entries named in
    ``leave_out``: what a script's ``--smoke-test`` works on, so that its outputs never mix with
    the experiment's own and nothing of the experiment is changed. Returns ``target``."""
    exp_dir, target = Path(exp_dir).resolve(), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    kept = sorted(p for p in exp_dir.iterdir() if p.name.startswith(TRIAL_PREFIX) and p.is_dir())
    kept = set(kept if trials is None else kept[:trials])
    for entry in sorted(exp_dir.iterdir()):
        if entry.name in leave_out or (entry.name.startswith(TRIAL_PREFIX) and entry.is_dir() and entry not in kept):
            continue
        (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return target
