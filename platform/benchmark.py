"""Training and sampling throughput of this project's NCSN code against a seed-style baseline.

What is compared and how is described in trainables/tools/benchmark.py (the measurement) and
trainables/tools/baseline.py (the seed-style yardstick). Prints the table and writes the report as JSON.

    python platform/benchmark.py                    # ngf 32, batch 64, default device
    python platform/benchmark.py --smoke-test       # tiny, seconds
    python platform/benchmark.py --variants --bf16  # also the rows that split the gain, and bf16
    python platform/benchmark.py --device cuda --check               # the GPU check (trainables/tools/gpu_check.py)
    python platform/benchmark.py --device cpu --check --smoke-test   # the same flow, tiny, on a CPU

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

from trainables.tools.benchmark import BenchmarkSettings, format_table, run_benchmark

CHECK_OUT = "gpu_check.json"

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
    parser.add_argument("--image-size", type=int, default=28, choices=(28, 32), help="32: the seed's resized MNIST")
    parser.add_argument("--check", action="store_true", help="the GPU check: assertions and measurements, JSON + table")
    parser.add_argument("--skip", default="", help="with --check: comma list of checks to leave out")
    parser.add_argument("--out", default=None, help=f"JSON report (default benchmark.json; {CHECK_OUT} with --check)")
    parser.add_argument("--smoke-test", action="store_true", help="tiny sizes, one repeat, seconds")
    args = parser.parse_args(argv)
    for name in ("ngf", "batch", "num_levels", "repeats", "iters", "n_steps_each"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.step_lr <= 0:
        parser.error(f"--step-lr must be > 0, got {args.step_lr}")
    if args.ngf < 8:
        parser.error(f"--ngf must be >= 8, got {args.ngf}")
    args.out = args.out or (CHECK_OUT if args.check else "benchmark.json")
    if args.smoke_test and not args.check:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    return args


def settings_from(args: argparse.Namespace) -> BenchmarkSettings:
    return BenchmarkSettings(**{f.name: getattr(args, f.name) for f in fields(BenchmarkSettings)})


def check(args: argparse.Namespace) -> int:
    """The GPU check (no Ray, no Optuna): exit 0 when every check passed, 1 otherwise."""
    from trainables.tools import gpu_check, gpu_probes

    sizes = gpu_probes.SMOKE if args.smoke_test else gpu_probes.CheckSizes()
    skip = tuple(name for name in args.skip.split(",") if name)
    report = gpu_check.run_check(args.device if args.device != "auto" else "cuda", sizes, skip, out=args.out)
    print(gpu_check.format_report(report))
    gpu_check.write(report, args.out)
    print(f"wrote {args.out}")
    return 0 if report["ok"] else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check:
        return check(args)
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
