"""Search-space files: load, validate, and turn into an Optuna space and Tune settings.

The file format is a contract (tests and users depend on it):

    name: sigmas                  # experiment name; results go to <storage>/<name>
    dataset: mnist
    metric: kid                   # a metric of trainables.contract.metrics
    mode: min                     # optional: the metric implies it
    searcher:  {algorithm: tpe, seed: 0}                                # tpe | random
    scheduler: {name: asha, grace_period: 1000, reduction_factor: 3}    # in training iterations
    budget: {num_trials: 24, max_concurrent: 4, iterations: 30000, eval_every: 2500,
             eval_samples: 1000}
    preview: {num_trials: 6, iterations: 400, ngf: 16}   # applied on a machine without a GPU
    params:                       # searched
      sigma_begin: {loguniform: [1.0, 30.0]}
      num_levels:  {int: [8, 128], log: true}
      batch_size:  {choice: [32, 64, 128]}
    fixed: {lr: 0.001, ngf: 64}   # not searched
    resources: {cpu: 1, gpu: 0.25}   # per trial; or {cpu: 1, trials_per_gpu: 4}: 1/4 GPU each,
                                     # and GPUs x 4 trials at once (search/packing.py)
    runtime: {amp: bf16, compile: default}   # optional: how every trial runs (never searched):
                                     # device, amp, amp_min_sigma, compile, channels_last,
                                     # cuda_graphs; "auto" defaults per device (trainables/ncsn/runtime.py)

Parameter forms: ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{int: [lo, hi], log: bool}``
and ``{choice: [...]}``. ``preview`` may override budget keys, the scheduler's ``grace_period``
and ``reduction_factor`` (a full-size grace period rarely fits a preview's iterations), and names
already in ``fixed``.

An optional ``sampler_search`` section sizes the sampler-only search on frozen checkpoints
(``run_search.py --checkpoint``, :mod:`search.sampler`):

    sampler_search:
      num_trials: 24
      max_concurrent: 4
      samples: [250, 1000, 4000]   # ASHA's looks, in samples scored; one whole growth factor
      params:                      # searched on top of the sampler keys of ``params``
        skip_levels:  {int: [0, 3]}    # truncated ladder: the largest levels skipped
        level_stride: {choice: [1, 2]} # sub-sampled ladder: every k-th level, ending at sigma_L
      preview: {num_trials: 8, samples: [64, 256], params: {n_steps_each: {int: [1, 10]}}}

An optional ``confirm`` section runs the confirmation stage when the search ends
(:mod:`search.confirmation.stage`; ``run_search.py --confirm`` / ``--no-confirm`` decide instead):

    confirm: {top_k: 3, seeds: 3}  # the top 3 trials and the warm starts' sampled again with 3
                                   # seeds; samples: N (default 4 x eval_samples in a preview,
                                   # 5,000 with the full budget)

Everything is checked before Ray starts; each problem raises :class:`SpecError`, a ValueError
whose message is one line naming the file (and line), the dotted key, the value and the fix.
Nothing here imports Ray or torch: metric names come from trainables.contract.metrics and parameter
names, kinds and bounds from trainables.contract.params; Optuna is imported only where an Optuna object is
built. The code is split by concept: schema.py (the dataclasses), errors.py, loading.py,
validate.py and validate_params.py, space.py (Optuna), warm_start.py, tuning.py; this
module is the public front and the command line.

Run ``python -m search_spaces.spec check FILE...`` to validate files from a shell (exit 2 on error).
"""

from __future__ import annotations

import sys

from search_spaces.errors import SpecError
from search_spaces.loading import load_spec, parse_spec, parse_spec_text, resolve_spec_path, shipped_spaces
from search_spaces.schema import (
    BUDGET_KEYS,
    SPACES_DIR,
    Budget,
    ParamSpec,
    Resources,
    SamplerSearchSpec,
    SchedulerSpec,
    SearcherSpec,
    SearchSpec,
)
from search_spaces.space import OptunaSpace, make_space_fn
from search_spaces.tuning import tune_settings
from search_spaces.validate import override, with_preview
from search_spaces.warm_start import WarmStart, warm_start_points, warm_starts

__all__ = [
    "BUDGET_KEYS",
    "SPACES_DIR",
    "Budget",
    "OptunaSpace",
    "ParamSpec",
    "Resources",
    "SamplerSearchSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SearcherSpec",
    "SpecError",
    "WarmStart",
    "load_spec",
    "make_space_fn",
    "override",
    "parse_spec",
    "parse_spec_text",
    "resolve_spec_path",
    "shipped_spaces",
    "tune_settings",
    "warm_start_points",
    "warm_starts",
    "with_preview",
]


def _summary(spec: SearchSpec) -> str:
    b = spec.budget
    searched = ", ".join(spec.params)
    text = (
        f"{spec.name}: {spec.metric} ({spec.mode}), {spec.searcher.algorithm} seed "
        f"{spec.searcher.seed}, searching {searched}; {b.num_trials} trials x "
        f"{b.iterations} iterations, {b.max_concurrent} at a time"
    )
    if spec.preview:
        p = with_preview(spec).budget
        text += f"; preview {p.num_trials} trials x {p.iterations} iterations"
    if spec.sampler_search is not None:
        s = spec.sampler_search
        text += f"; sampler search (--checkpoint) {s.num_trials} trials scoring {'/'.join(map(str, s.samples))} samples"
    return text


def main(argv: list[str] | None = None) -> int:
    """``check FILE...``: print OK and a summary per file, or one error line and exit 2."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m search_spaces.spec", description="Validate search-space files.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate files (paths or shipped names)")
    check.add_argument("files", nargs="+")
    sub.add_parser("list", help="list the shipped search spaces")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in shipped_spaces():
            print(name)
        return 0
    status = 0
    for file in args.files:
        try:
            spec = load_spec(file)
        except SpecError as err:
            print(err, file=sys.stderr)
            status = 2
            continue
        print(f"OK {file}: {_summary(spec)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
