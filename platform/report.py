"""Write the report of an experiment folder: report.md, report.html, leaderboard.csv, PNG plots.

    python platform/report.py runs/sigmas
    python platform/report.py runs/sigmas --metric fid --out /tmp/sigmas-report
    python platform/report.py runs/sigmas --per-protocol     # rank each evaluation protocol apart

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
    parser.add_argument("--per-protocol", action="store_true",
                        help="rank each evaluation protocol on its own instead of refusing to mix them")
    args = parser.parse_args(argv)

    from analysis.report import write_report
    from analysis.sampler_report import write_sampler_report
    from search_spaces.sampler_search import is_sampler_experiment

    try:
        if is_sampler_experiment(args.experiment):  # a sampler-only search on frozen checkpoints
            page = write_sampler_report(args.experiment, out_dir=args.out)
        else:
            page = write_report(args.experiment, out_dir=args.out, metric=args.metric,
                                per_protocol=args.per_protocol)
    except ValueError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(f"report:      {page}")
    print(f"markdown:    {page.with_name('report.md')}")
    print(f"leaderboard: {page.with_name('leaderboard.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
