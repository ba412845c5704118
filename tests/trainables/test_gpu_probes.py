"""The GPU check's probes (trainables/tools/gpu_probes.py) on a CPU: what is off the device, FLOP
counting against the documented network cost, the stand-in images, the spec-sheet peaks."""

import pytest
import torch

from trainables.ncsn.train import TrainConfig, Trainer
from trainables.tools import gpu_probes

torch.set_num_threads(1)
IMAGES = torch.randint(0, 256, (16, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def small_trainer(**kw) -> Trainer:
    return Trainer(TrainConfig(ngf=8, num_levels=3, batch_size=4, ema=0.9, device="cpu", **kw), IMAGES)


def test_placement_finds_nothing_off_device_and_names_what_is():
    trainer = small_trainer()
    trainer.train(2)  # optimiser state exists now
    assert gpu_probes.off_device(trainer, torch.device("cpu")) == []
    trainer.ema.module.to("meta")  # an EMA left behind on another device
    found = gpu_probes.off_device(trainer, torch.device("cpu"))
    assert found and all(name.startswith("ema.") and "meta" in name for name in found)
    assert len(found) == len(list(trainer.ema.module.parameters())) + len(list(trainer.ema.module.buffers()))


def test_flop_count_matches_the_documented_network_cost():
    # docs/NCSN.md: a 28x28 forward pass at ngf = 64 costs about 3.8 GFLOP (one image).
    trainer = Trainer(TrainConfig(ngf=64, num_levels=10, batch_size=2, device="cpu"), IMAGES)
    forward = gpu_probes.forward_flops(trainer, batch=1)
    assert forward == pytest.approx(3.8e9, rel=0.05)
    # a training step: forward + backward (about twice the forward) on the batch
    step = gpu_probes.train_flops(trainer)
    assert 2.5 * 2 * forward < step < 3.5 * 2 * forward


def test_stand_in_images_when_no_mnist_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NCSN_DATA_DIR", str(tmp_path))  # an empty cache: no MNIST here
    monkeypatch.setenv("NCSN_MNIST_SOURCES", "cache")
    images, source = gpu_probes.check_images(6)
    assert source.startswith("synthetic strokes")
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.uint8
    # MNIST-like: mostly black background, strokes reaching white
    assert (images == 0).float().mean() > 0.5 and images.max() == 255
    again, _ = gpu_probes.check_images(6)
    assert torch.equal(images, again)


def test_spec_peaks_match_the_most_specific_name():
    assert gpu_probes.spec_peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert gpu_probes.spec_peak_tflops("NVIDIA H200") == 989.4
    assert gpu_probes.spec_peak_tflops("Some GPU") is None
