"""The confirmation stage in the report and the closing summary, and the pipeline check.

Reads ``<experiment>/confirm/`` as :mod:`search.confirmation.stage` writes it (``plan.json``,
``summary.json``; names in :mod:`trainables.contract.layout`): the confirmed ranking (each trial's mean
over S seeds of N samples with its 95% interval), the paired verdict of each trial against the
confirmed best ("better", "worse", "not distinguishable at 95%") and FID_inf. The report's Answer
and the closing summary lead with these verdicts when a confirmation exists.

The pipeline check (:func:`pipeline_check`): when the best trial's samples are far from digits,
judged against the feature network (:data:`FAR_FROM_DIGITS`), the search checked the pipeline
and produced no result; the report and the summary say so at the top, with what a real result
needs (the full budget from the cost estimate search.json keeps), instead of presenting a winner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.reporting.render import Block, fmt
from trainables.contract.layout import (
    CONFIRM_DIR,
    CONFIRM_PLAN,
    CONFIRM_SUMMARY,
    WARM_START_NAMES,
)
from trainables.contract.metrics import BETTER, FAR_FROM_DIGITS, TIED, WORSE, far_from_digits
from trainables.contract.units import duration

SHOWN = ("fid", "kid", "precision", "recall", "coverage")  # metrics of the comparison table


@dataclass
class Confirmation:
    """A confirmation folder, read: plan.json and summary.json (either may be missing)."""

    folder: Path
    plan: dict
    summary: dict

    @property
    def trials(self) -> list[dict]:
        return list(self.summary.get("trials") or [])

    @property
    def scored(self) -> list[dict]:
        return [t for t in self.trials if t.get("values")]

    @property
    def best(self) -> dict | None:
        best = self.summary.get("best")
        return next((t for t in self.trials if t["trial_id"] == best), None)

    @property
    def settings(self) -> dict:
        return self.summary.get("settings") or self.plan.get("settings") or {}


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_confirmation(exp_dir: str | Path) -> Confirmation | None:
    """The confirmation of an experiment folder, None when there is none."""
    folder = Path(exp_dir) / CONFIRM_DIR
    plan, summary = _read(folder / CONFIRM_PLAN), _read(folder / CONFIRM_SUMMARY)
    if not plan and not summary:
        return None
    return Confirmation(folder, plan, summary)


def _interval(values: dict | None) -> str:
    if not values:
        return ""
    return f"[{fmt(values.get('lo'))}, {fmt(values.get('hi'))}]"


def _role_names(roles: list[str]) -> str:
    """Why a trial is confirmed, short: "top" and its warm-start labels."""
    return ", ".join(roles)


def _params_text(exp, trial_id: str) -> str:
    row = exp.trials[exp.trials["trial_id"] == trial_id] if len(exp.trials) else exp.trials
    if not len(row) or not exp.params:
        return ""
    return " (" + ", ".join(f"{p}={fmt(row.iloc[0].get(f'config/{p}'))}" for p in exp.params) + ")"


def _command(exp) -> str:
    return f"python platform/confirm.py {exp.exp_dir}"


# ---------------------------------------------------------------------------------------------
# The pipeline check


def pipeline_check(exp, ranked: pd.DataFrame) -> list[str]:
    """Why the best trial's samples are far from digits (one phrase per criterion of
    :data:`FAR_FROM_DIGITS` it fails), judged on the confirmed best where a confirmation exists,
    else on the search's best; empty when they are not (or nothing was scored)."""
    values: dict[str, float] = {}
    conf = read_confirmation(exp.exp_dir)
    best = conf.best if conf is not None else None
    if best is not None and best.get("values"):
        values = {m: v["value"] for m, v in best["values"].items()}
    elif len(ranked) and "rank" in ranked and ranked["rank"].notna().any():
        top = ranked[ranked["rank"].notna()].iloc[0]
        values = {m: float(top[m]) for m in FAR_FROM_DIGITS if m in top and pd.notna(top[m])}
    return far_from_digits(values)


