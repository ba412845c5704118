"""Run a search: a validated spec -> Ray cluster, Optuna searcher, ASHA, Tuner -> experiment folder.

``platform/run_search.py`` is a thin command line over :func:`run_search`. One flow serves both
kinds of search; what differs is the kind's module (:mod:`search.joint` trains and
samples, :mod:`search.sampler` samples frozen checkpoints), which sizes the spec and turns
it into a :class:`search.plan.SearchPlan`. Everything here runs on the driver; what runs
inside a trial lives in :mod:`trainables`. The closing summary and the report are written by
:mod:`analysis` from the folder on disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import uuid
from pathlib import Path

from search import joint, sampler
from search.cluster import StorageUnreachable, ray_cluster
from search.durability import driver, reconcile, snapshots
from search.durability.mirror import Mirror, copy_to_storage, pull
from search.folder import (
    Say,
    base_record,
    check_folder,
    experiment_dir,
    ray_storage_path,
    recorded_spec,
    resources_for,
    write_record,
)
from search.options import SearchOptions, check_options
from search.plan import SearchPlan
from search.searcher import make_sampler
from search_spaces.errors import SpecError
from search_spaces.loading import parse_spec
from search_spaces.schema import SearchSpec
from search_spaces.validate import override
from trainables.contract.layout import DRIVER_FILE, SAMPLER, SEARCH_FILE, STUDY_FILE, experiment_kind, trial_dirname

KINDS = {joint.KIND: joint, sampler.KIND: sampler}


def kind_of(spec: SearchSpec, options: SearchOptions):
    """The kind's module: a sampler search with ``--checkpoint`` or when resuming a folder that
    holds one, else a joint search."""
    if options.checkpoint is not None:
        return sampler
    if options.resume and experiment_kind(experiment_dir(options, joint.default_name(spec))) == SAMPLER:
        return sampler
    return joint


def run_search(spec: SearchSpec, options: SearchOptions, say: Say = print):
    """Run a new search described by ``spec``, or resume one (``options.resume``); return (the spec
    as run, the experiment folder, Ray's ResultGrid). Everything the user gave is checked before
    Ray starts (``ValueError``, one line)."""
    check_options(options)
    if options.name:
        try:
            override(spec, name=options.name)
        except SpecError as err:
            raise ValueError(f"--name {options.name!r}: {err.problem}; give e.g. --name sigmas-2") from None
    return (resume_search if options.resume else new_search)(spec, options, say)


def new_search(spec: SearchSpec, options: SearchOptions, say: Say = print):
    """Start the search of ``spec`` in a folder that holds nothing yet (:func:`run_search`)."""
    kind = kind_of(spec, options)
    exp_dir = experiment_dir(options, kind.default_name(spec))
    _checked(exp_dir, options, say)
    fresh = not exp_dir.exists()
    check_folder(exp_dir, options, kind.KIND)
    return _start(spec, options, kind, exp_dir, say, fresh)


def resume_search(spec: SearchSpec, options: SearchOptions, say: Say = print):
    """Continue the search of a folder as its snapshot, reconciled, has it (:mod:`search.durability`);
    one killed before Ray's first snapshot starts again as it was first started."""
    # a search kept at a storage URI: its recovery works on a local mirror of the bucket
    mirror = _checked(experiment_dir(options, joint.default_name(spec)), options, say)
    kind = kind_of(spec, options)
    exp_dir = experiment_dir(options, kind.default_name(spec))
    if mirror.exp_dir != exp_dir:
        mirror = _checked(exp_dir, options, say)
    snapshots.restore_search_record(exp_dir, say)
    snapshots.restore_readable_snapshot(exp_dir, say)
    if driver.never_started(exp_dir):
        spec, options = _started_with(exp_dir, options)  # killed before Ray's first snapshot
        driver.stop_orphaned_cluster(exp_dir, say)
        mirror.moved(reconcile.restart_folder(exp_dir, say))
        _push(mirror, say)
        return _start(spec, options, kind_of(spec, options), exp_dir, say, fresh=False)
    check_folder(exp_dir, options, kind.KIND)
    spec, record = _recorded(exp_dir)
    driver.stop_orphaned_cluster(exp_dir, say)
    snapshots.check_study(exp_dir, record, say)
    driver.write_driver(exp_dir, spec, options)

    def tuner_for(gpus: float):
        say(f"resuming the {kind.KIND} search {exp_dir} ({record.get('budget_mode')} budget)")
        mirror.moved(reconcile.reconcile(exp_dir, record, say)["moves"])
        _push(mirror, say)  # Tuner.restore reads the bucket
        return spec, _restore_tuner(kind, spec, exp_dir, gpus, ray_storage_path(options, exp_dir))

    def after(results) -> None:
        reconcile.tell_resumed(exp_dir, record, results, spec.metric, say)

    spec, results = _fit(exp_dir, options, say, tuner_for, fresh=False, after=after)
    return spec, exp_dir, results


def _start(spec: SearchSpec, options: SearchOptions, kind, exp_dir: Path, say: Say, fresh: bool):
    """Size, plan and run a search from its first trial; ``fresh``: the folder was made for it
    (removed again if the cluster cannot reach the storage)."""
    prepared = kind.prepare(spec, options)
    driver.write_driver(exp_dir, spec, options)

    def tuner_for(gpus: float):
        sized = kind.size(spec, options, gpus, say)
        plan = kind.plan(sized, prepared, options)
        for message in plan.messages:
            say(message)
        study_name = f"{exp_dir.name}-{uuid.uuid4().hex[:8]}"
        record = {**base_record(sized, kind.KIND, options, gpus, study_name, kind.TIME_ATTR), **plan.record}
        write_record(exp_dir, sized, record)
        tuner = build_tuner(
            sized,
            plan,
            exp_dir,
            gpus,
            study_name,
            options.max_failures,
            ray_storage_path(options, exp_dir),
            _tracking(options.mlflow, exp_dir),
        )
        return sized, tuner

    spec, results = _fit(exp_dir, options, say, tuner_for, fresh)
    return spec, exp_dir, results


def _fit(exp_dir: Path, options: SearchOptions, say: Say, tuner_for, fresh: bool, after=None):
    """On the cluster (local, or ``--address``), with the driver's heartbeat: ``tuner_for(gpus)``
    gives (the spec as run, its Tuner), which runs with fresh snapshots; ``after(results)`` runs
    before the cluster stops. A full disk ends it with :class:`search.durability.snapshots.StorageFull`."""
    with driver.heartbeat(exp_dir, options.storage_path), contextlib.ExitStack() as cluster:
        try:
            resources = cluster.enter_context(ray_cluster(options, say))
        except StorageUnreachable:
            if fresh:  # refused before any trial started: a new search leaves nothing behind
                shutil.rmtree(exp_dir, ignore_errors=True)
            raise
        driver.record_cluster(exp_dir, local=not options.address)
        copy_to_storage(options.storage_path, exp_dir, (DRIVER_FILE,))  # a resume elsewhere starts from it
        spec, tuner = tuner_for(float(resources.get("GPU", 0)))
        say(f"results: {exp_dir}")
        with snapshots.frequent_snapshots(exp_dir, spec.budget.num_trials):
            try:
                results = tuner.fit()
            except Exception as err:
                full = snapshots.storage_full(err) or snapshots.low_space(exp_dir)
                if full is None:
                    raise
                raise snapshots.StorageFull(
                    f"{exp_dir}: {full}; the search stopped and what was saved is kept: free space there, "
                    f"then run the same command with --resume"
                ) from None
        if after is not None:
            after(results)
    return spec, results


def _checked(exp_dir: Path, options: SearchOptions, say: Say) -> Mirror:
    """Refuse a folder a live driver works on, here or (a storage URI) on another machine; on a
    resume of a search kept at a storage URI, bring the bucket's copy into ``exp_dir`` first
    (:func:`search.durability.mirror.pull`) and check again with the driver.json it brought."""
    driver.check_not_running(exp_dir, options.storage_path)
    if not options.resume:
        return Mirror(exp_dir)
    pulled = pull(options.storage_path, exp_dir)
    if pulled.remote is not None:
        say(f"resuming from {pulled.remote}: its files (without the training state) copied into {exp_dir}")
        driver.check_not_running(exp_dir)
    return pulled


def _push(mirror: Mirror, say: Say) -> None:
    done = mirror.push()
    if any(done.values()):
        say(
            f"the recovery's changes written to {mirror.remote}: {done['moved']} file(s) moved, "
            f"{done['uploaded']} uploaded, {done['deleted']} deleted"
        )


def _started_with(exp_dir: Path, options: SearchOptions) -> tuple[SearchSpec, SearchOptions]:
    """The spec and options of the driver that started ``exp_dir`` (its driver.json), for a
    search killed before it got going: it starts again as it was first started."""
    spec_dict, source, recorded = driver.started_with(exp_dir)
    try:
        spec = parse_spec(spec_dict, file=str(exp_dir / DRIVER_FILE), source=source)
        fields = {f.name for f in dataclasses.fields(SearchOptions)}
        again = SearchOptions(**{k: v for k, v in recorded.items() if k in fields})
    except (SpecError, TypeError, ValueError) as err:
        raise ValueError(
            f"--resume: {exp_dir / DRIVER_FILE} does not hold a search this version can start again "
            f"({err.__class__.__name__}: {err}); start a new search with --name"
        ) from None
    # where it runs now is the resume's business; what it runs is the first start's
    return spec, dataclasses.replace(
        again, resume=False, address=options.address, dashboard=options.dashboard, dashboard_port=options.dashboard_port
    )


def _recorded(exp_dir: Path) -> tuple[SearchSpec, dict]:
    """The spec and search.json of a folder to resume, read before a cluster starts."""
    try:
        return recorded_spec(exp_dir)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"--resume: {exp_dir / SEARCH_FILE} does not hold a search this version can resume "
            f"({err.__class__.__name__}: {err}); start a new search with --name"
        ) from None


