"""Reduced precision, on CPU (autocast bf16 and fp16 convolutions run there; TF32 is emulated):
the default design (fp16 convolutions, fp32 elementwise) stays within the stated bounds at every
level down to sigma 0.005, plain bf16 does not, the TF32 emulation rounds as TF32 does, and
training and sampling run each level at the precision the design gives it."""

import math

import pytest
import torch

from trainables.contract.data import load_mnist
from trainables.contract.params import SETTINGS
from trainables.ncsn import arithmetic
from trainables.ncsn import runtime as rt
from trainables.ncsn.train import TrainConfig, Trainer
from trainables.tools import precision

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def images():
    return load_mnist(train=True)[0][:8]


@pytest.fixture(scope="module")
def table(images):
    """Per-level errors of every design of the table, ngf 16, untrained."""
    return precision.error_table(images, ngf=16, device="cpu")


def test_the_table_reaches_sigma_0005_for_every_design(table):
    assert set(table) == {d.name for d in precision.DESIGNS}
    for rows in table.values():
        sigmas = [row["sigma"] for row in rows]
        assert sigmas[0] == pytest.approx(1.0) and sigmas[-1] == pytest.approx(0.005)
        assert len(sigmas) == precision.TABLE_LADDER[2]


def test_default_design_is_within_the_bounds_at_every_level_on_tensor_cores(table):
    default = table[precision.DEFAULT_DESIGN.name]
    for row in default:
        assert row["reduced"], row  # no level falls back to IEEE fp32
        assert 1e-5 < row["score_err"] <= precision.SCORE_BOUND, row  # fp16 really ran, within the bound
        assert row["loss_err"] <= precision.LOSS_BOUND, row
    assert precision.within_bounds(default)
    # what trials run: the runtime's fp16 design covers every level
    r = rt.resolve(TrainConfig(amp="fp16", device="cpu"), torch.device("cpu"))
    assert (r.amp, r.amp_min_sigma) == (precision.DEFAULT_DESIGN.precision, precision.DEFAULT_DESIGN.min_sigma)


def test_plain_bf16_breaks_the_bound_at_small_noise_and_its_floor_keeps_it(table):
    # Why bf16 needs fp32 below 0.1: relative to the response to the noise, bf16 rounding grows
    # as 1/sigma and passes the bound well before 0.005.
    plain, floored = table["bf16"], table["bf16>=0.1"]
    assert plain[-1]["score_err"] > precision.SCORE_BOUND
    assert plain[-1]["score_err"] > 5 * plain[0]["score_err"]
    assert precision.within_bounds(floored) and not precision.within_bounds(plain)
    for a, b in zip(plain, floored):
        if b["reduced"]:  # the levels both run in bf16 compute the same thing
            assert a["score_err"] == pytest.approx(b["score_err"], rel=1e-6)
        else:  # the floor's levels are IEEE fp32: the reference's own arithmetic
            assert b["sigma"] < 0.1 and b["score_err"] < 1e-6


def test_eleven_bit_designs_are_several_times_closer_than_bf16(table):
    # fp16 and TF32 keep 11 significant bits to bf16's 8: 2^-3 of the rounding
    for name in ("fp16", "fp16-autocast", "tf32", "tf32-trunc"):
        assert table[name][-1]["score_err"] < table["bf16"][-1]["score_err"] / 4, name
    # keeping the elementwise work in fp32 removes part of fp16 autocast's rounding
    assert table["fp16"][-1]["score_err"] < table["fp16-autocast"][-1]["score_err"]


def test_tf32_rounding_keeps_ten_mantissa_bits():
    x = torch.tensor([1.0 + 2**-10, 1.0 + 2**-11, 1.0 + 3 * 2**-12, -(1.0 + 3 * 2**-12), 3.0, 2**-140])
    nearest = arithmetic.round_to_tf32(x)
    assert nearest.tolist()[:5] == [1.0 + 2**-10, 1.0 + 2**-10, 1.0 + 2**-10, -(1.0 + 2**-10), 3.0]
    truncated = arithmetic.round_to_tf32(x, truncate=True)
    assert truncated.tolist()[:5] == [1.0 + 2**-10, 1.0, 1.0, -1.0, 3.0]
    # every result has its 13 low mantissa bits clear; bf16 tensors pass unchanged
    assert int((nearest.view(torch.int32) & 0x1FFF).abs().sum()) == 0
    b = torch.ones(3, dtype=torch.bfloat16)
    assert arithmetic.round_to_tf32(b) is b


