"""The cost model of the estimate before a search (search/estimate.py), without Ray: a
trial's seconds in closed form, and the trials it counts (the warm starts at their own settings,
the rest at the space's mean)."""

import math

import pytest

from search.estimate import trial_configs, trial_seconds, typical_config
from search_spaces.loading import load_spec
from search_spaces.validate import with_preview


def test_a_trial_s_seconds_scale_with_its_batch_and_its_network_evaluations():
    spec = with_preview(load_spec("sigmas.yaml"))  # 100 iterations, a look every 50, 100 samples
    rates = (0.3, 64, 0.002, 0.1)  # s/iteration at batch 64, s per image per pass, s per scoring
    config = {"batch_size": 128, "num_levels": 10, "n_steps_each": 1, "denoise": True}
    # 100 iterations at twice the timed batch, 2 looks of 100 samples x 11 passes, plus scoring
    assert trial_seconds(config, 100, spec.budget, rates) == pytest.approx(100 * 0.6 + 2 * (100 * 11 * 0.002 + 0.1))
    assert trial_seconds(config, 50, spec.budget, rates) == pytest.approx(50 * 0.6 + 1 * (100 * 11 * 0.002 + 0.1))


def test_the_warm_starts_count_at_their_own_settings_and_the_rest_at_the_space_s_mean():
    spec = with_preview(load_spec("sigmas.yaml"))
    configs = trial_configs(spec, typical_config(spec))
    assert len(configs) == spec.budget.num_trials == 6
    # the 2019 ladder (L = 10) and NCSNv2's (L = 95), both at batch 128
    assert [(c["num_levels"], c["batch_size"]) for c in configs[:2]] == [(10, 128), (95, 128)]
    mean = configs[2]
    assert all(c is mean for c in configs[2:])
    assert mean["batch_size"] == pytest.approx((32 + 64 + 128) / 3, rel=0.1)  # choice [32, 64, 128]
    # L log-uniform on 8..128: mean (128 - 8) / ln 16 = 43.3 levels, T = 1 in the preview, + denoising
    assert mean["num_levels"] == pytest.approx((128 - 8) / math.log(16) + 1, rel=0.1)
