"""Intervals of every evaluation (trainables/scoring/intervals.py): the resampled formulas against
trainables.scoring.quality.point_metrics, the interval rules, and coverage in a simulation whose truth is known
(trainables/tools/known_answers.py)."""

import math

import pytest
import torch

from trainables.contract.data import load_mnist
from trainables.contract.metrics import INTERVALS, METRICS, hi_key, lo_key
from trainables.scoring import intervals, quality
from trainables.tools import known_answers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the counts formulas reproduce the sample's own values -------------------------------------


@pytest.fixture(scope="module")
def digits():
    """300 real training digits and the same digits blurred (sigma 1.5 px), as images."""
    images, _ = load_mnist(train=True)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(5))[:300]
    real = images[pick].float() / 255.0
    return {"real": real, "blurred": known_answers.gaussian_blur(real, 1.5).clamp(0, 1)}


@pytest.mark.parametrize("case", ["real", "blurred"])
def test_a_row_of_ones_gives_the_values_evaluate_reports(digits, case):
    images = digits[case]
    reported = quality.point_metrics(images)
    feats, logits = quality.embed(images, "cpu")
    side = intervals.reference_side(len(images), 0)
    ones = torch.ones(1, len(images), dtype=torch.float64)
    mine = intervals.replicate_metrics(side, intervals.sample_terms(feats, logits, side), ones)
    for name in METRICS:
        assert float(mine[name][0]) == pytest.approx(reported[name], rel=1e-7, abs=1e-6), name


def test_evaluate_reports_an_interval_around_each_value_and_how_it_was_made(digits):
    result = intervals.evaluate(digits["real"], resamples=200)
    for name in METRICS:
        lo, hi = result[lo_key(name)], result[hi_key(name)]
        assert lo < hi, name
    # the unbiased ones straddle their value; FID's lies below it (its small-N bias is corrected)
    for name in ("kid", "precision", "recall", "density", "coverage"):
        assert result[lo_key(name)] < result[name] < result[hi_key(name)], name
    assert result[hi_key("fid")] < result["fid"]
    assert result[INTERVALS]["resamples"] == 200 and result[INTERVALS]["level"] == 0.95
    without = quality.point_metrics(digits["real"])
    assert lo_key("kid") not in without and INTERVALS not in without
    assert without["protocol_id"] == result["protocol_id"]  # intervals change no value


def test_bootstrap_counts_are_resamples_of_n_and_repeatable():
    counts = intervals.bootstrap_counts(50, 40, seed=3)
    assert counts.shape == (40, 50) and bool((counts.sum(1) == 50).all())
    assert torch.equal(counts, intervals.bootstrap_counts(50, 40, seed=3))
    assert not torch.equal(counts, intervals.bootstrap_counts(50, 40, seed=4))
    # about 1 - 1/e of the images appear in a resample
    assert float((counts > 0).double().mean()) == pytest.approx(1 - math.exp(-1), abs=0.03)


def test_interval_rules():
    reps = torch.arange(1, 1002, dtype=torch.float64)  # quantiles 26 and 976, mean 501
    lo, hi = intervals.interval(600.0, reps, intervals.BASIC)
    assert (lo, hi) == pytest.approx((2 * 600 - 976, 2 * 600 - 26))
    lo, hi = intervals.interval(600.0, reps, intervals.CENTRED)
    assert (lo, hi) == pytest.approx((26 + 99, 976 + 99))
    with_nan = torch.cat([reps, torch.tensor([math.nan])])  # a resample without a value is dropped
    assert intervals.interval(600.0, with_nan, intervals.BASIC) == intervals.interval(600.0, reps, intervals.BASIC)


# --- coverage in a simulation with a known truth --------------------------------------------


def test_intervals_cover_the_truth_in_a_gaussian_simulation():
    """200 samples of 200 Gaussian feature vectors (known_answers.gaussian_simulation): every metric's
    95% interval covers the truth in at least 90% of them."""
    sim = known_answers.gaussian_simulation(repeats=200, n=200, resamples=250)
    assert all(rate >= 0.90 for rate in sim["coverage"].values()), sim["coverage"]
    # the truths themselves: KID, precision and density are unbiased under the fixed reference,
    # so their mean over the 200 samples sits within 4 standard errors of the closed-form / large
    # -draw truth
    for name in ("kid", "precision", "density"):
        error = sim["sd_estimate"][name] / sim["repeats"] ** 0.5
        assert abs(sim["mean_estimate"][name] - sim["truth"][name]) < 4 * error, name
    # FID's small-N bias exceeds its interval's half-width: a percentile interval, which sits
    # above the sample's value, would miss the truth; the basic interval corrects it
    assert sim["mean_estimate"]["fid"] - sim["truth"]["fid"] > sim["width"]["fid"] / 2


def test_the_simulation_fid_truth_matches_a_large_sample():
    """The closed-form FID of the simulation against the FID of 100,000 draws."""
    side, ref, mixing, truth = known_answers.simulation_setup(200)
    x, _ = known_answers._simulated(100_000, torch.Generator().manual_seed(9), mixing)
    assert truth["fid"] == pytest.approx(quality.frechet_distance(*_gaussian(x), ref.mean, ref.cov), abs=0.02)


def _gaussian(x):
    x = x.double()
    return x.mean(0), torch.cov(x.T)