def test_fp16_convolutions_round_only_the_convolution():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    from trainables.ncsn.model import Conv2d

    ours = Conv2d(2, 3, 3, padding=1)
    ours.load_state_dict(conv.state_dict())
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad(), arithmetic.computing("fp16", "cpu"):
        got = ours(x)
    expected = torch.nn.functional.conv2d(x.half(), conv.weight.half(), conv.bias.half(), padding=1).float()
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    with torch.no_grad():
        assert torch.equal(ours(x), conv(x))  # outside the context: fp32
    assert arithmetic.conv_dtype() is None


def test_training_splits_the_batch_by_level_with_unbiased_weights():
    # bf16's floor 0.1 over 1 -> 0.01 in 10 levels: 5 levels in bf16; a batch of 7 puts 4 there.
    trainer = Trainer(
        TrainConfig(ngf=8, num_levels=10, sigma_begin=1.0, sigma_end=0.01, batch_size=7, amp="bf16", device="cpu"),
        torch.zeros(4, 1, 28, 28, dtype=torch.uint8),
    )
    assert trainer.amp_levels == 5 and trainer.runtime.amp_min_sigma == arithmetic.DEFAULT_MIN_SIGMA["bf16"]
    split = trainer._split
    assert (split.n_amp, split.k, split.num_levels) == (4, 5, 10)
    w_amp, w_fp32 = split.weights
    # each part's weights sum to its share of the levels: the weighted mean estimates the uniform one
    assert math.isclose(split.n_amp * w_amp / 7, 0.5) and math.isclose(3 * w_fp32 / 7, 0.5)
    for _ in range(20):
        levels = trainer._draw_levels(7)
        assert bool((levels[:4] < 5).all()) and bool((levels[4:] >= 5).all())
    assert rt.batch_split(8, 5, 10).weights == (1.0, 1.0)  # exact shares: no reweighting
    assert rt.batch_split(8, 0, 10) is None and rt.batch_split(8, 10, 10) is None and rt.batch_split(1, 5, 10) is None


def test_the_default_design_trains_in_one_forward_pass_with_a_loss_scale():
    cfg = dict(ngf=8, num_levels=10, sigma_begin=1.0, sigma_end=0.005, batch_size=4, device="cpu")
    trainer = Trainer(TrainConfig(**cfg, amp="fp16"), torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    assert trainer.amp_levels == 10 and trainer._split is None and trainer.scaler is not None
    assert SETTINGS["amp_min_sigma"].default is None  # the precision's own floor
    summary = trainer.train(2)
    assert summary["finite"] and summary["iterations"] == 2
    # fp16 reached the convolutions: the same step in fp32 computes another loss
    fp32 = Trainer(TrainConfig(**cfg, amp="off"), torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    assert fp32.scaler is None and fp32.amp_levels == 0
    assert fp32.train(2)["loss"] != summary["loss"]


def test_training_forward_runs_the_fp32_part_in_fp32():
    cfg = dict(ngf=8, num_levels=4, sigma_begin=1.0, sigma_end=0.01, batch_size=4, device="cpu")
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    amp = Trainer(TrainConfig(**cfg, amp="bf16"), images)  # levels 1, 0.215: bf16; 0.046, 0.01: fp32
    fp32 = Trainer(TrainConfig(**cfg, amp="off"), images)
    assert amp._split.n_amp == 2
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
        as_amp, as_fp32 = score.amp(x, levels), score.fp32(x, levels)
    assert not torch.equal(as_amp, as_fp32)
    for b, level in enumerate(levels.tolist()):
        expected = as_amp if level < trainer.amp_levels else as_fp32
        assert torch.equal(mixed[b], expected[b]), level
    assert trainer.amp_levels == 2
    assert score.at_level(0) is score.amp and score.at_level(3) is score.fp32


def test_amp_is_part_of_the_evaluation_protocol(images):
    from trainables.scoring import quality

    samples = images.float()[:8] / 255
    plain = quality.point_metrics(samples)
    runtime = rt.resolve(TrainConfig(amp="fp16", device="cpu"), torch.device("cpu"))
    tagged = quality.point_metrics(samples, precision=rt.protocol_precision(runtime, amp_levels=10))
    assert tagged["protocol"]["precision"] == {"amp": "fp16", "amp_min_sigma": 0.0}
    assert tagged["protocol_id"] != plain["protocol_id"]
    assert tagged["kid"] == plain["kid"] and tagged["fid"] == plain["fid"]  # the scores are the same
    bf16 = rt.resolve(TrainConfig(amp="bf16", device="cpu"), torch.device("cpu"))
    assert rt.protocol_precision(bf16, 5) == {"amp": "bf16", "amp_min_sigma": 0.1}
    off = rt.resolve(TrainConfig(amp="off", device="cpu"), torch.device("cpu"))
    assert rt.protocol_precision(off, 0) is None and rt.protocol_precision(runtime, 0) is None
