"""Noise ladders and the NCSNv2 analytic recommendations (Song & Ermon 2020)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from trainables.contract.data import load_mnist
from trainables.ncsn.recommend import NCSN_2019_MNIST, ncsnv2_mnist_setting, recommend
from trainables.ncsn.recommend import main as recommend_main
from trainables.ncsn.sigmas import (
    MNIST_MAX_PAIRWISE_DISTANCE,
    code_to_paper_step_lr,
    farthest_pair,
    geometric_sigmas,
    ladder_ratio,
    max_pairwise_distance,
    ncsnv2_gamma,
    ncsnv2_num_levels,
    ncsnv2_step_lr,
    ncsnv2_step_objective,
    paper_to_code_step_lr,
    snr_of_step,
)


def sig_figs(value: float, n: int) -> float:
    return float(f"{value:.{n - 1}e}")


# ----------------------------------------------------------------------------------------------
# Geometric ladder


def test_geometric_sigmas_ends_ratio_and_order():
    sigmas = geometric_sigmas(1.0, 0.01, 10, dtype=torch.float64)
    assert sigmas.shape == (10,) and sigmas.dtype == torch.float64
    assert sigmas[0].item() == pytest.approx(1.0, rel=1e-15)
    assert sigmas[-1].item() == pytest.approx(0.01, rel=1e-15)
    ratios = sigmas[:-1] / sigmas[1:]
    # 100^(1/9): every step divides sigma by the same factor.
    torch.testing.assert_close(ratios, torch.full((9,), 100 ** (1 / 9), dtype=torch.float64))
    assert ladder_ratio(1.0, 0.01, 10) == pytest.approx(100 ** (1 / 9), rel=1e-14)
    assert geometric_sigmas(50, 0.01, 232).dtype == torch.float32


@pytest.mark.parametrize(
    "args, name",
    [
        ((0.0, 0.01, 10), "sigma_begin"),
        ((1.0, -0.01, 10), "sigma_end"),
        ((0.01, 1.0, 10), "sigma_begin must be larger"),
        ((1.0, 1.0, 10), "sigma_begin must be larger"),
        ((1.0, 0.01, 1), "num_levels"),
        ((1.0, 0.01, 2.5), "num_levels"),
        ((float("inf"), 0.01, 10), "sigma_begin"),
    ],
)
def test_geometric_sigmas_rejects_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        geometric_sigmas(*args)


# ----------------------------------------------------------------------------------------------
# Technique 1: largest pairwise distance


def brute_force_max_distance(x: torch.Tensor, direct: bool = True) -> float:
    # Direct differences are exact anywhere; cdist's matrix-product mode is faster but loses
    # digits far from the origin (fine for [0, 1] images, to ~1e-13).
    x = x.reshape(x.shape[0], -1).double()
    mode = "donot_use_mm_for_euclid_dist" if direct else "use_mm_for_euclid_dist"
    return torch.cdist(x, x, compute_mode=mode).max().item()


@pytest.mark.parametrize("case", ["gaussian_far_from_origin", "sphere", "clusters", "duplicates"])
def test_farthest_pair_matches_brute_force(case):
    gen = torch.Generator().manual_seed(0)
    if case == "gaussian_far_from_origin":
        # Large offset: the Gram trick is only exact because rows are centred first.
        x = torch.randn(1500, 40, generator=gen, dtype=torch.float64) + 1e8
    elif case == "sphere":
        # Every radius equal: the pruning can skip nothing and must still be right.
        x = torch.randn(1200, 8, generator=gen, dtype=torch.float64)
        x = x / x.norm(dim=1, keepdim=True)
    elif case == "clusters":
        # The farthest pair is not the pair of largest radii from the mean.
        x = torch.cat(
            [
                torch.randn(2000, 5, generator=gen, dtype=torch.float64) * 0.1,
                torch.tensor([[9.0, 0, 0, 0, 0], [0, 8.0, 0, 0, 0], [-3.0, -7.5, 0, 0, 0]], dtype=torch.float64),
            ]
        )
    else:
        x = torch.zeros(300, 3, dtype=torch.float64)
        x[17, 0], x[211, 2] = 1.0, -2.0
    distance, i, j = farthest_pair(x)
    assert distance == pytest.approx(brute_force_max_distance(x), rel=1e-12)
    assert i < j and distance == pytest.approx((x[i] - x[j]).norm().item(), rel=1e-15)


def test_max_pairwise_distance_on_an_mnist_subset_matches_brute_force():
    images, _ = load_mnist(train=True)
    subset = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:3000]]
    x = subset.double() / 255
    assert max_pairwise_distance(x) == pytest.approx(brute_force_max_distance(x, direct=False), rel=1e-10)


def test_mnist_max_pairwise_distance_is_the_cached_16_88():
    # The full 60k x 60k search (about 7 CPU-seconds): the cached constant is what it returns.
    images, _ = load_mnist(train=True)
    distance, i, j = farthest_pair(images.double() / 255)
    assert distance == pytest.approx(MNIST_MAX_PAIRWISE_DISTANCE, rel=1e-12)
    assert round(distance, 2) == 16.88
    assert (i, j) == (26785, 59452)


def test_max_pairwise_distance_rejects_integer_images_and_single_points():
    with pytest.raises(ValueError, match="images / 255"):
        max_pairwise_distance(torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="N >= 2"):
        max_pairwise_distance(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="NaN"):
        max_pairwise_distance(torch.tensor([[0.0], [float("nan")]]))


# ----------------------------------------------------------------------------------------------
# Technique 2: gamma and the number of levels


@pytest.mark.parametrize("target, expected", [(0.5, 1.082), (0.567, 1.077)])
def test_ncsnv2_gamma_for_mnist(target, expected):
    gamma = ncsnv2_gamma(784, target)
    assert round(gamma, 3) == expected
    shift = math.sqrt(2 * 784) * (gamma - 1)
    assert ndtr(shift + 3 * gamma) - ndtr(shift - 3 * gamma) == pytest.approx(target, abs=1e-12)


def test_ncsnv2_gamma_shrinks_with_dimension_and_rejects_bad_targets():
    assert 1 < ncsnv2_gamma(3072, 0.5) < ncsnv2_gamma(784, 0.5) < ncsnv2_gamma(10, 0.5)
    # Asking for more overlap means a finer ladder.
    assert ncsnv2_gamma(784, 0.7) < ncsnv2_gamma(784, 0.5)
    for bad in (0.0, 0.998, -0.1):
        with pytest.raises(ValueError, match="target"):
            ncsnv2_gamma(784, bad)
    with pytest.raises(ValueError, match="D"):
        ncsnv2_gamma(0, 0.5)


def test_ncsnv2_num_levels_reproduces_released_configs():
    # Released CIFAR-10 (D = 3072): sigma 50 -> 0.01, L = 232 at the released overlap 0.567.
    assert ncsnv2_num_levels(50.0, 0.01, ncsnv2_gamma(3072, 0.567)) == 232
    # MNIST (docs/NCSN.md): L = 101 at 0.567 and about 96 at 0.5.
    assert ncsnv2_num_levels(MNIST_MAX_PAIRWISE_DISTANCE, 0.01, ncsnv2_gamma(784, 0.567)) == 101
    assert ncsnv2_num_levels(MNIST_MAX_PAIRWISE_DISTANCE, 0.01, ncsnv2_gamma(784, 0.5)) in (95, 96)
    # The chosen L gives the ladder ratio nearest to gamma (in log) among its neighbours.
    gamma = ncsnv2_gamma(784, 0.5)
    L = ncsnv2_num_levels(MNIST_MAX_PAIRWISE_DISTANCE, 0.01, gamma)

    def miss(n):
        return abs(math.log(ladder_ratio(MNIST_MAX_PAIRWISE_DISTANCE, 0.01, n) / gamma))

    assert miss(L) < miss(L - 1) and miss(L) < miss(L + 1)
    with pytest.raises(ValueError, match="gamma"):
        ncsnv2_num_levels(1.0, 0.01, 1.0)


# ----------------------------------------------------------------------------------------------
# Technique 4: step size


def test_ncsnv2_step_lr_reproduces_released_cifar10_step():
    gamma = ladder_ratio(50.0, 0.01, 232)
    assert sig_figs(ncsnv2_step_lr(0.01, gamma, 5), 2) == 6.2e-6


@pytest.mark.parametrize("T, expected, digits", [(3, 1.2e-5, 2), (5, 1.07e-5, 3), (10, 8.3e-6, 2)])
def test_ncsnv2_step_lr_for_mnist(T, expected, digits):
    gamma = ladder_ratio(MNIST_MAX_PAIRWISE_DISTANCE, 0.01, 101)
    assert round(gamma, 3) == 1.077
    assert sig_figs(ncsnv2_step_lr(0.01, gamma, T), digits) == expected


def test_ncsnv2_step_lr_minimises_the_expression():
    gamma, T = 1.05, 7
    eps = ncsnv2_step_lr(0.02, gamma, T)
    best = ncsnv2_step_objective(eps, 0.02, gamma, T)
    assert best > 1  # the expression exceeds 1 everywhere, so closest to 1 is its minimum
    grid = np.geomspace(1e-4, 0.99, 20_001) * 0.02**2
    assert best <= min(ncsnv2_step_objective(e, 0.02, gamma, T) for e in grid) + 1e-12
    # More steps per level allow a smaller step.
    assert ncsnv2_step_lr(0.02, gamma, 20) < eps
    with pytest.raises(ValueError, match="n_steps_each"):
        ncsnv2_step_lr(0.01, 1.05, 0)


# ----------------------------------------------------------------------------------------------
# Conventions


def test_snr_and_paper_code_conversion():
    assert round(snr_of_step(2e-5, 0.01), 3) == 0.316  # NCSN v1
    assert round(snr_of_step(6.2e-6, 0.01), 3) == 0.176  # NCSNv2 CIFAR-10
    # Code eps 2e-5 is paper eps 4e-5 (docs/NCSN.md).
    assert code_to_paper_step_lr(2e-5) == pytest.approx(4e-5, rel=1e-15)
    assert paper_to_code_step_lr(4e-5) == pytest.approx(2e-5, rel=1e-15)
    with pytest.raises(ValueError, match="step_lr"):
        snr_of_step(-1e-5, 0.01)


# ----------------------------------------------------------------------------------------------
# trainables.ncsn.recommend: the techniques applied to MNIST, and the warm-start settings


def test_recommend_mnist_applies_the_techniques():
    rec = recommend("mnist", n_steps_each=5)
    assert rec["sigma_begin"] == MNIST_MAX_PAIRWISE_DISTANCE and rec["sigma_end"] == 0.01
    assert rec["num_levels"] == ncsnv2_num_levels(rec["sigma_begin"], 0.01, ncsnv2_gamma(784, 0.5))
    # gamma is the ratio of the ladder actually built, and eps is chosen for it.
    ladder = geometric_sigmas(rec["sigma_begin"], 0.01, rec["num_levels"], dtype=torch.float64)
    assert rec["gamma"] == pytest.approx((ladder[0] / ladder[1]).item(), rel=1e-12)
    assert round(rec["gamma"], 3) == 1.082
    assert rec["step_lr"] == ncsnv2_step_lr(0.01, rec["gamma"], 5)
    assert rec["snr"] == pytest.approx(math.sqrt(rec["step_lr"] / (2 * 0.01**2)), rel=1e-12)
    assert 0.16 <= rec["snr"] <= 0.32  # the known-good range of docs/NCSN.md
    assert "NCSNv2" in rec["provenance"]
    released = recommend("mnist", n_steps_each=5, target=0.567)
    assert released["num_levels"] == 101 and sig_figs(released["step_lr"], 3) == 1.07e-5


def test_warm_start_settings_share_keys():
    assert NCSN_2019_MNIST == dict(
        sigma_begin=1.0,
        sigma_end=0.01,
        num_levels=10,
        step_lr=2e-5,
        n_steps_each=100,
        batch_size=128,
        lr=1e-3,
        ema=0.0,
        denoise=False,
    )
    v2 = ncsnv2_mnist_setting(n_steps_each=3)
    assert v2.keys() == NCSN_2019_MNIST.keys()
    rec = recommend("mnist", n_steps_each=3)
    assert {k: v2[k] for k in ("sigma_begin", "sigma_end", "num_levels", "step_lr", "n_steps_each")} == {
        k: rec[k] for k in ("sigma_begin", "sigma_end", "num_levels", "step_lr", "n_steps_each")
    }
    assert v2["ema"] == 0.999 and v2["denoise"] is True and round(v2["sigma_begin"], 2) == 16.88


def test_recommend_rejects_unknown_dataset_and_cli_exits_2(capsys):
    with pytest.raises(ValueError, match="'cifar'"):
        recommend("cifar")
    assert recommend_main(["--dataset", "cifar"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cifar" in err


def test_recommend_cli_prints_table_and_json(capsys):
    assert recommend_main(["--dataset", "mnist", "--n-steps-each", "10"]) == 0
    table = capsys.readouterr().out
    assert "num_levels    95" in table and "n_steps_each  10" in table
    # One real `python -m` run: the module entry point works and --json round-trips.
    out = subprocess.run(
        [sys.executable, "-m", "trainables.ncsn.recommend", "--json"], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == recommend("mnist", n_steps_each=5)
