"""The trial's evaluation step outside Ray: what it samples, scores and refuses."""

import torch

from trainables.contract.data import load_mnist
from trainables.ncsn.train import Trainer
from trainables.tune_trainable import Budget, sample_and_score, train_config_from

CONFIG = {
    "sigma_begin": 1.0,
    "sigma_end": 0.01,
    "num_levels": 3,
    "step_lr": 2e-5,
    "n_steps_each": 2,
    "batch_size": 8,
    "ngf": 8,
    "lr": 1e-3,
    "ema": 0.0,
    "denoise": True,
}
BUDGET = Budget(iterations=4, eval_every=2, eval_samples=16)


def make_trainer(**changes):
    images, _ = load_mnist(train=True)
    return Trainer(train_config_from({**CONFIG, **changes}, BUDGET), images[:512])


def test_evaluation_scores_the_requested_samples_and_counts_network_passes():
    trainer = make_trainer()
    trainer.train(2)
    evaluation = sample_and_score(trainer, CONFIG, BUDGET, eval_index=1)
    assert evaluation["samples"].shape == (16, 1, 28, 28)
    assert evaluation["n_evals"] == 3 * 2 + 1  # L * T + the denoising step
    assert evaluation["metrics"]["protocol"]["n"] == 16
    assert 0.0 <= evaluation["samples"].min() and evaluation["samples"].max() <= 1.0


def test_evaluation_is_the_same_for_the_same_seed_and_index():
    first = sample_and_score(make_trainer(), CONFIG, BUDGET, eval_index=1)["samples"]
    again = sample_and_score(make_trainer(), CONFIG, BUDGET, eval_index=1)["samples"]
    other = sample_and_score(make_trainer(), CONFIG, BUDGET, eval_index=2)["samples"]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_non_finite_samples_are_refused_not_scored():
    trainer = make_trainer()
    trainer.poison_weights()  # NaN in the output layer: every score is NaN
    assert sample_and_score(trainer, CONFIG, BUDGET, eval_index=1) is None


def test_32_pixel_models_are_scored_on_the_centre_28_pixels():
    trainer = make_trainer(image_size=32)
    evaluation = sample_and_score(trainer, CONFIG, BUDGET, eval_index=1)
    assert evaluation["samples"].shape == (16, 1, 28, 28)
