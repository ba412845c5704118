"""Training loop: config validation, determinism, bit-identical resume, summaries, EMA, CPU fallbacks."""

import math

import pytest
import torch

from trainables.ncsn.ema import EMA
from trainables.ncsn.train import TrainConfig, Trainer

torch.set_num_threads(1)  # tiny models: threads only add contention on a shared machine


def tiny_images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)


def tiny_config(**overrides):
    values = dict(
        ngf=8, num_levels=4, sigma_begin=1.0, sigma_end=0.05, batch_size=4, lr=1e-3, ema=0.9, seed=0, device="cpu"
    )
    values.update(overrides)
    return TrainConfig(**values)


def weights(module):
    return [t.detach().clone() for t in module.state_dict().values()]


def assert_identical(a, b):
    assert len(a) == len(b)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "field, value",
    [
        ("ngf", 4),
        ("ngf", 8.0),
        ("num_levels", 1),
        ("batch_size", 0),
        ("batch_size", True),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("beta1", 1.0),
        ("ema", -0.1),
        ("ema", 1.0),
        ("sigma_end", -0.01),
        ("sigma_begin", 0.001),
        ("image_size", 30),
        ("noise_conditioning", "time"),
        ("device", "tpu"),
        ("amp", "yes"),
        ("compile", 1),
        ("channels_last", None),
        ("grad_clip", -1.0),
        ("seed", -1),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**{field: value})


def test_config_from_dict_rejects_unknown_keys():
    assert TrainConfig.from_dict({"ngf": 32}).ngf == 32
    with pytest.raises(ValueError, match="step_size"):
        TrainConfig.from_dict({"ngf": 32, "step_size": 1})


def test_same_seed_same_weights_other_seed_other_weights():
    images = tiny_images()
    runs = []
    for seed in (0, 0, 1):
        trainer = Trainer(tiny_config(seed=seed), images)
        trainer.train(3)
        runs.append(weights(trainer.model))
    assert_identical(runs[0], runs[1])
    assert not all(torch.equal(x, y) for x, y in zip(runs[0], runs[2]))


def test_save_load_resumes_bit_identically(tmp_path):
    images = tiny_images()
    straight = Trainer(tiny_config(grad_clip=1.0), images)
    straight.train(2)
    straight.train(3)

    first = Trainer(tiny_config(grad_clip=1.0), images)
    first.train(2)
    path = tmp_path / "state.pt"
    first.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left behind
    torch.manual_seed(1234)  # the global RNG is part of the state and must come back too
    resumed = Trainer.load(path, images)
    assert resumed.step == 2
    resumed.train(3)

    assert_identical(weights(resumed.model), weights(straight.model))
    assert_identical(weights(resumed.ema.module), weights(straight.ema.module))
    assert torch.equal(resumed.generator.get_state(), straight.generator.get_state())
    opt_a, opt_b = resumed.optimizer.state_dict()["state"], straight.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[k]["exp_avg_sq"], opt_b[k]["exp_avg_sq"]) for k in opt_b)


def test_load_rejects_a_different_architecture(tmp_path):
    images = tiny_images()
    trainer = Trainer(tiny_config(), images)
    state = trainer.state_dict()
    other = Trainer(tiny_config(num_levels=5), images)
    with pytest.raises(ValueError, match="num_levels"):
        other.load_state_dict(state)


def test_summary_accounts_for_every_example():
    trainer = Trainer(tiny_config(num_levels=3, batch_size=5), tiny_images())
    summary = trainer.train(4)
    assert summary["iterations"] == 4 and summary["iterations_run"] == 4 and summary["finite"]
    counts = summary["per_level_count"]
    assert sum(counts) == 4 * 5 and len(summary["per_level_loss"]) == 3
    # Equal batch sizes: the mean of the batch means is the count-weighted mean of the level means.
    weighted = sum(c * loss for c, loss in zip(counts, summary["per_level_loss"]) if c) / sum(counts)
    assert math.isclose(summary["loss"], weighted, rel_tol=1e-6)  # fp32 batch means
    assert summary["iters_per_s"] > 0 and summary["seconds"] > 0
    again = trainer.train(1)  # the accumulators restart after each summary
    assert sum(again["per_level_count"]) == 5 and again["iterations"] == 5