def _needs(exp) -> str:
    """What a real result needs, from the cost estimate search.json keeps."""
    estimate = exp.search.get("cost_estimate") or {}
    full = estimate.get("full_budget")
    space = exp.search.get("source") or (exp.search.get("spec") or {}).get("name") or "<spec>"
    command = f"python platform/run_search.py --space {Path(str(space)).name}"
    if full:
        gpu = full.get("gpu") or 0
        hardware = f"a GPU ({fmt(gpu)} of one per trial, as the spec asks)" if gpu else "a GPU"
        return (
            f"A real result needs the spec's full budget: {full['num_trials']} trials of {fmt(full['iterations'])} "
            f"iterations at ngf {full['ngf']}, batch {full['batch_size']}, scored on {full['eval_samples']} samples "
            f"({full['network_evals']:.3g} network evaluations in all, {full['nfe_per_sample']} per sample), on "
            f"{hardware}: projected from this search's measurements (a network pass costs about ngf^2), one such "
            f"trial would take ~{duration(full['per_trial_s'])} and the search ~{duration(full['search_s'])} on "
            f"this {full['device']}. On a machine with a GPU the full budget is the default: {command}"
        )
    mode = exp.search.get("budget_mode")
    if mode == "full":
        return (
            "This search ran the full budget and still samples no digits: train longer (the 2019 paper "
            "trains 200,000 iterations), or check the noise ladder and the step size (docs/NCSN.md)."
        )
    if estimate and not full:  # the spec has no preview: its own budget is pipeline-sized
        config = estimate.get("config") or {}
        return (
            f"This search ran its spec's whole budget (ngf {config.get('ngf', '?')}, "
            f"{((exp.search.get('spec') or {}).get('budget') or {}).get('iterations', '?')} iterations): a real "
            f"result needs a spec sized for one, on a GPU; the 2019 MNIST setting trains ngf 64 for 200,000 "
            f"iterations at batch 128 (docs/NCSN.md), the shipped specs' full budgets 30,000 at ngf 64."
        )
    return (
        "A real result needs the spec's full budget (budget in the spec, not its CPU preview) on a GPU, "
        f"where it is the default: {command} (this search recorded no cost estimate to size it by)"
    )


def pipeline_text(exp, reasons: list[str]) -> str:
    mode = exp.search.get("budget_mode", "?")
    return (
        f"This is a pipeline check, not a result. The best trial's samples are far from digits: "
        f"{', '.join(reasons)}. No setting here is better than another at making digits, so no winner "
        f"is named: the {mode} budget shows that the pipeline runs end to end (training, sampling, "
        f"scoring, ranking), not which setting is best. {_needs(exp)}"
    )


def warning_blocks(exp, ranked: pd.DataFrame) -> list[Block]:
    """The pipeline check at the top of the report (nothing when the samples look like digits)."""
    reasons = pipeline_check(exp, ranked)
    if not reasons:
        return []
    return [Block("h2", "A pipeline check, not a result"), Block("p", pipeline_text(exp, reasons))]


def warning_lines(exp, ranked: pd.DataFrame) -> list[str]:
    """The pipeline check at the top of the closing summary."""
    reasons = pipeline_check(exp, ranked)
    return [f"NOT A RESULT: {pipeline_text(exp, reasons)}"] if reasons else []


# ---------------------------------------------------------------------------------------------
# The Answer


def _verdict_text(entry: dict, metric: str) -> str:
    versus = (entry.get("versus_best") or {}).get(metric)
    if not versus:
        return ""
    return f"difference {fmt(versus['difference'])} [{fmt(versus['lo'])}, {fmt(versus['hi'])}]"


def _warm_items(exp, conf: Confirmation, metric: str) -> list[str]:
    items = []
    best = conf.best
    for warm in exp.warm_start:
        label = str(warm.get("label"))
        name = WARM_START_NAMES.get(label, label)
        entry = next((t for t in conf.trials if label in (t.get("roles") or [])), None)
        if entry is None:
            items.append(f"Versus {name}: not confirmed (no trial of it had a checkpoint to sample).")
        elif best is not None and entry["trial_id"] == best["trial_id"]:
            items.append(f"The confirmed best is {name} itself (trial {entry['trial_id']}).")
        elif not entry.get("values"):
            items.append(f"Versus {name} (trial {entry['trial_id']}): its confirmation is {entry.get('status')}.")
        else:
            verdict = (entry.get("versus_best") or {}).get(metric, {}).get("verdict", TIED)
            said = {
                WORSE: "worse than the confirmed best at 95%",
                BETTER: "better than the confirmed best at 95%",
                TIED: "not distinguishable at 95% from the confirmed best",
            }[verdict]
            v = entry["values"][metric]
            items.append(
                f"Versus {name} (trial {entry['trial_id']}, {metric} {fmt(v['value'])} {_interval(v)}): "
                f"{said} (paired, {_verdict_text(entry, metric)})."
            )
    return items


