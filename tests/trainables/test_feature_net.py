"""The fixed MNIST feature network: shipped weights, hash check, accuracy, training script."""

import pickle
import shutil

import pytest
import torch
import torch.nn.functional as F

from trainables.contract.data import load_mnist
from trainables.scoring import feature_net
from trainables.scoring.feature_net import (
    FEATURE_NET_SHA256,
    WEIGHTS_PATH,
    FeatureNet,
    load_feature_net,
    sha256_file,
    train_feature_net,
)


@pytest.fixture(scope="module")
def mnist_test():
    images, labels = load_mnist(train=False)
    return images.float() / 255.0, labels


def test_shipped_weights_match_the_recorded_hash_and_are_small():
    assert sha256_file(WEIGHTS_PATH) == FEATURE_NET_SHA256
    assert WEIGHTS_PATH.stat().st_size < 400_000
    assert sum(p.numel() for p in FeatureNet().parameters()) < 100_000


def test_tampered_weights_are_refused(tmp_path):
    bad = tmp_path / "feature_net.pt"
    shutil.copy(WEIGHTS_PATH, bad)
    data = bytearray(bad.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_feature_net(path=bad)
    with pytest.raises(FileNotFoundError, match="--train"):
        load_feature_net(path=tmp_path / "missing.pt")


class _Payload:
    """Not a tensor: a weights-only loader must refuse to build it."""


def test_loading_is_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_feature_net(path=path, sha256=None)


def test_features_are_the_64d_embedding_the_logits_are_computed_from(mnist_test):
    net = load_feature_net()
    assert not net.training
    x = mnist_test[0][:16]
    with torch.no_grad():
        f = net.features(x)
        assert f.shape == (16, 64) and FeatureNet.num_features == 64
        assert torch.equal(net.logits_from_features(f), net(x))
        assert (f < 0).any()  # taken before the ReLU, so not clipped at 0


def _translations(x, max_shift):
    padded = F.pad(x, (max_shift,) * 4)
    return {
        (dy, dx): padded[:, :, dy : dy + 28, dx : dx + 28]
        for dy in range(2 * max_shift + 1)
        for dx in range(2 * max_shift + 1)
    }


def test_random_shift_translates_each_image_by_its_own_offset():
    x = torch.rand(64, 1, 28, 28)
    out = feature_net._random_shift(x, 2, torch.Generator().manual_seed(0))
    candidates = _translations(x, 2)
    offsets = []
    for i in range(len(x)):
        hits = [k for k, t in candidates.items() if torch.equal(out[i], t[i])]
        assert len(hits) == 1, i
        offsets.append(hits[0])
    assert len(set(offsets)) > 10  # per image, not one shift for the batch


def test_training_is_deterministic_under_a_seed():
    images, labels = load_mnist(train=True)
    x, y = images[:256].float() / 255.0, labels[:256]
    quiet = lambda *_: None  # noqa: E731
    a = train_feature_net(x, y, epochs=1, seed=0, log=quiet).state_dict()
    b = train_feature_net(x, y, epochs=1, seed=0, log=quiet).state_dict()
    c = train_feature_net(x, y, epochs=1, seed=1, log=quiet).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    torch.manual_seed(0)
    assert not torch.equal(a["conv1.weight"], FeatureNet().conv1.weight)  # moved from its seed-0 init
    with pytest.raises(ValueError, match="epochs=0"):
        train_feature_net(x, y, epochs=0)


def test_shipped_network_reaches_99_3_percent_on_the_test_set(capsys):
    assert feature_net.main(["--evaluate"]) == 0
    out = capsys.readouterr().out
    assert FEATURE_NET_SHA256 in out
    assert float(out.split("test accuracy ")[1].split("%")[0]) >= 99.3


def test_cli_rejects_a_bad_epoch_count():
    with pytest.raises(SystemExit) as exc:
        feature_net.main(["--train", "--epochs", "0"])
    assert exc.value.code == 2
