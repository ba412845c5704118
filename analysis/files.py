"""The files of an experiment folder, read as plain Python (no pandas, no torch).

File and folder names come from :mod:`trainables.contract.layout`. Every reader here tolerates what a
running, interrupted or failed search leaves behind: a missing file reads as empty, a line cut
short is counted and skipped, an unreadable JSON file adds a warning.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from trainables.contract.layout import (
    ERROR_FILE,
    EXPERIMENT_STATE_GLOB,
    METRICS_FILE,
    PARAMS_FILE,
    REPORT_DIR,
    RESULT_FILE,
    TRIAL_PREFIX,
)


def read_result_rows(path: Path) -> tuple[list[dict], int]:
    """Ray's ``result.json`` as a list of dicts, and the number of lines that did not parse.

    Blank lines are skipped; a line cut short (a trial killed while Ray was writing) or otherwise
    not a JSON object is counted as bad and skipped. ``Infinity``/``NaN`` parse as floats (a
    diverged trial reports ``inf``). A missing file gives ``([], 0)``.
    """
    try:
        text = Path(path).read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return [], 0
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def read_json(path: Path, warnings: list[str]) -> dict:
    """A JSON object file; ``{}`` when missing, and a warning when present but unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        warnings.append(f"{Path(path).name}: unreadable ({err.__class__.__name__}: {err})")
        return {}
    return data if isinstance(data, dict) else {}


def read_trial_states(exp_dir: Path, warnings: list[str] | None = None) -> dict[str, dict]:
    """Ray's trial records from the newest ``experiment_state-*.json``, keyed by trial folder name:
    ``{"trial_id": ..., "status": "TERMINATED" | "ERROR" | "RUNNING" | "PENDING" | ...}``.

    Ray writes ``{"trial_data": [[<trial JSON text>, <runtime JSON text>], ...], ...}`` now and
    then; the file may be missing or behind the trial files.
    """
    warnings = warnings if warnings is not None else []
    states: dict[str, dict] = {}
    for path in sorted(Path(exp_dir).glob(EXPERIMENT_STATE_GLOB))[-1:]:
        data = read_json(path, warnings)
        for entry in data.get("trial_data") or []:
            try:
                trial = json.loads(entry[0]) if isinstance(entry, (list, tuple)) else json.loads(entry)
                logdir = Path(trial.get("relative_logdir") or "").name
                if logdir:
                    states[logdir] = {"trial_id": trial.get("trial_id"), "status": trial.get("status")}
            except (TypeError, ValueError, IndexError, AttributeError) as err:
                warnings.append(f"{path.name}: a trial record did not parse ({err.__class__.__name__})")
    return states


def error_summary(path: Path) -> str | None:
    """The last non-empty line of error.txt (the exception), or None when there is no error file."""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    return lines[-1][:300] if lines else f"{ERROR_FILE} is empty"


# trial_<id> (this project's folders), then Ray's default <trainable>_<id>_<n>_<params...>
_TRIAL_ID = (
    re.compile(rf"^{TRIAL_PREFIX}([0-9A-Za-z_]+)$"),
    re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z]+)*_([0-9a-f]{5,})_\d+"),
)


def trial_id_from_name(name: str) -> str:
    """The trial id in a trial folder's name (the name itself when it follows neither pattern)."""
    for pattern in _TRIAL_ID:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return name


def trial_dirs(exp_dir: Path) -> list[Path]:
    """Sub-folders of ``exp_dir`` that hold a trial (any of result.json, params.json, error.txt)."""
    return [
        child
        for child in sorted(Path(exp_dir).iterdir())
        if child.is_dir()
        and child.name != REPORT_DIR
        and any((child / f).exists() for f in (RESULT_FILE, PARAMS_FILE, ERROR_FILE))
    ]


def checkpoint_record(checkpoint: str | Path) -> dict:
    """``metrics.json`` of a checkpoint folder ({} if missing): the full metric record (class
    histogram and protocol included), the counters and the config."""
    try:
        record = json.loads((Path(checkpoint) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
