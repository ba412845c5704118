"""The seed-style baseline computes what this project's network, loss and sampler compute: same
scores and gradients on the same weights, same loss and chain on the same noise."""

import pytest
import torch

from trainables.ncsn.langevin import anneal_langevin
from trainables.ncsn.loss import dequantize, dsm_loss
from trainables.ncsn.model import ELU, CondInstanceNormPlus, CondRefineNetDilated
from trainables.ncsn.sigmas import geometric_sigmas
from trainables.ncsn.train import TrainConfig
from trainables.tools.baseline import (
    SeedCondInstanceNormPlus,
    SeedELU,
    SeedLoop,
    SeedStyleMNIST,
    score_rel_diff,
    seed_dequantize,
    seed_dsm_loss,
    seed_network,
    seed_sigmas,
)

NGF, LEVELS, SIZE = 8, 3, 28


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def twin_networks(seed: int = 0):
    """The project's network and the seed-style one with the same weights."""
    torch.manual_seed(seed)
    ours = CondRefineNetDilated(NGF, LEVELS, 1, SIZE)
    with torch.no_grad():  # beta starts at zero: give the shift terms something to do
        for module in ours.modules():
            if isinstance(module, CondInstanceNormPlus):
                module.embed.weight.add_(0.1 * torch.randn_like(module.embed.weight))
    theirs = seed_network(NGF, LEVELS, SIZE)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def batch(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, SIZE, SIZE, generator=g), torch.arange(n) % LEVELS


def test_seed_network_swaps_every_norm_and_activation_and_keeps_the_parameters():
    ours, theirs = twin_networks()
    kinds = [type(m) for m in theirs.modules()]
    n_norms = sum(type(m) is CondInstanceNormPlus for m in ours.modules())
    assert n_norms > 0 and kinds.count(SeedCondInstanceNormPlus) == n_norms
    assert kinds.count(SeedELU) == sum(type(m) is ELU for m in ours.modules()) > 0
    assert CondInstanceNormPlus not in kinds and ELU not in kinds
    assert [n for n, _ in theirs.named_parameters()] == [n for n, _ in ours.named_parameters()]


def test_same_weights_give_the_same_scores():
    # How the benchmark reports agreement (relative L2 of the scores, one batch of uniform
    # noise, level b % L); measured there at 1.8e-6 for ngf 32, batch 64.
    ours, theirs = twin_networks()
    x, levels = batch()
    assert score_rel_diff(theirs, ours, x, levels) < 1e-5

    def channels_last(x, i):
        return ours(x.contiguous(memory_format=torch.channels_last), i)

    assert score_rel_diff(theirs, channels_last, x, levels) < 1e-5
    # The check can fail: one conditional norm's embedding moved by 1% is visible at once.
    with torch.no_grad():
        ours.res2[0].norm1.embed.weight.mul_(1.01)
    assert score_rel_diff(theirs, ours, x, levels) > 1e-4


def test_same_weights_give_the_same_gradients():
    # The project's norm and ELU have hand-written backward passes; the seed's use autograd.
    ours, theirs = twin_networks()
    x, levels = batch()
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    grads = []
    for model in (theirs, ours):
        model.zero_grad()
        (model(x, levels) * weight).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert rel(*grads) < 1e-4


def test_seed_ladder_is_the_geometric_ladder():
    assert torch.allclose(seed_sigmas(1.0, 0.01, 10), geometric_sigmas(1.0, 0.01, 10), rtol=1e-6, atol=0)


@pytest.mark.parametrize("anneal_power", [2.0, 1.0])
def test_seed_loss_equals_dsm_loss_on_the_same_levels_and_noise(anneal_power):
    ours, _ = twin_networks()
    x, _ = batch(8)
    sigmas = geometric_sigmas(1.0, 0.01, LEVELS)
    # dsm_loss draws the levels, then the noise, from its generator; the seed's loss gets the
    # levels and draws its noise from the global RNG: seeded alike, both see the same numbers.
    expected = dsm_loss(ours, x, sigmas, anneal_power, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(7)
    labels = torch.randint(0, LEVELS, (x.shape[0],))
    got = seed_dsm_loss(ours, x, sigmas, labels, anneal_power)
    assert labels.unique().numel() > 1
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.manual_seed(8)  # other noise, other loss: the agreement is no accident
    other = seed_dsm_loss(ours, x, sigmas, torch.randint(0, LEVELS, (x.shape[0],)), anneal_power)
    assert other.item() != pytest.approx(expected.item(), rel=1e-3)


def test_seed_data_path_gives_what_dequantize_gives():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (4, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    data = SeedStyleMNIST(images)
    items = torch.stack([data[i][0] for i in range(len(data))])
    assert len(data) == 4 and items.shape == (4, 1, SIZE, SIZE) and items.dtype == torch.float32
    assert torch.equal(items, images.float() / 255)  # ToTensor: k / 255
    torch.manual_seed(4)
    seeded = seed_dequantize(items)
    assert torch.allclose(seeded, dequantize(images, generator=torch.Generator().manual_seed(4)), atol=1e-6)
    assert torch.allclose(seeded, dequantize(items, generator=torch.Generator().manual_seed(4)), atol=1e-6)


def seed_loop(model, log):
    cfg = TrainConfig(ngf=NGF, num_levels=LEVELS, batch_size=4, device="cpu")
    images = torch.randint(0, 256, (8, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    return SeedLoop(model, cfg, images, torch.device("cpu"), log, workers=0)


def test_seed_sampler_equals_anneal_langevin_on_the_same_noise():
    ours, _ = twin_networks()
    log: list[str] = []
    loop = seed_loop(ours, log)
    x0, _ = batch(4)
    step_lr = 2e-5
    torch.manual_seed(11)
    got = loop.sample(x0.clone(), step_lr, n_steps_each=2, levels=2)
    expected = anneal_langevin(
        ours, x0, loop.sigmas, step_lr, 2, generator=torch.Generator().manual_seed(11), levels=[0, 1]
    ).samples
    assert len(log) == 2 * 2 and log[0].startswith("level: 0, step_size: ")
    assert rel(expected - x0, got - x0) < 1e-4  # the moves agree, not just the starting point
    torch.manual_seed(12)  # other noise, another chain
    other = loop.sample(x0.clone(), step_lr, n_steps_each=2, levels=2)
    assert rel(expected - x0, other - x0) > 0.1


def test_seed_loop_trains_and_logs_each_step():
    ours, _ = twin_networks()
    before = [p.detach().clone() for p in ours.parameters()]
    log: list[str] = []
    loop = seed_loop(ours, log)
    loop.train(3)  # 8 images, batch 4: the third step starts a new epoch
    assert loop.step == 3 and [line.split(",")[0] for line in log] == ["step: 1", "step: 2", "step: 3"]
    assert all(torch.isfinite(torch.tensor(float(line.rsplit(" ", 1)[1]))) for line in log)
    assert any(not torch.equal(a, b) for a, b in zip(before, ours.parameters()))
