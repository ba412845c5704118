"""Start (or resume) an NCSN hyperparameter search.

    python platform/run_search.py --space sigmas.yaml
    python platform/run_search.py --space sigmas.yaml --smoke-test        # a tiny run, about a minute
    python platform/run_search.py --space sigmas.yaml --resume            # continue an interrupted one
    python platform/run_search.py --space langevin.yaml --checkpoint runs/langevin   # tune the sampler only

--space takes a shipped spec by name (sigmas.yaml, langevin.yaml, batch.yaml, smoke.yaml) or a path.
Without a GPU the spec's CPU preview budget runs (--budget full insists on the full one).
--checkpoint runs a sampler-only search on frozen networks (an experiment folder: its best trial's
best checkpoint, or the top k trials' with --top-k; a trial or checkpoint folder): no training.
"""

import argparse
import signal
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print its usage first)
        self.exit(2, f"run_search.py: error: {message}; see --help\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, help="search-space YAML: a shipped name or a path")
    p.add_argument("--storage-path", default="./runs", help="where experiment folders go (default ./runs)")
    p.add_argument("--name", help="experiment name (default: the spec's name)")
    p.add_argument("--num-trials", type=int, help="override the number of trials")
    p.add_argument(
        "--budget",
        choices=["auto", "preview", "full"],
        default="auto",
        help="auto: full budget with GPUs, the CPU preview without (default)",
    )
    p.add_argument("--address", help="join an existing Ray cluster (default: start a local one)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment of this name")
    p.add_argument("--smoke-test", action="store_true", help="a tiny run of this spec (about a minute on a CPU)")
    p.add_argument(
        "--dashboard-port", type=int, help="Ray dashboard port on 127.0.0.1 (default: 8265 or the next free one)"
    )
    p.add_argument("--no-dashboard", action="store_true", help="start the local cluster without the dashboard")
    p.add_argument("--no-calibration", action="store_true", help="skip the cost estimate before the search")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--checkpoint", help="sampler-only search on this experiment, trial or checkpoint folder")
    p.add_argument("--top-k", type=int, default=1, help="with --checkpoint EXPERIMENT: the best k trials (default 1)")
    p.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="restarts of a trial from its last checkpoint when its worker or node dies (default 2)",
    )
    p.add_argument(
        "--confirm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after the search, sample the top trials again with several seeds and call ties "
        "(platform/confirm.py; default: when the spec has a confirm section)",
    )
    p.add_argument(
        "--mlflow",
        metavar="URI",
        help="log the search to this MLflow tracking server (a parent run, a child run per trial; "
        "pip install -e '.[tracking]'); off by default",
    )
    p.add_argument("-v", "--verbose", type=int, default=1, help="0 quiet, 1 progress (default), 2 trial logs too")
    return p.parse_args(argv)


EXIT_STORAGE_FULL = 75  # sysexits' EX_TEMPFAIL: free space and retry (with --resume)


def fail(message: str) -> int:
    print(f"run_search.py: error: {message}", file=sys.stderr)
    return 2


def _as_interrupt(signum, frame) -> None:
    """SIGTERM and SIGHUP (systemd, Kubernetes, a closed terminal) end the search as Ctrl-C does:
    whatever handles SIGINT now (Ray Tune's graceful stop inside a search, else Python's
    KeyboardInterrupt) gets it, so the state stays resumable and the local cluster is stopped."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    from search.options import SearchOptions, check_options

    options = SearchOptions(
        storage_path=args.storage_path,
        name=args.name,
        num_trials=args.num_trials,
        budget=args.budget,
        address=args.address,
        resume=args.resume,
        smoke_test=args.smoke_test,
        dashboard=not args.no_dashboard,
        dashboard_port=args.dashboard_port,
        verbose=args.verbose,
        calibrate=not args.no_calibration,
        report=not args.no_report,
        checkpoint=args.checkpoint,
        top_k=args.top_k,
        max_failures=args.max_failures,
        confirm=args.confirm,
        mlflow=args.mlflow,
    )
    from search.durability.snapshots import StorageFull
    from search.runner import run_search
    from search_spaces.spec import SpecError, load_spec

    try:  # every input is checked here, before a Ray cluster starts
        check_options(options)
        spec = load_spec(args.space)
        spec, exp_dir, _ = run_search(spec, options)
    except (SpecError, ValueError) as err:
        return fail(str(err))
    except KeyboardInterrupt:  # a second Ctrl-C during the graceful stop: at once, the cluster stopped
        print(
            "run_search.py: interrupted before the search could stop gracefully; what was saved is kept: "
            "run the same command with --resume",
            file=sys.stderr,
        )
        return 130
    except StorageFull as err:  # a full disk mid-search: nothing lost, --resume continues
        print(f"run_search.py: error: {err}", file=sys.stderr)
        return EXIT_STORAGE_FULL
    from analysis.reporting.summary import closing_summary, is_incomplete
    from search.confirmation.stage import confirm_after_search
    from search.durability.driver import heartbeat
    from search.durability.mirror import copy_to_storage, fetch_from_storage
    from search_spaces.confirm_settings import requested

    with heartbeat(exp_dir, options.storage_path):  # the folder stays this driver's until it ends
        incomplete = is_incomplete(exp_dir)
        if not incomplete and requested(spec.confirm, options.confirm):  # with a storage URI: the stage
            fetch_from_storage(options.storage_path, exp_dir, training_state=True)  # samples the checkpoints
        confirmed = incomplete or confirm_after_search(spec, exp_dir, options)  # not after an interruption
        print(closing_summary(exp_dir, write_report=options.report))
        if options.mlflow:  # the report goes to the search's parent run, which ends with the search
            from search import tracking

            tracking.finish(options.mlflow, exp_dir, ended=not incomplete)
        copy_to_storage(options.storage_path, exp_dir)  # with a storage URI: the study and the report go there too
    # 130 (as for Ctrl-C) when not every trial ended: the summary says how to resume
    return 130 if incomplete else 0 if confirmed else 1


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _as_interrupt)
    sys.exit(main())
