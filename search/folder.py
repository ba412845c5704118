"""What every search does with its experiment folder, whatever its kind.

The folder ``<storage_path>/<name>/`` (file names in :mod:`trainables.contract.layout`): refused when
it already holds something and ``--resume`` was not given; ``search.json`` (the spec as run, its
kind, budget mode, study name, warm starts and what the kind adds) written atomically before any
trial starts, with a copy that readers fall back on; ``spec.yaml`` a copy of the file the search
started from. The budget a search runs (smoke, CPU preview, full) and a trial's resources are
decided here too.

With a storage URI (:mod:`trainables.contract.storage`) Ray writes the trials to ``<URI>/<name>/``
and the folder above is the driver's local copy of it (:func:`trainables.contract.storage.local_copy`);
:mod:`search.durability.mirror` moves files between the two.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from search.durability.mirror import remote_of
from search.options import SearchOptions
from search_spaces.loading import parse_spec
from search_spaces.schema import SearchSpec
from search_spaces.tuning import tune_settings
from search_spaces.validate import override, with_preview
from trainables.contract import storage
from trainables.contract.layout import (
    SEARCH_COPY,
    SEARCH_FILE,
    SPEC_COPY,
    experiment_kind,
    read_search_record,
)

Say = Callable[[str], None]

# --smoke-test: whatever the spec, a tiny run that finishes in about a minute on a CPU.
SMOKE_BUDGET = {"num_trials": 2, "max_concurrent": 2, "iterations": 20, "eval_every": 10, "eval_samples": 32}
SMOKE_FIXED = {"ngf": 8, "n_steps_each": 2}
SMOKE_SCHEDULER = {"grace_period": 10}


def experiment_dir(options: SearchOptions, default_name: str) -> Path:
    """``<storage_path>/<--name or default_name>``, absolute; with a storage URI, the driver's
    local copy of ``<URI>/<name>``."""
    name = options.name or default_name
    if storage.is_uri(options.storage_path):
        return storage.local_copy(storage.join(options.storage_path, name))
    return Path(options.storage_path).expanduser().resolve() / name


def ray_storage_path(options: SearchOptions, exp_dir: Path) -> str:
    """What Ray's ``RunConfig(storage_path=...)`` gets: the URI itself, or the folder above
    ``exp_dir``."""
    return options.storage_path if storage.is_uri(options.storage_path) else str(exp_dir.parent)


def check_folder(exp_dir: Path, options: SearchOptions, kind: str) -> None:
    """Refuse to start over a folder that holds something, or to resume one that holds no search
    of ``kind``; ``ValueError`` with one line saying what to pass instead."""
    if options.resume:
        found = experiment_kind(exp_dir)
        if found != kind:
            what = "no search" if found is None else f"a {found} search, not a {kind} one"
            raise ValueError(f"--resume: {exp_dir} holds {what} ({SEARCH_FILE}); check --storage-path and --name")
    elif exp_dir.exists() and any(exp_dir.iterdir()):
        raise ValueError(
            f"experiment folder {exp_dir} already exists; pass --resume to continue it or --name to start a new one"
        )
    elif (remote := remote_of(options.storage_path, exp_dir)) is not None and storage.exists(remote):
        raise ValueError(
            f"experiment {remote} already exists; pass --resume to continue it or --name to start a new one"
        )


def recorded_spec(exp_dir: Path) -> tuple[SearchSpec, dict]:
    """The spec a search ran with, and its whole search.json, for a resume."""
    record = read_search_record(exp_dir)
    spec = parse_spec(record["spec"], file=str(exp_dir / SEARCH_FILE), source=record.get("source"))
    return spec, record


def write_record(exp_dir: Path, spec: SearchSpec, record: dict) -> None:
    """search.json (atomically: a reader never sees half a file), its copy in last_snapshot/
    (what a reader falls back on when search.json is damaged: :func:`trainables.contract.layout.read_search_record`)
    and the spec file's copy."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    if spec.source and Path(spec.source).exists():
        shutil.copyfile(spec.source, exp_dir / SPEC_COPY)
    text = json.dumps(record, indent=1, default=str)
    for path in (exp_dir / SEARCH_COPY, exp_dir / SEARCH_FILE):
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def base_record(
    spec: SearchSpec, kind: str, options: SearchOptions, gpus: float, study_name: str, time_attr: str
) -> dict:
    """The part of search.json every kind writes."""
    return {
        "kind": kind,
        "spec": spec.to_dict(),
        "source": str(spec.source) if spec.source else None,
        "budget_mode": budget_mode(options, gpus),
        "study_name": study_name,
        "time_attr": time_attr,
        "resources": resources_for(spec, gpus),
        "max_failures": options.max_failures,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        # a storage URI: where the experiment lives (this folder is the driver's copy of it)
        **({"storage_uri": options.storage_path} if storage.is_uri(options.storage_path) else {}),
    }


def budget_mode(options: SearchOptions, gpus: float) -> str:
    """smoke | preview | full: which budget of the spec ran."""
    if options.smoke_test:
        return "smoke"
    if options.budget == "auto":
        return "full" if gpus > 0 else "preview"
    return options.budget


def choose_budget(spec: SearchSpec, options: SearchOptions, gpus: float, say: Say) -> SearchSpec:
    """Apply the CPU preview where there is no GPU (unless ``--budget full``), then overrides."""
    preview = options.budget == "preview" or (options.budget == "auto" and gpus == 0)
    if preview:
        if options.budget == "auto":
            say(
                "notice: no GPU in this Ray cluster, so this runs the spec's CPU preview budget "
                "(fewer, shorter trials); pass --budget full to run the full budget anyway"
            )
        spec = with_preview(spec)
    if options.smoke_test:
        fixed = {k: v for k, v in SMOKE_FIXED.items() if k not in spec.params}
        spec = override(spec, budget=SMOKE_BUDGET, fixed=fixed, scheduler=SMOKE_SCHEDULER)
    if options.num_trials is not None:
        spec = override(spec, budget={"num_trials": options.num_trials})
    if options.name:
        spec = override(spec, name=options.name)
    return spec


def resources_for(spec: SearchSpec, gpus: float) -> dict[str, float]:
    """A trial's resources: the spec's, without the GPU share where the cluster has no GPU."""
    return {k: float(v) for k, v in tune_settings(spec, gpu_available=gpus > 0)["resources"].items()}
