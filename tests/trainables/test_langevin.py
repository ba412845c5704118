"""Annealed Langevin dynamics against analytic scores (no network)."""

import math

import pytest
import torch

from trainables.ncsn.langevin import anneal_langevin, langevin_step_sizes
from trainables.ncsn.sigmas import geometric_sigmas, ncsnv2_step_objective

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------
# Two-component 1-D Gaussian mixture with unequal weights: w N(-mu, s^2) + (1 - w) N(mu, s^2).
W_LEFT, MU, S = 0.8, 2.0, 0.2


def mixture_score(sigmas):
    """Exact score of the mixture perturbed by N(0, sigma_i^2): each component becomes
    N(+-mu, s^2 + sigma_i^2); the responsibility of the left one is a logistic in x."""
    var = S**2 + sigmas.to(torch.float32) ** 2
    prior_logit = math.log(W_LEFT / (1 - W_LEFT))

    def score(x, level_idx):
        v = var[level_idx].unsqueeze(1)
        left = torch.sigmoid(prior_logit - 2 * MU * x / v)
        return (-(x + MU) * left - (x - MU) * (1 - left)) / v

    return score


def test_annealed_langevin_recovers_mixture_weights_plain_langevin_does_not():
    # sigma_1 = 5 exceeds the largest distance between modes (technique 1); r = 0.2.
    num_levels, n_steps_each, batch = 50, 100, 10_000
    sigmas = geometric_sigmas(5.0, 0.01, num_levels)
    step_lr = 2 * 0.2**2 * 0.01**2
    gen = torch.Generator().manual_seed(0)
    x_init = torch.rand(batch, 1, generator=gen) * 16 - 8  # symmetric about the midpoint 0
    score = mixture_score(sigmas)

    annealed = anneal_langevin(score, x_init, sigmas, step_lr, n_steps_each, generator=gen).samples
    # Same budget, all at the smallest level.
    plain = anneal_langevin(
        score,
        x_init,
        sigmas,
        step_lr,
        num_levels * n_steps_each,
        generator=gen,
        levels=[num_levels - 1],
    ).samples

    # Tolerance: 4 binomial standard errors sqrt(0.8 * 0.2 / 10^4) = 0.016, plus 0.006 for the
    # sampler's own bias on this ladder (finite steps, step-size inflation of the variance),
    # measured as 0.7968 +- 0.0009 with 200k particles and this ladder and step.
    se = math.sqrt(W_LEFT * (1 - W_LEFT) / batch)
    left = (annealed < 0).double().mean().item()
    assert abs(left - W_LEFT) < 4 * se + 0.006, left
    # The left mode is N(-2, 0.2^2 + 0.01^2): location and width come out too.
    left_mode = annealed[annealed < 0]
    assert abs(left_mode.mean().item() + MU) < 0.01
    assert abs(left_mode.std().item() - S) < 0.02

    # Plain Langevin at sigma_L cannot cross the barrier: each particle keeps the side of 0 it
    # started on, so the split stays at the initial 0.5 (4 SE = 0.02), far from 0.8.
    plain_left = (plain < 0).double().mean().item()
    assert abs(plain_left - 0.5) < 4 * math.sqrt(0.25 / batch), plain_left


# ----------------------------------------------------------------------------------------------
# Step sizes


def test_zero_score_variance_grows_by_sum_of_two_alpha_T():
    # With s = 0 the chain is x_init + sum of sqrt(2 alpha_i) z: Var grows by 2 T sum alpha_i.
    sigmas = geometric_sigmas(1.0, 0.01, 10, dtype=torch.float64)
    step_lr, n_steps_each = 2e-6, 4
    x_init = torch.zeros(20_000, 8, dtype=torch.float64)

    def zero(x, i):
        return torch.zeros_like(x)

    alphas = step_lr * (sigmas / sigmas[-1]) ** 2
    torch.testing.assert_close(langevin_step_sizes(sigmas, step_lr), alphas)
    n = x_init.numel()
    for levels in (None, [0], [3, 7], [9]):
        out = anneal_langevin(
            zero, x_init, sigmas, step_lr, n_steps_each, levels=levels, generator=torch.Generator().manual_seed(1)
        ).samples
        visited = list(range(10)) if levels is None else levels
        expected = 2 * n_steps_each * alphas[visited].sum().item()
        # Sample variance of n Gaussian values: relative standard error sqrt(2 / n).
        assert abs(out.square().mean().item() / expected - 1) < 4 * math.sqrt(2 / n), levels


