"""The sampler-search part of the report and the closing summary: what the sampler alone gained on a
frozen checkpoint (the shared frame around it: :mod:`analysis.reporting.report`).

A sampler search scores each trial at growing sample counts ("looks", ASHA's fidelity). Values
at different sample counts are different evaluation protocols (FID is biased upwards at small N),
so every comparison here is made at one look: the best sampler against the checkpoint's
trained-with sampler and the NCSNv2 technique-4 sampler (the warm starts) at the largest look
both reached, and against the checkpoint's original score from the joint search (scored on its
own sample count, stated beside it). Plots: ``sampler_vs_step.png`` (quality against the step
size), ``sampler_front.png`` (quality against network evaluations per sample, with the
quality-versus-compute front at each look) and ``sampler_samples.png`` (sample grids).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.kinds import sampler_section
from analysis.load import Experiment, checkpoint_samples
from analysis.rank import at_look, compare_at_common_look, pareto_front, scored_evaluations
from analysis.reporting import confirm
from analysis.reporting.plots import plot_sample_panels, plot_sampler_panels
from analysis.reporting.render import Block, capitalised, fmt, relation, top_text
from analysis.status import status_counts
from trainables.contract.layout import (
    DIVERGED,
    ERRORED,
    LEADERBOARD_CSV,
    SAMPLER_TIME_ATTR,
    SAMPLES_FILE,
    STOPPED,
    UNFINISHED,
    WARM_START_NAMES,
    WARM_TECHNIQUE4,
    WARM_TRAINED_WITH,
)
from trainables.contract.metrics import KID_STD, METRICS, hi_key, lo_key
from trainables.contract.params import SAMPLER_PARAMS, SETTINGS

TITLE = "Sampler search report"
TIME = SAMPLER_TIME_ATTR
PLOTS = ("sampler_vs_step.png", "sampler_front.png", "sampler_samples.png")
PLOT_PREFIXES = tuple(p.removesuffix(".png") for p in PLOTS)
WARM_LABELS = (WARM_TRAINED_WITH, WARM_TECHNIQUE4)
ATTENTION = (
    "Trials that did not score every look",
    "ASHA stops a sampler after a look when it ranks in the worse part of that look; a diverged "
    "sampler produced non-finite samples; unfinished ones were running or interrupted.",
    "All trials scored every look.",
)


def looks(exp: Experiment) -> list[int]:
    """The sample counts of ASHA's looks, from search.json."""
    return [int(n) for n in sampler_section(exp.search).get("samples") or []]


def _trained(config: dict, key: str):
    return config.get(key, SETTINGS[key].default)


def _original(c: dict, metric: str) -> float:
    if c.get("metric") == metric:
        return c.get("value")
    return (c.get("metrics") or {}).get(metric, math.nan)


def checkpoints_frame(exp: Experiment) -> pd.DataFrame:
    """One row per source checkpoint (search.json's ``checkpoints``): its folder, trial and
    training iterations, its ladder and trained-with sampler, and its original score on the
    ranking metric from the joint search with that score's sample count and protocol."""
    rows = []
    for c in exp.search.get("checkpoints") or []:
        config = c.get("config") or {}
        rows.append(
            {
                "checkpoint": c["path"],
                "source": f"{c['trial']}/{Path(c['path']).name}",
                "iterations": c["iterations"],
                **{k: _trained(config, k) for k in ("sigma_begin", "sigma_end", "num_levels")},
                **{f"trained_{k}": _trained(config, k) for k in ("step_lr", "n_steps_each", "denoise")},
                f"original_{exp.metric}": _original(c, exp.metric),
                "original_samples": c["samples"],
                "original_protocol": c["protocol_id"],
            }
        )
    return pd.DataFrame(rows)


def header_items(exp: Experiment) -> list[str]:
    """The sampler lines of the report's opening list: what is searched, the looks, the spend."""
    spec = exp.search.get("spec") or {}
    return [
        f"Spec: {exp.search.get('source') or spec.get('name', '?')} (budget mode {exp.search.get('budget_mode', '?')})",
        f"Sampler only: the networks are frozen (never trained here); each trial samples with its own "
        f"{', '.join(SAMPLER_PARAMS)}",
        f"ASHA looks after {', '.join(map(str, looks(exp)))} samples scored",
        _spent_line(exp),
        *[f"Notice: {n}" for n in exp.search.get("notices") or []],
    ]


def protocol_line(protocol: str | None) -> str:
    return (
        f"Evaluation protocol at the first look: {protocol or 'none yet'} (all trials; each look's sample "
        f"count makes its own protocol id)"
    )


