"""The report of a sampler-only search: what the sampler alone gained on a frozen checkpoint.

A sampler search (:mod:`search_spaces.sampler_search`) scores each trial at growing sample counts
("looks", ASHA's fidelity). Values at different sample counts are different evaluation protocols
(FID is biased upwards at small N), so every comparison here is made at one look: the best
sampler against the checkpoint's trained-with sampler and the NCSNv2 technique-4 sampler (the
warm starts) at the largest look both reached, and against the checkpoint's original score from
the joint search (scored on its own sample count, stated beside it).

:func:`write_sampler_report` writes into ``<exp>/report/``: ``report.md``, ``report.html``
(self-contained), ``leaderboard.csv`` and the PNG plots ``sampler_vs_step.png`` (quality against
the step size), ``sampler_front.png`` (quality against network evaluations per sample, with the
quality-versus-compute front at each look) and ``sampler_samples.png`` (sample grids).

    python -m analysis.sampler_report runs/langevin-sampler
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.load import (ERROR_FILE, PARAMS_FILE, REPORT_DIR, RESULT_FILE, finite, read_result_rows,
                           read_trial_states, trial_dirs)
from analysis.plots import plot_sample_panels
from analysis.report import Block, fmt, relation, render_html, render_markdown
from search_spaces.runner import SEARCH_FILE
from search_spaces.sampler_search import SAMPLER_KIND, TIME_ATTR, WARM_NCSNV2, WARM_TRAINED
from trainables.quality import METRICS

SAMPLER_COLUMNS = ("step_lr", "n_steps_each", "denoise", "skip_levels", "level_stride")
PLOTS = ("sampler_vs_step.png", "sampler_front.png", "sampler_samples.png")
WARM_NAMES = {WARM_TRAINED: "the trained-with sampler", WARM_NCSNV2: "the NCSNv2 technique-4 sampler"}
FINISHED, STOPPED, DIVERGED, ERRORED, UNFINISHED = "finished", "stopped", "diverged", "errored", "unfinished"
ROW_FIELDS = (TIME_ATTR, *METRICS, "kid_std", "protocol_id", "nfe_per_sample", "sample_evals_total",
              *SAMPLER_COLUMNS, "levels", "checkpoint", "checkpoint_trial", "used_ema", "weights_sha256",
              "diverged", "stop_reason", "done", "training_iteration", "checkpoint_dir_name", "time_total_s")


@dataclass
class SamplerExperiment:
    """A sampler-search folder, loaded.

    record: its search.json; looks: the sample counts of ASHA's looks; evaluations: one row per
    report (a trial at a look); trials: one row per trial (its last report, status, warm-start
    label, sample grid); checkpoints: one row per source checkpoint with its original score.
    """

    exp_dir: Path
    record: dict
    metric: str
    mode: str
    looks: list[int]
    evaluations: pd.DataFrame
    trials: pd.DataFrame
    checkpoints: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def warm_label(config: dict, warm_start: list[dict]) -> str:
    """The label of the warm start a trial config reproduces ("" if none): every point value and
    the checkpoint must match (floats to 1e-9 relative)."""
    for warm in warm_start:
        point = {"checkpoint": warm.get("checkpoint"), **(warm.get("params") or {})}
        if all(_same(config.get(k), v) for k, v in point.items()):
            return warm["label"]
    return ""


def _status(rows: pd.DataFrame, error: bool, last_look: int, ray_status: str | None) -> tuple[str, str]:
    """(status, reason): errored > diverged > finished (scored the last look) > stopped (Ray
    ended it before: ASHA) > unfinished (running, or interrupted)."""
    if error or ray_status == "ERROR":
        return ERRORED, "raised (see error.txt)"
    if not len(rows):
        return UNFINISHED, "no report yet"
    last = rows.iloc[-1]
    if bool(last.get("diverged") is True):
        return DIVERGED, str(last.get("stop_reason") or "diverged")
    reached = int(last[TIME_ATTR])
    if reached >= last_look:
        return FINISHED, ""
    if bool(last.get("done") is True) or ray_status == "TERMINATED":
        return STOPPED, f"stopped by ASHA after {reached} of {last_look} samples"
    return UNFINISHED, f"last report at {reached} samples (running or interrupted)"


def load_sampler_experiment(exp_dir: str | Path) -> SamplerExperiment:
    """Load a sampler-search folder. ``ValueError`` (naming it) when it is not one."""
    exp_dir = Path(exp_dir).expanduser().resolve()
    try:
        record = json.loads((exp_dir / SEARCH_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(exp_dir)!r}: no readable {SEARCH_FILE} ({err.__class__.__name__})") from None
    if record.get("kind") != SAMPLER_KIND:
        raise ValueError(f"{str(exp_dir)!r}: not a sampler search ({SEARCH_FILE} has no kind {SAMPLER_KIND!r}); "
                         f"use python platform/report.py for a joint search")
    spec = record.get("spec") or {}
    metric, mode = spec.get("metric", "kid"), spec.get("mode", METRICS[spec.get("metric", "kid")].direction)
    looks = [int(n) for n in record["sampler"]["samples"]]
    warm_start = record.get("warm_start") or []
    warnings: list[str] = []
    eval_rows, trial_rows = [], []
    states = read_trial_states(exp_dir, warnings)
    for trial_dir in trial_dirs(exp_dir):
        rows, bad = read_result_rows(trial_dir / RESULT_FILE)
        if bad:
            warnings.append(f"{trial_dir.name}: {bad} unreadable line(s) in {RESULT_FILE} skipped")
        by_look: dict[Any, dict] = {}
        for row in rows:  # Ray may log the final result twice: keep the last copy per look
            by_look[row.get(TIME_ATTR, row.get("training_iteration"))] = row
        trial_id = str(rows[-1].get("trial_id")) if rows else trial_dir.name.removeprefix("trial_")
        try:
            config = json.loads((trial_dir / PARAMS_FILE).read_text())
        except (OSError, ValueError):
            config = rows[-1].get("config", {}) if rows else {}
        mine = []
        for row in by_look.values():
            out = {"trial_id": trial_id, **{k: row.get(k, np.nan) for k in ROW_FIELDS}}
            ckpt = row.get("checkpoint_dir_name")
            out["look_dir"] = str(trial_dir / ckpt) if isinstance(ckpt, str) and (trial_dir / ckpt).is_dir() else None
            mine.append(out)
        frame = pd.DataFrame(mine, columns=["trial_id", *ROW_FIELDS, "look_dir"])
        if len(frame):
            frame = frame.sort_values(TIME_ATTR, kind="stable").reset_index(drop=True)
        status, reason = _status(frame, (trial_dir / ERROR_FILE).exists(), looks[-1],
                                 states.get(trial_dir.name, {}).get("status"))
        last = frame.iloc[-1].to_dict() if len(frame) else {"trial_id": trial_id}
        grids = [d for d in frame["look_dir"] if isinstance(d, str) and (Path(d) / "samples.png").exists()] if len(frame) else []
        last.update(status=status, stop_reason=reason, warm_start=warm_label(config, warm_start),
                    checkpoint=last.get("checkpoint") if isinstance(last.get("checkpoint"), str) else config.get("checkpoint"),
                    samples_png=str(Path(grids[-1]) / "samples.png") if grids else None, trial_dir=str(trial_dir))
        for key in SAMPLER_COLUMNS:
            if pd.isna(last.get(key, np.nan)) and key in config:
                last[key] = config[key]
        trial_rows.append(last)
        eval_rows.append(frame.assign(warm_start=last["warm_start"]))
    evaluations = pd.concat([f for f in eval_rows if len(f)], ignore_index=True) if any(len(f) for f in eval_rows) \
        else pd.DataFrame(columns=["trial_id", *ROW_FIELDS, "look_dir", "warm_start"])
    for col in (TIME_ATTR, *METRICS, "nfe_per_sample", "sample_evals_total", "step_lr"):
        evaluations[col] = pd.to_numeric(evaluations[col], errors="coerce")
    trials = pd.DataFrame(trial_rows)
    checkpoints = pd.DataFrame([{
        "checkpoint": c["path"], "source": f"{c['trial']}/{Path(c['path']).name}", "iterations": c["iterations"],
        "sigma_begin": c["config"].get("sigma_begin"), "sigma_end": c["config"].get("sigma_end"),
        "num_levels": c["config"].get("num_levels"), "trained_step_lr": c["config"].get("step_lr"),
        "trained_n_steps_each": c["config"].get("n_steps_each"), "trained_denoise": c["config"].get("denoise"),
        f"original_{metric}": c["value"], "original_samples": c["samples"], "original_protocol": c["protocol_id"],
    } for c in record.get("checkpoints") or []])
    return SamplerExperiment(exp_dir, record, metric, mode, looks, evaluations, trials, checkpoints, warnings)


# ---------------------------------------------------------------------------------------------
# Frames


def _signed(values: pd.Series, mode: str) -> pd.Series:
    values = pd.to_numeric(values, errors="coerce").astype(float)
    return values if mode == "min" else -values


def scored(evaluations: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Evaluations with a finite metric and not a divergence record."""
    if not len(evaluations):
        return evaluations
    keep = finite(evaluations[metric]) & ~evaluations["diverged"].map(lambda v: v is True)
    return evaluations[keep]


