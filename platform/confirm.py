"""Confirm a search's ranking: sample the best checkpoints of its top trials again, several seeds
each, with the same initial noise across trials, and call which differences are real.

    python platform/confirm.py runs/sigmas                                  # sized to the budget
    python platform/confirm.py runs/sigmas --top-k 3 --seeds 3 --samples 5000
    python platform/confirm.py runs/sigmas --seeds 5                        # resumes: adds two seeds
    python platform/confirm.py runs/sigmas --smoke-test                     # 1 trial x 1 seed x the fewest samples

Defaults: the spec's confirm section, else K = 3, S = 3 and N = 4 x the search's eval_samples in
a preview (CPU) or 5,000 with the full budget. The warm starts' trials are confirmed too. Results
go into <experiment>/confirm/ (one file per trial and seed, so an interrupted run resumes), the
report is rewritten with the confirmed ranking. It never trains. Bad input prints one line and
exits with status 2 before any cluster starts.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print its usage first)
        self.exit(2, f"confirm.py: error: {message}; see --help\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="experiment folder (<storage-path>/<name>, as run_search.py printed)")
    p.add_argument("--top-k", type=int, help="confirm the best K trials (default 3), and the warm starts'")
    p.add_argument("--seeds", type=int, help="sampler seeds per trial (default 3)")
    p.add_argument("--samples", type=int, help="samples per seed (default: 4 x eval_samples in a preview, else 5000)")
    p.add_argument("--resamples", type=int, help="bootstrap draws behind the intervals and verdicts (default 2000)")
    p.add_argument("--address", help="join an existing Ray cluster (default: start a local one)")
    p.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="the smallest confirmation (the best trial, one seed, the fewest samples the metrics take) "
        "in a temporary folder that reads the experiment: nothing of the experiment is changed",
    )
    p.add_argument("-v", "--verbose", type=int, default=1, help="0 quiet, 1 progress (default), 2 task logs too")
    return p.parse_args(argv)


def fail(message: str) -> int:
    print(f"confirm.py: error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = parse_args(argv)
    from pathlib import Path

    from search.confirmation import stage as confirm
    from search.options import SearchOptions, check_options
    from search_spaces import confirm_settings
    from trainables.contract.layout import read_search_record

    exp_dir = Path(args.experiment).expanduser().resolve()
    if args.smoke_test and exp_dir.is_dir():  # its own confirm/ and report, beside links to the trials
        import tempfile

        from search_spaces.schema import MIN_SAMPLES
        from trainables.contract.layout import CONFIRM_DIR, REPORT_DIR, linked_view

        view = Path(tempfile.mkdtemp(prefix="confirm-smoke-")) / exp_dir.name
        exp_dir = linked_view(exp_dir, view, leave_out=(CONFIRM_DIR, REPORT_DIR))
        args.top_k, args.seeds, args.samples, args.resamples = 1, 1, MIN_SAMPLES, 100
        print(f"smoke test: the smallest confirmation, in {exp_dir}")
    # the dashboard belongs to a cluster joined with --address; a local one needs none
    options = SearchOptions(
        storage_path=str(exp_dir.parent), address=args.address, dashboard=args.address is not None, verbose=args.verbose
    )
    try:  # every input is checked here, before a Ray cluster starts
        check_options(options)
        if not exp_dir.is_dir():
            raise ValueError(f"{args.experiment}: no such folder; give the experiment folder run_search.py printed")
        record = read_search_record(exp_dir)
        settings = confirm_settings.settings_for(record, args.top_k, args.seeds, args.samples, args.resamples)
        plan = confirm.plan_confirmation(exp_dir, settings)
    except ValueError as err:
        return fail(str(err))
    for line in confirm.plan_lines(plan):
        print(line)
    try:
        confirm.run_confirmation(plan, options)
    except KeyboardInterrupt:  # every (trial, seed) written so far stays on disk
        print("confirm.py: interrupted; the results so far are on disk and the same command resumes")
        return 130
    except ValueError as err:  # e.g. results on disk scored under another protocol
        return fail(str(err))
    from analysis.reporting.summary import confirmation_summary

    print(confirmation_summary(exp_dir, write_report=not args.no_report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
