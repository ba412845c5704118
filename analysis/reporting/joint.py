"""The joint-search part of the report and the closing summary: which setting is best, by how much,
and why (the shared frame around it: :mod:`analysis.reporting.report`).

Sections per group of comparable trials (one evaluation protocol): the answer, the leaderboard,
the best trial against the warm starts (the published MNIST settings), the metric against each
searched parameter, learning curves, quality at equal compute with the Pareto front, parameter
importance (PED-ANOVA on the Optuna study) and the samples of the top trials beside real MNIST.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.files import checkpoint_record
from analysis.importance import param_importances
from analysis.kinds import COMPUTE
from analysis.load import Experiment, checkpoint_samples, load_study
from analysis.rank import compare_with_warm_starts, compute_budgets, equal_compute_table, pareto_front
from analysis.reporting import confirm
from analysis.reporting.answer import answer_blocks, answer_lines, interval_text
from analysis.reporting.plots import (
    image_grid,
    plot_importance,
    plot_learning_curves,
    plot_metric_vs_params,
    plot_pareto,
    plot_sample_panels,
)
from analysis.reporting.render import Block, fmt, top_text
from trainables.contract.layout import LEADERBOARD_CSV, STOPPED
from trainables.contract.layout import TRAIN_TIME_ATTR as ITERATIONS
from trainables.contract.metrics import KID_STD, METRICS, hi_key, lo_key

TITLE = "Search report"
TOP_TABLE = 10  # leaderboard rows shown in the report (leaderboard.csv holds all)
TOP_CURVES = 5  # learning curves of the top trials
TOP_SAMPLES = 4  # sample grids of the top trials beside real MNIST
PLOT_PREFIXES = ("answer", "metric_vs_params", "learning_curves", "pareto", "importance", "samples_vs_mnist")
ATTENTION = (
    "Trials that did not run to the end of the budget",
    "Status comes from the files: error.txt (errored), a diverged report (diverged), done with fewer "
    "iterations than the budget (stopped by ASHA), no final report (unfinished: still running, or "
    "interrupted).",
    "All trials finished.",
)
NO_IMPORTANCE = pd.DataFrame(columns=["param", "importance"])


def header_items(exp: Experiment) -> list[str]:
    """The joint lines of the report's opening list: the budget and what was spent."""
    budget = (exp.search.get("spec") or {}).get("budget") or {}
    spent = fmt(exp.trials[COMPUTE].sum()) if len(exp.trials) else 0
    wall = fmt(exp.trials["time_total_s"].sum()) if len(exp.trials) else 0
    return [
        f"Spec: {exp.search.get('source') or 'unknown'} (budget mode {exp.search.get('budget_mode', 'unknown')}; "
        f"{budget.get('num_trials', '?')} trials of up to {budget.get('iterations', '?')} iterations, "
        f"evaluated every {budget.get('eval_every', '?')} on {budget.get('eval_samples', '?')} samples)",
        f"Network evaluations spent: {spent} per image in all; trial wall time summed: {wall} s "
        f"(up to {budget.get('max_concurrent', '?')} trials ran at once)",
    ]


def protocol_line(protocol: str | None) -> str:
    return f"Evaluation protocol: {protocol or 'none yet'} (all trials)"


