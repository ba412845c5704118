"""A checkpoint that is a pickle which would run code is never executed by any loader of a
training state (weights_only=True everywhere): the payload, which would leave a marker file,
is refused and the marker never appears."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from trainables.contract.layout import METRICS_FILE, STATE_FILE
from trainables.ncsn.checkpoint import CheckpointError, read_state
from trainables.ncsn.train import TrainConfig, Trainer
from trainables.sampler_trainable import FrozenCheckpoint


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
    refused = f"{folder / STATE_FILE}: holds objects other than tensors and numbers, which a safe load refuses"
    with pytest.raises(CheckpointError, match=re.escape(refused) + r" \(never executed: "):
        Trainer.load(folder / STATE_FILE, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), device="cpu")
    with pytest.raises(CheckpointError, match=re.escape(refused)) as err:
        FrozenCheckpoint(folder, "cpu")
    assert "\n" not in str(err.value)
    assert not marker.exists()


def _real_checkpoint(tmp_path, ngf: int = 8):
    trainer = Trainer(
        TrainConfig(ngf=ngf, num_levels=4, batch_size=2, device="cpu"), torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    )
    folder = tmp_path / f"checkpoint_ngf{ngf}"
    folder.mkdir()
    trainer.save(folder / STATE_FILE)
    record = {"metrics": {"kid": 1.0}, "counters": {}, "config": trainer.config.to_dict()}
    (folder / METRICS_FILE).write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_a_state_file_cut_short_is_refused_in_one_line_naming_it(tmp_path, cut):
    folder = _real_checkpoint(tmp_path)
    data = (folder / STATE_FILE).read_bytes()
    (folder / STATE_FILE).write_bytes(data[: int(cut * len(data)) if isinstance(cut, float) else cut])
    with pytest.raises(
        CheckpointError, match=re.escape(f"{folder / STATE_FILE}: cut short or not a torch checkpoint (")
    ):
        FrozenCheckpoint(folder, "cpu")


def test_a_state_file_whose_weights_are_another_shape_is_refused_in_one_line(tmp_path):
    folder = _real_checkpoint(tmp_path, ngf=8)
    other = read_state(_real_checkpoint(tmp_path, ngf=16) / STATE_FILE)
    state = read_state(folder / STATE_FILE)
    torch.save({**state, "model": other["model"]}, folder / STATE_FILE)  # ngf 16 weights, ngf 8 config
    expected = f"{folder / STATE_FILE}: holds weights of another network shape than its config says ("
    with pytest.raises(CheckpointError, match=re.escape(expected)) as err:
        FrozenCheckpoint(folder, "cpu")
    assert "size mismatch" in str(err.value) and "\n" not in str(err.value)


def test_a_torch_file_that_is_no_training_state_is_refused(tmp_path):
    folder = _real_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(3)}, folder / STATE_FILE)
    with pytest.raises(CheckpointError, match="a torch file, but not a training state"):
        read_state(folder / STATE_FILE)