def _spent(trials: pd.DataFrame, last_look: int) -> tuple[float, float]:
    """(network evaluations spent, what the same trials would spend scoring every look)."""
    if not len(trials) or "sample_evals_total" not in trials:
        return 0.0, 0.0
    spent = float(pd.to_numeric(trials["sample_evals_total"], errors="coerce").fillna(0).sum())
    full = float((pd.to_numeric(trials["nfe_per_sample"], errors="coerce").fillna(0) * last_look).sum())
    return spent, full


def _spent_line(exp: Experiment) -> str:
    spent, full = _spent(exp.trials, exp.budget_end)
    if not spent:
        return "Network evaluations spent: none yet."
    share = (
        (f" ({spent / full:.0%} of the {fmt(full)} the same trials would spend scoring {exp.budget_end} samples each)")
        if full > 0
        else ""
    )
    return f"Network evaluations spent: {fmt(spent)} (image-sized passes through the network){share}; no training."


def _setting(row: pd.Series) -> str:
    parts = [f"{k}={fmt(row.get(k))}" for k in ("step_lr", "n_steps_each", "denoise")]
    levels = row.get("levels")
    if isinstance(levels, str) and levels:
        parts.append(f"levels {levels}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# The answer, per checkpoint


def _warm_item(exp: Experiment, trials: pd.DataFrame, evaluations: pd.DataFrame, best: pd.Series, label: str) -> str:
    name = WARM_START_NAMES[label]
    match = trials[trials["warm_start"] == label]
    if not len(match):
        return f"{capitalised(name)}: no trial ran it (same point as another warm start, or not started)."
    other = match.iloc[0]
    if other["trial_id"] == best["trial_id"]:
        return f"The best sampler is {name} itself (trial {other['trial_id']})."
    common, mine, theirs = compare_at_common_look(evaluations, best["trial_id"], other["trial_id"], exp.metric, TIME)
    if common is None:
        return f"Versus {name} (trial {other['trial_id']}, {other['status']}): no look with a value for both."
    return (
        f"Versus {name} (trial {other['trial_id']}: {_setting(other)}, {fmt(other['nfe_per_sample'])} evaluations "
        f"per sample, {other['status']}): at {common} samples the best has {fmt(mine)} against {fmt(theirs)}, "
        f"{relation(mine, theirs, exp.mode)}."
    )


def _original_item(exp: Experiment, ckpt, best: pd.Series, look: int) -> str:
    original = getattr(ckpt, f"original_{exp.metric}")
    text = (
        f"Versus the checkpoint's original score from the joint search ({exp.metric} {fmt(original)} on "
        f"{ckpt.original_samples} samples with its trained-with sampler): {fmt(best[exp.metric])} is "
        f"{relation(float(best[exp.metric]), float(original), exp.mode)}"
    )
    if int(ckpt.original_samples) == look:
        return text + "."
    return text + (
        f"; the sample counts differ ({look} vs {ckpt.original_samples}), so read this with care (KID is "
        f"unbiased in the sample count, FID is biased upwards at small counts): the trained-with "
        f"comparison above is the like-for-like one."
    )


def _checkpoint_items(exp: Experiment, trials: pd.DataFrame, evaluations: pd.DataFrame, ckpt) -> list[str]:
    mine = scored_evaluations(evaluations, exp.metric)
    mine = mine[mine["source_checkpoint"] == ckpt.checkpoint] if len(mine) else mine
    head = f"Checkpoint {ckpt.source} ({ckpt.iterations} training iterations): "
    if not len(mine):
        return [head + "no sampler trial has a finite value yet."]
    look = int(mine[TIME].max())
    best = at_look(mine, look, exp.metric, exp.mode, TIME).iloc[0]
    items = [
        head + f"best sampler trial {best['trial_id']} ({_setting(best)}; {fmt(best['nfe_per_sample'])} network "
        f"evaluations per sample) with {exp.metric} {fmt(best[exp.metric])} on {look} samples."
    ]
    warm = trials[(trials["source_checkpoint"] == ckpt.checkpoint) & trials["warm_start"].astype(bool)]
    items += [_warm_item(exp, warm, evaluations, best, label) for label in WARM_LABELS]
    return items + [_original_item(exp, ckpt, best, look)]


def _answer(exp: Experiment, trials: pd.DataFrame, evaluations: pd.DataFrame, checkpoints: pd.DataFrame) -> list[str]:
    """Per checkpoint: the best sampler at the last look reached, against the warm starts at a
    common look and against the original score."""
    if not len(checkpoints):
        return ["No checkpoint."]
    return [
        item
        for ckpt in checkpoints.itertuples(index=False)
        for item in _checkpoint_items(exp, trials, evaluations, ckpt)
    ]


# ---------------------------------------------------------------------------------------------
# Sections of one group


def leaderboard(ranked: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """Every trial ranked ASHA's way (the further it got, the higher; then by the metric at its
    last look), the sampler settings it ran, its cost and warm-start label; then every other
    column for the CSV."""
    first = [
        "rank",
        "protocol",
        "trial_id",
        "status",
        TIME,
        exp.metric,
        lo_key(exp.metric),
        hi_key(exp.metric),
        *[m for m in METRICS if m != exp.metric],
        KID_STD,
        *SAMPLER_PARAMS,
        "levels",
        "nfe_per_sample",
        "sample_evals_total",
        "warm_start",
        "checkpoint_trial",
        "source_checkpoint",
        "stop_reason",
    ]
    first = [c for c in dict.fromkeys(first) if c in ranked]
    return ranked[first + [c for c in ranked.columns if c not in first]].reset_index(drop=True)


def _front_table(exp: Experiment, evaluations: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.DataFrame:
    fronts = []
    for look in looks(exp):
        rows = at_look(evaluations, look, exp.metric, exp.mode, TIME) if len(evaluations) else evaluations
        for ckpt in checkpoints.itertuples(index=False):
            part = rows[rows["source_checkpoint"] == ckpt.checkpoint] if len(rows) else rows
            front = pareto_front(part, exp.metric, exp.mode, compute="nfe_per_sample") if len(part) else part
            fronts += [
                {
                    "samples": look,
                    "checkpoint": ckpt.source,
                    "trial_id": row["trial_id"],
                    "nfe_per_sample": row["nfe_per_sample"],
                    exp.metric: row[exp.metric],
                    "setting": _setting(row),
                    "warm_start": row.get("warm_start", ""),
                }
                for _, row in front.iterrows()
            ]
    return pd.DataFrame(fronts)


def _plot_blocks(
    exp: Experiment, evaluations: pd.DataFrame, checkpoints: pd.DataFrame, out_dir: Path, suffix: str
) -> list[Block]:
    step, front = (f"{p.removesuffix('.png')}{suffix}.png" for p in PLOTS[:2])
    common = (evaluations, checkpoints, looks(exp), exp.metric, exp.mode)
    plot_sampler_panels(
        *common, "step_lr", "step_lr (code convention; log scale where wide)", out_dir / step, front=False
    )
    plot_sampler_panels(
        *common, "nfe_per_sample", "network evaluations per sample (levels x T + denoise)", out_dir / front, front=True
    )
    return [
        Block("h2", "Quality against the step size"),
        Block(
            "image",
            file=step,
            caption=f"{exp.metric} of every trial at every look (colour = samples "
            f"scored) against step_lr; dashed: the checkpoint's original score",
        ),
        Block("h2", "Quality against network evaluations per sample"),
        Block(
            "p",
            "The quality-versus-compute front at each look: samplers that no other sampler beats with "
            "the same or fewer network evaluations per sample. Values are compared only at one look "
            "(one sample count, one protocol). The star is the checkpoint's original sampler and score.",
        ),
        Block(
            "image",
            file=front,
            caption=f"{exp.metric} against network evaluations per sample; ringed points "
            f"and lines: the front at each look; star: original score at its "
            f"sampler's cost",
        ),
        Block("table", frame=_front_table(exp, evaluations, checkpoints)),
    ]


def _leaderboard_blocks(exp: Experiment, board: pd.DataFrame) -> list[Block]:
    shown = [
        c
        for c in dict.fromkeys(
            (
                "rank",
                "trial_id",
                "status",
                TIME,
                exp.metric,
                lo_key(exp.metric),
                hi_key(exp.metric),
                "fid",
                *SAMPLER_PARAMS,
                "nfe_per_sample",
                "sample_evals_total",
                "warm_start",
                "checkpoint_trial",
            )
        )
        if c in board
    ]
    return [
        Block("h2", "Leaderboard"),
        Block(
            "p",
            "Trials that got further (more samples scored) rank above those ASHA stopped; within a look, "
            f"by {exp.metric}. leaderboard.csv has every column.",
        ),
        Block("table", frame=board[shown] if len(board) else board, csv=LEADERBOARD_CSV),
    ]


def _first_grid(rows: pd.DataFrame, evaluations: pd.DataFrame, exp: Experiment) -> tuple[pd.Series, Path] | None:
    for _, row in rows.iterrows():
        png, _ = checkpoint_samples(row, evaluations, exp.mode, exp.metric, TIME)
        if png is not None:
            return row, png
    return None


def _samples_blocks(
    exp: Experiment,
    board: pd.DataFrame,
    evaluations: pd.DataFrame,
    checkpoints: pd.DataFrame,
    out_dir: Path,
    suffix: str,
) -> list[Block]:
    panels: list[tuple[str, Path]] = []
    for ckpt in checkpoints.itertuples(index=False):
        png = Path(ckpt.checkpoint) / SAMPLES_FILE
        if png.exists():
            panels.append(
                (f"original {ckpt.source} ({exp.metric} {fmt(getattr(ckpt, f'original_{exp.metric}'))})", png)
            )
    rated = board[board["rank"].notna()] if len(board) else board
    trained = board[board["warm_start"] == WARM_TRAINED_WITH] if len(board) else board
    for label, rows in (("best", rated), (WARM_TRAINED_WITH, trained)):
        found = _first_grid(rows, evaluations, exp) if len(rows) else None
        if found is not None:
            row, png = found
            panels.append(
                (f"{label}: {row['trial_id']} ({exp.metric} {fmt(row[exp.metric])}, {int(row[TIME])} samples)", png)
            )
    if not panels:
        return []
    file = f"{PLOT_PREFIXES[2]}{suffix}.png"
    plot_sample_panels(panels, out_dir / file)
    return [
        Block("h2", "Samples"),
        Block(
            "image",
            file=file,
            caption="the checkpoint's samples from the joint search, then the first 64 "
            "samples of the best sampler and of the trained-with sampler here",
        ),
    ]


def prepare(exp: Experiment, mixed: bool) -> pd.DataFrame:
    """What every group shares: the source checkpoints with their original scores."""
    return checkpoints_frame(exp)


def group_sections(
    exp: Experiment,
    ranked: pd.DataFrame,
    evaluations: pd.DataFrame,
    out_dir: Path,
    suffix: str,
    checkpoints: pd.DataFrame,
) -> list[Block]:
    """Everything that compares samplers, for one group of comparable trials (one protocol)."""
    board = leaderboard(ranked, exp)
    shown = checkpoints.drop(columns=["checkpoint"]) if len(checkpoints) else checkpoints
    return [
        Block("h2", "Answer"),
        Block("list", items=confirm.answer_items(exp, ranked, _answer(exp, ranked, evaluations, checkpoints))),
        *confirm.sections(exp, ranked),
        Block("h2", "Checkpoints sampled from"),
        Block(
            "p",
            "Each was trained by the joint search; original = its score there, with the sampler it was "
            "trained with, on that search's sample count.",
        ),
        Block("table", frame=shown),
        *_plot_blocks(exp, evaluations, checkpoints, out_dir, suffix),
        *_leaderboard_blocks(exp, board),
        *_samples_blocks(exp, board, evaluations, checkpoints, out_dir, suffix),
    ]


# ---------------------------------------------------------------------------------------------
# The closing summary


def _asha_line(exp: Experiment) -> str:
    counts = status_counts(exp.trials)
    not_ended = counts[UNFINISHED] + counts[ERRORED]
    return (
        f"ASHA stopped {counts[STOPPED]} of {len(exp.trials)} trials before {exp.budget_end} samples (looks at "
        f"{', '.join(map(str, looks(exp)))}); {counts[DIVERGED]} diverged; {not_ended} did not end "
        f"(interrupted or errored)"
    )


def _best_at_last_look(exp: Experiment, ranked: pd.DataFrame, top: int) -> list[str]:
    last = (
        ranked[(pd.to_numeric(ranked[TIME], errors="coerce") == exp.budget_end) & ranked["rank"].notna()]
        if len(ranked)
        else ranked
    )
    if not len(last):
        return []
    text, mixed = top_text(last, ("trial_id", exp.metric, "nfe_per_sample", *SAMPLER_PARAMS, "checkpoint_trial"), top)
    return [
        f"best samplers at {exp.budget_end} samples by {exp.metric} ({exp.mode})"
        + (", ranked per protocol:" if mixed else ":"),
        text,
    ]


def summary_lines(exp: Experiment, ranked: pd.DataFrame, top: int) -> list[str]:
    """ASHA's stops, the network evaluations spent, the best samplers at the last look, and each
    checkpoint's original score."""
    lines = [_asha_line(exp)] if len(exp.trials) else []
    spent, full = _spent(exp.trials, exp.budget_end)
    lines.append(
        f"network evaluations spent: {spent:,.0f} per image in all"
        + (f" ({spent / full:.0%} of the {full:,.0f} without early stopping)" if full > 0 else "")
    )
    lines += _best_at_last_look(exp, ranked, top)
    for ckpt in checkpoints_frame(exp).itertuples(index=False):
        original = getattr(ckpt, f"original_{exp.metric}")
        lines.append(
            f"checkpoint {ckpt.source}: original {exp.metric} {original:.4g} on {ckpt.original_samples} samples"
        )
    return lines