def leaderboard(ranked: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """The leaderboard: rank, trial, status, searched parameters, the ranking metric (best and
    last), the other metrics at the same evaluation, iterations, compute, wall time, checkpoint;
    then every remaining column (full config) for the CSV."""
    params, metric = list(exp.params), exp.metric
    frame = ranked.rename(columns={f"config/{p}": p for p in params})
    first = [
        "rank",
        "protocol",
        "experiment",
        "trial_id",
        "status",
        "stop_reason",
        *params,
        metric,
        lo_key(metric),
        hi_key(metric),
        f"{metric}_last",
        *[key for m in METRICS if m != metric for key in (m, lo_key(m), hi_key(m))],
        KID_STD,
        ITERATIONS,
        "best_iteration",
        "evaluations",
        COMPUTE,
        "best_evals_total",
        "train_evals_total",
        "sample_evals_total",
        "time_total_s",
        "train_seconds",
        "sample_seconds",
        "score_seconds",
        "best_checkpoint",
        "protocol_id",
        "warm_start",
    ]
    first = [c for c in dict.fromkeys(first) if c in frame]
    return frame[first + [c for c in frame.columns if c not in first]]


def _shown_leaderboard(board: pd.DataFrame, params: Sequence[str], metric: str) -> pd.DataFrame:
    board = board.assign(**{f"{metric} 95%": [interval_text(row, metric) for _, row in board.iterrows()]})
    cols = [
        "rank",
        "trial_id",
        "status",
        *params,
        metric,
        f"{metric} 95%",
        *[m for m in METRICS if m != metric],
        ITERATIONS,
        "best_iteration",
        COMPUTE,
        "time_total_s",
    ]
    shown = board[[c for c in cols if c in board]].head(TOP_TABLE)
    return shown.rename(
        columns={
            COMPUTE: "network_evals",
            "time_total_s": "wall_s",
            "best_iteration": "best_at_iter",
            "inception_score": "IS",
            "class_coverage": "class_cov",
        }
    )


# ---------------------------------------------------------------------------------------------
# Sections of one group


def _sample_section(
    exp: Experiment, ranked: pd.DataFrame, evaluations: pd.DataFrame, out_dir: Path, suffix: str
) -> list[Block]:
    from trainables.contract.data import load_mnist_arrays

    metric = exp.metric
    real, _ = load_mnist_arrays(train=False)
    panels: list[tuple[str, Any]] = [("real MNIST (test set, first 64)", image_grid(real[:64]))]
    sources = []
    for _, trial in ranked[ranked["rank"].notna()].head(TOP_SAMPLES).iterrows():
        png, note = checkpoint_samples(trial, evaluations, exp.mode, metric)
        histogram = checkpoint_record(png.parent).get("metrics", {}).get("class_histogram") if png else None
        sources.append(
            {
                "rank": trial["rank"],
                "trial_id": trial["trial_id"],
                metric: trial[metric],
                "grid": f"{png.parent.name}/{png.name}" if png else "",
                "from": note,
                "predicted digits 0-9": " ".join(map(str, histogram)) if histogram else "",
            }
        )
        if png is not None:
            panels.append((f"#{trial['rank']} {trial['trial_id']} ({metric} {fmt(trial[metric])})", png))
    file = f"samples_vs_mnist{suffix}.png"
    plot_sample_panels(panels, out_dir / file)
    return [
        Block("h2", "Samples of the top trials next to real MNIST"),
        Block(
            "p",
            "Each grid is the 64 scored samples of the trial's best evaluation (its samples.png; "
            "the nearest kept checkpoint when Ray dropped that one), beside 64 real test digits. The last "
            "column counts the classifier's predicted digit over all scored samples of that evaluation "
            "(from its metrics.json): a spike on one digit means the samples collapsed to one mode.",
        ),
        Block("image", file=file, caption=f"real MNIST, then the top {len(panels) - 1} trial(s) by {metric}"),
        Block("table", frame=pd.DataFrame(sources)),
    ]


def _leaderboard_blocks(exp: Experiment, ranked: pd.DataFrame) -> list[Block]:
    board = leaderboard(ranked, exp)
    direction = "lower" if exp.mode == "min" else "higher"
    return [
        Block("h2", "Leaderboard"),
        Block(
            "p",
            f"Ranked by {exp.metric} ({direction} is better: {METRICS[exp.metric].description}) at each "
            f"trial's best evaluation; the other metrics are from that same evaluation. Ties share a "
            f"rank. Top {min(TOP_TABLE, len(board))} of {len(board)} shown; leaderboard.csv has all "
            f"trials and columns.",
        ),
        Block("table", frame=_shown_leaderboard(board, list(exp.params), exp.metric), csv=LEADERBOARD_CSV),
    ]


def _warm_blocks(exp: Experiment, ranked: pd.DataFrame, warm: pd.DataFrame, out_dir: Path, suffix: str) -> list[Block]:
    metric = exp.metric
    shown = warm.rename(columns={"best_at_same_iterations": f"best_trial_{metric}_at_same_iters"})
    marks = {row["trial_id"]: row["setting"] for _, row in warm.iloc[::-1].iterrows() if not pd.isna(row["trial_id"])}
    file = f"metric_vs_params{suffix}.png"
    plot_metric_vs_params(ranked, exp.params, metric, out_dir / file, marks)
    return [
        Block("h2", "Best trial versus the warm-start settings"),
        Block(
            "p",
            "The search proposed the published MNIST settings first where they fall inside the space. "
            f"ratio = the setting's {metric} / the best trial's; the last column is the best trial's "
            f"{metric} using only its evaluations up to the iterations that setting reached.",
        ),
        Block("table", frame=shown),
        Block("h2", "Metric versus each searched parameter"),
        Block(
            "image",
            file=file,
            caption=f"{metric} at each trial's best evaluation against each searched "
            f"parameter, coloured by status; best and warm starts labelled",
        ),
    ]


def _curve_blocks(
    exp: Experiment, ranked: pd.DataFrame, evaluations: pd.DataFrame, out_dir: Path, suffix: str
) -> list[Block]:
    top_ids = list(ranked[ranked["rank"].notna()]["trial_id"].head(TOP_CURVES))
    stopped_ids = list(ranked.loc[ranked["status"] == STOPPED, "trial_id"])
    file = f"learning_curves{suffix}.png"
    plot_learning_curves(
        evaluations,
        [(f"top {len(top_ids)} trials", top_ids), (f"stopped by ASHA ({len(stopped_ids)})", stopped_ids)],
        exp.metric,
        out_dir / file,
    )
    return [
        Block("h2", "Learning curves"),
        Block(
            "image",
            file=file,
            caption=f"{exp.metric} at every evaluation against training iterations: the "
            f"top trials, and the trials ASHA stopped early",
        ),
    ]


def _compute_blocks(exp: Experiment, evaluations: pd.DataFrame, out_dir: Path, suffix: str) -> list[Block]:
    metric, mode = exp.metric, exp.mode
    budgets = compute_budgets(evaluations, metric=metric)
    table = equal_compute_table(evaluations, budgets, metric, mode) if budgets else pd.DataFrame()
    front = pareto_front(evaluations, metric, mode)
    file = f"pareto{suffix}.png"
    plot_pareto(evaluations, front, metric, out_dir / file)
    front_cols = [
        c
        for c in (
            "trial_id",
            ITERATIONS,
            metric,
            COMPUTE,
            "train_evals_total",
            "sample_evals_total",
            "checkpoint_dir_name",
        )
        if c in front
    ]
    scored = int((~evaluations["diverged"].astype(bool)).sum()) if len(evaluations) else 0
    return [
        Block("h2", "Quality at equal compute"),
        Block(
            "p",
            "Compute is counted in network evaluations per image: training counts batch size x "
            "iterations (forward and backward counted once), sampling counts Langevin steps x samples "
            "for every evaluation so far. Budgets run from the smallest one in which every evaluated "
            "trial has an evaluation to the most any trial spent; each row is the best evaluation "
            "reached within that budget.",
        ),
        Block("table", frame=table),
        Block("h3", "Pareto front"),
        Block("p", f"Evaluations no other evaluation beats on both compute and {metric} ({len(front)} of {scored})."),
        Block("table", frame=front[front_cols].rename(columns={COMPUTE: "network_evals"})),
        Block(
            "image",
            file=file,
            caption=f"{metric} against network evaluations spent; the red steps are the Pareto front",
        ),
    ]


def _importance_blocks(importance: pd.DataFrame, note: str, out_dir: Path, suffix: str) -> list[Block]:
    blocks = [Block("h2", "Parameter importance"), Block("p", note)]
    if len(importance):
        file = f"importance{suffix}.png"
        plot_importance(importance, out_dir / file)
        blocks += [
            Block("table", frame=importance),
            Block("image", file=file, caption="PED-ANOVA importance of each searched parameter"),
        ]
    return blocks


def prepare(exp: Experiment, mixed: bool) -> tuple[pd.DataFrame, str]:
    """What every group shares: the parameter importance and its note (not computed when the
    trials mix protocols: the study's values would not compare)."""
    if mixed:
        return NO_IMPORTANCE, (
            "not computed: the trials were scored under several evaluation protocols, so the "
            "study's values are not comparable with each other"
        )
    try:
        study = load_study(exp)
    except Exception as err:  # SQLAlchemy/SQLite errors (e.g. a database locked by a running search) vary
        return NO_IMPORTANCE, f"not computed: the Optuna study could not be read ({err.__class__.__name__}: {err})"
    return param_importances(study, list(exp.params), exp.metric)


def group_sections(
    exp: Experiment,
    ranked: pd.DataFrame,
    evaluations: pd.DataFrame,
    out_dir: Path,
    suffix: str,
    prepared: tuple[pd.DataFrame, str],
) -> list[Block]:
    """Everything that compares trials, for one group of comparable trials (one protocol)."""
    importance, note = prepared
    warm = compare_with_warm_starts(ranked, evaluations, exp.warm_start, exp.metric, exp.mode)
    return [
        *answer_blocks(exp, ranked, evaluations, out_dir, suffix),
        Block("list", items=confirm.answer_items(exp, ranked, answer_lines(exp, ranked, warm, importance))),
        *confirm.sections(exp, ranked),
        *_leaderboard_blocks(exp, ranked),
        *_warm_blocks(exp, ranked, warm, out_dir, suffix),
        *_curve_blocks(exp, ranked, evaluations, out_dir, suffix),
        *_compute_blocks(exp, evaluations, out_dir, suffix),
        *_importance_blocks(importance, note, out_dir, suffix),
        *_sample_section(exp, ranked, evaluations, out_dir, suffix),
    ]


# ---------------------------------------------------------------------------------------------
# The closing summary


def summary_lines(exp: Experiment, ranked: pd.DataFrame, top: int) -> list[str]:
    """The best trials by the ranking metric with their searched parameters and the iterations of
    their best evaluation (per protocol, with a protocol column, when the trials mix them)."""
    rated = ranked[ranked["rank"].notna()] if len(ranked) else ranked
    if not len(rated):
        return ["no trial has a finite evaluation yet"]
    table = rated.rename(columns={f"config/{p}": p for p in exp.params})
    table = table.rename(columns={ITERATIONS: f"{ITERATIONS}_reached", "best_iteration": ITERATIONS})
    text, mixed = top_text(table, ("trial_id", exp.metric, ITERATIONS, "status", *exp.params), top)
    return [f"best trials by {exp.metric} ({exp.mode})" + (", ranked per protocol:" if mixed else ":"), text]
