"""One task of the confirmation stage (trainables/confirm_task.py), run in this process on a tiny
trained checkpoint: it never trains, its noise depends on the seed and not on the trial, and it
returns what the driver writes."""

import json

import pytest
import torch

from trainables.confirm_task import confirm_sample
from trainables.contract.data import load_mnist
from trainables.contract.layout import METRICS_FILE, STATE_FILE
from trainables.contract.metrics import METRICS, hi_key, lo_key
from trainables.contract.params import noise_seed
from trainables.ncsn.train import TrainConfig, Trainer
from trainables.sampler_trainable import FrozenCheckpoint

CONFIG = {
    "sigma_begin": 1.0,
    "sigma_end": 0.05,
    "num_levels": 3,
    "step_lr": 2e-5,
    "n_steps_each": 1,
    "denoise": True,
    "batch_size": 8,
    "ngf": 8,
    "lr": 1e-3,
    "ema": 0.9,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, one_torch_thread):
    """A checkpoint folder as the training trainable writes it, after 2 iterations."""
    folder = tmp_path_factory.mktemp("trial") / "checkpoint_000000"
    folder.mkdir()
    images, _ = load_mnist(train=True)
    training = {k: v for k, v in CONFIG.items() if k not in ("step_lr", "n_steps_each", "denoise")}
    trainer = Trainer(TrainConfig.from_dict({**training, "seed": 0, "device": "cpu"}), images[:256])
    trainer.train(2)
    trainer.save(folder / STATE_FILE)
    record = {"metrics": {}, "counters": {"train_evals_total": 16}, "config": CONFIG}
    (folder / METRICS_FILE).write_text(json.dumps(record))
    return folder


def _job(folder, **changes):
    job = {
        "trial_id": "t0",
        "checkpoint": str(folder),
        "config": dict(CONFIG),
        "use_config_sampler": False,
        "samples": 24,
        "seed": 0,
        "search_seed": 0,
        "resamples": 50,
        "device": "cpu",
    }
    return {**job, **changes}


def test_a_task_samples_scores_and_returns_what_the_driver_writes(checkpoint):
    digest = FrozenCheckpoint(checkpoint, "cpu").digest
    out = confirm_sample(_job(checkpoint))
    record = out["record"]
    assert record["samples"] == 24 and record["seed"] == 0 and not record["diverged"]
    assert record["nfe_per_sample"] == 3 * 1 + 1 and record["network_evals"] == 24 * 4
    assert record["weights_sha256"] == digest  # the sampling weights came back untouched
    assert record["sampler"]["step_lr"] == CONFIG["step_lr"] and record["levels"] == "0,1,2"
    for name in METRICS:
        assert record["metrics"][lo_key(name)] <= record["metrics"][hi_key(name)]
    assert record["fid_inf"]["sizes"][-1] == 24
    assert out["features"].shape == (24, 64) and out["logits"].shape == (24, 10)
    assert out["grid"][:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(record)  # JSON-ready


def test_the_noise_is_the_seed_s_whatever_the_trial(checkpoint):
    first = confirm_sample(_job(checkpoint))
    again = confirm_sample(_job(checkpoint, trial_id="another trial"))
    assert torch.equal(first["features"], again["features"])
    other_seed = confirm_sample(_job(checkpoint, seed=1))
    assert not torch.equal(first["features"], other_seed["features"])
    seeds = [
        noise_seed(0, "confirmation", 1, 0),
        noise_seed(0, "confirmation", 0, 0),
        noise_seed(1, "confirmation", 0, 0),
    ]
    assert len(set(seeds)) == 3
    with pytest.raises(ValueError, match="confirmation noise: index=100"):
        noise_seed(0, "confirmation", 100, 0)


def test_a_sampler_trial_samples_with_its_own_settings(checkpoint):
    own = {**CONFIG, "step_lr": 7e-6, "n_steps_each": 2, "skip_levels": 1}
    record = confirm_sample(_job(checkpoint, config=own, use_config_sampler=True))["record"]
    assert record["sampler"]["step_lr"] == 7e-6 and record["levels"] == "1,2"
    assert record["nfe_per_sample"] == 2 * 2 + 1
    trained = confirm_sample(_job(checkpoint, config=own, use_config_sampler=False))["record"]
    assert trained["sampler"]["step_lr"] == CONFIG["step_lr"]  # a joint trial: its trained-with sampler