def confirmed_items(exp, conf: Confirmation, not_a_result: bool) -> list[str]:
    """The Answer's bullets from a confirmation: the best, who is tied with it, the warm starts."""
    metric = conf.summary.get("metric") or exp.metric
    s = conf.settings
    best = conf.best
    if best is None:
        if any(t.get("status") == "diverged" for t in conf.trials) and not conf.summary.get("incomplete"):
            return ["Every confirmed trial's Langevin chain went non-finite: the confirmation has nothing to rank."]
        return [f"Confirmation not complete for any trial yet: resume it with {_command(exp)}."]
    v = best["values"][metric]
    label = "Confirmed best so far (not a result)" if not_a_result else "Confirmed best setting"
    items = [
        f"{label}: trial {best['trial_id']}{_params_text(exp, best['trial_id'])} with {metric} "
        f"{fmt(v['value'])}, 95% interval {_interval(v)}: mean over {s.get('seeds')} sampler seeds of "
        f"{s.get('samples')} samples from its best checkpoint (search rank {best.get('search_rank')})."
    ]
    others = [t for t in conf.scored if t["trial_id"] != best["trial_id"]]
    tied = [t for t in others if (t.get("versus_best") or {}).get(metric, {}).get("verdict") == TIED]
    worse = [t for t in others if (t.get("versus_best") or {}).get(metric, {}).get("verdict") == WORSE]
    if tied:
        items.append(
            "Statistically tied with it (paired comparison over the shared seeds and samples, not "
            "distinguishable at 95%): "
            + "; ".join(f"trial {t['trial_id']} ({_verdict_text(t, metric)})" for t in tied)
            + "."
        )
    elif others:
        items.append("No confirmed trial is tied with it: every other one is worse at 95% (paired comparison).")
    if worse and tied:
        items.append("Worse than it at 95%: " + ", ".join(f"trial {t['trial_id']}" for t in worse) + ".")
    items += _warm_items(exp, conf, metric)
    fid_inf = best.get("fid_inf") or {}
    if fid_inf:
        spread = f" +- {fmt(fid_inf['sd'])} over seeds" if fid_inf.get("sd") is not None else ""
        items.append(
            f"Its FID_inf (extrapolated to infinite samples, Chong & Forsyth 2020) is {fmt(fid_inf['mean'])}{spread}; "
            f"plain FID at {s.get('samples')} samples is {fmt(best['values']['fid']['value'])}."
        )
    search_best = next((t for t in conf.trials if t.get("search_rank") == 1), None)
    if search_best is not None and search_best["trial_id"] != best["trial_id"]:
        items.append(
            f"The search's own best (trial {search_best['trial_id']}, one evaluation) is not the confirmed best."
        )
    if conf.summary.get("incomplete"):
        items.append(
            f"Not confirmed yet (seeds missing): {', '.join(conf.summary['incomplete'])}; resume with {_command(exp)}."
        )
    return items


def answer_items(exp, ranked: pd.DataFrame, search_items: list[str]) -> list[str]:
    """The report's Answer: the pipeline check's verdict, then the confirmed answer where there is
    one, then the search's own items (marked as resting on one evaluation per trial)."""
    not_a_result = bool(pipeline_check(exp, ranked))
    items = ["Not a result: the best samples are far from digits (see the top of this report)."] if not_a_result else []
    conf = read_confirmation(exp.exp_dir)
    if conf is not None and conf.summary:
        items += confirmed_items(exp, conf, not_a_result)
        items += [f"Search, one evaluation per trial (unconfirmed): {item}" for item in search_items]
        return items
    n = ((exp.search.get("spec") or {}).get("budget") or {}).get("eval_samples", "N")
    items += search_items
    items.append(
        f"Unconfirmed: each trial's value rests on one evaluation of {n} samples from one sampler seed (the "
        f"leaderboard gives its 95% interval). Confirm the top trials with several seeds and paired "
        f"verdicts: {_command(exp)}"
    )
    return items


# ---------------------------------------------------------------------------------------------
# The sections


def _cell(entry: dict, name: str) -> str:
    versus = (entry.get("versus_best") or {}).get(name)
    if versus is None:
        return "best" if entry.get("values") else ""
    return f"{versus['verdict']}: {fmt(versus['difference'])} [{fmt(versus['lo'])}, {fmt(versus['hi'])}]"


