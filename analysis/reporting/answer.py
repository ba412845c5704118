"""The answer a joint search's report opens with: the best setting, the runners-up it cannot be told
apart from, the warm starts against it, in sentences and one figure (:mod:`analysis.reporting.joint`
puts them first).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.load import Experiment, checkpoint_samples
from analysis.reporting import confirm
from analysis.reporting.plots import image_grid, plot_answer
from analysis.reporting.render import Block, capitalised, fmt, relation
from trainables.contract.layout import TRAIN_TIME_ATTR as ITERATIONS
from trainables.contract.layout import WARM_START_NAMES
from trainables.contract.metrics import hi_key, lo_key


def interval_text(row: pd.Series, metric: str) -> str:
    """``[lo, hi]``: the 95% interval of ``metric`` in a trials row ('' when it has none)."""
    lo, hi = row.get(lo_key(metric)), row.get(hi_key(metric))
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return ""
    return f"[{fmt(lo)}, {fmt(hi)}]"


def params_text(trial: pd.Series, params: Sequence[str]) -> str:
    return ", ".join(f"{p}={fmt(trial.get(f'config/{p}'))}" for p in params)


def _best_item(exp: Experiment, best: pd.Series, label: str = "Best setting") -> str:
    interval = interval_text(best, exp.metric)
    spread = f" (95% interval {interval}, with the noise of its samples)" if interval else ""
    return (
        f"{label}: trial {best['trial_id']} ({params_text(best, list(exp.params))}) with {exp.metric} "
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


def answer_lines(exp: Experiment, ranked: pd.DataFrame, warm: pd.DataFrame, importance: pd.DataFrame) -> list[str]:
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
        f"Trial {best['trial_id']} ({params_text(best, list(exp.params))}) is the best setting, with {value} at "
        f"{fmt(best['best_iteration'])} iterations: its samples below beside real digits, and {exp.metric} "
        f"against the network evaluations every trial spent."
    )


def answer_blocks(
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
