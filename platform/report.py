"""Write the report of an experiment folder (a joint or a sampler search): report.md, report.html,
leaderboard.csv, PNG plots.

    python platform/report.py runs/sigmas
    python platform/report.py runs/sigmas --metric fid --out /tmp/sigmas-report
    python platform/report.py runs/sigmas --per-protocol     # rank each evaluation protocol apart
    python platform/report.py runs/langevin-sampler          # a sampler search: the same options

A folder that is not an experiment, an unknown metric, or trials scored under different evaluation
protocols (without --per-protocol) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="experiment folder (<storage-path>/<name>, as run_search.py printed)")
    parser.add_argument("--metric", help="rank by this quality metric (default: the spec's)")
    parser.add_argument("--out", help="output folder (default: <experiment>/report)")
    parser.add_argument(
        "--per-protocol",
        action="store_true",
        help="rank each evaluation protocol on its own instead of refusing to mix them",
    )
    args = parser.parse_args(argv)

    from analysis.report import write_report
    from trainables.layout import LEADERBOARD_CSV, REPORT_MD

    try:
        page = write_report(args.experiment, out_dir=args.out, metric=args.metric, per_protocol=args.per_protocol)
    except ValueError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(f"report:      {page}")
    print(f"markdown:    {page.with_name(REPORT_MD)}")
    print(f"leaderboard: {page.with_name(LEADERBOARD_CSV)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
