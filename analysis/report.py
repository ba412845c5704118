"""The search report: which setting is best, by how much, and why.

:func:`write_report` loads an experiment folder, ranks it and writes into ``<exp>/report/``:
``report.md``, ``report.html`` (self-contained: every plot embedded as a base64 PNG, each named by
its file, so it opens offline), ``leaderboard.csv`` (every trial, every column) and the PNG plots
next to them. The report is built once as a list of :class:`Block`s and rendered twice (Markdown
and HTML), so both say the same thing.
"""

from __future__ import annotations

import base64
import html
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.importance import param_importances
from analysis.load import (COMPUTE, DIVERGED, ERRORED, FINISHED, REPORT_DIR, STATUSES, STOPPED, UNFINISHED,
                           Experiment, checkpoint_record, checkpoint_samples, load_experiment, load_study)
from analysis.plots import (image_grid, plot_importance, plot_learning_curves, plot_metric_vs_params,
                            plot_pareto, plot_sample_panels)
from analysis.rank import (NO_PROTOCOL, check_protocols, compare_with_warm_starts, compute_budgets,
                           equal_compute_table, pareto_front, rank_trials)
from trainables.quality import METRICS

TOP_TABLE = 10      # leaderboard rows shown in the report (leaderboard.csv holds all)
TOP_CURVES = 5      # learning curves of the top trials
TOP_SAMPLES = 4     # sample grids of the top trials beside real MNIST
PLOT_PREFIXES = ("metric_vs_params", "learning_curves", "pareto", "importance", "samples_vs_mnist")
WARM_START_NAMES = {
    "ncsn_2019_mnist": "the 2019 NCSN MNIST setting (Song & Ermon 2019)",
    "ncsnv2_mnist": "the NCSNv2 recommended setting (Song & Ermon 2020)",
}


@dataclass
class Block:
    """One piece of the report: ``kind`` is h1/h2/h3/p/list/table/image/code."""

    kind: str
    text: str = ""
    items: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = None
    file: str = ""
    caption: str = ""


# ---------------------------------------------------------------------------------------------
# Formatting


def fmt(value: Any) -> str:
    """A cell as text: 4 significant digits, integers plain, '' for missing, 'inf' kept."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if float(value).is_integer() and abs(value) < 1e9:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def _text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.map(fmt) if len(frame) else frame.astype(str)


def relation(best: float, other: float, mode: str) -> str:
    """How ``best`` compares with ``other`` for a metric of direction ``mode``, as words: a ratio
    when both are positive ("2.73x lower (better)"), else the difference."""
    if any(v is None or not math.isfinite(v) for v in (best, other)):
        if other is not None and math.isinf(other) and best is not None and math.isfinite(best):
            return "finite where the other is not (better)"
        return "not comparable (a value is missing)"
    if best == other:
        return "equal"
    lower = best < other
    better = lower if mode == "min" else not lower
    word = "lower" if lower else "higher"
    if best > 0 and other > 0:
        factor = max(best, other) / min(best, other)
        size = f"{factor:.2f}x {word}"
    else:
        size = f"{abs(best - other):.4g} {word}"
    return f"{size} ({'better' if better else 'worse'})"


# ---------------------------------------------------------------------------------------------
# Rendering


def _md_table(frame: pd.DataFrame) -> str:
    text = _text_frame(frame)
    cells = lambda row: "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"
    lines = [cells(text.columns), "|" + "|".join("---" for _ in text.columns) + "|"]
    lines += [cells(row) for row in text.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(blocks: Sequence[Block]) -> str:
    """The report as Markdown; images are linked by file name (they sit next to report.md)."""
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "list":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            out.append(_md_table(b.frame) if b.frame is not None and len(b.frame) else "_(empty)_")
        elif b.kind == "image":
            out.append(f"![{b.file}: {b.caption}]({b.file})\n\n*{b.file}: {b.caption}*")
        elif b.kind == "code":
            out.append(f"```\n{b.text}\n```")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f2f2f2}td:nth-child(-n+3){text-align:left}figure{margin:1em 0}img{max-width:100%}
figcaption{font-size:13px;color:#555}code,pre{background:#f6f6f6}pre{padding:.5em;overflow-x:auto}"""


