"""Sample-quality metrics: formulas against independent computations, then known answers on MNIST."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from trainables.contract.data import load_mnist
from trainables.scoring import quality
from trainables.scoring.feature_net import FEATURE_NET_SHA256, NUM_FEATURES, load_feature_net
from trainables.scoring.quality import (
    METRICS,
    class_coverage,
    frechet_distance,
    inception_score,
    kernel_distance,
    manifold_metrics,
    metric_mode,
    mmd2_unbiased,
    point_metrics,
    protocol_id,
    reference_from_images,
    worst_value,
)
from trainables.tools import known_answers


def _correlated(n, d, seed, shift=0.0):
    g = np.random.default_rng(seed)
    mix = g.normal(size=(d, d)) / math.sqrt(d)
    return g.normal(size=(n, d)) @ mix + shift


class _Identity(nn.Module):
    """Hands torchmetrics precomputed features as if they were images."""

    num_features = 8

    def forward(self, x):
        return x


class _NetFeatures(nn.Module):
    num_features = NUM_FEATURES

    def __init__(self):
        super().__init__()
        self.net = load_feature_net()

    def forward(self, x):
        return self.net.features(x)


# --- metric registry -------------------------------------------------------------------------


def test_metric_directions_and_worst_values():
    assert {n: metric_mode(n) for n in METRICS} == {
        "fid": "min",
        "kid": "min",
        "inception_score": "max",
        "precision": "max",
        "recall": "max",
        "density": "max",
        "coverage": "max",
        "class_coverage": "max",
    }
    assert worst_value("fid") == math.inf and worst_value("kid") == math.inf
    assert worst_value("precision") == 0.0 and worst_value("inception_score") == 0.0
    with pytest.raises(ValueError, match="'fdi'"):
        metric_mode("fdi")
    with pytest.raises(ValueError, match="'nope'"):
        worst_value("nope")


def test_protocol_id_is_order_free_and_sensitive_to_every_field():
    p = {"feature_net_sha256": "ab", "n": 1000, "seed": 0}
    assert protocol_id(p) == protocol_id({"seed": 0, "n": 1000, "feature_net_sha256": "ab"})
    assert len(protocol_id(p)) == 12
    assert protocol_id(p) != protocol_id({**p, "n": 2000})
    assert protocol_id(p) != protocol_id({**p, "seed": 1})
    assert protocol_id(p) != protocol_id({**p, "feature_net_sha256": "ac"})


# --- FID -------------------------------------------------------------------------------------


def test_fid_closed_form_for_diagonal_gaussians():
    # N(mu1, diag(a)) vs N(mu2, diag(b)): ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, abs=1e-10)


def test_fid_matches_scipy_sqrtm_and_torchmetrics():
    x, y = _correlated(400, 8, 0), _correlated(300, 8, 1, shift=0.3)
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(cx @ cy).real
    expected = ((mx - my) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2 * np.trace(covmean)

    ours = frechet_distance(*(torch.from_numpy(t) for t in (mx, cx, my, cy)))
    assert ours == pytest.approx(expected, rel=1e-9)

    tm = FrechetInceptionDistance(feature=_Identity())
    tm.update(torch.from_numpy(y), real=True)
    tm.update(torch.from_numpy(x), real=False)
    assert ours == pytest.approx(tm.compute().item(), rel=1e-6)


def test_fid_handles_a_zero_covariance():
    # one repeated sample: cov 0, so FID = ||mu1 - mu2||^2 + tr(cov2)
    cov2 = torch.from_numpy(np.cov(_correlated(200, 8, 2), rowvar=False))
    mu2 = torch.zeros(8, dtype=torch.float64)
    mu1 = torch.full((8,), 0.5, dtype=torch.float64)
    assert frechet_distance(mu1, torch.zeros(8, 8), mu2, cov2) == pytest.approx(8 * 0.25 + cov2.trace().item())


# --- KID -------------------------------------------------------------------------------------


def test_mmd2_unbiased_matches_explicit_double_sums():
    x, y = _correlated(12, 5, 3), _correlated(9, 5, 4, shift=0.5)
    k = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(12) for j in range(12) if i != j) / (12 * 11)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(12) for j in range(9)) / (12 * 9)
    ours = mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert ours == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_with_one_whole_subset_matches_torchmetrics():
    # a subset holding every point makes torchmetrics' random permutation irrelevant
    x, y = torch.from_numpy(_correlated(150, 8, 5)), torch.from_numpy(_correlated(150, 8, 6, shift=0.2))
    mean, std, m = kernel_distance(x, y, n_subsets=1, subset_size=150, seed=0)
    tm = KernelInceptionDistance(feature=_Identity(), subsets=1, subset_size=150)
    tm.update(y, real=True)
    tm.update(x, real=False)
    tm_mean, tm_std = tm.compute()
    assert (m, std) == (150, 0.0)
    assert mean == pytest.approx(tm_mean.item(), rel=1e-5)  # our kernels are float32
    assert tm_std.item() == 0.0


@pytest.mark.parametrize("n_sample, subset_size", [(60, 100), (60, 25)])  # m == N shortcut, and m < N
def test_kid_equals_per_subset_mmd_over_its_subsets(n_sample, subset_size):
    x, y = torch.from_numpy(_correlated(n_sample, 8, 7)), torch.from_numpy(_correlated(90, 8, 8, shift=0.3))
    ref_idx, smp_idx = quality.kid_subsets(n_sample, 90, 12, subset_size, seed=5)
    m = min(subset_size, n_sample)
    assert ref_idx.shape == smp_idx.shape == (12, m)
    assert all(len(set(row.tolist())) == m for row in torch.cat([ref_idx, smp_idx]))  # no repeats
    direct = torch.stack([mmd2_unbiased(x[i], y[j]) for i, j in zip(smp_idx, ref_idx)])
    terms = quality.reference_kid_terms(y, ref_idx)
    for reference_terms in (None, terms):
        mean, std, got_m = kernel_distance(x, y, 12, subset_size, seed=5, reference_terms=reference_terms)
        assert got_m == m
        assert mean == pytest.approx(direct.mean().item(), rel=1e-5)
        assert std == pytest.approx(direct.std(correction=0).item(), rel=1e-4)
    assert kernel_distance(x, y, 12, subset_size, seed=6)[0] != pytest.approx(direct.mean().item(), rel=1e-5)


# --- precision / recall / density / coverage ---------------------------------------------------


def test_manifold_metrics_hand_computed_on_a_line():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])  # every 1-NN radius is 1
    fake = torch.tensor([[0.5], [10.0], [2.2]])  # 1-NN radii 1.7, 7.8, 1.7
    got = manifold_metrics(real, fake, k_pr=1, k_dc=1)
    assert got["precision"] == pytest.approx(2 / 3)  # 0.5 and 2.2 lie in real balls; 10 does not
    assert got["recall"] == pytest.approx(1.0)  # the outlier's 7.8-ball reaches 3, 4, 5
    assert got["density"] == pytest.approx(4 / 3)  # 0.5 in balls of 0 and 1; 2.2 in balls of 2 and 3
    assert got["coverage"] == pytest.approx(4 / 6)  # 4 and 5 have no fake within 1


def _manifold_brute_force(real, fake, k_pr, k_dc):
    drr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    dff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    dfr = np.linalg.norm(fake[:, None] - real[None], axis=-1)
    r_pr, r_dc = np.sort(drr, 1)[:, k_pr], np.sort(drr, 1)[:, k_dc]
    f_pr = np.sort(dff, 1)[:, k_pr]
    return {
        "precision": np.mean([(dfr[j] <= r_pr).any() for j in range(len(fake))]),
        "recall": np.mean([(dfr[:, i] <= f_pr).any() for i in range(len(real))]),
        "density": sum((dfr[j] <= r_dc).sum() for j in range(len(fake))) / (k_dc * len(fake)),
        "coverage": np.mean([dfr[:, i].min() <= r_dc[i] for i in range(len(real))]),
    }


def test_manifold_metrics_match_brute_force_across_chunks(monkeypatch):
    monkeypatch.setattr(quality, "_CHUNK", 7)  # force several blocks
    real, fake = _correlated(60, 4, 9), _correlated(45, 4, 10, shift=0.4)
    got = manifold_metrics(torch.from_numpy(real), torch.from_numpy(fake))
    want = _manifold_brute_force(real, fake, 3, 5)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] < 1  # a case that can tell them apart


# --- Inception Score, class coverage -------------------------------------------------------------


def test_inception_score_known_values():
    confident = 50.0 * torch.eye(10)
    assert inception_score(confident.repeat(30, 1)) == pytest.approx(10.0, rel=1e-9)
    assert inception_score(confident[[3] * 40]) == pytest.approx(1.0, rel=1e-9)
    assert inception_score(confident[[2, 7] * 20]) == pytest.approx(2.0, rel=1e-9)
    assert inception_score(torch.zeros(50, 10)) == pytest.approx(1.0)  # unsure of everything


def test_class_coverage_known_values():
    assert class_coverage(torch.arange(10).repeat(7)) == (pytest.approx(1.0), [7] * 10)
    assert class_coverage(torch.full((30,), 4)) == (0.0, [0, 0, 0, 0, 30, 0, 0, 0, 0, 0])
    value, hist = class_coverage(torch.tensor([1, 1, 8, 8]))
    assert value == pytest.approx(math.log(2) / math.log(10)) and hist[1] == hist[8] == 2


# --- point_metrics(): input checks, protocol, known answers --------------------------------------------


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(10, 28, 28), "shape"),
        (torch.rand(10, 1, 28, 28) * 2, r"\[0, 1\]"),
        (torch.full((10, 1, 28, 28), float("nan")), "NaN"),
        ((torch.rand(10, 1, 28, 28) * 255).byte(), "float"),
        (torch.rand(4, 1, 28, 28), "N=4"),
    ],
)
def test_evaluate_rejects_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        point_metrics(bad)


@pytest.fixture(scope="module")
def test_images():
    images, labels = load_mnist(train=False)
    return images.float() / 255.0, labels


@pytest.fixture(scope="module")
def cases():
    return {name: point_metrics(x) for name, x in known_answers.known_answer_cases(1000).items()}


def test_fid_of_identical_sets_is_zero(test_images):
    x = test_images[0][:1000]
    r = point_metrics(x, reference=reference_from_images(x))
    assert abs(r["fid"]) < 1e-6
    # each sample sits on its own reference point
    assert r["precision"] == r["recall"] == r["coverage"] == 1.0


def test_half_of_test_set_against_the_other_half(test_images):
    # disjoint halves of one distribution: the honest "real vs real" (half A scored against the
    # full test set would overlap the reference and look better than any generator could)
    x, _ = test_images
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    half_a, half_b = x[perm[:5000]], x[perm[5000:]]
    r = point_metrics(half_a, reference=reference_from_images(half_b))
    # the whole pipeline (network features -> FID) against torchmetrics fed the same network
    tm = FrechetInceptionDistance(feature=_NetFeatures(), reset_real_features=False)
    tm.update(half_b, real=True)
    tm.update(half_a, real=False)
    assert r["fid"] == pytest.approx(tm.compute().item(), rel=1e-4)
    # FID's small-sample bias on these 64-d features is ~0.5 * 1000 / N per side (docs/NCSN.md):
    # ~0.2 for 5000 vs 5000 (measured 0.29); degraded sets score >= 100
    assert r["fid"] < 0.5
    # KID indistinguishable from 0: within 3 spreads of the per-subset estimates (measured 0.009,
    # spread 0.039); degraded sets score >= 5
    assert abs(r["kid"]) < 3 * r["kid_std"]
    assert r["precision"] > 0.7 and r["recall"] > 0.7
    assert 0.85 < r["density"] < 1.15 and r["coverage"] > 0.9
    assert r["class_coverage"] > 0.99 and r["inception_score"] > 9


def test_real_training_digits_score_as_real(cases):
    # what a perfect generator would score under the production protocol (N = 1000 vs test set)
    r = cases["real"]
    assert r["fid"] < 1.5
    assert abs(r["kid"]) < 3 * r["kid_std"]
    assert r["class_coverage"] > 0.99 and r["inception_score"] > 9


@pytest.mark.parametrize(
    "case, worse_on, unchanged",
    [
        (
            "noise",
            ["fid", "kid", "inception_score", "precision", "recall", "density", "coverage", "class_coverage"],
            [],
        ),
        ("blurred", ["fid", "kid", "inception_score", "precision", "recall", "density", "coverage"], []),
        ("repeated", ["fid", "kid", "inception_score", "recall", "coverage", "class_coverage"], []),
        ("one_class", ["fid", "kid", "inception_score", "recall", "coverage", "class_coverage"], ["precision"]),
    ],
)
def test_degraded_samples_score_clearly_worse(cases, case, worse_on, unchanged):
    real, bad = cases["real"], cases[case]
    for name in worse_on:
        if metric_mode(name) == "min":
            # "clearly": at least 10x the real score, and beyond real's KID by 10 subset stds
            assert bad[name] > 10 * max(real[name], real.get(f"{name}_std", 0.0)), (case, name, bad[name])
        else:
            assert bad[name] < 0.8 * real[name], (case, name, bad[name], real[name])
    for name in unchanged:
        assert bad[name] > 0.9 * real[name], (case, name, bad[name], real[name])


def test_single_class_histogram(cases):
    hist = cases["one_class"]["class_histogram"]
    assert sum(hist) == 1000 and hist[1] >= 990
    assert cases["one_class"]["class_coverage"] < 0.05


def test_protocol_record_and_determinism(test_images):
    x = test_images[0][:300]
    a, b = point_metrics(x, n_subsets=10, seed=3), point_metrics(x, n_subsets=10, seed=3)
    assert a == b
    p = a["protocol"]
    assert p["feature_net_sha256"] == FEATURE_NET_SHA256 and p["feature_dim"] == NUM_FEATURES
    assert (p["n"], p["seed"], p["reference_n"], p["kid_subset_size"], p["manifold_size"]) == (300, 3, 10000, 300, 300)
    assert (p["pr_k"], p["dc_k"]) == (3, 5)
    assert p["reference_sha256"] == quality._images_sha256(test_images[0])
    assert a["protocol_id"] == protocol_id(p)
    c = point_metrics(x, n_subsets=10, seed=4)
    assert c["kid"] != a["kid"] and c["protocol_id"] != a["protocol_id"]
    assert c["fid"] == a["fid"]  # FID draws no subsets


def test_reference_statistics_cached_on_disk_by_network_hash(tmp_path, monkeypatch, test_images):
    monkeypatch.setenv(quality.CACHE_ENV, str(tmp_path))
    quality.mnist_test_reference.cache_clear()
    try:
        first = quality.mnist_test_reference()
        path = tmp_path / f"mnist-test-{FEATURE_NET_SHA256[:16]}.pt"
        assert path.is_file()
        direct = reference_from_images(test_images[0])
        assert torch.equal(first.features, direct.features) and first.sha256 == direct.sha256
        assert torch.allclose(first.cov, direct.cov) and torch.allclose(first.mean, direct.mean)

        quality.mnist_test_reference.cache_clear()

        def no_data(*args, **kwargs):
            raise AssertionError("recomputed although cached")

        monkeypatch.setattr("trainables.contract.data.load_mnist", no_data)
        again = quality.mnist_test_reference()
        assert torch.equal(again.features, first.features) and torch.equal(again.cov, first.cov)

        # KID's reference terms (the costly part of a first evaluation) persist too
        x = test_images[0][:100]
        scored = point_metrics(x, n_subsets=5, seed=11)
        assert (tmp_path / f"mnist-test-{FEATURE_NET_SHA256[:16]}-kid-seed11-5x100.pt").is_file()
        quality._KID_TERMS.clear()
        monkeypatch.setattr(quality, "reference_kid_terms", no_data)
        assert point_metrics(x, n_subsets=5, seed=11) == scored
    finally:
        quality.mnist_test_reference.cache_clear()
        quality._KID_TERMS.clear()
