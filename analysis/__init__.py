"""Analysis of experiment folders of either kind: load (pandas), rank by sample quality, report.

Everything reads only what is on disk (its layout: :mod:`trainables.contract.layout`). The modules, in
the order data flows through them:

- :mod:`analysis.files` reads the files of a folder (plain Python);
- :mod:`analysis.kinds` names what differs between a joint and a sampler search;
- :mod:`analysis.status`, :mod:`analysis.frames`, :mod:`analysis.load` turn a folder into an
  :class:`~analysis.load.Experiment` (trial statuses, the trials and evaluations frames);
- :mod:`analysis.rank` ranks (by a metric, at equal compute, Pareto front, at one look) and
  :mod:`analysis.importance` scores parameters on the Optuna study;
- :mod:`analysis.reporting.render` (Markdown, HTML) and :mod:`analysis.reporting.plots` (PNG) draw;
- :mod:`analysis.reporting.report` writes the report, with the kind's sections from :mod:`analysis.reporting.joint`
  or :mod:`analysis.reporting.sampler`; :mod:`analysis.reporting.summary` writes the closing text of a search;
  :mod:`analysis.reporting.confirm` adds the confirmation stage's verdicts to both, and the pipeline check.

The names below are loaded on first use, so ``import analysis`` stays cheap (no pandas, no
torch) for code that only needs one of them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "param_importances": "analysis.importance",
    "Experiment": "analysis.load",
    "load_experiment": "analysis.load",
    "load_experiments": "analysis.load",
    "load_study": "analysis.load",
    "read_result_rows": "analysis.files",
    "read_trial_states": "analysis.files",
    "STATUSES": "trainables.contract.layout",
    "trial_status": "analysis.status",
    "best_within_budget": "analysis.rank",
    "check_protocols": "analysis.rank",
    "compare_with_warm_starts": "analysis.rank",
    "compute_budgets": "analysis.rank",
    "equal_compute_table": "analysis.rank",
    "match_warm_starts": "analysis.rank",
    "pareto_front": "analysis.rank",
    "rank_trials": "analysis.rank",
    "at_look": "analysis.rank",
    "build_report": "analysis.reporting.report",
    "write_report": "analysis.reporting.report",
    "closing_summary": "analysis.reporting.summary",
    "confirmation_summary": "analysis.reporting.summary",
    "read_confirmation": "analysis.reporting.confirm",
    "pipeline_check": "analysis.reporting.confirm",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
