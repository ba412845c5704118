"""Training and sampling throughput of this project's NCSN code against a seed-style baseline.

What is compared and how is described in trainables/benchmark.py (the measurement) and
trainables/baseline.py (the seed-style yardstick). Prints the table and writes the report as JSON.

    python platform/benchmark.py                    # ngf 32, batch 64, default device
    python platform/benchmark.py --smoke-test       # tiny, seconds
    python platform/benchmark.py --variants --bf16  # also the rows that split the gain, and bf16

The script sets OMP_WAIT_POLICY=PASSIVE unless the environment already sets it (both sides alike):
on a machine shared with other jobs, spinning OpenMP threads make timings meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

# Before torch loads OpenMP: idle OpenMP threads that spin fight every other job on a shared
# machine, and one stalled thread stalls each parallel op (seen here: 5-10x slower steps, wildly
# varying). Sleeping threads make repeats comparable; export OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from trainables.benchmark import BenchmarkSettings, format_table, run_benchmark

# --smoke-test: tiny sizes, one repeat, seconds.
SMOKE = {"ngf": 8, "batch": 8, "repeats": 1, "iters": 2, "n_steps_each": 1}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num-levels", type=int, default=10)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=5, help="training iterations per repeat")
    parser.add_argument("--n-steps-each", type=int, default=1, help="Langevin steps per level per repeat")
    parser.add_argument("--step-lr", type=float, default=2e-5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the optimized path")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also time the seed loop around this network and the other memory format",
    )
    parser.add_argument(
        "--bf16", action="store_true", help="also time bf16 autocast (1 iteration, 1 sampler level per repeat)"
    )
    parser.add_argument("--out", default="benchmark.json")
    parser.add_argument("--smoke-test", action="store_true", help="tiny sizes, one repeat, seconds")
    args = parser.parse_args(argv)
    for name in ("ngf", "batch", "num_levels", "repeats", "iters", "n_steps_each"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.step_lr <= 0:
        parser.error(f"--step-lr must be > 0, got {args.step_lr}")
    if args.ngf < 8:
        parser.error(f"--ngf must be >= 8, got {args.ngf}")
    if args.smoke_test:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    return args


def settings_from(args: argparse.Namespace) -> BenchmarkSettings:
    return BenchmarkSettings(**{f.name: getattr(args, f.name) for f in fields(BenchmarkSettings)})


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = run_benchmark(settings_from(args))
    except ValueError as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 2
    print(format_table(report))
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
