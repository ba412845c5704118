"""The closing text of a search, for either kind, from the experiment folder alone.

``platform/run_search.py`` prints it when a search ends (or is interrupted): how many trials,
the best ones (the kind's part: :func:`analysis.reporting.joint.summary_lines`,
:func:`analysis.reporting.sampler.summary_lines`), errored trials, whether the search is incomplete, the
report it wrote, and the commands to look further or resume.
"""

from __future__ import annotations

from pathlib import Path

from analysis.load import Experiment, load_experiment
from analysis.rank import protocol_counts, rank_trials
from analysis.reporting import confirm
from analysis.reporting.report import sections_of
from analysis.reporting.report import write_report as write_report_files
from analysis.status import ENDED, status_counts
from trainables.contract.layout import ERRORED
from trainables.contract.storage import join


def _report_lines(exp_dir: Path) -> list[str]:
    try:
        return [f"report: {write_report_files(exp_dir)}"]
    except ValueError as err:  # e.g. trials scored under different protocols
        return [
            f"report: {err}; writing one ranking per protocol instead",
            f"report: {write_report_files(exp_dir, per_protocol=True)}",
        ]


def progress(exp: Experiment) -> tuple[int, int | None]:
    """(trials that ended, trials the search's budget asked for, None where search.json lacks it).
    A trial ended when it finished, was stopped by ASHA, diverged or errored."""
    counts = status_counts(exp.trials)
    return sum(counts[s] for s in ENDED), exp.kind.num_trials(exp.search)


def is_incomplete(exp_dir: str | Path) -> bool:
    """Whether the search in ``exp_dir`` ended before every trial of its budget did (it was
    interrupted, or is still running): what the closing summary says, read from disk. Ray's own
    count is no guide here: it reports trials that never started as errored."""
    ended, wanted = progress(load_experiment(exp_dir))
    return wanted is not None and ended < wanted


def _state_lines(exp: Experiment) -> list[str]:
    counts = status_counts(exp.trials)
    lines = []
    if counts[ERRORED]:
        first = exp.trials[exp.trials["status"] == ERRORED].iloc[0]
        lines.append(
            f"{counts[ERRORED]} trial(s) errored (trial {first['trial_id']}: {first['stop_reason']}); "
            f"see error.txt in their trial folders; once the cause is fixed, --resume (the command below) "
            f"runs them again from their last checkpoint"
        )
    ended, wanted = progress(exp)
    if wanted is not None and ended < wanted:
        lines.append(f"the search is incomplete ({ended} of {wanted} trials ended): resume it with the command below")
    return lines


def _command_lines(exp: Experiment) -> list[str]:
    space = exp.search.get("source") or (exp.search.get("spec") or {}).get("name") or exp.name
    uri = exp.search.get("storage_uri")
    # kept at a storage URI (trainables/contract/storage.py): exp_dir is the driver's copy, and a resume from
    # any machine names the URI (search/durability/mirror.py brings the bucket's copy first)
    where, storage_path = (join(uri, exp.exp_dir.name), uri) if uri else (exp.exp_dir, exp.exp_dir.parent)
    return [
        *([f"stored at:   {where} (this machine's copy: {exp.exp_dir})"] if uri else []),
        f"TensorBoard: tensorboard --logdir {exp.exp_dir} --host 127.0.0.1",
        f"report:      python platform/report.py {where}",
        f"resume:      python platform/run_search.py --space {space} --storage-path {storage_path} "
        f"--name {exp.exp_dir.name} --resume",
    ]


def closing_summary(exp_dir: str | Path, write_report: bool = True, top: int = 5) -> str:
    """The closing text of the search in ``exp_dir`` (either kind; see the module docstring).

    Ranks by the spec's metric; trials scored under several protocols are ranked per protocol.
    With ``write_report`` the report is written into ``<exp_dir>/report/`` (one ranking per
    protocol when the trials mix them) and its path is named. ``ValueError`` when ``exp_dir``
    is not an experiment folder.
    """
    exp = load_experiment(exp_dir)
    mixed = len(protocol_counts(exp.trials)) > 1
    ranked = rank_trials(exp.trials, per_protocol=mixed) if len(exp.trials) else exp.trials
    lines = ["", *confirm.warning_lines(exp, ranked)]  # a pipeline check says so first
    lines += [f"{len(exp.trials)} {exp.kind.trials_word} in {exp.exp_dir}"]
    lines += sections_of(exp).summary_lines(exp, ranked, top)
    lines += confirm.summary_lines(exp)
    lines += _state_lines(exp)
    if write_report:
        lines += _report_lines(exp.exp_dir)
    return "\n".join(lines + _command_lines(exp))


def confirmation_summary(exp_dir: str | Path, write_report: bool = True) -> str:
    """What ``platform/confirm.py`` prints when its stage ends: the pipeline check, the confirmed
    ranking with its verdicts, and the report it rewrote (``write_report``)."""
    exp = load_experiment(exp_dir)
    mixed = len(protocol_counts(exp.trials)) > 1
    ranked = rank_trials(exp.trials, per_protocol=mixed) if len(exp.trials) else exp.trials
    lines = ["", *confirm.warning_lines(exp, ranked), *confirm.summary_lines(exp)]
    if write_report:
        lines += _report_lines(exp.exp_dir)
    return "\n".join(lines)