def render_html(blocks: Sequence[Block], out_dir: Path, title: str) -> str:
    """The report as one HTML page; each image is embedded as a data URI and named by its file
    (``data-file``, ``alt`` and the caption), the file itself lying in ``out_dir``."""
    body = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            body.append(_text_frame(b.frame).to_html(index=False, escape=True, border=0)
                        if b.frame is not None and len(b.frame) else "<p><em>(empty)</em></p>")
        elif b.kind == "image":
            data = base64.b64encode((out_dir / b.file).read_bytes()).decode("ascii")
            name, caption = html.escape(b.file, quote=True), html.escape(b.caption, quote=True)
            body.append(f'<figure><img src="data:image/png;base64,{data}" data-file="{name}" '
                        f'alt="{name}: {caption}" title="{name}"><figcaption><code>{name}</code>: '
                        f'{caption}</figcaption></figure>')
        elif b.kind == "code":
            body.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------------------------------------
# Sections


def leaderboard(ranked: pd.DataFrame, params: Sequence[str], metric: str) -> pd.DataFrame:
    """The leaderboard: rank, trial, status, searched parameters, the ranking metric (best and
    last), the other metrics at the same evaluation, iterations, compute, wall time, checkpoint;
    then every remaining column (full config) for the CSV."""
    frame = ranked.rename(columns={f"config/{p}": p for p in params})
    first = ["rank", "protocol", "experiment", "trial_id", "status", "stop_reason", *params, metric,
             f"{metric}_last", *[m for m in METRICS if m != metric], "kid_std", "iterations", "best_iteration",
             "evaluations", COMPUTE, "best_evals_total", "train_evals_total", "sample_evals_total",
             "time_total_s", "train_seconds", "sample_seconds", "score_seconds", "best_checkpoint", "protocol_id"]
    first = [c for c in dict.fromkeys(first) if c in frame]
    return frame[first + [c for c in frame.columns if c not in first]]


def _shown_leaderboard(board: pd.DataFrame, params: Sequence[str], metric: str) -> pd.DataFrame:
    cols = ["rank", "trial_id", "status", *params, metric, *[m for m in METRICS if m != metric],
            "iterations", "best_iteration", COMPUTE, "time_total_s"]
    shown = board[[c for c in cols if c in board]].head(TOP_TABLE)
    return shown.rename(columns={COMPUTE: "network_evals", "time_total_s": "wall_s",
                                 "best_iteration": "best_at_iter", "inception_score": "IS",
                                 "class_coverage": "class_cov"})


