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
from analysis.reporting.plots import (
    image_grid,
    plot_answer,
    plot_importance,
    plot_learning_curves,
    plot_metric_vs_params,
    plot_pareto,
    plot_sample_panels,
)
from analysis.reporting.render import Block, capitalised, fmt, relation, top_text
from trainables.contract.layout import LEADERBOARD_CSV, STOPPED, WARM_START_NAMES
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


def interval_text(row: pd.Series, metric: str) -> str:
    """``[lo, hi]``: the 95% interval of ``metric`` in a trials row ('' when it has none)."""
    lo, hi = row.get(lo_key(metric)), row.get(hi_key(metric))
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return ""
    return f"[{fmt(lo)}, {fmt(hi)}]"


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


def _params_text(trial: pd.Series, params: Sequence[str]) -> str:
    return ", ".join(f"{p}={fmt(trial.get(f'config/{p}'))}" for p in params)


# ---------------------------------------------------------------------------------------------
# The answer


def _best_item(exp: Experiment, best: pd.Series, label: str = "Best setting") -> str:
    interval = interval_text(best, exp.metric)
    spread = f" (95% interval {interval}, with the noise of its samples)" if interval else ""
    return (
        f"{label}: trial {best['trial_id']} ({_params_text(best, list(exp.params))}) with {exp.metric} "
        f"{fmt(best[exp.metric])}{spread} at {fmt(best['best_iteration'])} iterations; status {best['status']}."
    )


def _runner_up_items(exp: Experiment, rated: pd.DataFrame) -> list[str]:
    best, second, metric = rated.iloc[0], rated.iloc[1], exp.metric
    margin = (
        f"Runner-up: trial {second['trial_id']} with {metric} {fmt(second[metric])}; the best is "
        f"{relation(float(best[metric]), float(second[metric]), exp.mode)}."
    )
    has = lo_key(metric) in rated and hi_key(metric) in rated
    lo, hi = (pd.to_numeric(rated[k], errors="coerce") if has else None for k in (lo_key(metric), hi_key(metric)))
    if has and pd.notna(lo.iloc[0]) and pd.notna(hi.iloc[0]):
        overlapping = rated[(lo <= float(hi.iloc[0])) & (hi >= float(lo.iloc[0]))]
        others = [t for t in overlapping["trial_id"] if t != best["trial_id"]]
        if others:
            margin += (
                f" {len(others)} other trial(s) have a 95% interval that overlaps the best's ({', '.join(others)}): "
                f"one evaluation does not separate them."
            )
        else:
            margin += " No other trial's 95% interval overlaps the best's."
    items = [margin]
    tied = rated[rated["rank"] == best["rank"]]
    if len(tied) > 1:
        items.append(
            f"{len(tied)} trials tie for first ({', '.join(tied['trial_id'])}); the one that "
            f"needed fewer network evaluations is listed first."
        )
    return items


def _warm_item(row: pd.Series, best: pd.Series, metric: str, mode: str) -> str:
    name = WARM_START_NAMES.get(row["setting"], row["setting"])
    if pd.isna(row["trial_id"]):
        return (
            f"{capitalised(name)}: no trial in this comparison ran it (outside the space, not reached yet, "
            f"or scored under another protocol), so no comparison."
        )
    if row["trial_id"] == best["trial_id"]:
        return f"The best trial is {name} itself (trial {row['trial_id']})."
    value, same = float(row[metric]), float(row["best_at_same_iterations"])
    text = (
        f"Versus {name} (trial {row['trial_id']}, {row['status']}, {fmt(row[ITERATIONS])} iterations, "
        f"{metric} {fmt(value)}): "
    )
    if same == float(best[metric]):
        return text + f"the best trial ({fmt(same)}) is {relation(same, value, mode)}."
    return text + (
        f"at the same {fmt(row[ITERATIONS])} iterations the best trial had {fmt(same)}, "
        f"{relation(same, value, mode)}; at its own best ({fmt(best[metric])}) it is "
        f"{relation(float(best[metric]), value, mode)}."
    )


def _answer(exp: Experiment, ranked: pd.DataFrame, warm: pd.DataFrame, importance: pd.DataFrame) -> list[str]:
    """The summary bullets: best trial, margin over the runner-up, warm starts, importance (no
    winner named when the pipeline check finds the samples far from digits)."""
    rated = ranked[ranked["rank"].notna()]
    if not len(rated):
        return ["No trial has a finite evaluation yet: nothing to rank."]
    best = rated.iloc[0]
    label = "Best so far (not a result)" if confirm.pipeline_check(exp, ranked) else "Best setting"
    items = [_best_item(exp, best, label)]
    if len(rated) > 1:
        items += _runner_up_items(exp, rated)
    items += [_warm_item(row, best, exp.metric, exp.mode) for _, row in warm.iloc[1:].iterrows()]
    if len(importance):
        top = importance.iloc[0]
        items.append(
            f"Most important parameter by PED-ANOVA: {top['param']} ({top['importance']:.2f} of 1); "
            f"see the importance section for how rough that is."
        )
    return items


def _answer_sentence(exp: Experiment, best: pd.Series, far: list[str]) -> str:
    value = f"{exp.metric} {fmt(best[exp.metric])}"
    interval = interval_text(best, exp.metric)
    value += f" (95% interval {interval})" if interval else ""
    if far:
        return (
            f"No setting draws digits yet ({far[0].split(' (')[0]}), so this search checked the pipeline and "
            f"names no winner: its best so far is trial {best['trial_id']} with {value}, its samples below "
            f"beside real digits."
        )
    return (
        f"Trial {best['trial_id']} ({_params_text(best, list(exp.params))}) is the best setting, with {value} at "
        f"{fmt(best['best_iteration'])} iterations: its samples below beside real digits, and {exp.metric} "
        f"against the network evaluations every trial spent."
    )


def _answer_blocks(
    exp: Experiment, ranked: pd.DataFrame, evaluations: pd.DataFrame, out_dir: Path, suffix: str
) -> list[Block]:
    """The answer's opening: one sentence, then one figure (the best trial's samples beside real
    test digits, and the metric against network evaluations, the best trial's in red)."""
    from trainables.contract.data import load_mnist_arrays

    blocks = [Block("h2", "Answer")]
    rated = ranked[ranked["rank"].notna()]
    if not len(rated):
        return blocks
    best = rated.iloc[0]
    blocks.append(Block("p", _answer_sentence(exp, best, confirm.pipeline_check(exp, ranked))))
    real, _ = load_mnist_arrays(train=False)
    panels: list[tuple[str, Any]] = []
    png, _ = checkpoint_samples(best, evaluations, exp.mode, exp.metric)
    if png is not None:
        panels.append((f"trial {best['trial_id']} ({exp.metric} {fmt(best[exp.metric])})", png))
    panels.append(("real MNIST (test set)", image_grid(real[:64])))
    file = f"answer{suffix}.png"
    plot_answer(panels, evaluations, exp.metric, str(best["trial_id"]), out_dir / file)
    caption = f"the best trial's samples, real digits, and {exp.metric} against network evaluations"
    return blocks + [Block("image", file=file, caption=caption)]


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
        *_answer_blocks(exp, ranked, evaluations, out_dir, suffix),
        Block("list", items=confirm.answer_items(exp, ranked, _answer(exp, ranked, warm, importance))),
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
