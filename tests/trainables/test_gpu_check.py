"""The GPU check's CPU-runnable pieces (trainables/gpu_check.py): placement, FLOP counting, the
stand-in images, the report. Its CUDA-only assertions run only on a GPU machine
(``python platform/benchmark.py --device cuda --check``); the whole flow on a CPU is
tests/e2e/test_e2e_gpu_check.py."""

import subprocess
import sys

import pytest
import torch

from trainables import gpu_check
from trainables.train import TrainConfig, Trainer

torch.set_num_threads(1)
IMAGES = torch.randint(0, 256, (16, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def small_trainer(**kw) -> Trainer:
    return Trainer(TrainConfig(ngf=8, num_levels=3, batch_size=4, ema=0.9, device="cpu", **kw), IMAGES)


def test_placement_finds_nothing_off_device_and_names_what_is():
    trainer = small_trainer()
    trainer.train(2)  # optimiser state exists now
    assert gpu_check.off_device(trainer, torch.device("cpu")) == []
    trainer.ema.module.to("meta")  # an EMA left behind on another device
    found = gpu_check.off_device(trainer, torch.device("cpu"))
    assert found and all(name.startswith("ema.") and "meta" in name for name in found)
    assert len(found) == len(list(trainer.ema.module.parameters())) + len(list(trainer.ema.module.buffers()))


def test_flop_count_matches_the_documented_network_cost():
    # docs/NCSN.md: a 28x28 forward pass at ngf = 64 costs about 3.8 GFLOP (one image).
    trainer = Trainer(TrainConfig(ngf=64, num_levels=10, batch_size=2, device="cpu"), IMAGES)
    forward = gpu_check.forward_flops(trainer, batch=1)
    assert forward == pytest.approx(3.8e9, rel=0.05)
    # a training step: forward + backward (about twice the forward) on the batch
    step = gpu_check.train_flops(trainer)
    assert 2.5 * 2 * forward < step < 3.5 * 2 * forward


def test_stand_in_images_when_no_mnist_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NCSN_DATA_DIR", str(tmp_path))  # an empty cache: no MNIST here
    monkeypatch.setenv("NCSN_MNIST_SOURCES", "cache")
    images, source = gpu_check.check_images(6)
    assert source.startswith("synthetic strokes")
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.uint8
    # MNIST-like: mostly black background, strokes reaching white
    assert (images == 0).float().mean() > 0.5 and images.max() == 255
    again, _ = gpu_check.check_images(6)
    assert torch.equal(images, again)


def test_spec_peaks_match_the_most_specific_name():
    assert gpu_check.spec_peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert gpu_check.spec_peak_tflops("NVIDIA H200") == 989.4
    assert gpu_check.spec_peak_tflops("Some GPU") is None


def test_report_fails_when_a_check_fails():
    outcomes = [gpu_check.Outcome("cuda", True, "ok"), gpu_check.Outcome("placement", False, "ema.w on cpu")]
    report = gpu_check._finish({"device": "cuda:0", "torch": torch.__version__}, outcomes)
    assert report["ok"] is False
    text = gpu_check.format_report(report)
    assert "FAIL  placement" in text and "SOME CHECKS FAILED" in text
    na = gpu_check._finish({"device": "cpu", "torch": "x"}, [gpu_check.Outcome("no_sync_train", None, "n/a")])
    assert na["ok"] is True  # not applicable is no failure


def test_the_check_needs_neither_ray_nor_optuna():
    code = (
        "import sys, trainables.gpu_check, trainables.precision; "
        "print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
