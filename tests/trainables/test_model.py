"""The score network: exact size, shapes, conditioning, and the norm layer against its formula."""

import pytest
import torch
import torch.nn.functional as F

from trainables.ncsn.model import (
    ELU,
    CondInstanceNormPlus,
    CondRefineNetDilated,
    _InstanceStats,
    count_parameters,
    embedding_parameters,
)


def test_reference_size_is_exact():
    # docs/NCSN.md: ngf=64, 1 channel, 10 levels -> 7,638,657 parameters, 216,960 in the embeddings.
    model = CondRefineNetDilated(ngf=64, num_levels=10, channels=1, image_size=28)
    assert count_parameters(model) == 7_638_657
    assert embedding_parameters(model) == 216_960


def test_size_independent_of_image_size_and_embeddings_scale_with_levels():
    small = CondRefineNetDilated(ngf=8, num_levels=4, image_size=28)
    assert count_parameters(CondRefineNetDilated(ngf=8, num_levels=4, image_size=32)) == count_parameters(small)
    # 7,232 normalised channels at ngf=64 is 113 * ngf; each level owns 3 numbers per channel.
    assert embedding_parameters(small) == 4 * 3 * 113 * 8
    more = CondRefineNetDilated(ngf=8, num_levels=9)
    assert count_parameters(more) - count_parameters(small) == 5 * 3 * 113 * 8


def test_sigma_conditioning_swaps_embeddings_for_shared_norm_parameters():
    # NCSNv2 technique 3: every norm keeps gamma, alpha, beta but shares them across levels.
    sigmas = torch.logspace(0, -2, 10)
    model = CondRefineNetDilated(ngf=64, num_levels=10, noise_conditioning="sigma", sigmas=sigmas)
    assert embedding_parameters(model) == 0
    assert count_parameters(model) == 7_638_657 - 216_960 + 216_960 // 10


@pytest.mark.parametrize("image_size", [28, 32])
def test_shapes_and_stage_resolutions(image_size):
    torch.manual_seed(0)
    model = CondRefineNetDilated(ngf=8, num_levels=3, image_size=image_size)
    seen = {}
    for name in ("res1", "res2", "res3", "res4"):
        getattr(model, name)[-1].register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape))
    x = torch.rand(2, 1, image_size, image_size)
    out = model(x, torch.tensor([0, 2]))
    assert out.shape == x.shape and out.dtype == torch.float32
    half = image_size // 2
    assert seen["res1"] == (2, 8, image_size, image_size)
    assert seen["res2"] == seen["res3"] == seen["res4"] == (2, 16, half, half)
    dilations = {
        name: {m.dilation for m in getattr(model, name).modules() if isinstance(m, torch.nn.Conv2d)}
        for name in ("res3", "res4")
    }
    assert dilations == {"res3": {(2, 2)}, "res4": {(4, 4)}}


def test_examples_do_not_interact_and_level_matters():
    torch.manual_seed(1)
    model = CondRefineNetDilated(ngf=8, num_levels=5)
    with torch.no_grad():  # spread the embeddings so that levels differ clearly
        for m in model.modules():
            if isinstance(m, CondInstanceNormPlus):
                m.embed.weight.normal_(1.0, 0.5)
    x = torch.rand(3, 1, 28, 28)
    levels = torch.tensor([0, 4, 2])
    with torch.no_grad():
        together = model(x, levels)
        alone = torch.cat([model(x[i : i + 1], levels[i : i + 1]) for i in range(3)])
        other_level = model(x[:1], torch.tensor([3]))
    # Instance norms are per example: a batch is just many independent evaluations.
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert (other_level - together[:1]).abs().mean() > 1e-2 * together[:1].abs().mean()


def test_sigma_conditioning_is_unconditional_output_over_sigma():
    torch.manual_seed(2)
    sigmas = torch.tensor([5.0, 1.0, 0.2])
    model = CondRefineNetDilated(ngf=8, num_levels=3, noise_conditioning="sigma", sigmas=sigmas)
    x = torch.rand(1, 1, 28, 28).expand(3, 1, 28, 28)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 1, 2]))
    scaled = out * sigmas.view(3, 1, 1, 1)
    torch.testing.assert_close(scaled[0], scaled[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scaled[0], scaled[2], rtol=1e-5, atol=1e-6)
    assert out[2].abs().mean() > 20 * out[0].abs().mean()


def test_conditional_instance_norm_plus_matches_its_formula():
    torch.manual_seed(3)
    norm = CondInstanceNormPlus(6, num_levels=4).double()
    with torch.no_grad():
        norm.embed.weight.normal_(0.5, 1.0)
    x = torch.randn(5, 6, 7, 9, dtype=torch.float64) * 3 + torch.randn(5, 6, 1, 1, dtype=torch.float64)
    levels = torch.tensor([0, 3, 1, 2, 3])
    gamma, alpha, beta = norm.embed.weight[levels].chunk(3, dim=1)
    means = x.mean(dim=(2, 3))
    # The channel means, standardised across channels (unbiased variance), scaled by alpha.
    mu_std = (means - means.mean(1, keepdim=True)) / torch.sqrt(means.var(1, keepdim=True) + 1e-5)
    h = F.instance_norm(x, eps=1e-5) + (alpha * mu_std)[..., None, None]
    expected = gamma[..., None, None] * h + beta[..., None, None]
    torch.testing.assert_close(norm(x, levels), expected, rtol=1e-10, atol=1e-10)


def test_instance_stats_gradient():
    x = (torch.randn(2, 3, 4, 5, dtype=torch.float64) * 2 + 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: _InstanceStats.apply(t, 1e-5), (x,))


def test_elu_is_f_elu_with_its_gradient():
    x = torch.linspace(-30, 30, 100_001)
    torch.testing.assert_close(ELU()(x), F.elu(x), rtol=0, atol=1e-7)
    xd = torch.cat([torch.linspace(-5, -0.01, 20), torch.linspace(0.01, 5, 20)]).double().requires_grad_()
    assert torch.autograd.gradcheck(ELU(), (xd,))


def test_channels_last_gives_the_same_scores():
    torch.manual_seed(4)
    model = CondRefineNetDilated(ngf=8, num_levels=3)
    x = torch.rand(2, 1, 28, 28)
    levels = torch.tensor([1, 2])
    with torch.no_grad():
        plain = model(x, levels)
        model.to(memory_format=torch.channels_last)
        nhwc = model(x.contiguous(memory_format=torch.channels_last), levels)
    torch.testing.assert_close(nhwc, plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"ngf": 4}, "ngf"),
        ({"num_levels": 0}, "num_levels"),
        ({"image_size": 27}, "image_size"),
        ({"noise_conditioning": "time"}, "noise_conditioning"),
        ({"noise_conditioning": "sigma"}, "sigmas"),
        ({"noise_conditioning": "sigma", "num_levels": 2, "sigmas": [1.0, 0.0]}, "sigmas"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, named):
    with pytest.raises(ValueError, match=named):
        CondRefineNetDilated(**kwargs)