def at_look(evaluations: pd.DataFrame, look: int, metric: str, mode: str) -> pd.DataFrame:
    """The scored evaluations at one look (one sample count: one protocol), best first."""
    rows = scored(evaluations, metric)
    rows = rows[rows[TIME_ATTR] == look]
    return rows.assign(_key=_signed(rows[metric], mode)).sort_values(["_key", "nfe_per_sample", "trial_id"]) \
        .drop(columns="_key")


def compute_front(rows: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Quality-versus-compute front of evaluations at one look: the samplers no other beats with
    the same or fewer network evaluations per sample; sorted by cost, each step strictly better."""
    if not len(rows):
        return rows
    order = rows.assign(_key=_signed(rows[metric], mode)).sort_values(["nfe_per_sample", "_key"], kind="stable")
    keep, best = [], math.inf
    for idx, key in order["_key"].items():
        if key < best:
            keep.append(idx)
            best = key
    return rows.loc[keep]


def leaderboard(exp: SamplerExperiment) -> pd.DataFrame:
    """Every trial ranked ASHA's way: the further it got (samples scored) the higher, then by the
    metric at its last look. ``rank`` counts only trials with a finite value."""
    trials = exp.trials.copy()
    if not len(trials):
        return trials
    value = _signed(trials.get(exp.metric, pd.Series(np.nan, index=trials.index)), exp.mode)
    ok = np.isfinite(value.to_numpy())
    trials["_reach"] = -pd.to_numeric(trials.get(TIME_ATTR), errors="coerce").fillna(0)
    trials["_key"] = value.where(ok, np.inf)
    trials = trials.sort_values(["_reach", "_key", "nfe_per_sample", "trial_id"], na_position="last")
    trials.insert(0, "rank", pd.array([i + 1 if f else pd.NA for i, f in enumerate(np.isfinite(trials["_key"]))],
                                      dtype="Int64"))
    first = ["rank", "trial_id", "status", TIME_ATTR, exp.metric, *[m for m in METRICS if m != exp.metric], "kid_std",
             *SAMPLER_COLUMNS, "levels", "nfe_per_sample", "sample_evals_total", "warm_start", "checkpoint_trial",
             "checkpoint", "stop_reason"]
    first = [c for c in first if c in trials]
    return trials[first + [c for c in trials.columns if c not in first and not c.startswith("_")]].reset_index(drop=True)


def compare_at_common_look(evaluations: pd.DataFrame, a: str, b: str, metric: str) -> tuple[int | None, float, float]:
    """(largest look both trials reached with a finite value, a's value there, b's value there)."""
    rows = scored(evaluations, metric)
    looks_a = set(rows.loc[rows["trial_id"] == a, TIME_ATTR])
    looks_b = set(rows.loc[rows["trial_id"] == b, TIME_ATTR])
    common = sorted(looks_a & looks_b)
    if not common:
        return None, math.nan, math.nan
    look = common[-1]
    at = rows[rows[TIME_ATTR] == look].set_index("trial_id")[metric]
    return int(look), float(at[a]), float(at[b])


# ---------------------------------------------------------------------------------------------
# Plots


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _wide_positive(values: pd.Series) -> bool:
    v = values[finite(values)].astype(float)
    return len(v) > 1 and bool((v > 0).all()) and v.max() / v.min() > 20


def _look_colors(looks: list[int]) -> dict[int, str]:
    return {look: f"C{i % 10}" for i, look in enumerate(looks)}


def _panels(exp: SamplerExperiment, x: str, xlabel: str, path: Path, front: bool) -> Path:
    """One panel per source checkpoint: ``metric`` against column ``x`` for every evaluation,
    coloured by look; warm starts labelled; the original score as a dashed line (and, against
    the network evaluations, a star at the trained-with sampler's cost)."""
    checkpoints = list(exp.checkpoints.itertuples(index=False)) or [None]
    fig = _figure(6.0 * len(checkpoints), 4.4)
    colors = _look_colors(exp.looks)
    rows = scored(exp.evaluations, exp.metric)
    for i, ckpt in enumerate(checkpoints):
        ax = fig.add_subplot(1, len(checkpoints), i + 1)
        mine = rows[rows["checkpoint"] == ckpt.checkpoint] if ckpt is not None else rows
        for _, trace in mine.sort_values(TIME_ATTR).groupby("trial_id"):  # one trial's looks
            ax.plot(trace[x], trace[exp.metric], c="0.75", lw=0.8, zorder=2)
        for j, look in enumerate(exp.looks):
            part = mine[mine[TIME_ATTR] == look]
            if not len(part):
                continue
            # earlier looks larger and below, so a trial's later looks stay visible on top
            ax.scatter(part[x], part[exp.metric], s=max(12, 70 - 22 * j), c=colors[look], edgecolors="white",
                       zorder=3 + j, label=f"{look} samples ({len(part)} trials)")
            if front:
                line = compute_front(part, exp.metric, exp.mode)
                ax.step(line[x], line[exp.metric], where="post", c=colors[look], lw=1.2, alpha=0.8)
                ax.scatter(line[x], line[exp.metric], s=max(12, 70 - 22 * j), facecolors="none",
                           edgecolors="black", linewidths=1.0, zorder=10)  # ringed: on the front
        last = mine.sort_values(TIME_ATTR).groupby("trial_id").tail(1)
        for _, row in last[last["warm_start"].astype(bool)].iterrows():
            ax.annotate(row["warm_start"], (row[x], row[exp.metric]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        if ckpt is not None:
            original = getattr(ckpt, f"original_{exp.metric}")
            label = f"original {exp.metric} {fmt(original)} ({ckpt.original_samples} samples, joint search)"
            ax.axhline(original, ls="--", c="0.3", lw=1, label=label)
            if front:
                nfe = int(ckpt.num_levels) * int(ckpt.trained_n_steps_each) + int(bool(ckpt.trained_denoise))
                ax.scatter([nfe], [original], marker="*", s=140, c="0.3", zorder=4)
            ax.set_title(f"checkpoint {ckpt.source}", fontsize=9)
        if _wide_positive(mine[x]) if len(mine) else False:
            ax.set_xscale("log")
        if _wide_positive(mine[exp.metric]) if len(mine) else False:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{exp.metric} ({'lower' if exp.mode == 'min' else 'higher'} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_vs_step(exp: SamplerExperiment, path: Path) -> Path:
    """Quality against the step size (code-convention step_lr), every trial at every look."""
    return _panels(exp, "step_lr", "step_lr (code convention; log scale where wide)", path, front=False)


def plot_front(exp: SamplerExperiment, path: Path) -> Path:
    """Quality against network evaluations per sample, with the front at each look."""
    return _panels(exp, "nfe_per_sample", "network evaluations per sample (levels x T + denoise)", path, front=True)


# ---------------------------------------------------------------------------------------------
# The report


def _setting(row: pd.Series) -> str:
    parts = [f"step_lr={fmt(row.get('step_lr'))}", f"n_steps_each={fmt(row.get('n_steps_each'))}",
             f"denoise={fmt(row.get('denoise'))}"]
    levels = row.get("levels")
    if isinstance(levels, str) and levels:
        parts.append(f"levels {levels}")
    return ", ".join(parts)


def _answer(exp: SamplerExperiment) -> list[str]:
    """Per checkpoint: the best sampler at the last look reached, against the warm starts at a
    common look and against the original score."""
    items = []
    rows = scored(exp.evaluations, exp.metric)
    for ckpt in exp.checkpoints.itertuples(index=False):
        mine = rows[rows["checkpoint"] == ckpt.checkpoint]
        original = getattr(ckpt, f"original_{exp.metric}")
        head = f"Checkpoint {ckpt.source} ({ckpt.iterations} training iterations): "
        if not len(mine):
            items.append(head + "no sampler trial has a finite value yet.")
            continue
        look = int(mine[TIME_ATTR].max())
        best = at_look(mine, look, exp.metric, exp.mode).iloc[0]
        items.append(head + f"best sampler trial {best['trial_id']} ({_setting(best)}; "
                     f"{fmt(best['nfe_per_sample'])} network evaluations per sample) with {exp.metric} "
                     f"{fmt(best[exp.metric])} on {look} samples.")
        warm = exp.trials[(exp.trials["checkpoint"] == ckpt.checkpoint) & exp.trials["warm_start"].astype(bool)]
        for label in (WARM_TRAINED, WARM_NCSNV2):
            match = warm[warm["warm_start"] == label]
            name = WARM_NAMES[label]
            if not len(match):
                items.append(f"{name[0].upper()}{name[1:]}: no trial ran it (same point as another warm start, "
                             f"or not started).")
                continue
            other = match.iloc[0]
            if other["trial_id"] == best["trial_id"]:
                items.append(f"The best sampler is {name} itself (trial {other['trial_id']}).")
                continue
            common, mine_v, other_v = compare_at_common_look(exp.evaluations, best["trial_id"], other["trial_id"],
                                                             exp.metric)
            if common is None:
                items.append(f"Versus {name} (trial {other['trial_id']}, {other['status']}): no look with a value "
                             f"for both.")
                continue
            items.append(f"Versus {name} (trial {other['trial_id']}: {_setting(other)}, "
                         f"{fmt(other['nfe_per_sample'])} evaluations per sample, {other['status']}): at {common} "
                         f"samples the best has {fmt(mine_v)} against {fmt(other_v)}, "
                         f"{relation(mine_v, other_v, exp.mode)}.")
        same_n = int(ckpt.original_samples) == look
        items.append(f"Versus the checkpoint's original score from the joint search ({exp.metric} {fmt(original)} "
                     f"on {ckpt.original_samples} samples with its trained-with sampler): {fmt(best[exp.metric])} is "
                     f"{relation(float(best[exp.metric]), float(original), exp.mode)}"
                     + ("." if same_n else
                        f"; the sample counts differ ({look} vs {ckpt.original_samples}), so read this with care "
                        f"(KID is unbiased in the sample count, FID is biased upwards at small counts): the "
                        f"trained-with comparison above is the like-for-like one."))
    return items


def _spent_line(exp: SamplerExperiment) -> str:
    t = exp.trials
    if not len(t) or "sample_evals_total" not in t:
        return "Network evaluations spent: none yet."
    spent = float(pd.to_numeric(t["sample_evals_total"], errors="coerce").fillna(0).sum())
    full = float((pd.to_numeric(t["nfe_per_sample"], errors="coerce").fillna(0) * exp.looks[-1]).sum())
    share = f" ({spent / full:.0%} of the {fmt(full)} the same trials would spend scoring {exp.looks[-1]} samples " \
            f"each)" if full > 0 else ""
    return f"Network evaluations spent: {fmt(spent)} (image-sized passes through the network){share}; no training."


def build_sampler_report(exp: SamplerExperiment, out_dir: Path) -> tuple[list[Block], pd.DataFrame]:
    """The report blocks and the full leaderboard; writes the plots into ``out_dir``."""
    board = leaderboard(exp)
    counts = exp.trials["status"].value_counts() if len(exp.trials) else pd.Series(dtype=int)
    spec = exp.record.get("spec") or {}
    blocks = [Block("h1", f"Sampler search report: {exp.exp_dir.name}"), Block("list", items=[
        f"Experiment folder: {exp.exp_dir}",
        f"Spec: {exp.record.get('source') or spec.get('name', '?')} (budget mode {exp.record.get('budget_mode', '?')}); "
        f"started {exp.record.get('started', '?')}; report written {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"Sampler only: the networks are frozen (never trained here); each trial samples with its own "
        f"{', '.join(SAMPLER_COLUMNS)}",
        f"ASHA looks after {', '.join(map(str, exp.looks))} samples scored; ranking metric {exp.metric} ({exp.mode}) - "
        f"{METRICS[exp.metric].description}",
        f"{len(exp.trials)} trials: " + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in
                                                  (FINISHED, STOPPED, DIVERGED, ERRORED, UNFINISHED)),
        _spent_line(exp),
        *[f"Notice: {n}" for n in exp.record.get("notices") or []],
    ])]
    blocks += [Block("h2", "Answer"), Block("list", items=_answer(exp) if len(exp.checkpoints) else ["No checkpoint."])]
    ck = exp.checkpoints.drop(columns=["checkpoint"]) if len(exp.checkpoints) else exp.checkpoints
    blocks += [Block("h2", "Checkpoints sampled from"),
               Block("p", "Each was trained by the joint search; original = its score there, with the sampler it was "
                          "trained with, on that search's sample count."),
               Block("table", frame=ck)]

    plot_vs_step(exp, out_dir / PLOTS[0])
    blocks += [Block("h2", "Quality against the step size"),
               Block("image", file=PLOTS[0], caption=f"{exp.metric} of every trial at every look (colour = samples "
                                                     f"scored) against step_lr; dashed: the checkpoint's original score")]
    plot_front(exp, out_dir / PLOTS[1])
    fronts = []
    for look in exp.looks:
        rows = at_look(exp.evaluations, look, exp.metric, exp.mode) if len(exp.evaluations) else exp.evaluations
        for ckpt in exp.checkpoints.itertuples(index=False):
            part = rows[rows["checkpoint"] == ckpt.checkpoint] if len(rows) else rows
            for _, row in compute_front(part, exp.metric, exp.mode).iterrows():
                fronts.append({"samples": look, "checkpoint": ckpt.source, "trial_id": row["trial_id"],
                               "nfe_per_sample": row["nfe_per_sample"], exp.metric: row[exp.metric],
                               "setting": _setting(row), "warm_start": row.get("warm_start", "")})
    blocks += [Block("h2", "Quality against network evaluations per sample"),
               Block("p", "The quality-versus-compute front at each look: samplers that no other sampler beats with "
                          "the same or fewer network evaluations per sample. Values are compared only at one look "
                          "(one sample count, one protocol). The star is the checkpoint's original sampler and score."),
               Block("image", file=PLOTS[1], caption=f"{exp.metric} against network evaluations per sample; ringed points "
                                                     f"and lines: the front at each look; star: original score at its "
                                                     f"sampler's cost"),
               Block("table", frame=pd.DataFrame(fronts))]

    shown = [c for c in ("rank", "trial_id", "status", TIME_ATTR, exp.metric, "fid", "kid_std", *SAMPLER_COLUMNS,
                         "nfe_per_sample", "sample_evals_total", "warm_start", "checkpoint_trial") if c in board]
    blocks += [Block("h2", "Leaderboard"),
               Block("p", "Trials that got further (more samples scored) rank above those ASHA stopped; within a look, "
                          f"by {exp.metric}. leaderboard.csv has every column."),
               Block("table", frame=board[shown] if len(board) else board)]
    blocks += _samples_section(exp, board, out_dir)
    odd = board[board["status"] != FINISHED] if len(board) else board
    blocks += [Block("h2", "Trials that did not score every look"),
               Block("table", frame=odd[[c for c in ("trial_id", "status", "stop_reason", TIME_ATTR) if c in odd]])
               if len(odd) else Block("p", "All trials scored every look.")]
    if exp.warnings:
        blocks += [Block("h3", "Reading problems"), Block("list", items=list(exp.warnings))]
    return blocks, board


def _samples_section(exp: SamplerExperiment, board: pd.DataFrame, out_dir: Path) -> list[Block]:
    panels: list[tuple[str, Path]] = []
    for ckpt in exp.checkpoints.itertuples(index=False):
        png = Path(ckpt.checkpoint) / "samples.png"
        if png.exists():
            panels.append((f"original {ckpt.source} ({exp.metric} {fmt(getattr(ckpt, f'original_{exp.metric}'))})", png))
    for label in ("best", WARM_TRAINED):
        rows = board[board["rank"].notna()] if label == "best" else board[board["warm_start"] == label]
        rows = rows[rows["samples_png"].notna()] if len(rows) and "samples_png" in rows else rows.iloc[0:0]
        if len(rows):
            row = rows.iloc[0]
            panels.append((f"{label}: {row['trial_id']} ({exp.metric} {fmt(row[exp.metric])}, "
                           f"{int(row[TIME_ATTR])} samples)", Path(row["samples_png"])))
    if not panels:
        return []
    plot_sample_panels(panels, out_dir / PLOTS[2])
    return [Block("h2", "Samples"),
            Block("image", file=PLOTS[2], caption="the checkpoint's samples from the joint search, then the first 64 "
                                                  "samples of the best sampler and of the trained-with sampler here")]


def write_sampler_report(exp_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write report.md, report.html, leaderboard.csv and the PNG plots of a sampler search into
    ``out_dir`` (default ``<exp_dir>/report/``); return the path of report.html. ``ValueError``
    for a folder that is not a sampler search."""
    exp = load_sampler_experiment(exp_dir)
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else exp.exp_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # an earlier report's plot this one may not redraw
        (out / name).unlink(missing_ok=True)
    blocks, board = build_sampler_report(exp, out)
    board.to_csv(out / "leaderboard.csv", index=False)
    blocks += [Block("h2", "Files"),
               Block("list", items=[b.file for b in blocks if b.kind == "image"]
                     + ["leaderboard.csv (all trials, all columns)", "report.md (this report in Markdown)"]),
               Block("code", text=f"python -m analysis.sampler_report {exp.exp_dir}")]
    (out / "report.md").write_text(render_markdown(blocks))
    page = out / "report.html"
    page.write_text(render_html(blocks, out, f"Sampler search report: {exp.exp_dir.name}"))
    return page


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.sampler_report EXPERIMENT [--out DIR]``: exit 2 with one line on error."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m analysis.sampler_report",
                                     description="Write the report of a sampler-only search.")
    parser.add_argument("experiment", help="the sampler search's experiment folder")
    parser.add_argument("--out", help="output folder (default: <experiment>/report)")
    args = parser.parse_args(argv)
    try:
        page = write_sampler_report(args.experiment, args.out)
    except ValueError as err:
        print(f"sampler_report: {err}", file=sys.stderr)
        return 2
    print(f"report:   {page}")
    print(f"markdown: {page.with_name('report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