def test_non_finite_loss_is_reported_at_summary_time():
    trainer = Trainer(tiny_config(), tiny_images())
    assert trainer.train(1)["finite"]
    trainer.poison_weights()
    summary = trainer.train(2)
    assert not summary["finite"] and summary["nonfinite_steps"] == 2


def test_images_are_zero_padded_to_32():
    images = tiny_images(8)
    trainer = Trainer(tiny_config(image_size=32), images)
    assert trainer.images.shape == (8, 1, 32, 32) and trainer.image_shape == (1, 32, 32)
    assert torch.equal(trainer.images[:, :, 2:30, 2:30], images)
    assert trainer.images.sum() == images.sum()  # the border is zero
    assert trainer.train(1)["finite"]
    x = torch.rand(2, 1, 32, 32)
    assert trainer.score_fn()(x, torch.tensor([0, 3])).shape == x.shape


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        Trainer(tiny_config(), torch.rand(4, 1, 28, 28))
    with pytest.raises(ValueError, match="image_size"):
        Trainer(tiny_config(), torch.zeros(4, 1, 16, 16, dtype=torch.uint8))


def test_ema_closed_form_and_off_switch():
    model = torch.nn.Linear(3, 2)
    start = weights(model)
    ema = EMA(model, momentum=0.75)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for avg, old, new in zip(weights(ema.module), start, weights(model)):
        torch.testing.assert_close(avg, 0.75 * old + 0.25 * new)
    off = EMA(model, momentum=0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-3.0)
    off.update(model)
    assert_identical(weights(off.module), weights(model))
    copy = ema.model_copy()
    assert_identical(weights(copy), weights(ema.module))
    with ema.swapped(model) as swapped:
        assert_identical(weights(swapped), weights(ema.module))
    assert_identical(weights(model), weights(off.module))  # the model's own weights are back
    restored = EMA(torch.nn.Linear(3, 2), momentum=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.momentum == 0.75 and restored.num_updates == 1
    assert_identical(weights(restored.module), weights(ema.module))
    with pytest.raises(ValueError, match="momentum"):
        EMA(model, momentum=1.0)


def test_score_fn_uses_the_ema_weights():
    trainer = Trainer(tiny_config(ema=0.5, lr=1e-2), tiny_images())
    trainer.train(3)
    x, levels = torch.rand(2, 1, 28, 28), torch.tensor([0, 3])
    with torch.inference_mode():
        with_ema = trainer.score_fn(use_ema=True)(x, levels)
        without = trainer.score_fn(use_ema=False)(x, levels)
        torch.testing.assert_close(with_ema, trainer.ema.module(x, levels))
        torch.testing.assert_close(without, trainer.model(x, levels))
    assert not torch.allclose(with_ema, without)
    plain = Trainer(tiny_config(ema=0.0), tiny_images())
    assert plain.ema is None
    assert torch.equal(plain.score_fn(use_ema=True)(x, levels), plain.score_fn(use_ema=False)(x, levels))


@pytest.mark.parametrize("option", ["amp", "channels_last"])
def test_cpu_fast_paths_keep_scores_and_loss(option):
    # Same seed -> same initial weights, batch, levels and noise; only the arithmetic differs.
    images = tiny_images()
    plain = dict(ema=0.0, amp=False, channels_last=False)
    reference = Trainer(tiny_config(**plain), images)
    # amp_min_sigma 0: every level in bf16, so both trainers draw the same levels (under the
    # default, the smallest levels run in fp32 and the batch is split: tests/trainables/test_precision.py).
    every_level = {"amp_min_sigma": 0.0} if option == "amp" else {}
    fast = Trainer(tiny_config(**{**plain, option: True}, **every_level), images)
    x, levels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    with torch.inference_mode():
        s_ref, s_fast = reference.score_fn()(x, levels), fast.score_fn()(x, levels)
    assert s_fast.dtype == torch.float32
    # bf16 keeps 8 mantissa bits: through ~40 layers the scores move by a few per cent (2% seen);
    # the fp32 layouts differ only in summation order.
    tol = 0.05 if option == "amp" else 1e-5
    assert ((s_fast - s_ref).norm() / s_ref.norm()).item() < tol
    loss_ref, loss_fast = reference.train(1)["loss"], fast.train(1)["loss"]
    assert math.isclose(loss_fast, loss_ref, rel_tol=tol / 5), (loss_fast, loss_ref)
