"""The searcher restored from a lagging snapshot (search/searcher.py): a result of a trial
the study has finished since is dropped, where Ray's OptunaSearch stops the search."""

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from search.searcher import NumberSeeded, ResumableOptunaSearch
from search_spaces.loading import load_spec
from search_spaces.space import make_space_fn

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("cls", [OptunaSearch, ResumableOptunaSearch])
def test_a_result_of_a_trial_optuna_finished_since(cls, tmp_path):
    spec = load_spec("smoke")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = cls(
        space=make_space_fn(spec),
        metric="kid",
        mode="min",
        sampler=NumberSeeded("tpe", 0),
        study_name="s",
        storage=optuna.storages.RDBStorage(storage),
    )
    searcher.suggest("t0")
    study = optuna.load_study(study_name="s", storage=storage)
    study.tell(study.trials[0].number, 0.5)  # told by a driver whose snapshot the searcher predates
    result = {"kid": 0.4, "training_iteration": 2}
    if cls is OptunaSearch:
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            searcher.on_trial_result("t0", result)
    else:
        searcher.on_trial_result("t0", result)
        assert optuna.load_study(study_name="s", storage=storage).trials[0].value == 0.5  # told once