def test_single_level_variance_matches_ncsnv2_technique_4_expression():
    # Data = one point at 0, score -x / sigma_i^2. Starting at level k from the previous level's
    # variance gamma^2 sigma_k^2, T steps leave sigma_k^2 times ncsnv2_step_objective.
    sigmas = geometric_sigmas(2.0, 0.01, 8, dtype=torch.float64)
    gamma = (sigmas[0] / sigmas[1]).item()
    step_lr, n_steps_each = 3e-5, 3  # a = 0.3: a large effect per step

    def point_score(x, i):
        return -x / sigmas[i].view(-1, 1) ** 2

    gen = torch.Generator().manual_seed(2)
    n = 40_000 * 4
    for k in (0, 4, 7):
        x_init = torch.randn(40_000, 4, generator=gen, dtype=torch.float64) * gamma * sigmas[k]
        out = anneal_langevin(point_score, x_init, sigmas, step_lr, n_steps_each, levels=[k], generator=gen).samples
        ratio = out.square().mean().item() / sigmas[k].item() ** 2
        expected = ncsnv2_step_objective(step_lr, sigmas[-1].item(), gamma, n_steps_each)
        assert abs(ratio / expected - 1) < 4 * math.sqrt(2 / n), (k, ratio, expected)


def test_realised_snr_of_a_constant_score_has_the_chi_closed_form():
    # score = c: per-sample ratio ||alpha c|| / ||sqrt(2 alpha) z|| = sqrt(alpha / 2) ||c|| / chi_D,
    # and E[1 / chi_D] = Gamma((D - 1) / 2) / (sqrt(2) Gamma(D / 2)).
    sigmas = geometric_sigmas(1.0, 0.01, 5)
    dim, batch, step_lr, n_steps_each = 64, 500, 1e-5, 4
    c = torch.full((dim,), 3.0)

    def const(x, i):
        return c.expand_as(x)

    result = anneal_langevin(
        const,
        torch.zeros(batch, dim),
        sigmas,
        step_lr,
        n_steps_each,
        generator=torch.Generator().manual_seed(3),
        levels=[0, 2, 4],
    )
    inv_chi = math.exp(math.lgamma((dim - 1) / 2) - math.lgamma(dim / 2)) / math.sqrt(2)
    alphas = langevin_step_sizes(sigmas, step_lr)
    for i in (0, 2, 4):
        expected = math.sqrt(alphas[i].item() / 2) * c.norm().item() * inv_chi
        # 1 / chi_D has relative sd about 1 / sqrt(2 D); mean of batch * T draws.
        tol = 4 / math.sqrt(2 * dim) / math.sqrt(batch * n_steps_each)
        assert abs(result.snr[i].item() / expected - 1) < tol, i
    assert torch.isnan(result.snr[[1, 3]]).all()


# ----------------------------------------------------------------------------------------------
# Denoising, counts, frames, determinism


def gaussian_score(sigmas, mean, s):
    """Data N(mean, s^2 I): the perturbed score is -(x - mean) / (s^2 + sigma_i^2)."""

    def score(x, level_idx):
        sigma = sigmas[level_idx].view(-1, *[1] * (x.dim() - 1))
        return -(x - mean) / (s**2 + sigma**2)

    return score


@pytest.mark.parametrize("levels", [None, [0, 1, 2, 3]])
def test_denoising_step_is_the_tweedie_posterior_mean(levels):
    sigmas = geometric_sigmas(1.0, 0.05, 6, dtype=torch.float64)
    mean, s = 0.3, 0.1
    score = gaussian_score(sigmas, mean, s)
    x_init = torch.rand(64, 10, dtype=torch.float64)
    kwargs = dict(levels=levels)
    raw = anneal_langevin(score, x_init, sigmas, 1e-4, 5, generator=torch.Generator().manual_seed(4), **kwargs)
    den = anneal_langevin(
        score, x_init, sigmas, 1e-4, 5, denoise=True, generator=torch.Generator().manual_seed(4), **kwargs
    )
    sigma = sigmas[-1 if levels is None else levels[-1]].item()
    # E[x0 | x] for x = x0 + sigma z, x0 ~ N(mean, s^2): mean + s^2 / (s^2 + sigma^2) (x - mean).
    tweedie = mean + s**2 / (s**2 + sigma**2) * (raw.samples - mean)
    torch.testing.assert_close(den.samples, tweedie, rtol=1e-12, atol=1e-12)
    assert den.n_evals == raw.n_evals + 1


