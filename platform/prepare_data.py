"""Fetch MNIST into the cache folder once and verify every file by SHA-256.

Usage: python platform/prepare_data.py [--root DIR]
"""

import argparse
import sys
import time

from trainables.contract.data import MNIST_SHA256, MnistUnavailableError, ensure_mnist, load_mnist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="cache folder (default: $NCSN_DATA_DIR or the user cache dir)")
    args = parser.parse_args()
    start = time.perf_counter()
    try:
        folder = ensure_mnist(args.root)
    except (MnistUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, digest in MNIST_SHA256.items():
        print(f"verified {folder / name}  sha256={digest}")
    for train in (True, False):
        images, labels = load_mnist(train, folder)
        split = "train" if train else "test"
        print(f"{split}: {images.shape[0]} images {tuple(images.shape[1:])}, label counts {labels.bincount().tolist()}")
    print(f"MNIST ready in {folder} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