def ranking_frame(conf: Confirmation, metric: str) -> pd.DataFrame:
    """The confirmed ranking: one row per confirmed trial, best first."""
    rows = []
    for rank, entry in enumerate(conf.trials, start=1):
        values = entry.get("values") or {}
        fid_inf = entry.get("fid_inf") or {}
        row: dict[str, Any] = {
            "rank": rank if values else None,
            "trial_id": entry["trial_id"],
            "why": _role_names(entry.get("roles") or []),
            "search_rank": entry.get("search_rank"),
            "status": entry.get("status"),
            metric: (values.get(metric) or {}).get("value"),
            f"{metric} 95%": _interval(values.get(metric)),
            "vs best": _cell(entry, metric),
        }
        for name in SHOWN:
            if name != metric:
                row[name] = (values.get(name) or {}).get("value")
                row[f"{name} 95%"] = _interval(values.get(name))
        row["fid_inf"] = fid_inf.get("mean")
        row["fid_inf sd"] = fid_inf.get("sd")
        row["network_evals"] = entry.get("network_evals")
        row["seconds"] = (entry.get("sample_seconds") or 0.0) + (entry.get("score_seconds") or 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_frame(conf: Confirmation) -> pd.DataFrame:
    """Each confirmed trial against the best on every shown metric: verdict, difference, interval."""
    return pd.DataFrame(
        [
            {"trial_id": e["trial_id"], **{name: _cell(e, name) for name in SHOWN}}
            for e in conf.trials
            if e.get("values")
        ]
    )


def _cost_text(exp, conf: Confirmation) -> str:
    planned = conf.plan.get("cost") or {}
    before = (exp.search.get("cost_estimate") or {}).get("confirmation") or {}
    parts = []
    if before:
        parts.append(
            f"estimated before the search: {before['network_evals']:,} network evaluations, "
            f"~{duration(before['sampling_seconds'])} of sampling at the calibrated rate"
        )
    if planned:
        text = f"planned: {planned['network_evals']:,} network evaluations in {planned['tasks']} tasks"
        if "sampling_seconds" in planned:
            text += f", ~{duration(planned['sampling_seconds'])} of sampling"
        parts.append(text)
    spent = conf.summary.get("network_evals")
    if spent is not None:
        sample = sum(t.get("sample_seconds") or 0.0 for t in conf.trials)
        score = sum(t.get("score_seconds") or 0.0 for t in conf.trials)
        parts.append(
            f"spent: {spent:,} network evaluations, {fmt(sample)} s sampling and {fmt(score)} s scoring "
            f"(summed over tasks)"
        )
    return "Cost of the confirmation: " + "; ".join(parts) + "." if parts else ""


def sections(exp, ranked: pd.DataFrame) -> list[Block]:
    """The confirmation's sections of the report, for the group of ``ranked`` trials (empty when
    there is no confirmation, or none of its trials is in this group)."""
    conf = read_confirmation(exp.exp_dir)
    if conf is None:
        return []
    ids = set(ranked["trial_id"]) if len(ranked) else set()
    if ids and not any(t["trial_id"] in ids for t in conf.trials) and conf.trials:
        return []
    metric = conf.summary.get("metric") or exp.metric
    s = conf.settings
    protocol = conf.plan.get("protocol") or {}
    blocks = [
        Block("h2", "Confirmation: the top trials sampled again"),
        Block(
            "p",
            f"The best checkpoint of each of the top {s.get('top_k')} trials and of the warm starts' trials, "
            f"sampled again with {s.get('seeds')} sampler seeds of {s.get('samples')} samples (never trained). "
            f"Seed s of every trial starts from the same initial noise, so the trials are paired. Each value is "
            f"the mean over the seeds; its 95% interval and every verdict come from a bootstrap over the "
            f"generated images against the fixed reference statistics ({s.get('resamples')} draws, the same "
            f"draws for every trial of a seed). 'vs best' is the paired difference to the confirmed best: "
            f"better, worse, or not distinguishable at 95%. FID_inf extrapolates FID to infinite N "
            f"(Chong & Forsyth 2020), so it compares across sample counts. Sampler: "
            f"{protocol.get('sampling', 'as in the search')}.",
        ),
    ]
    if not conf.summary:
        return blocks + [Block("p", f"Not summarised yet (interrupted?): resume with {_command(exp)}.")]
    blocks += [
        Block("table", frame=ranking_frame(conf, metric)),
        Block("h3", "Each trial against the confirmed best"),
        Block("table", frame=comparison_frame(conf)),
    ]
    cost = _cost_text(exp, conf)
    if cost:
        blocks.append(Block("p", cost))
    return blocks


# ---------------------------------------------------------------------------------------------
# The closing summary


def summary_lines(exp) -> list[str]:
    """The confirmed ranking and its verdicts for the closing summary (nothing without one)."""
    conf = read_confirmation(exp.exp_dir)
    if conf is None or not conf.summary:
        return []
    metric = conf.summary.get("metric") or exp.metric
    s = conf.settings
    frame = ranking_frame(conf, metric)
    shown = [
        c
        for c in ("rank", "trial_id", "why", "search_rank", metric, f"{metric} 95%", "vs best", "fid_inf")
        if c in frame
    ]
    lines = [
        f"confirmed ranking by {metric} ({s.get('seeds')} seeds x {s.get('samples')} samples per trial, paired; "
        f"95% intervals):",
        frame[shown].map(fmt).to_string(index=False) if len(frame) else "(no trial confirmed)",
    ]
    # the table shows the best; the verdicts follow
    return lines + [f"  {item}" for item in confirmed_items(exp, conf, not_a_result=False)[1:]]
