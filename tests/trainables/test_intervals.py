"""Intervals, paired comparisons and FID_inf (trainables/intervals.py): the resampled formulas
against trainables.quality.evaluate, the interval rules, coverage in a simulation whose truth is
known, and the known answers on real MNIST (docs/NCSN.md)."""

import math

import pytest
import torch

from trainables import intervals, quality
from trainables.data import load_mnist
from trainables.metrics import BETTER, INTERVALS, METRICS, TIED, WORSE, hi_key, lo_key


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these tensors are small, and on a busy machine a second thread's wake-ups
    cost more than it saves (a 64 x 64 eigendecomposition took 100 ms instead of 1 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the counts formulas reproduce the sample's own values -------------------------------------


@pytest.fixture(scope="module")
def digits():
    """300 real training digits and the same digits blurred (sigma 1.5 px), as images."""
    images, _ = load_mnist(train=True)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(5))[:300]
    real = images[pick].float() / 255.0
    return {"real": real, "blurred": quality.gaussian_blur(real, 1.5).clamp(0, 1)}


@pytest.mark.parametrize("case", ["real", "blurred"])
def test_a_row_of_ones_gives_the_values_evaluate_reports(digits, case):
    images = digits[case]
    reported = quality.evaluate(images, resamples=0)
    feats, logits = quality._embed(images, "cpu")
    side = intervals.reference_side(len(images), 0)
    ones = torch.ones(1, len(images), dtype=torch.float64)
    mine = intervals.replicate_metrics(side, intervals.sample_terms(feats, logits, side), ones)
    for name in METRICS:
        assert float(mine[name][0]) == pytest.approx(reported[name], rel=1e-7, abs=1e-6), name


def test_evaluate_reports_an_interval_around_each_value_and_how_it_was_made(digits):
    result = quality.evaluate(digits["real"], resamples=200)
    for name in METRICS:
        lo, hi = result[lo_key(name)], result[hi_key(name)]
        assert lo < hi, name
    # the unbiased ones straddle their value; FID's lies below it (its small-N bias is corrected)
    for name in ("kid", "precision", "recall", "density", "coverage"):
        assert result[lo_key(name)] < result[name] < result[hi_key(name)], name
    assert result[hi_key("fid")] < result["fid"]
    assert result[INTERVALS]["resamples"] == 200 and result[INTERVALS]["level"] == 0.95
    without = quality.evaluate(digits["real"], resamples=0)
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


def test_verdicts_follow_the_metric_direction():
    assert intervals.verdict(-0.3, -0.1, "min") == BETTER
    assert intervals.verdict(-0.3, -0.1, "max") == WORSE
    assert intervals.verdict(0.1, 0.3, "min") == WORSE
    assert intervals.verdict(0.1, 0.3, "max") == BETTER
    assert intervals.verdict(-0.1, 0.3, "min") == TIED
    assert intervals.verdict(math.nan, 0.3, "min") == TIED


# --- coverage in a simulation with a known truth --------------------------------------------


def test_intervals_cover_the_truth_in_a_gaussian_simulation():
    """200 samples of 200 Gaussian feature vectors (intervals.gaussian_simulation): every metric's
    95% interval covers the truth in at least 90% of them."""
    sim = intervals.gaussian_simulation(repeats=200, n=200, resamples=250)
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
    side, ref, mixing, truth = intervals.simulation_setup(200)
    x, _ = intervals._simulated(100_000, torch.Generator().manual_seed(9), mixing)
    assert truth["fid"] == pytest.approx(quality.frechet_distance(*_gaussian(x), ref.mean, ref.cov), abs=0.02)


def _gaussian(x):
    x = x.double()
    return x.mean(0), torch.cov(x.T)


# --- known answers on real MNIST --------------------------------------------------------------


@pytest.fixture(scope="module")
def test_split():
    """The 10,000 test digits' features (cached with the reference statistics) in a random split:
    a reference of 5,000, two disjoint sets of 1,000, and the test images of the first set."""
    ref = quality.mnist_test_reference("cpu")
    order = torch.randperm(len(ref.features), generator=torch.Generator().manual_seed(0))
    feats = ref.features[order]
    with torch.no_grad():
        logits = quality._net("cpu").logits_from_features(feats)
    images, _ = load_mnist(train=False)
    return {
        "reference": quality.Reference.from_features(feats[:5000], "mnist-test-random-half"),
        "a": (feats[5000:6000], logits[5000:6000]),
        "b": (feats[6000:7000], logits[6000:7000]),
        "a_images": images[order[5000:6000]].float() / 255.0,
    }


