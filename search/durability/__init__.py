"""A killed driver loses nothing: what a search keeps itself, and what ``--resume`` reconciles.

Ray keeps a snapshot of the experiment in its folder (``experiment_state-*.json`` and the
searcher's pickled state) and writes it at most every ``TUNE_GLOBAL_CHECKPOINT_S`` seconds (Ray's
own default is at least 10 s; a search here snapshots every second, one second more per 30 trials
of its budget: :func:`search.durability.snapshots.snapshot_period`). Optuna writes every proposal
and every result to its SQLite study at once. After a SIGKILL of the
driver the two disagree about what happened since the last snapshot. Of the local cluster the
driver started, the GCS, raylet and trial workers end with it (Ray ties their fate to the
driver's), but the agents the raylet started (dashboard, runtime env) live on until they notice.
What Ray's snapshot cannot tell, the runner keeps in ``<experiment>/driver.json``
(:data:`trainables.contract.layout.DRIVER_FILE`):

- the driver's PID, start time and host, and the options and spec it was started with: a folder
  whose driver stopped before Ray's first snapshot (during calibration, say) is started again
  from them;
- a heartbeat, rewritten every :data:`HEARTBEAT_S` while the driver runs (and copied to a storage
  URI), and ``ended`` when it stops: one driver per experiment. A second fresh search or a
  ``--resume`` is refused while the recorded driver lives: on this machine its PID says so, on
  another (a search kept at a storage URI, whose bucket holds the record) a heartbeat under
  :data:`STALE_AFTER_S` old. A dead driver's record never blocks (a PID gone, or reused by another
  process; a heartbeat gone stale). Two drivers started within the same second could both pass the
  check: the record is a file, not a lock;
- the PIDs of the local cluster's processes and of their children at start (the agents):
  ``--resume`` first stops what is left of them and of their children, by PID (checked against
  the recorded start time), so nothing of the killed run still works on the folder.

Before ``Tuner.restore`` (:func:`reconcile`):

- trial folders that Ray's snapshot does not know (trials started after it) move to
  ``orphaned/`` (kept, never counted: Tune runs a replacement for each);
- Optuna trials left RUNNING that no trial of the snapshot will finish are marked FAIL, with the
  reason in their ``orphaned`` user attribute: no trial stays RUNNING. A warm-start point among
  them is enqueued again, so it still runs;
- a snapshot without trials (the driver died before Ray's first trial) restores nothing: the
  search starts again from driver.json (:func:`restart_folder`).

With a storage URI these steps act on the driver's local copy of ``<URI>/<name>/``, which
:mod:`search.durability.mirror` fills from the bucket first and whose changes it writes back before
``Tuner.restore`` reads the bucket.

Proposals are seeded per Optuna trial number (:class:`search.searcher.NumberSeeded`), so a
sampler restored from a lagging snapshot never repeats an earlier trial's proposal. A trial
whose snapshot names a checkpoint deleted since resumes from its newest surviving checkpoint, or
from the start (:func:`trainables.contract.layout.surviving_checkpoint`). A trial that finished after the
snapshot resumes from its last checkpoint and ends at once; Optuna keeps its first value (a
second ``tell`` of a finished trial is refused). A trial that had ended in ERROR (its Optuna
trial FAIL) and finishes on ``--resume`` is never told by Ray's searcher, which counts it as
completed already; after the resumed search
:func:`search.durability.reconcile.tell_resumed` adds its value to the study as a COMPLETE trial,
once.
"""