def _status_line(trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts() if len(trials) else pd.Series(dtype=int)
    words = {FINISHED: "finished", STOPPED: "stopped early by ASHA", DIVERGED: "diverged",
             ERRORED: "errored", UNFINISHED: "unfinished (running or interrupted)"}
    return f"{len(trials)} trials: " + ", ".join(f"{int(counts.get(s, 0))} {words[s]}" for s in STATUSES)


def _params_text(trial: pd.Series, params: Sequence[str]) -> str:
    return ", ".join(f"{p}={fmt(trial.get(f'config/{p}'))}" for p in params)


def _answer(exp: Experiment, ranked: pd.DataFrame, evaluations: pd.DataFrame, metric: str, mode: str,
            warm: pd.DataFrame, importance: pd.DataFrame) -> list[str]:
    """The summary bullets: best trial, margin over the runner-up, warm starts, importance."""
    rated = ranked[ranked["rank"].notna()]
    if not len(rated):
        return ["No trial has a finite evaluation yet: nothing to rank."]
    best = rated.iloc[0]
    params = list(exp.params)
    items = [f"Best setting: trial {best['trial_id']} ({_params_text(best, params)}) with {metric} "
             f"{fmt(best[metric])}" + (f" (KID spread over its subsets: std {fmt(best['kid_std'])})"
                                      if metric == "kid" and pd.notna(best.get("kid_std")) else "")
             + f" at {fmt(best['best_iteration'])} iterations; status {best['status']}."]
    if len(rated) > 1:
        second = rated.iloc[1]
        margin = f"Runner-up: trial {second['trial_id']} with {metric} {fmt(second[metric])}; the best is " \
                 f"{relation(float(best[metric]), float(second[metric]), mode)}."
        if metric == "kid" and pd.notna(best.get("kid_std")) and pd.notna(second.get("kid_std")):
            spread = max(float(best["kid_std"]), float(second["kid_std"]))
            if spread > 0 and math.isfinite(float(second[metric])):
                gap = abs(float(second[metric]) - float(best[metric])) / spread
                margin += (f" The gap is {gap:.1f} times the larger KID std over subsets; that std leaves out "
                           f"the noise of drawing only {exp.search.get('spec', {}).get('budget', {}).get('eval_samples', 'N')} "
                           f"samples, so treat gaps of a few std as ties.")
        items.append(margin)
        tied = rated[rated["rank"] == best["rank"]]
        if len(tied) > 1:
            items.append(f"{len(tied)} trials tie for first ({', '.join(tied['trial_id'])}); the one that "
                         f"needed fewer network evaluations is listed first.")
    for _, row in warm.iloc[1:].iterrows():
        name = WARM_START_NAMES.get(row["setting"], row["setting"])
        if pd.isna(row["trial_id"]):
            items.append(f"{name[0].upper() + name[1:]}: no trial in this comparison ran it (outside the space, "
                         f"not reached yet, or scored under another protocol), so no comparison.")
            continue
        if row["trial_id"] == best["trial_id"]:
            items.append(f"The best trial is {name} itself (trial {row['trial_id']}).")
            continue
        value, same = float(row[metric]), float(row["best_at_same_iterations"])
        text = (f"Versus {name} (trial {row['trial_id']}, {row['status']}, {fmt(row['iterations'])} iterations, "
                f"{metric} {fmt(value)}): ")
        if same == float(best[metric]):
            text += f"the best trial ({fmt(same)}) is {relation(same, value, mode)}."
        else:
            text += (f"at the same {fmt(row['iterations'])} iterations the best trial had {fmt(same)}, "
                     f"{relation(same, value, mode)}; at its own best ({fmt(best[metric])}) it is "
                     f"{relation(float(best[metric]), value, mode)}.")
        items.append(text)
    if len(importance):
        top = importance.iloc[0]
        items.append(f"Most important parameter by PED-ANOVA: {top['param']} ({top['importance']:.2f} of 1); "
                     f"see the importance section for how rough that is.")
    return items


def _sample_section(exp: Experiment, ranked: pd.DataFrame, evaluations: pd.DataFrame, metric: str, mode: str,
                    out_dir: Path, suffix: str) -> list[Block]:
    from trainables.data import load_mnist

    real, _ = load_mnist(train=False)
    panels: list[tuple[str, Any]] = [("real MNIST (test set, first 64)", real[:64].numpy())]
    sources = []
    for _, trial in ranked[ranked["rank"].notna()].head(TOP_SAMPLES).iterrows():
        png, note = checkpoint_samples(trial, evaluations, mode, metric)
        histogram = checkpoint_record(png.parent).get("metrics", {}).get("class_histogram") if png else None
        sources.append({"rank": trial["rank"], "trial_id": trial["trial_id"], metric: trial[metric],
                        "grid": f"{png.parent.name}/{png.name}" if png else "", "from": note,
                        "predicted digits 0-9": " ".join(map(str, histogram)) if histogram else ""})
        if png is not None:
            panels.append((f"#{trial['rank']} {trial['trial_id']} ({metric} {fmt(trial[metric])})", png))
    file = f"samples_vs_mnist{suffix}.png"
    plot_sample_panels([(t, image_grid(p) if isinstance(p, np.ndarray) else p) for t, p in panels], out_dir / file)
    return [
        Block("h2", "Samples of the top trials next to real MNIST"),
        Block("p", "Each grid is the 64 scored samples of the trial's best evaluation (its samples.png; "
                   "the nearest kept checkpoint when Ray dropped that one), beside 64 real test digits. The last "
                   "column counts the classifier's predicted digit over all scored samples of that evaluation "
                   "(from its metrics.json): a spike on one digit means the samples collapsed to one mode."),
        Block("image", file=file, caption=f"real MNIST, then the top {len(panels) - 1} trial(s) by {metric}"),
        Block("table", frame=pd.DataFrame(sources)),
    ]


def _group_sections(exp: Experiment, ranked: pd.DataFrame, evaluations: pd.DataFrame, out_dir: Path,
                    suffix: str, importance: pd.DataFrame, importance_note: str) -> list[Block]:
    """Everything that compares trials, for one group of comparable trials (one protocol)."""
    metric, mode = exp.metric, exp.mode
    params = list(exp.params)
    direction = "lower" if mode == "min" else "higher"
    warm = compare_with_warm_starts(ranked, evaluations, exp.warm_start, metric, mode)
    blocks = [Block("h2", "Answer"), Block("list", items=_answer(exp, ranked, evaluations, metric, mode, warm, importance))]

    board = leaderboard(ranked, params, metric)
    blocks += [Block("h2", "Leaderboard"),
               Block("p", f"Ranked by {metric} ({direction} is better: {METRICS[metric].description}) at each "
                          f"trial's best evaluation; the other metrics are from that same evaluation. Ties share a "
                          f"rank. Top {min(TOP_TABLE, len(board))} of {len(board)} shown; leaderboard.csv has all "
                          f"trials and columns."),
               Block("table", frame=_shown_leaderboard(board, params, metric))]

    shown_warm = warm.rename(columns={"best_at_same_iterations": f"best_trial_{metric}_at_same_iters"})
    blocks += [Block("h2", "Best trial versus the warm-start settings"),
               Block("p", "The search proposed the published MNIST settings first where they fall inside the space. "
                          f"ratio = the setting's {metric} / the best trial's; the last column is the best trial's "
                          f"{metric} using only its evaluations up to the iterations that setting reached."),
               Block("table", frame=shown_warm)]

    marks = {row["trial_id"]: row["setting"] for _, row in warm.iloc[::-1].iterrows() if not pd.isna(row["trial_id"])}
    file = f"metric_vs_params{suffix}.png"
    plot_metric_vs_params(ranked, exp.params, metric, out_dir / file, marks)
    blocks += [Block("h2", "Metric versus each searched parameter"),
               Block("image", file=file, caption=f"{metric} at each trial's best evaluation against each searched "
                                                 f"parameter, coloured by status; best and warm starts labelled")]

    rated = ranked[ranked["rank"].notna()]
    top_ids = list(rated["trial_id"].head(TOP_CURVES))
    stopped_ids = list(ranked.loc[ranked["status"] == STOPPED, "trial_id"])
    file = f"learning_curves{suffix}.png"
    plot_learning_curves(evaluations, [(f"top {len(top_ids)} trials", top_ids),
                                       (f"stopped by ASHA ({len(stopped_ids)})", stopped_ids)], metric, out_dir / file)
    blocks += [Block("h2", "Learning curves"),
               Block("image", file=file, caption=f"{metric} at every evaluation against training iterations: the top "
                                                 f"trials, and the trials ASHA stopped early")]

    budgets = compute_budgets(evaluations, metric=metric)
    table = equal_compute_table(evaluations, budgets, metric, mode) if budgets else pd.DataFrame()
    front = pareto_front(evaluations, metric, mode)
    file = f"pareto{suffix}.png"
    plot_pareto(evaluations, front, metric, out_dir / file)
    front_cols = [c for c in ("trial_id", "iterations", metric, COMPUTE, "train_evals_total", "sample_evals_total",
                              "checkpoint_dir_name") if c in front]
    blocks += [Block("h2", "Quality at equal compute"),
               Block("p", "Compute is counted in network evaluations per image: training counts batch size x "
                          "iterations (forward and backward counted once), sampling counts Langevin steps x samples "
                          "for every evaluation so far. Budgets run from the smallest one in which every evaluated "
                          "trial has an evaluation to the most any trial spent; each row is the best evaluation "
                          "reached within that budget."),
               Block("table", frame=table),
               Block("h3", "Pareto front"),
               Block("p", f"Evaluations no other evaluation beats on both compute and {metric} "
                          f"({len(front)} of {int((~evaluations['diverged'].astype(bool)).sum()) if len(evaluations) else 0})."),
               Block("table", frame=front[front_cols].rename(columns={COMPUTE: "network_evals"})),
               Block("image", file=file, caption=f"{metric} against network evaluations spent; the red steps are the "
                                                 f"Pareto front")]

    blocks += [Block("h2", "Parameter importance"), Block("p", importance_note)]
    if len(importance):
        file = f"importance{suffix}.png"
        plot_importance(importance, out_dir / file)
        blocks += [Block("table", frame=importance),
                   Block("image", file=file, caption="PED-ANOVA importance of each searched parameter")]

    blocks += _sample_section(exp, ranked, evaluations, metric, mode, out_dir, suffix)
    return blocks


def _importance(exp: Experiment) -> tuple[pd.DataFrame, str]:
    try:
        study = load_study(exp)
    except Exception as err:  # SQLAlchemy/SQLite errors (e.g. a database locked by a running search) vary
        return (pd.DataFrame(columns=["param", "importance"]),
                f"not computed: the Optuna study could not be read ({err.__class__.__name__}: {err})")
    return param_importances(study, list(exp.params), exp.metric)


def build_report(exp: Experiment, out_dir: Path, per_protocol: bool = False) -> tuple[list[Block], pd.DataFrame]:
    """The report blocks and the full leaderboard frame; writes the plots into ``out_dir``.
    ``ValueError`` when trials mix evaluation protocols and ``per_protocol`` is False."""
    ranked = rank_trials(exp.trials, exp.metric, exp.mode, per_protocol=per_protocol) if len(exp.trials) else exp.trials
    spec = exp.search.get("spec") or {}
    budget = spec.get("budget") or {}
    blocks = [Block("h1", f"Search report: {exp.name}"),
              Block("list", items=[
                  f"Experiment folder: {exp.exp_dir}",
                  f"Spec: {exp.search.get('source') or 'unknown'} (budget mode {exp.search.get('budget_mode', 'unknown')}; "
                  f"{budget.get('num_trials', '?')} trials of up to {budget.get('iterations', '?')} iterations, "
                  f"evaluated every {budget.get('eval_every', '?')} on {budget.get('eval_samples', '?')} samples)",
                  f"Started: {exp.search.get('started', 'unknown')}; report written {time.strftime('%Y-%m-%d %H:%M:%S')}",
                  f"Ranking metric: {exp.metric} ({exp.mode}) - {METRICS[exp.metric].description}",
                  _status_line(exp.trials),
                  f"Network evaluations spent: {fmt(exp.trials[COMPUTE].sum()) if len(exp.trials) else 0} per image in all; "
                  f"trial wall time summed: {fmt(exp.trials['time_total_s'].sum()) if len(exp.trials) else 0} s "
                  f"(up to {budget.get('max_concurrent', '?')} trials ran at once)",
              ])]
    if not len(exp.trials):
        return blocks + [Block("p", "No trial folder holds results yet.")], ranked
    real = [g for g in ranked["protocol"].unique() if g != NO_PROTOCOL]
    mixed = len(real) > 1
    if mixed:
        importance, note = pd.DataFrame(columns=["param", "importance"]), (
            "not computed: the trials were scored under several evaluation protocols, so the study's values "
            "are not comparable with each other")
    else:
        blocks[1].items.append(f"Evaluation protocol: {check_protocols(exp.trials) or 'none yet'} (all trials)")
        importance, note = _importance(exp)
    # trials never scored (no protocol) have nothing to compare: they sit unranked under each group
    unscored = ranked["protocol"] == NO_PROTOCOL
    for group in real or [NO_PROTOCOL]:
        part = ranked[(ranked["protocol"] == group) | unscored]
        evaluations = exp.evaluations[exp.evaluations["trial_id"].isin(part["trial_id"])] if len(exp.evaluations) else exp.evaluations
        evaluations.attrs.update(metric=exp.metric, mode=exp.mode)
        suffix = f"_{group}" if mixed else ""
        if mixed:
            blocks.append(Block("h1", f"Protocol {group} ({int((ranked['protocol'] == group).sum())} trials, "
                                      f"ranked on their own)"))
        blocks += _group_sections(exp, part.reset_index(drop=True), evaluations, out_dir, suffix, importance, note)
    blocks += _attention_section(ranked, exp)
    return blocks, ranked


def _attention_section(ranked: pd.DataFrame, exp: Experiment) -> list[Block]:
    odd = ranked[ranked["status"] != FINISHED]
    cols = [c for c in ("trial_id", "status", "stop_reason", "iterations", "evaluations", "bad_lines") if c in odd]
    blocks = [Block("h2", "Trials that did not run to the end of the budget"),
              Block("p", "Status comes from the files: error.txt (errored), a diverged report (diverged), done with "
                         "fewer iterations than the budget (stopped by ASHA), no final report (unfinished: still "
                         "running, or interrupted).")]
    blocks.append(Block("table", frame=odd[cols]) if len(odd) else Block("p", "All trials finished."))
    if exp.warnings:
        blocks += [Block("h3", "Reading problems"), Block("list", items=list(exp.warnings))]
    return blocks


def write_report(exp_dir: str | Path, out_dir: str | Path | None = None, metric: str | None = None,
                 per_protocol: bool = False) -> Path:
    """Write report.md, report.html, leaderboard.csv and the PNG plots for one experiment folder
    into ``out_dir`` (default ``<exp_dir>/report/``); return the path of report.html.

    ``metric`` ranks by another metric of :data:`trainables.quality.METRICS` (default: the spec's).
    ``ValueError`` (one line) for a folder that is not an experiment, an unknown metric, or trials
    scored under different protocols without ``per_protocol``.
    """
    exp = load_experiment(exp_dir, metric)
    if not per_protocol:
        check_protocols(exp.trials)  # refuse before anything is written
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else exp.exp_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):  # plots of an earlier report that this one may not redraw
        if stale.name.startswith(PLOT_PREFIXES):
            stale.unlink()
    blocks, ranked = build_report(exp, out, per_protocol)
    leaderboard(ranked, list(exp.params), exp.metric).to_csv(out / "leaderboard.csv", index=False)
    blocks.append(Block("h2", "Files"))
    blocks.append(Block("list", items=[f"{b.file}" for b in blocks if b.kind == "image"]
                        + ["leaderboard.csv (all trials, all columns)", "report.md (this report in Markdown)"]))
    blocks.append(Block("code", text=f"python platform/report.py {exp.exp_dir}\ntensorboard --logdir {exp.exp_dir} --host 127.0.0.1"))
    (out / "report.md").write_text(render_markdown(blocks))
    page = out / "report.html"
    page.write_text(render_html(blocks, out, f"Search report: {exp.name}"))
    return page