def _trainable(function, budget, spec: SearchSpec, gpus: float):
    """The Tune function with its budget bound and a trial's resources attached."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(function, budget=budget), resources_for(spec, gpus))


def build_tuner(
    spec: SearchSpec,
    plan: SearchPlan,
    exp_dir: Path,
    gpus: float,
    study_name: str,
    max_failures: int = 2,
    storage_path: str | None = None,
    callbacks: list | None = None,
):
    """The Tuner of a fresh search: Optuna on SQLite in ``exp_dir`` (seeded, warm starts first)
    behind a concurrency limit, ASHA on the plan's time attribute. Ray stores the trials under
    ``storage_path`` (default the folder above ``exp_dir``); with a storage URI the study stays
    in ``exp_dir`` and :class:`search.durability.storage_copies.StorageCopies` copies it there.

    A trial whose worker process or node dies is rescheduled from its last checkpoint up to
    ``max_failures`` times; Ray does not tell the searcher, so the Optuna trial stays one trial
    with one result (with 0 the trial would end ERROR and its Optuna trial FAIL)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from search.searcher import ResumableOptunaSearch

    searcher = ResumableOptunaSearch(
        space=plan.space,
        metric=spec.metric,
        mode=spec.mode,
        points_to_evaluate=plan.points or None,
        sampler=make_sampler(spec),
        study_name=study_name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{exp_dir / STUDY_FILE}"),
    )
    searcher = ConcurrencyLimiter(searcher, max_concurrent=plan.max_concurrent)
    return tune.Tuner(
        _trainable(plan.trainable, plan.budget, spec, gpus),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=ASHAScheduler(**plan.asha),
            num_samples=plan.num_trials,
            metric=spec.metric,
            mode=spec.mode,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=plan.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=exp_dir.name,
            storage_path=storage_path or str(exp_dir.parent),
            callbacks=(_storage_callbacks(storage_path, exp_dir) or []) + (callbacks or []) or None,
            checkpoint_config=tune.CheckpointConfig(**plan.keep),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=1,
        ),
    )


