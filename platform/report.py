"""Write the report of an experiment folder (a joint or a sampler search): report.md, report.html,
leaderboard.csv, PNG plots.

    python platform/report.py runs/sigmas
    python platform/report.py runs/sigmas --metric fid --out /tmp/sigmas-report
    python platform/report.py runs/sigmas --per-protocol     # rank each evaluation protocol apart
    python platform/report.py runs/langevin-sampler          # a sampler search: the same options
    python platform/report.py s3://bucket/runs/sigmas        # an experiment at a storage URI
    python platform/report.py runs/sigmas --smoke-test       # its first two trials, into a temp folder: seconds

An experiment at a storage URI (s3://, gs://, any filesystem pyarrow supports; credentials and
endpoint from the usual environment, see README.md) is first copied, without the checkpoints'
training state, into this machine's copy of it (NCSN_STORAGE_CACHE, default
~/.cache/ncsn-search/storage/<scheme>/<bucket>/<prefix>/<name>); the report goes into that copy's
report/ folder unless --out says otherwise. Nothing is written to the storage.

A folder that is not an experiment, an unknown metric, or trials scored under different evaluation
protocols (without --per-protocol) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="experiment folder or URI (<storage-path>/<name>, as run_search.py printed)")
    parser.add_argument("--metric", help="rank by this quality metric (default: the spec's)")
    parser.add_argument("--out", help="output folder (default: <experiment>/report)")
    parser.add_argument(
        "--per-protocol",
        action="store_true",
        help="rank each evaluation protocol on its own instead of refusing to mix them",
    )
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help="the report of the experiment's first two trials, into a temporary folder (or --out): seconds",
    )
    args = parser.parse_args(argv)

    from analysis.reporting.report import write_report
    from trainables.contract import storage
    from trainables.contract.layout import LEADERBOARD_CSV, REPORT_MD

    try:
        experiment = args.experiment
        if storage.is_uri(experiment):
            experiment = storage.local_copy(experiment)
            try:
                count = storage.download(args.experiment, experiment)
            except OSError as err:
                raise ValueError(
                    f"{args.experiment}: cannot read it ({storage.first_line(err)}); check the URI and the "
                    f"credentials and endpoint in the environment"
                ) from None
            print(f"copied:      {count} files of {args.experiment} into {experiment}")
        out = args.out
        if args.smoke_test:  # a view of two trials, the experiment itself untouched
            import tempfile
            from pathlib import Path

            from trainables.contract.layout import REPORT_DIR, linked_view

            if not Path(experiment).is_dir():
                raise ValueError(f"{experiment}: not a folder; give the experiment folder run_search.py printed")
            view = Path(tempfile.mkdtemp(prefix="report-smoke-")) / Path(experiment).name
            experiment = linked_view(experiment, view, trials=2, leave_out=(REPORT_DIR,))
            out = out or view / REPORT_DIR
        page = write_report(experiment, out_dir=out, metric=args.metric, per_protocol=args.per_protocol)
    except ValueError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(f"report:      {page}")
    print(f"markdown:    {page.with_name(REPORT_MD)}")
    print(f"leaderboard: {page.with_name(LEADERBOARD_CSV)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
