"""The Tune callback that keeps a search's storage URI and the driver's local copy in step
(:mod:`trainables.storage`, :func:`search_spaces.experiment.copy_to_storage`).

At the start of ``Tuner.fit``: ``search.json``, the spec copy and the Optuna study go to
``<URI>/<name>/``. When fit ends (after Ray's last sync of the trials, and also when it raised):
the study again, then the trials come back into the local folder. Imported only where the Tuner is
built, since it imports Ray.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from search_spaces.experiment import copy_to_storage, fetch_from_storage
from trainables.layout import SEARCH_FILE, SPEC_COPY, STUDY_FILE


class StorageCopies(Callback):
    def __init__(self, storage_path: str, exp_dir: Path):
        self.storage_path = storage_path
        self.exp_dir = Path(exp_dir)

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        copy_to_storage(self.storage_path, self.exp_dir, (SEARCH_FILE, SPEC_COPY, STUDY_FILE))

    def on_experiment_end(self, trials, **info):
        copy_to_storage(self.storage_path, self.exp_dir, (STUDY_FILE,))
        fetch_from_storage(self.storage_path, self.exp_dir)