def _tracking(uri: str | None, exp_dir: Path) -> list:
    """With an MLflow URI: the search's parent run (the spec and search record logged to it) and
    the callback that gives every trial a child run (search/tracking.py)."""
    if uri is None:
        return []
    from search import tracking

    parent = tracking.parent_run(uri, exp_dir)
    tracking.log_files(uri, parent, [exp_dir / "spec.yaml", exp_dir / SEARCH_FILE])
    return [tracking.TrialRuns(uri, exp_dir.name, parent)]


def _storage_callbacks(storage_path: str | None, exp_dir: Path) -> list | None:
    from trainables.contract.storage import is_uri

    if storage_path is None or not is_uri(storage_path):
        return None
    from search.durability.storage_copies import StorageCopies

    return [StorageCopies(storage_path, exp_dir)]


def _restore_tuner(kind, spec: SearchSpec, exp_dir: Path, gpus: float, storage_path: str):
    """Continue an interrupted search: finished trials stay, unfinished ones resume from their
    checkpoints, the searcher (with its Optuna study) proposes only the remaining trials. Ray
    reads the experiment where it stores it: ``exp_dir``, or ``<URI>/<name>``."""
    from ray import tune

    from trainables.contract.storage import is_uri, join

    where = join(storage_path, exp_dir.name) if is_uri(storage_path) else str(exp_dir)
    return tune.Tuner.restore(
        where, _trainable(*kind.trainable(spec), spec, gpus), resume_unfinished=True, resume_errored=True
    )


def _trial_dirname(trial) -> str:
    return trial_dirname(trial.trial_id)
