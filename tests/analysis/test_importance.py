"""analysis/importance.py: PED-ANOVA importance from an Optuna study, or why there is none."""

from __future__ import annotations

import math

import optuna
import pytest

from analysis.importance import param_importances


def test_importance_states_why_when_too_few_trials():
    study = optuna.create_study(direction="minimize")
    dist = optuna.distributions.FloatDistribution(0.1, 10.0, log=True)
    for x, value in ((1.0, 3.0), (2.0, 1.0), (3.0, math.inf)):
        study.add_trial(
            optuna.trial.create_trial(params={"sigma_begin": x}, distributions={"sigma_begin": dist}, value=value)
        )
    frame, note = param_importances(study, ["sigma_begin"], "kid")
    assert frame.empty and "2 complete trial(s) with a finite value" in note
    for x, value in ((4.0, 2.0), (5.0, 5.0), (0.5, 0.5)):
        study.add_trial(
            optuna.trial.create_trial(params={"sigma_begin": x}, distributions={"sigma_begin": dist}, value=value)
        )
    frame, note = param_importances(study, ["sigma_begin"], "kid")
    assert list(frame["param"]) == ["sigma_begin"] and frame["importance"].item() == pytest.approx(1.0)
    assert "5 complete trials" in note


def test_no_study_and_unvaried_parameters_are_said_so():
    frame, note = param_importances(None, ["sigma_begin"])
    assert frame.empty and "no Optuna study" in note
    study = optuna.create_study(direction="minimize")
    dist = optuna.distributions.FloatDistribution(0.1, 10.0)
    for value in (1.0, 2.0, 3.0, 4.0):
        study.add_trial(optuna.trial.create_trial(params={"lr": 1.0}, distributions={"lr": dist}, value=value))
    frame, note = param_importances(study, ["lr"])
    assert frame.empty and "no searched parameter took more than one value" in note
