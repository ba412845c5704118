"""A checkpoint that is a pickle which would run code is never executed by any loader of a
training state (weights_only=True everywhere): the payload, which would leave a marker file,
is refused and the marker never appears."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from trainables.layout import METRICS_FILE, STATE_FILE
from trainables.sampler_trainable import FrozenCheckpoint
from trainables.train import TrainConfig, Trainer


class _RunsCode:
    """Unpickled by a full loader, this calls os.system and leaves ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def hostile(tmp_path):
    """A real checkpoint folder whose state.pt carries the payload inside a valid-looking state."""
    trainer = Trainer(
        TrainConfig(ngf=8, num_levels=4, batch_size=2, device="cpu"), torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    )
    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    state = trainer.state_dict()
    marker = tmp_path / "ran"
    state["model"]["hostile"] = _RunsCode(marker)
    torch.save(state, folder / STATE_FILE)
    record = {"metrics": {"kid": 1.0}, "counters": {}, "config": trainer.config.to_dict()}
    (folder / METRICS_FILE).write_text(json.dumps(record))
    # the payload is live: a full unpickler runs it
    with open(folder / STATE_FILE, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return folder, marker


def test_no_training_state_loader_runs_a_pickled_payload(hostile):
    folder, marker = hostile
    with pytest.raises(pickle.UnpicklingError):
        Trainer.load(folder / STATE_FILE, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), device="cpu")
    with pytest.raises(pickle.UnpicklingError):
        FrozenCheckpoint(folder, "cpu")
    assert not marker.exists()