def test_known_answers_disjoint_real_digits_tie_and_mildly_blurred_ones_lose(test_split):
    side = intervals.reference_side(1000, 0, test_split["reference"])
    blurred = quality._embed(quality.gaussian_blur(test_split["a_images"], 0.6).clamp(0, 1), "cpu")
    result = intervals.compare_samples(
        {"a": [test_split["a"]], "b": [test_split["b"]], "blurred": [blurred]},
        side,
        "kid",
        resamples=500,
        best="a",
    )
    real_vs_real = result["versus_best"]["b"]
    assert {name: v["verdict"] for name, v in real_vs_real.items()} == dict.fromkeys(METRICS, TIED)
    blur = result["versus_best"]["blurred"]
    for name in ("fid", "kid", "recall", "coverage"):
        assert blur[name]["verdict"] == WORSE, (name, blur[name])
    assert blur["kid"]["lo"] > 0 and blur["fid"]["lo"] > 0


def test_known_answer_fid_inf_of_real_digits_is_near_zero_where_fid_at_500_is_not():
    """Ten disjoint sets of 500 training digits against the test reference: plain FID carries its
    small-N bias (about 0.5 * 1000 / N = 1, docs/NCSN.md), FID_inf (Chong & Forsyth 2020)
    extrapolates it away. One set's FID_inf varies by about 0.2 (its sample's noise, extrapolated):
    the mean of ten is the known answer."""
    ref = quality.mnist_test_reference("cpu")
    images, _ = load_mnist(train=True)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:5000]
    feats, _ = quality._embed(images[pick].float() / 255.0, "cpu")
    plain, extrapolated = [], []
    for s in range(10):
        part = feats[500 * s : 500 * (s + 1)]
        plain.append(quality.frechet_distance(*_gaussian(part), ref.mean, ref.cov))
        fit = intervals.fid_infinity(part, ref, seed=s)
        assert fit["sizes"][0] == 250 and fit["sizes"][-1] == 500
        assert fit["fid_at"][-1] == pytest.approx(plain[-1])
        extrapolated.append(fit["fid_inf"])
    mean_plain, mean_inf = sum(plain) / 10, sum(extrapolated) / 10
    assert mean_plain > 1.0
    assert abs(mean_inf) < 0.2, extrapolated


def test_fid_inf_is_the_least_squares_line_through_the_measured_points():
    ref = quality.Reference.from_features(torch.randn(4000, 4, generator=torch.Generator().manual_seed(0)), "line")
    feats = torch.randn(2000, 4, generator=torch.Generator().manual_seed(1)) * 1.5
    fit = intervals.fid_infinity(feats, ref, sizes=[500, 1000, 2000], draws=4)
    design = torch.tensor([[1.0, 1.0 / s] for s in fit["sizes"]], dtype=torch.float64)
    line = design @ torch.tensor([fit["fid_inf"], fit["slope"]], dtype=torch.float64)
    residual = torch.tensor(fit["fid_at"], dtype=torch.float64) - line
    # least squares: the residual is orthogonal to both columns
    assert float((design.T @ residual).abs().max()) < 1e-9
    assert intervals.fid_infinity(feats, ref, sizes=[2000])["fid_inf"] == pytest.approx(fit["fid_at"][-1])


def test_paired_comparison_pools_seeds_and_refuses_ragged_input(test_split):
    side = intervals.reference_side(1000, 0, test_split["reference"])
    a, b = test_split["a"], test_split["b"]
    result = intervals.compare_samples({"x": [a, b], "y": [b, a]}, side, "fid", resamples=100)
    for name in METRICS:  # the same two samples, swapped: equal means, a zero difference
        assert result["values"]["x"][name]["value"] == pytest.approx(result["values"]["y"][name]["value"])
    assert result["best"] == "x"  # ties go to the first name
    assert result["versus_best"]["y"]["fid"]["difference"] == pytest.approx(0.0, abs=1e-9)
    assert result["versus_best"]["y"]["fid"]["verdict"] == TIED
    with pytest.raises(ValueError, match="same number"):
        intervals.compare_samples({"x": [a, b], "y": [a]}, side, "fid", resamples=10)
