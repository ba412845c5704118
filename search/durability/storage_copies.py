"""The Tune callback that keeps a search's storage URI and the driver's local copy in step
(:mod:`trainables.contract.storage`, :func:`search.durability.mirror.copy_to_storage`).

At the start of ``Tuner.fit``: ``search.json``, the spec copy and the Optuna study go to
``<URI>/<name>/``. As each trial starts (its Optuna trial was just proposed) and ends (the study
was just told its value): the study again, so that a resume on another machine finds the study as
it was (:mod:`search.durability.mirror`). When fit ends (after Ray's last sync of the trials, and also
when it raised): the study again, then the trials come back into the local folder. Imported only
where the Tuner is built, since it imports Ray.

Ray pickles the callback with the Tuner and a resume (``Tuner.restore``) runs the pickled one, on
this machine or another: it keeps the storage URI and the experiment's name, and finds the local
copy where the machine running it keeps it (:func:`trainables.contract.storage.local_copy`).
"""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from search.durability.mirror import copy_to_storage, fetch_from_storage
from trainables.contract import storage
from trainables.contract.layout import SEARCH_FILE, SPEC_COPY, STUDY_FILE


class StorageCopies(Callback):
    def __init__(self, storage_path: str, exp_dir: Path):
        self.storage_path = storage_path
        self.name = Path(exp_dir).name

    @property
    def exp_dir(self) -> Path:
        return storage.local_copy(storage.join(self.storage_path, self.name))

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        copy_to_storage(self.storage_path, self.exp_dir, (SEARCH_FILE, SPEC_COPY, STUDY_FILE))

    def on_trial_start(self, iteration, trials, trial, **info):
        copy_to_storage(self.storage_path, self.exp_dir, (STUDY_FILE,))

    def on_trial_complete(self, iteration, trials, trial, **info):
        copy_to_storage(self.storage_path, self.exp_dir, (STUDY_FILE,))

    def on_trial_error(self, iteration, trials, trial, **info):
        copy_to_storage(self.storage_path, self.exp_dir, (STUDY_FILE,))

    def on_experiment_end(self, trials, **info):
        copy_to_storage(self.storage_path, self.exp_dir, (STUDY_FILE,))
        fetch_from_storage(self.storage_path, self.exp_dir)
