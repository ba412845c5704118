"""Paired comparisons and FID_inf (trainables/scoring/compare.py): verdicts by direction, the known
answers on real MNIST (disjoint real digits tie, mildly blurred ones lose; FID_inf of real digits
near zero where plain FID is not; docs/NCSN.md), the least-squares line, ragged input."""

import math

import pytest
import torch

from trainables.contract.data import load_mnist
from trainables.contract.metrics import BETTER, METRICS, TIED, WORSE
from trainables.scoring import compare, intervals, quality
from trainables.tools import known_answers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_verdicts_follow_the_metric_direction():
    assert compare.verdict(-0.3, -0.1, "min") == BETTER
    assert compare.verdict(-0.3, -0.1, "max") == WORSE
    assert compare.verdict(0.1, 0.3, "min") == WORSE
    assert compare.verdict(0.1, 0.3, "max") == BETTER
    assert compare.verdict(-0.1, 0.3, "min") == TIED
    assert compare.verdict(math.nan, 0.3, "min") == TIED


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
    blurred = quality.embed(known_answers.gaussian_blur(test_split["a_images"], 0.6).clamp(0, 1), "cpu")
    result = compare.compare_samples(
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
    feats, _ = quality.embed(images[pick].float() / 255.0, "cpu")
    plain, extrapolated = [], []
    for s in range(10):
        part = feats[500 * s : 500 * (s + 1)]
        plain.append(quality.frechet_distance(*_gaussian(part), ref.mean, ref.cov))
        fit = compare.fid_infinity(part, ref, seed=s)
        assert fit["sizes"][0] == 250 and fit["sizes"][-1] == 500
        assert fit["fid_at"][-1] == pytest.approx(plain[-1])
        extrapolated.append(fit["fid_inf"])
    mean_plain, mean_inf = sum(plain) / 10, sum(extrapolated) / 10
    assert mean_plain > 1.0
    assert abs(mean_inf) < 0.2, extrapolated


def test_fid_inf_is_the_least_squares_line_through_the_measured_points():
    ref = quality.Reference.from_features(torch.randn(4000, 4, generator=torch.Generator().manual_seed(0)), "line")
    feats = torch.randn(2000, 4, generator=torch.Generator().manual_seed(1)) * 1.5
    fit = compare.fid_infinity(feats, ref, sizes=[500, 1000, 2000], draws=4)
    design = torch.tensor([[1.0, 1.0 / s] for s in fit["sizes"]], dtype=torch.float64)
    line = design @ torch.tensor([fit["fid_inf"], fit["slope"]], dtype=torch.float64)
    residual = torch.tensor(fit["fid_at"], dtype=torch.float64) - line
    # least squares: the residual is orthogonal to both columns
    assert float((design.T @ residual).abs().max()) < 1e-9
    assert compare.fid_infinity(feats, ref, sizes=[2000])["fid_inf"] == pytest.approx(fit["fid_at"][-1])


def test_paired_comparison_pools_seeds_and_refuses_ragged_input(test_split):
    side = intervals.reference_side(1000, 0, test_split["reference"])
    a, b = test_split["a"], test_split["b"]
    result = compare.compare_samples({"x": [a, b], "y": [b, a]}, side, "fid", resamples=100)
    for name in METRICS:  # the same two samples, swapped: equal means, a zero difference
        assert result["values"]["x"][name]["value"] == pytest.approx(result["values"]["y"][name]["value"])
    assert result["best"] == "x"  # ties go to the first name
    assert result["versus_best"]["y"]["fid"]["difference"] == pytest.approx(0.0, abs=1e-9)
    assert result["versus_best"]["y"]["fid"]["verdict"] == TIED
    with pytest.raises(ValueError, match="same number"):
        compare.compare_samples({"x": [a, b], "y": [a]}, side, "fid", resamples=10)
