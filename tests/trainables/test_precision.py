"""Reduced precision, on CPU (autocast bf16 works there): the default amp
design stays within the stated bounds at every level down to sigma 0.005, plain bf16 does not,
and training and sampling run each level at the precision the design gives it."""

import math

import pytest
import torch

from trainables import precision
from trainables import runtime as rt
from trainables.data import load_mnist
from trainables.params import SETTINGS
from trainables.train import TrainConfig, Trainer

torch.set_num_threads(1)
DEFAULT = SETTINGS["amp_min_sigma"].default


@pytest.fixture(scope="module")
def images():
    return load_mnist(train=True)[0][:8]


@pytest.fixture(scope="module")
def tables(images):
    """Per-level errors of plain bf16 (every level) and of the default design, ngf 16, untrained."""
    plain, fp32 = precision.trainer_pair(16, "cpu", 0.0)
    default = Trainer(TrainConfig(**{**fp32.config.to_dict(), "amp": "bf16", "amp_min_sigma": DEFAULT}), images)
    return precision.level_errors(plain, fp32, images), precision.level_errors(default, fp32, images)


def test_the_table_reaches_sigma_0005(tables):
    sigmas = [row["sigma"] for row in tables[1]]
    assert sigmas[0] == pytest.approx(1.0) and sigmas[-1] == pytest.approx(0.005)
    assert len(sigmas) == precision.TABLE_LADDER[2]


def test_default_design_is_within_the_bounds_at_every_level(tables):
    _, default = tables
    for row in default:
        assert row["score_err"] <= precision.SCORE_BOUND, row
        assert row["loss_err"] <= precision.LOSS_BOUND, row
    assert precision.within_bounds(default)


def test_levels_below_amp_min_sigma_are_fp32_and_the_rest_bf16(tables):
    _, default = tables
    for row in default:
        assert row["bf16"] == (row["sigma"] >= DEFAULT), row
        if not row["bf16"]:  # the same fp32 arithmetic as the reference
            assert row["score_err"] < 1e-6 and row["loss_err"] < 1e-6, row
        else:  # bf16 really ran: 8 significant bits move the score
            assert row["score_err"] > 1e-4, row


def test_plain_bf16_breaks_the_bound_at_small_noise(tables):
    # Why the smallest levels run in fp32: relative to the response to the noise, bf16 rounding
    # grows as sigma shrinks and passes the bound well before 0.005.
    plain, default = tables
    assert plain[-1]["score_err"] > precision.SCORE_BOUND
    errors = [row["score_err"] for row in plain]
    assert errors[-1] > 5 * errors[0]
    # at the levels both run in bf16 they compute the same thing
    for a, b in zip(plain, default):
        if b["bf16"]:
            assert a["score_err"] == pytest.approx(b["score_err"], rel=1e-6)


def test_training_splits_the_batch_by_level_with_unbiased_weights():
    # 1 -> 0.01 over 10 levels: 5 levels >= 0.1 in bf16; a batch of 7 puts 4 examples there.
    trainer = Trainer(
        TrainConfig(ngf=8, num_levels=10, sigma_begin=1.0, sigma_end=0.01, batch_size=7, amp="bf16", device="cpu"),
        torch.zeros(4, 1, 28, 28, dtype=torch.uint8),
    )
    assert trainer.bf16_levels == 5
    split = trainer._split
    assert (split.n_bf16, split.k, split.num_levels) == (4, 5, 10)
    w_bf16, w_fp32 = split.weights
    # each part's weights sum to its share of the levels: the weighted mean estimates the uniform one
    assert math.isclose(split.n_bf16 * w_bf16 / 7, 0.5) and math.isclose(3 * w_fp32 / 7, 0.5)
    for _ in range(20):
        levels = trainer._draw_levels(7)
        assert bool((levels[:4] < 5).all()) and bool((levels[4:] >= 5).all())
    assert rt.batch_split(8, 5, 10).weights == (1.0, 1.0)  # exact shares: no reweighting
    assert rt.batch_split(8, 0, 10) is None and rt.batch_split(8, 10, 10) is None and rt.batch_split(1, 5, 10) is None


def test_training_forward_runs_the_fp32_part_in_fp32():
    cfg = dict(ngf=8, num_levels=4, sigma_begin=1.0, sigma_end=0.01, batch_size=4, device="cpu")
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    amp = Trainer(TrainConfig(**cfg, amp="bf16"), images)  # levels 1, 0.215: bf16; 0.046, 0.01: fp32
    fp32 = Trainer(TrainConfig(**cfg, amp="off"), images)
    assert amp._split.n_bf16 == 2
    x, levels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        mixed, reference = amp._network(x, levels), fp32._network(x, levels)
    assert torch.allclose(mixed[2:], reference[2:], rtol=0, atol=1e-6)  # fp32 levels: fp32
    assert not torch.equal(mixed[:2], reference[:2])  # bf16 levels: bf16
    assert float((mixed[:2] - reference[:2]).norm() / reference[:2].norm()) < 0.05


def test_a_mixed_level_call_picks_each_example_s_precision():
    cfg = dict(ngf=8, num_levels=4, sigma_begin=1.0, sigma_end=0.01, device="cpu", amp="bf16")
    trainer = Trainer(TrainConfig(**cfg), torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    score = trainer.score_fn(use_ema=False)
    x, levels = torch.rand(4, 1, 28, 28), torch.tensor([3, 0, 2, 1])
    with torch.inference_mode():
        mixed = score(x, levels)
        as_bf16, as_fp32 = score.bf16(x, levels), score.fp32(x, levels)
    assert not torch.equal(as_bf16, as_fp32)
    for b, level in enumerate(levels.tolist()):
        expected = as_bf16 if level < trainer.bf16_levels else as_fp32
        assert torch.equal(mixed[b], expected[b]), level
    assert trainer.bf16_levels == 2
    assert score.at_level(0) is score.bf16 and score.at_level(3) is score.fp32


def test_amp_is_part_of_the_evaluation_protocol(images):
    from trainables import quality

    samples = images.float()[:8] / 255
    plain = quality.evaluate(samples)
    cfg = TrainConfig(amp="bf16", device="cpu")
    runtime = rt.resolve(cfg, torch.device("cpu"))
    tagged = quality.evaluate(samples, precision=rt.protocol_precision(runtime, bf16_levels=5))
    assert tagged["protocol"]["precision"] == {"amp": "bf16", "amp_min_sigma": DEFAULT}
    assert tagged["protocol_id"] != plain["protocol_id"]
    assert tagged["kid"] == plain["kid"] and tagged["fid"] == plain["fid"]  # the scores are the same
    off = rt.resolve(TrainConfig(amp="off", device="cpu"), torch.device("cpu"))
    assert rt.protocol_precision(off, 0) is None and rt.protocol_precision(runtime, 0) is None
