"""Analysis of experiment folders: load (pandas), rank by sample quality, write reports.

DataFrames in, DataFrames out (:mod:`analysis.load`, :mod:`analysis.rank`,
:mod:`analysis.importance`); plots (:mod:`analysis.plots`) and files (:mod:`analysis.report`)
at the edge. Everything reads only what is on disk.
"""

from analysis.importance import param_importances
from analysis.load import (STATUSES, Experiment, load_experiment, load_experiments, load_study,
                           read_result_rows, trial_status)
from analysis.rank import (best_within_budget, check_protocols, compare_with_warm_starts, compute_budgets,
                           equal_compute_table, match_warm_starts, pareto_front, rank_trials)
from analysis.report import build_report, write_report

__all__ = [
    "STATUSES", "Experiment", "best_within_budget", "build_report", "check_protocols",
    "compare_with_warm_starts", "compute_budgets", "equal_compute_table", "load_experiment",
    "load_experiments", "load_study", "match_warm_starts", "param_importances", "pareto_front",
    "rank_trials", "read_result_rows", "trial_status", "write_report",
]