def test_score_calls_levels_and_n_evals():
    sigmas = geometric_sigmas(1.0, 0.01, 6)
    calls = []

    def recording(x, level_idx):
        assert torch.is_inference_mode_enabled()
        assert level_idx.dtype == torch.int64 and level_idx.shape == (x.shape[0],)
        assert (level_idx == level_idx[0]).all()
        calls.append(int(level_idx[0]))
        return torch.zeros_like(x)

    x_init = torch.rand(3, 1, 4, 4)
    out = anneal_langevin(recording, x_init, sigmas, 1e-5, 7)
    assert out.n_evals == 6 * 7 == len(calls)
    assert calls == [i for i in range(6) for _ in range(7)]
    assert out.levels == tuple(range(6))
    calls.clear()
    out = anneal_langevin(recording, x_init, sigmas, 1e-5, 3, denoise=True, levels=[1, 4])
    assert calls == [1, 1, 1, 4, 4, 4, 4] and out.n_evals == 7
    assert out.samples.shape == x_init.shape


@pytest.mark.parametrize("n_frames", [1, 4, 7, 12])
def test_frames_are_evenly_spaced_chain_states_ending_at_the_samples(n_frames):
    sigmas = geometric_sigmas(1.0, 0.01, 4)
    seen = []  # the input of call k is the state after k steps

    def recording(x, level_idx):
        seen.append(x.clone())
        return -x

    total = 4 * 3
    out = anneal_langevin(
        recording, torch.rand(5, 2), sigmas, 1e-5, 3, n_frames=n_frames, generator=torch.Generator().manual_seed(5)
    )
    assert len(out.frames) == n_frames
    assert torch.equal(out.frames[-1], out.samples)
    for k, frame in enumerate(out.frames[:-1], start=1):
        step = round(k * total / n_frames)
        assert 0 < step < total
        assert torch.equal(frame, seen[step])
    assert anneal_langevin(recording, torch.rand(5, 2), sigmas, 1e-5, 3).frames == []


def test_clamp_applies_to_output_only_and_input_is_untouched():
    sigmas = geometric_sigmas(1.0, 0.01, 5)
    score = gaussian_score(sigmas, 0.5, 0.3)
    x_init = torch.rand(200, 9)
    x_copy = x_init.clone()
    free = anneal_langevin(score, x_init, sigmas, 5e-5, 5, n_frames=3, generator=torch.Generator().manual_seed(6))
    clamped = anneal_langevin(
        score, x_init, sigmas, 5e-5, 5, n_frames=3, clamp_output=True, generator=torch.Generator().manual_seed(6)
    )
    assert (free.samples < 0).any() or (free.samples > 1).any()
    # Equal to the clamped free chain: the chain itself was not clamped along the way.
    torch.testing.assert_close(clamped.samples, free.samples.clamp(0, 1), rtol=0, atol=0)
    for a, b in zip(clamped.frames, free.frames):
        torch.testing.assert_close(a, b.clamp(0, 1), rtol=0, atol=0)
    assert torch.equal(x_init, x_copy)


def test_deterministic_under_a_generator():
    sigmas = geometric_sigmas(1.0, 0.01, 5)
    score = gaussian_score(sigmas, 0.5, 0.2)
    x_init = torch.rand(16, 1, 6, 6)

    def run(seed):
        return anneal_langevin(score, x_init, sigmas, 2e-5, 4, generator=torch.Generator().manual_seed(seed)).samples

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(step_lr=0.0), "step_lr"),
        (dict(step_lr=float("nan")), "step_lr"),
        (dict(n_steps_each=0), "n_steps_each"),
        (dict(n_steps_each=2.5), "n_steps_each"),
        (dict(levels=[2, 1]), "levels"),
        (dict(levels=[5]), "levels"),
        (dict(levels=[]), "levels"),
        (dict(n_frames=11), "n_frames"),
        (dict(sigmas=torch.tensor([0.1, 0.5])), "decreasing"),
        (dict(sigmas=torch.tensor([1.0, -0.5])), "positive"),
        (dict(x_init=torch.zeros(4)), "x_init"),
        (dict(x_init=torch.zeros(4, 2, dtype=torch.int64)), "x_init"),
        (dict(x_init=torch.zeros(2, 3, device="meta"), generator=torch.Generator()), "generator"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, match):
    args = dict(
        score_fn=lambda x, i: x,
        x_init=torch.zeros(2, 3),
        step_lr=1e-5,
        n_steps_each=2,
        sigmas=torch.tensor([1.0, 0.5, 0.2, 0.1, 0.05]),
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        anneal_langevin(**args)
