"""Denoising score matching against closed forms, and dequantisation.

Closed form (docs/NCSN.md, generalised to any linear score s(x~) = -k x~): for data x ~ N(0, s^2 I_D)
and x~ = x + sigma z, every coordinate of u = s(x~) + z / sigma = -k x - (k sigma - 1/sigma) z is
N(0, v) with v = k^2 s^2 + (k sigma - 1/sigma)^2, so the per-example loss
l = 1/2 sigma^p ||u||^2 is (sigma^p v / 2) * chi^2_D:

    E[l] = D/2 * sigma^p * v,        Var[l] = D/2 * (sigma^p v)^2.

The exact score k = 1/(s^2 + sigma^2) gives v = s^2 / (sigma^2 (s^2 + sigma^2)) and, for p = 2,
E[l] = D/2 * s^2 / (s^2 + sigma^2), as docs/NCSN.md states; k = 0 gives D/2 * sigma^(p-2).

Monte-Carlo tolerance: a mean of n independent examples has standard error sqrt(Var / n); every
check allows 5 standard errors (a correct loss fails with probability < 1e-6 per check). For the
batch mean over uniformly drawn levels, Var of one example is the mixture's:
mean_i(Var_i + E_i^2) - (mean_i E_i)^2.
"""

import math

import pytest
import torch

from trainables.ncsn.loss import dequantize, dsm_loss

D, S, B = 8, 0.5, 60_000
SIGMAS = torch.tensor([2.0, 0.5, 0.1], dtype=torch.float64)


def linear_score(k_of_sigma):
    """A 'model' s(x~, i) = -k(sigma_i) x~ with the level looked up from the index it is given."""

    def model(x_tilde, level_idx):
        k = k_of_sigma(SIGMAS[level_idx]).to(x_tilde.dtype)
        return -k.view(-1, 1) * x_tilde

    return model


def gaussian_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return S * torch.randn(B, D, generator=g, dtype=torch.float64)


def moments(k, sigma, p):
    v = k**2 * S**2 + (k * sigma - 1.0 / sigma) ** 2
    scale = sigma**p * v
    return D / 2 * scale, D / 2 * scale**2  # mean, variance of one example's loss


CASES = {
    "exact": lambda sigma: 1.0 / (S**2 + sigma**2),
    "zero": lambda sigma: 0.0 * sigma,
    "wrong": lambda sigma: 1.0 / sigma**2,  # ignores the data variance
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("anneal_power", [2.0, 0.0, 1.0])
def test_loss_matches_closed_form(case, anneal_power):
    k_of_sigma = CASES[case]
    x = gaussian_data()
    g = torch.Generator().manual_seed(1)
    loss, per_example, levels = dsm_loss(
        linear_score(k_of_sigma), x, SIGMAS, anneal_power, generator=g, return_parts=True
    )
    assert per_example.shape == (B,) and levels.shape == (B,)
    torch.testing.assert_close(loss, per_example.mean())

    means, variances = [], []
    for i, sigma in enumerate(SIGMAS.tolist()):
        mean, var = moments(float(k_of_sigma(torch.tensor(sigma))), sigma, anneal_power)
        group = per_example[levels == i]
        assert abs(group.mean().item() - mean) < 5 * math.sqrt(var / len(group)), (i, group.mean(), mean)
        means.append(mean)
        variances.append(var)
    total_mean = sum(means) / len(means)
    total_var = sum(v + m * m for m, v in zip(means, variances)) / len(means) - total_mean**2
    assert abs(loss.item() - total_mean) < 5 * math.sqrt(total_var / B)


def test_exact_score_closed_form_of_ncsn_md():
    # The statement in docs/NCSN.md, checked directly: E[loss | sigma] = D/2 * s^2 / (s^2 + sigma^2), p = 2.
    x = gaussian_data(seed=5)
    g = torch.Generator().manual_seed(6)
    _, per_example, levels = dsm_loss(linear_score(CASES["exact"]), x, SIGMAS, 2.0, generator=g, return_parts=True)
    for i, sigma in enumerate(SIGMAS.tolist()):
        c = S**2 / (S**2 + sigma**2)
        group = per_example[levels == i]
        # l = (c/2) chi^2_D: standard error sqrt(D/2) c / sqrt(n)
        assert abs(group.mean().item() - D / 2 * c) < 5 * math.sqrt(D / 2) * c / math.sqrt(len(group))


def test_levels_are_uniform_and_loss_is_reproducible():
    x = gaussian_data()
    model = linear_score(CASES["exact"])
    runs = [dsm_loss(model, x, SIGMAS, generator=torch.Generator().manual_seed(3), return_parts=True) for _ in range(2)]
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][2], runs[1][2])
    counts = torch.bincount(runs[0][2], minlength=3).double()
    p = 1 / 3
    assert ((counts - B * p).abs() < 5 * math.sqrt(B * p * (1 - p))).all(), counts
    other = dsm_loss(model, x, SIGMAS, generator=torch.Generator().manual_seed(4))
    assert other.item() != runs[0][0].item()


def test_loss_is_differentiable_and_fp32_for_low_precision_models():
    weight = torch.tensor(0.3, requires_grad=True)

    def model(x_tilde, level_idx):  # returns bf16, as a network under autocast may
        return (-weight * x_tilde).to(torch.bfloat16)

    loss = dsm_loss(model, torch.rand(16, 1, 4, 4), SIGMAS.float(), generator=torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32
    loss.backward()
    assert weight.grad is not None and torch.isfinite(weight.grad)


@pytest.mark.parametrize("as_float", [False, True])
def test_dequantize_fills_each_pixel_bin(as_float):
    values = torch.arange(256, dtype=torch.uint8).repeat_interleave(400)
    x = values.double() / 255 if as_float else values
    g = torch.Generator().manual_seed(0)
    y = dequantize(x, generator=g)
    assert y.dtype == torch.float32 and y.shape == values.shape
    k = values.double()
    lo, hi = k / 256, (k + 1) / 256
    assert ((y.double() >= lo - 1e-7) & (y.double() < hi + 1e-7)).all()
    # The offset inside a bin is U(0, 1/256): mean 1/512, sd 1/(256 sqrt 12) per pixel.
    offset = (y.double() - lo).view(256, 400)
    se = 1 / (256 * math.sqrt(12)) / math.sqrt(400)
    assert ((offset.mean(1) - 1 / 512).abs() < 5 * se).all()
    assert torch.equal(dequantize(x, generator=torch.Generator().manual_seed(0)), y)


def test_dequantize_rejects_integer_types_other_than_uint8():
    with pytest.raises(ValueError, match="dtype"):
        dequantize(torch.zeros(3, dtype=torch.int64))
