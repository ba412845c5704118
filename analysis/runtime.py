"""How the trials ran: the runtime settings as each trial resolved them on its device (device,
amp, compile, CUDA graphs, channels_last), recorded under ``runtime`` in every result row and in
metrics.json (:data:`trainables.contract.layout.RUNTIME_KEY`). Torch-free.

:func:`runtime_columns` turns a trial's last record into ``runtime/<name>`` columns of the trials
frame (and so of leaderboard.csv); :func:`runtime_line` is the report's line about them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from trainables.contract.layout import RUNTIME_KEY

PREFIX = f"{RUNTIME_KEY}/"
# The record's keys in the order the report names them.
SHOWN = ("device", "device_name", "amp", "amp_min_sigma", "amp_levels", "compile_train", "compile_sample")
SHOWN += ("cuda_graphs", "channels_last", "threads")


def runtime_columns(rows: list[dict]) -> dict[str, Any]:
    """``{"runtime/<name>": value}`` from the last of ``rows`` (a trial's result rows) that holds
    a runtime record; empty when none does (a trial of an earlier version, or one that failed
    before its first report)."""
    for row in reversed(rows):
        record = row.get(RUNTIME_KEY)
        if isinstance(record, dict):
            return {f"{PREFIX}{k}": v for k, v in record.items() if isinstance(v, (str, int, float, bool))}
    return {}


def _values(trials: pd.DataFrame, name: str) -> str:
    column = f"{PREFIX}{name}"
    if column not in trials:
        return "?"
    counts = Counter(str(v).lower() if isinstance(v, bool) else str(v) for v in trials[column].dropna())
    if not counts:
        return "?"
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{value} ({n} trials)" for value, n in counts.most_common())


def runtime_line(trials: pd.DataFrame, search: dict) -> str:
    """One line: how the trials ran (every distinct value, with its trial count where they
    differ), or what the spec asked for when no trial recorded it."""
    if not len(trials) or not any(c.startswith(PREFIX) for c in trials.columns):
        asked = ((search.get("spec") or {}).get(RUNTIME_KEY)) or {}
        shown = ", ".join(f"{k} {v}" for k, v in asked.items()) or "the defaults"
        return f"Runtime: {shown} requested (no trial recorded how it ran)"
    v = {name: _values(trials, name) for name in SHOWN}
    if v["amp_levels"] == "?":  # trials of earlier versions, whose amp was bf16 or off
        v["amp_levels"] = _values(trials, "bf16_levels")
    amp = v["amp"]
    if amp in ("bf16", "fp16", "tf32"):  # one precision for every trial
        amp = f"{amp} for sigma >= {v['amp_min_sigma']} ({v['amp_levels']} levels), fp32 below"
    return (
        f"Runtime (as the trials resolved it): device {v['device']} ({v['device_name']}, {v['threads']} threads); "
        f"amp {amp}; compile {v['compile_train']} (training) / {v['compile_sample']} (sampling); "
        f"CUDA graphs {v['cuda_graphs']}; channels_last {v['channels_last']}"
    )
