"""The report of an experiment folder of either kind: which setting is best, by how much, and why.

:func:`write_report` loads a folder, ranks it and writes into ``<exp>/report/``: ``report.md``,
``report.html`` (self-contained, see :mod:`analysis.reporting.render`), ``leaderboard.csv`` (every trial,
every column) and the PNG plots next to them. The frame of the report is shared: the opening
list (folder, spec, start, ranking metric, statuses), one set of comparison sections per group
of comparable trials (one evaluation protocol; several only with ``per_protocol``), the trials
that did not run to the end, reading problems, the files. The comparison sections and the
kind's opening lines come from the kind's module: :mod:`analysis.reporting.joint` or :mod:`analysis.reporting.sampler`.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import pandas as pd

from analysis.load import Experiment, load_experiment
from analysis.rank import check_protocols, rank_trials
from analysis.reporting import confirm, joint, sampler
from analysis.reporting.render import Block, fmt, relation, write_pages
from analysis.runtime import runtime_line
from analysis.status import status_line
from trainables.contract.layout import FINISHED, JOINT, LEADERBOARD_CSV, REPORT_DIR, REPORT_MD, SAMPLER
from trainables.contract.metrics import METRICS, NO_PROTOCOL

SECTIONS: dict[str, ModuleType] = {JOINT: joint, SAMPLER: sampler}
__all__ = ["build_report", "fmt", "relation", "sections_of", "write_report"]


def sections_of(exp: Experiment) -> ModuleType:
    """The module holding the kind's part of the report and summary (:mod:`analysis.reporting.joint` or
    :mod:`analysis.reporting.sampler`)."""
    return SECTIONS[exp.kind.name]


def _header(exp: Experiment) -> list[Block]:
    return [
        Block("h1", f"{sections_of(exp).TITLE}: {exp.name}"),
        Block(
            "list",
            items=[
                f"Experiment folder: {exp.exp_dir}",
                *sections_of(exp).header_items(exp),
                f"Started: {exp.search.get('started', 'unknown')}; report written {time.strftime('%Y-%m-%d %H:%M:%S')}",
                f"Ranking metric: {exp.metric} ({exp.mode}) - {METRICS[exp.metric].description}",
                runtime_line(exp.trials, exp.search),
                status_line(exp.trials),
            ],
        ),
    ]


def _attention(ranked: pd.DataFrame, exp: Experiment) -> list[Block]:
    title, note, all_done = sections_of(exp).ATTENTION
    odd = ranked[ranked["status"] != FINISHED]
    cols = [c for c in ("trial_id", "status", "stop_reason", exp.time_attr, "evaluations", "bad_lines") if c in odd]
    blocks = [
        Block("h2", title),
        Block("p", note),
        Block("table", frame=odd[cols]) if len(odd) else Block("p", all_done),
    ]
    if exp.warnings:
        blocks += [Block("h3", "Reading problems"), Block("list", items=list(exp.warnings))]
    return blocks


def _groups(exp: Experiment, ranked: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(protocol, its trials, their evaluations) per protocol; trials never scored (no protocol)
    have nothing to compare, so they sit unranked under each group."""
    real = [g for g in ranked["protocol"].unique() if g != NO_PROTOCOL]
    unscored = ranked["protocol"] == NO_PROTOCOL
    out = []
    for group in real or [NO_PROTOCOL]:
        part = ranked[(ranked["protocol"] == group) | unscored].reset_index(drop=True)
        evaluations = (
            exp.evaluations[exp.evaluations["trial_id"].isin(part["trial_id"])]
            if len(exp.evaluations)
            else exp.evaluations
        )
        evaluations.attrs.update(metric=exp.metric, mode=exp.mode)
        out.append((group, part, evaluations))
    return out


def build_report(exp: Experiment, out_dir: Path, per_protocol: bool = False) -> tuple[list[Block], pd.DataFrame]:
    """The report blocks and the ranked trials; writes the plots into ``out_dir``.
    ``ValueError`` when trials mix evaluation protocols and ``per_protocol`` is False."""
    ranked = rank_trials(exp.trials, exp.metric, exp.mode, per_protocol=per_protocol) if len(exp.trials) else exp.trials
    blocks = _header(exp)
    if not len(exp.trials):
        return blocks + [Block("p", "No trial folder holds results yet.")], ranked
    kind = sections_of(exp)
    blocks += confirm.warning_blocks(exp, ranked)  # a pipeline check says so before anything else
    groups = _groups(exp, ranked)
    mixed = len(groups) > 1
    if not mixed:
        blocks[1].items.append(kind.protocol_line(check_protocols(exp.trials)))
    prepared = kind.prepare(exp, mixed)
    for group, part, evaluations in groups:
        suffix = f"_{group}" if mixed else ""
        if mixed:
            blocks.append(
                Block(
                    "h1", f"Protocol {group} ({int((ranked['protocol'] == group).sum())} trials, ranked on their own)"
                )
            )
        blocks += kind.group_sections(exp, part, evaluations, out_dir, suffix, prepared)
    return blocks + _attention(ranked, exp), ranked


def _out_dir(exp: Experiment, out_dir: str | Path | None) -> Path:
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else exp.exp_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):  # plots of an earlier report that this one may not redraw
        if stale.name.startswith(sections_of(exp).PLOT_PREFIXES):
            stale.unlink()
    for stale in out.glob("table*.csv"):  # the full CSVs of an earlier report's wide tables
        stale.unlink()
    return out


def _files_blocks(exp: Experiment, blocks: list[Block]) -> list[Block]:
    return [
        Block("h2", "Files"),
        Block(
            "list",
            items=[b.file for b in blocks if b.kind == "image"]
            + [f"{LEADERBOARD_CSV} (all trials, all columns)", f"{REPORT_MD} (this report in Markdown)"],
        ),
        Block(
            "code", text=f"python platform/report.py {exp.exp_dir}\ntensorboard --logdir {exp.exp_dir} --host 127.0.0.1"
        ),
    ]


def write_report(
    exp_dir: str | Path, out_dir: str | Path | None = None, metric: str | None = None, per_protocol: bool = False
) -> Path:
    """Write report.md, report.html, leaderboard.csv and the PNG plots of an experiment folder of
    either kind into ``out_dir`` (default ``<exp_dir>/report/``); return the path of report.html.

    ``metric`` ranks by another metric of :data:`trainables.contract.metrics.METRICS` (default: the spec's).
    ``ValueError`` (one line) for a folder that is not an experiment, an unknown metric, or trials
    scored under different protocols without ``per_protocol``; nothing is written then.
    """
    exp = load_experiment(exp_dir, metric)
    if not per_protocol:
        check_protocols(exp.trials)  # refuse before anything is written
    out = _out_dir(exp, out_dir)
    blocks, ranked = build_report(exp, out, per_protocol)
    sections_of(exp).leaderboard(ranked, exp).to_csv(out / LEADERBOARD_CSV, index=False)
    blocks += _files_blocks(exp, blocks)
    return write_pages(blocks, out, f"{sections_of(exp).TITLE}: {exp.exp_dir.name}")
