"""analysis/rank.py: ranking by a metric (both kinds), at equal compute, on the Pareto front, at a
look; and the refusal to compare numbers scored under different evaluation protocols."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fake_experiment import (
    OTHER_PROTOCOL,
    PROTOCOL,
    independent_ranking,
    independent_sampler_order,
    sampler_like,
    smoke_like,
)

from analysis.load import load_experiment, load_experiments
from analysis.rank import (
    at_look,
    best_within_budget,
    check_protocols,
    compare_at_common_look,
    match_warm_starts,
    pareto_front,
    rank_trials,
)
from trainables.contract.layout import WARM_2019, WARM_NCSNV2
from trainables.contract.metrics import metric_mode


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    return smoke_like(tmp_path_factory.mktemp("rank"), study=False).exp_dir


@pytest.mark.parametrize("metric", ["kid", "fid", "coverage"])
def test_ranking_by_a_metric_matches_an_independent_ranking(smoke_dir, metric):
    # coverage is a "max" metric and is 0 for these barely trained models: the tie rule decides
    exp = load_experiment(smoke_dir, metric=metric)
    ranked = rank_trials(exp.trials)
    expected = independent_ranking(smoke_dir, metric)
    assert len(expected) == 6
    assert list(ranked["trial_id"]) == [tid for tid, _ in expected]
    assert np.allclose(ranked[metric], [v for _, v in expected], rtol=1e-12)
    values = ranked[metric].to_numpy()
    assert list(ranked["rank"]) == [
        1 + int(np.sum(values < v) if metric_mode(metric) == "min" else np.sum(values > v)) for v in values
    ]
    if metric == "fid":  # the fixture's fid orders the trials differently from kid: the test means something
        assert list(ranked["trial_id"]) != [tid for tid, _ in independent_ranking(smoke_dir, "kid")]


def test_sampler_trials_rank_the_further_first_then_by_value_at_their_last_look(tmp_path):
    exp_dir = sampler_like(tmp_path).exp_dir
    for metric in ("kid", "fid"):
        ranked = rank_trials(load_experiment(exp_dir, metric=metric).trials)  # reach: from the frame
        assert list(ranked["trial_id"]) == independent_sampler_order(exp_dir, metric)
    ranked = rank_trials(load_experiment(exp_dir).trials)
    by_id = dict(zip(ranked["trial_id"], ranked["rank"], strict=True))
    assert by_id["6e1c2_00004"] == 1 and by_id["6e1c2_00001"] == 2 and by_id["6e1c2_00000"] == 3
    assert by_id["6e1c2_00002"] == 4  # at 32 samples: ranks below every trial at 64, whatever its kid
    assert pd.isna(by_id["6e1c2_00005"])  # diverged: no finite value, no rank
    assert by_id["6e1c2_00003"] == 5


def test_at_a_look_and_at_the_largest_common_look(tmp_path):
    exp = load_experiment(sampler_like(tmp_path).exp_dir)
    rows = at_look(exp.evaluations, 32, "kid", "min", exp.time_attr)
    assert list(rows["trial_id"]) == ["6e1c2_00004", "6e1c2_00001", "6e1c2_00002", "6e1c2_00000"]
    ev, attr = exp.evaluations, exp.time_attr
    assert compare_at_common_look(ev, "6e1c2_00004", "6e1c2_00002", "kid", attr) == (32, 0.16, 0.22)
    # the diverged one scored its first look only: its divergence record at 32 is no value
    assert compare_at_common_look(ev, "6e1c2_00004", "6e1c2_00005", "kid", attr) == (16, 0.22, 0.6)
    look, a, b = compare_at_common_look(exp.evaluations, "6e1c2_00004", "nobody", "kid", exp.time_attr)
    assert look is None and np.isnan(a) and np.isnan(b)


def test_warm_starts_are_matched_by_their_params(smoke_dir):
    ranked = rank_trials(load_experiment(smoke_dir).trials)
    points = [
        {"label": WARM_2019, "params": {"sigma_begin": 1.0, "sigma_end": 0.01, "step_lr": 2e-05 * (1 + 1e-12)}},
        {"label": WARM_NCSNV2, "params": {"sigma_begin": 16.875761961808387, "sigma_end": 0.01, "step_lr": 1e-5}},
        {"label": "nothing", "params": {}},
    ]
    matches = match_warm_starts(ranked, points)
    assert matches["trial_id"].iloc[0] == "5d0b1_00000"  # equal to 1e-9
    assert matches["trial_id"].iloc[1:].isna().all()  # another step_lr; an empty point matches nothing


def test_mixing_two_protocols_is_refused(smoke_dir, tmp_path):
    other = independent_ranking(smoke_dir, "kid")[-1][0]
    exp_dir = smoke_like(tmp_path, name="mixed", study=False, protocols={other: OTHER_PROTOCOL}).exp_dir
    exp = load_experiment(exp_dir)
    with pytest.raises(ValueError, match="2 different evaluation protocols") as refusal:
        rank_trials(exp.trials)
    assert PROTOCOL in str(refusal.value) and OTHER_PROTOCOL in str(refusal.value)
    with pytest.raises(ValueError, match="protocol"):
        pareto_front(exp.evaluations)
    with pytest.raises(ValueError, match="protocol"):
        best_within_budget(exp.evaluations, 10_000)
    trials, _ = load_experiments([smoke_dir, exp_dir])  # two experiments: the original and the edited one
    with pytest.raises(ValueError, match="protocol"):
        rank_trials(trials)

    ranked = rank_trials(exp.trials, per_protocol=True)
    alone = ranked[ranked["protocol"] == OTHER_PROTOCOL]
    assert list(alone["trial_id"]) == [other] and list(alone["rank"]) == [1]
    assert sorted(ranked.loc[ranked["protocol"] == PROTOCOL, "rank"]) == list(range(1, len(ranked)))
    assert ranked["protocol"].iloc[0] == PROTOCOL  # the group holding the overall best comes first


def test_a_sampler_trial_under_another_protocol_is_refused_too(tmp_path):
    exp = load_experiment(sampler_like(tmp_path, families={"6e1c2_00002": "q"}).exp_dir)
    with pytest.raises(ValueError, match="2 different evaluation protocols"):
        rank_trials(exp.trials)
    ranked = rank_trials(exp.trials, per_protocol=True)
    [alone] = [g for g in ranked["protocol"].unique() if (ranked["protocol"] == g).sum() == 1]
    assert list(ranked.loc[ranked["protocol"] == alone, "trial_id"]) == ["6e1c2_00002"]
    assert list(ranked.loc[ranked["protocol"] == alone, "rank"]) == [1]


# ---------------------------------------------------------------------------------------------
# Hand-made frames: closed answers


def _evals(rows, metric="kid"):
    frame = pd.DataFrame(rows, columns=["trial_id", "iterations", "evals_total", metric])
    frame["experiment"], frame["diverged"], frame["protocol_id"], frame["checkpoint"] = "e", False, "p", None
    frame.attrs.update(metric=metric, mode=metric_mode(metric))
    return frame


def test_pareto_front_and_budget_on_hand_made_points():
    ev = _evals(
        [
            ("a", 1, 100, 5.0),
            ("b", 1, 200, 6.0),
            ("a", 2, 200, 4.0),
            ("c", 1, 300, 4.0),
            ("b", 2, 400, 1.0),
            ("c", 2, 500, 1.0),
        ]
    )
    front = pareto_front(ev)
    assert list(zip(front["trial_id"], front["evals_total"], strict=True)) == [("a", 100), ("a", 200), ("b", 400)]
    within = best_within_budget(ev, 300)
    assert list(within["trial_id"]) == ["a", "c", "b"] and list(within["kid"]) == [4.0, 4.0, 6.0]
    assert list(within["rank"]) == [1, 1, 3]  # a and c tie; a got there with less compute
    assert list(best_within_budget(ev, 99)["trial_id"]) == []
    up = _evals([("a", 1, 100, 0.2), ("a", 2, 200, 0.1), ("b", 1, 150, 0.3)], metric="coverage")
    assert list(pareto_front(up)["trial_id"]) == ["a", "b"]


def test_rank_ties_missing_and_diverged_values():
    trials = pd.DataFrame(
        {
            "trial_id": list("abcde"),
            "kid": [2.0, 1.0, 1.0, np.nan, np.inf],
            "best_evals_total": [1, 30, 20, np.nan, 5],
            "protocol_id": ["p", "p", "p", None, None],
        }
    )
    ranked = rank_trials(trials, metric="kid")
    assert list(ranked["trial_id"]) == ["c", "b", "a", "e", "d"]
    assert list(ranked["rank"].astype("float").fillna(-1)) == [1, 1, 3, 4, -1]
    assert check_protocols(trials) == "p"
    with pytest.raises(ValueError, match="metric='sharp'"):
        rank_trials(trials, metric="sharp")


def test_ranking_by_reach_ties_and_skips_non_finite_values():
    trials = pd.DataFrame(
        {
            "trial_id": list("abcdef"),
            "kid": [0.2, 0.1, 0.1, 0.05, np.inf, 0.3],
            "samples_scored": [64, 64, 64, 32, 64, 16],
            "best_evals_total": [9, 20, 10, 5, 1, 1],
            "protocol_id": ["p"] * 6,
        }
    )
    ranked = rank_trials(trials, reach="samples_scored")
    assert list(ranked["trial_id"]) == ["c", "b", "a", "e", "d", "f"]
    assert list(ranked["rank"].astype("float").fillna(-1)) == [1, 1, 3, -1, 4, 5]
