"""Proposals seeded per trial number (search/searcher.py): a sampler restored from a
snapshot taken before its last draws does not replay them, where a plain seeded sampler does."""

import pickle

import optuna
import pytest

from search.searcher import NumberSeeded
from search_spaces.loading import load_spec
from search_spaces.space import make_space_fn

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _replayed(sampler, tmp_path) -> tuple[dict, dict]:
    """Ask two trials, snapshot the sampler (as Ray pickles the searcher), ask a third (lost with
    the driver), then ask again with the restored copy: (the lost trial's point, the new one's)."""
    space = make_space_fn(load_spec("smoke"))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, sampler=sampler)
    for _ in range(2):
        trial = study.ask()
        study.tell(trial, float(space(trial)["sigma_begin"]))
    snapshot = pickle.dumps(study.sampler)
    lost = space(study.ask())
    restored = optuna.load_study(study_name="s", storage=storage, sampler=pickle.loads(snapshot))
    return lost, space(restored.ask())


def test_a_plain_seeded_sampler_restored_from_a_lagging_snapshot_replays_a_draw(tmp_path):
    lost, again = _replayed(optuna.samplers.TPESampler(seed=0), tmp_path)
    assert lost == again  # why the per-number seeding exists


@pytest.mark.parametrize("algorithm", ["tpe", "random"])
def test_number_seeded_draws_differ_after_a_restore_and_repeat_for_the_same_numbers(tmp_path, algorithm):
    lost, again = _replayed(NumberSeeded(algorithm, seed=0), tmp_path)
    assert lost["sigma_begin"] != again["sigma_begin"] and lost["step_lr"] != again["step_lr"]
    space = make_space_fn(load_spec("smoke"))
    first, second = (optuna.create_study(sampler=NumberSeeded(algorithm, seed=0)) for _ in range(2))
    assert [space(first.ask()) for _ in range(3)] == [space(second.ask()) for _ in range(3)]
    other = optuna.create_study(sampler=NumberSeeded(algorithm, seed=1))
    assert space(other.ask()) != space(optuna.create_study(sampler=NumberSeeded(algorithm, seed=0)).ask())


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="algorithm 'grid'"):
        NumberSeeded("grid", 0)
