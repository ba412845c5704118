"""PNG plots of the analysis frames (matplotlib, Agg; no pyplot state, so safe inside any process).

Each function takes frames from :mod:`analysis.load` / :mod:`analysis.rank`, writes one PNG to
``path`` and returns ``path``. They only draw: every number comes from the frames. The first
plots serve the joint report, :func:`plot_sampler_panels` the sampler report, the sample grids
both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from analysis.frames import finite
from analysis.kinds import COMPUTE
from analysis.rank import pareto_front, scored_evaluations
from analysis.reporting.render import fmt
from trainables.contract.layout import (
    DIVERGED,
    ERRORED,
    FINISHED,
    SAMPLER_TIME_ATTR,
    STOPPED,
    TRAIN_TIME_ATTR,
    UNFINISHED,
)

STATUS_COLORS = {
    FINISHED: "tab:blue",
    STOPPED: "tab:orange",
    DIVERGED: "tab:red",
    ERRORED: "black",
    UNFINISHED: "tab:gray",
}
DPI = 100
# zlib level 1 instead of Pillow's default 6: on a 6-panel figure savefig took 0.25-0.28 s instead
# of 0.32 s, for a file 1.4x the size (78 KB instead of 56 KB)
PNG_OPTIONS = {"compress_level": 1}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, format="png", pil_kwargs=PNG_OPTIONS)
    return path


def _wide_positive(values: pd.Series) -> bool:
    """Log axis when every value is positive and they span more than a factor of 20."""
    v = values[finite(values)].astype(float)
    return len(v) > 1 and (v > 0).all() and v.max() / v.min() > 20


def _is_log(form: dict) -> bool:
    return "loguniform" in form or bool(form.get("log"))


def _param_axis(ax, x: pd.Series, form: dict) -> pd.Series:
    """Positions of the values ``x`` of one parameter on ``ax``: a category axis for a choice, a
    log axis for a log-scaled range."""
    if "choice" in form:
        levels = [repr(c) for c in form["choice"]]
        ax.set_xticks(range(len(levels)), levels)
        return x.map(lambda v: levels.index(repr(v)) if repr(v) in levels else np.nan)
    if _is_log(form):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
    return pd.to_numeric(x, errors="coerce")


def _param_panel(
    ax, trials: pd.DataFrame, name: str, form: dict, metric: str, y_all: pd.Series, ok: pd.Series, marks: dict[str, str]
) -> None:
    xpos = _param_axis(ax, trials[f"config/{name}"], form)
    for status, color in STATUS_COLORS.items():
        sel = ok & (trials["status"] == status)
        if sel.any():
            ax.scatter(xpos[sel], y_all[sel], c=color, label=status, s=36, edgecolors="white", zorder=3)
    for trial_id, label in marks.items():
        sel = ok & (trials["trial_id"] == trial_id)
        for xv, yv in zip(xpos[sel], y_all[sel], strict=True):
            ax.annotate(label, (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if _wide_positive(y_all):
        ax.set_yscale("log")
    missing = int((~ok).sum())
    ax.set_title(name + (f" ({missing} trial(s) without a value)" if missing else ""), fontsize=9)
    ax.set_xlabel(name)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)


def plot_metric_vs_params(
    trials: pd.DataFrame, params: dict[str, dict], metric: str, path: Path, marks: dict[str, str] | None = None
) -> Path:
    """One panel per searched parameter: each trial's ``metric`` (at its best evaluation) against
    the parameter's value, coloured by status; log axes for log-scaled parameters; trials named in
    ``marks`` ({trial_id: label}, e.g. the best and the warm starts) are labelled. Trials without a
    finite value are counted in the panel title, not drawn."""
    names = list(params) or ["(no searched parameter)"]
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _figure(4.2 * ncols, 3.4 * nrows)
    y_all = pd.to_numeric(trials[metric], errors="coerce") if len(trials) else pd.Series(dtype=float)
    ok = finite(y_all) if len(trials) else pd.Series(dtype=bool)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        if f"config/{name}" not in trials or not len(trials):
            ax.set_title(f"{name}: no trials")
            continue
        _param_panel(ax, trials, name, params.get(name, {}), metric, y_all, ok, marks or {})
        if i == 0 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_learning_curves(
    evaluations: pd.DataFrame, panels: Sequence[tuple[str, Sequence[str]]], metric: str, path: Path
) -> Path:
    """Learning curves (``metric`` against training iterations), one panel per (title, trial ids),
    e.g. the top trials and the ones ASHA stopped. Diverged records are drawn as a red x at the
    top of the panel where the divergence happened."""
    fig = _figure(5.2 * max(1, len(panels)), 3.8)
    scored = scored_evaluations(evaluations, metric)
    everyone = list(dict.fromkeys(t for _, ids in panels for t in ids))
    colors = {t: f"C{k % 10}" for k, t in enumerate(everyone)}  # one colour per trial across panels
    for i, (title, ids) in enumerate(panels or [("no trials", [])]):
        ax = fig.add_subplot(1, max(1, len(panels)), i + 1)
        ax.set_title(title, fontsize=9)
        if not ids:
            ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
        for trial_id in ids:
            mine = scored[scored["trial_id"] == trial_id]
            ax.plot(mine[TRAIN_TIME_ATTR], mine[metric], marker="o", ms=3, label=trial_id, c=colors[trial_id])
            gone = evaluations[(evaluations["trial_id"] == trial_id) & evaluations["diverged"].astype(bool)]
            for it in gone[TRAIN_TIME_ATTR]:
                ax.scatter([it], [1.0], marker="x", c="tab:red", transform=ax.get_xaxis_transform(), clip_on=False)
        if len(ids) and _wide_positive(scored[scored["trial_id"].isin(ids)][metric]):
            ax.set_yscale("log")
        ax.set_xlabel("training iterations")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ids:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pareto(
    evaluations: pd.DataFrame, front: pd.DataFrame, metric: str, path: Path, compute: str = COMPUTE
) -> Path:
    """Every evaluation's ``metric`` against the network evaluations spent to reach it (grey), and
    the Pareto front (red steps, points labelled with trial id and iterations)."""
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    pts = scored_evaluations(evaluations, metric, compute)
    ax.scatter(pts[compute], pts[metric], c="0.6", s=18, label="evaluations")
    if len(front):
        ax.step(front[compute], front[metric], where="post", c="tab:red", lw=1.5)
        ax.scatter(front[compute], front[metric], c="tab:red", s=30, zorder=3, label="Pareto front")
        for _, row in front.iterrows():
            ax.annotate(
                f"{row['trial_id']}@{int(row[TRAIN_TIME_ATTR])}",
                (row[compute], row[metric]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    if _wide_positive(pts[compute]) if len(pts) else False:
        ax.set_xscale("log")
    if _wide_positive(pts[metric]) if len(pts) else False:
        ax.set_yscale("log")
    ax.set_xlabel("network evaluations (training + sampling, per image)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_importance(importance: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars of parameter importance (most important on top)."""
    fig = _figure(5.0, 0.5 + 0.45 * max(1, len(importance)))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(importance["param"][::-1], importance["importance"][::-1], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def image_grid(images: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images [N, 1, H, W] (uint8 0..255 or float 0..1) into one float array in [0, 1] of shape
    [rows*(H+p)+p, nrow*(W+p)+p], white padding: the layout of the trials' samples.png grids."""
    images = np.asarray(images)
    x = images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)
    n, _, h, w = x.shape
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = x[i, 0]
    return grid


def save_image_grid(images: np.ndarray, path: Path, nrow: int = 8) -> Path:
    """Write :func:`image_grid` of ``images`` as a greyscale PNG at one pixel per image pixel."""
    from matplotlib.image import imsave

    imsave(Path(path), image_grid(images, nrow=nrow), cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return Path(path)


def plot_sample_panels(panels: Sequence[tuple[str, Path | np.ndarray]], path: Path) -> Path:
    """Sample grids side by side, each titled (e.g. real MNIST first, then the top trials); a panel
    is a PNG file or a greyscale array in [0, 1] (see :func:`image_grid`)."""
    from matplotlib.image import imread

    n = max(1, len(panels))
    fig = _figure(3.0 * n, 3.4)
    for i, (title, png) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        image = png if isinstance(png, np.ndarray) else imread(str(png))
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return _save(fig, path)


def plot_answer(
    panels: Sequence[tuple[str, Path | np.ndarray]],
    evaluations: pd.DataFrame,
    metric: str,
    best_trial: str,
    path: Path,
    compute: str = COMPUTE,
) -> Path:
    """The report's answer in one figure: sample grids side by side (the best trial's, then real
    digits), then ``metric`` against network evaluations for every evaluation (grey) with the
    best trial's own evaluations joined in red."""
    from matplotlib.image import imread

    n = len(panels)
    fig = _figure(3.0 * n + 4.4, 3.4)
    grid = fig.add_gridspec(1, n + 1, width_ratios=[1.0] * n + [1.5])
    for i, (title, png) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        image = png if isinstance(png, np.ndarray) else imread(str(png))
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[0, n])
    pts = scored_evaluations(evaluations, metric, compute)
    ax.scatter(pts[compute], pts[metric], c="0.65", s=14, label="every evaluation")
    own = pts[pts["trial_id"] == best_trial].sort_values(compute) if len(pts) else pts
    if len(own):
        ax.plot(own[compute], own[metric], "o-", c="tab:red", ms=4, lw=1.5, label=f"trial {best_trial}")
    if len(pts) and _wide_positive(pts[compute]):
        ax.set_xscale("log")
    if len(pts) and _wide_positive(pts[metric]):
        ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image", fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _sampler_panel(ax, rows: pd.DataFrame, looks: Sequence[int], metric: str, mode: str, x: str, front: bool) -> None:
    """Every evaluation of one checkpoint, coloured by look; a trial's looks joined by a grey line;
    with ``front``, the quality-versus-compute front at each look (ringed points, steps)."""
    colors = {look: f"C{i % 10}" for i, look in enumerate(looks)}
    for _, trace in rows.sort_values(SAMPLER_TIME_ATTR).groupby("trial_id"):  # one trial's looks
        ax.plot(trace[x], trace[metric], c="0.75", lw=0.8, zorder=2)
    for j, look in enumerate(looks):
        part = rows[rows[SAMPLER_TIME_ATTR] == look]
        if not len(part):
            continue
        size = max(12, 70 - 22 * j)  # earlier looks larger and below, so later ones stay visible on top
        ax.scatter(
            part[x],
            part[metric],
            s=size,
            c=colors[look],
            edgecolors="white",
            zorder=3 + j,
            label=f"{look} samples ({len(part)} trials)",
        )
        if front:
            line = pareto_front(part, metric, mode, compute=x)
            ax.step(line[x], line[metric], where="post", c=colors[look], lw=1.2, alpha=0.8)
            ax.scatter(
                line[x], line[metric], s=size, facecolors="none", edgecolors="black", linewidths=1.0, zorder=10
            )  # ringed: on the front
    last = rows.sort_values(SAMPLER_TIME_ATTR).groupby("trial_id").tail(1)
    for _, row in last[last["warm_start"].astype(bool)].iterrows():
        ax.annotate(row["warm_start"], (row[x], row[metric]), textcoords="offset points", xytext=(4, 4), fontsize=7)


def _original_mark(ax, ckpt, metric: str, front: bool) -> None:
    """The checkpoint's score from the joint search: a dashed line, and with ``front`` a star at
    its trained-with sampler's cost (levels x T + denoise)."""
    original = getattr(ckpt, f"original_{metric}")
    ax.axhline(
        original,
        ls="--",
        c="0.3",
        lw=1,
        label=f"original {metric} {fmt(original)} ({ckpt.original_samples} samples, joint search)",
    )
    if front:
        nfe = int(ckpt.num_levels) * int(ckpt.trained_n_steps_each) + int(bool(ckpt.trained_denoise))
        ax.scatter([nfe], [original], marker="*", s=140, c="0.3", zorder=4)
    ax.set_title(f"checkpoint {ckpt.source}", fontsize=9)


def plot_sampler_panels(
    evaluations: pd.DataFrame,
    checkpoints: pd.DataFrame,
    looks: Sequence[int],
    metric: str,
    mode: str,
    x: str,
    xlabel: str,
    path: Path,
    front: bool,
) -> Path:
    """One panel per source checkpoint (``checkpoints``: one row per checkpoint with its original
    score, see :func:`analysis.reporting.sampler.checkpoints_frame`): ``metric`` of every scored evaluation
    against column ``x`` (e.g. step_lr or nfe_per_sample), coloured by look, warm starts labelled,
    the original score dashed; ``front`` adds each look's quality-versus-compute front."""
    ckpts = list(checkpoints.itertuples(index=False)) or [None]
    fig = _figure(6.0 * len(ckpts), 4.4)
    scored = scored_evaluations(evaluations, metric)
    for i, ckpt in enumerate(ckpts):
        ax = fig.add_subplot(1, len(ckpts), i + 1)
        mine = scored[scored["source_checkpoint"] == ckpt.checkpoint] if ckpt is not None else scored
        _sampler_panel(ax, mine, looks, metric, mode, x, front)
        if ckpt is not None:
            _original_mark(ax, ckpt, metric, front)
        if len(mine) and _wide_positive(mine[x]):
            ax.set_xscale("log")
        if len(mine) and _wide_positive(mine[metric]):
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} ({'lower' if mode == 'min' else 'higher'} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)
