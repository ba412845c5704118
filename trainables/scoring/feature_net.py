"""The fixed MNIST feature network used to score samples (FID, KID, IS, precision/recall).

A small LeNet-style classifier (docs/NCSN.md, "Measuring sample quality": MNIST practice is a classifier
trained on MNIST, not Inception). Its 64-d penultimate layer is the feature space for the Frechet
and kernel distances and the k-NN manifolds; its softmax gives the classifier-based Inception
Score and the class histogram.

The trained weights ship in ``trainables/assets/feature_net.pt`` and are checked against
:data:`FEATURE_NET_SHA256` on load, so every machine scores with the same network. Re-create or
check them with::

    python -m trainables.scoring.feature_net --train --out trainables/assets/feature_net.pt
    python -m trainables.scoring.feature_net --evaluate

Training a new file changes its hash: update :data:`FEATURE_NET_SHA256` together with the file.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# SHA-256 of the shipped weights file; keep in sync with assets/feature_net.pt.
FEATURE_NET_SHA256 = "504eab309308785f2d02505e829d4f036288fe24660f6f465fa22456ca6a2a23"
WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "assets" / "feature_net.pt"  # trainables/assets
NUM_FEATURES = 64
NUM_CLASSES = 10
# MNIST pixel statistics (docs/NCSN.md, "MNIST data"); inputs arrive in [0, 1].
_PIXEL_MEAN, _PIXEL_STD = 0.1307, 0.3081


class FeatureNet(nn.Module):
    """LeNet-style classifier: two 5x5 conv blocks, a 64-d embedding, 10 logits (~78k parameters).

    Input: float [B, 1, 28, 28] in [0, 1]. ``features`` gives the 64-d embedding (the linear
    layer's output after batch norm, before the ReLU, so it is not clipped at 0), ``forward`` the
    logits [B, 10].
    """

    num_features = NUM_FEATURES  # torchmetrics reads this instead of probing with 3x299x299 input

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, bias=False)  # 28 -> 24, pooled to 12
        self.bn1 = nn.BatchNorm2d(20)
        self.conv2 = nn.Conv2d(20, 50, 5, bias=False)  # 12 -> 8, pooled to 4
        self.bn2 = nn.BatchNorm2d(50)
        self.fc1 = nn.Linear(50 * 4 * 4, NUM_FEATURES, bias=False)
        self.bn3 = nn.BatchNorm1d(NUM_FEATURES)
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(NUM_FEATURES, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding: [B, 1, 28, 28] in [0, 1] -> [B, 64]."""
        h = (x - _PIXEL_MEAN) / _PIXEL_STD
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(h))), 2)
        h = F.max_pool2d(F.relu(self.bn2(self.conv2(h))), 2)
        return self.bn3(self.fc1(h.flatten(1)))

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        """[B, 64] embedding -> [B, 10] class logits."""
        return self.fc2(self.dropout(F.relu(f)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, 10] for images [B, 1, 28, 28] in [0, 1]."""
        return self.logits_from_features(self.features(x))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_feature_net(
    device: str | torch.device = "cpu",
    path: str | Path | None = None,
    sha256: str | None = FEATURE_NET_SHA256,
) -> FeatureNet:
    """The shipped feature network in eval mode on ``device``.

    The file's SHA-256 must equal ``sha256`` (by default the shipped constant); a mismatch raises
    ``ValueError`` before anything is unpickled. ``sha256=None`` skips the check, for scoring a
    freshly trained file you have not shipped.
    """
    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"feature network weights {path} not found; train them with "
            f"`python -m trainables.scoring.feature_net --train --out {path}`"
        )
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise ValueError(
                f"feature network weights {path} have SHA-256 {actual}, expected {sha256}: the file "
                f"is not the shipped network; restore it from git, or if you retrained it on purpose, "
                f"set FEATURE_NET_SHA256 in trainables/scoring/feature_net.py to the new hash"
            )
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = FeatureNet()
    net.load_state_dict(state)
    return net.to(device).eval()


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of [B, 1, 28, 28] by its own integer offset in [-max_shift, max_shift]."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # [B, 1, W]
    return padded[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> float:
    """Top-1 accuracy in [0, 1] of ``net`` on float images [N, 1, 28, 28] in [0, 1]."""
    net.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += (net(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
    return correct / len(images)


def train_feature_net(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 12,
    batch_size: int = 128,
    lr: float = 3e-3,
    max_shift: int = 2,
    seed: int = 0,
    log=print,
) -> FeatureNet:
    """Train a :class:`FeatureNet` on float images [N, 1, 28, 28] in [0, 1] with labels [N].

    Adam with a one-cycle learning-rate schedule and random shifts of up to ``max_shift`` pixels;
    the whole set stays one tensor and batches are drawn by indexing (no DataLoader). Same seed,
    same data, same thread count -> the same weights.
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs}: must be >= 1")
    torch.manual_seed(seed)  # parameter init
    gen = torch.Generator().manual_seed(seed)  # batch order, shifts
    net = FeatureNet()
    steps_per_epoch = (len(images) + batch_size - 1) // batch_size
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(images), generator=gen)
        total = torch.zeros(())
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = _random_shift(images[idx], max_shift, gen) if max_shift > 0 else images[idx]
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        log(f"epoch {epoch + 1}/{epochs}: mean loss {total.item() / steps_per_epoch:.4f}")
    return net.eval()


def _mnist_float(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from trainables.contract.data import load_mnist

    images, labels = load_mnist(train)
    return images.float() / 255.0, labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables.scoring.feature_net", description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--train", action="store_true", help="train on the MNIST training set and save")
    mode.add_argument("--evaluate", action="store_true", help="print the test accuracy of a weights file")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("feature_net.pt"), help="where --train writes the weights")
    p.add_argument(
        "--weights", type=Path, default=None, help="file for --evaluate (default: the shipped one, hash-checked)"
    )
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs={args.epochs}: must be >= 1")

    test_x, test_y = _mnist_float(train=False)
    if args.evaluate:
        net = load_feature_net(path=args.weights, sha256=FEATURE_NET_SHA256 if args.weights is None else None)
        path = args.weights or WEIGHTS_PATH
        print(f"weights {path} ({path.stat().st_size} bytes, sha256 {sha256_file(path)})")
        print(f"test accuracy {100 * accuracy(net, test_x, test_y):.2f}%")
        return 0

    train_x, train_y = _mnist_float(train=True)
    start = time.perf_counter()
    net = train_feature_net(train_x, train_y, epochs=args.epochs, seed=args.seed)
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out)
    print(f"trained {args.epochs} epochs in {seconds:.0f} s on {torch.get_num_threads()} threads")
    print(f"test accuracy {100 * accuracy(net, test_x, test_y):.2f}%")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {sha256_file(args.out)})")
    if args.out.resolve() == WEIGHTS_PATH:
        print("set FEATURE_NET_SHA256 in trainables/scoring/feature_net.py to the hash above")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
