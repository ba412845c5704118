"""Fetch MNIST into the cache folder once and verify every file by SHA-256.

Usage: python platform/prepare_data.py [--root DIR]
       python platform/prepare_data.py --smoke-test     # check the cached files only, fetch nothing: seconds
"""

import argparse
import sys
import time

from trainables.contract.data import (
    MNIST_SHA256,
    MnistUnavailableError,
    default_root,
    ensure_mnist,
    load_mnist,
    sha256_of,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="cache folder (default: $NCSN_DATA_DIR or the user cache dir)")
    parser.add_argument(
        "--smoke-test", action="store_true", help="check the cached files and read the test split; fetch nothing"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    if args.smoke_test:
        from pathlib import Path

        root = Path(args.root).expanduser() if args.root else default_root()
        bad = [n for n, d in MNIST_SHA256.items() if not (root / n).is_file() or sha256_of(root / n) != d]
        if bad:
            fix = "run python platform/prepare_data.py"
            print(f"error: {root}: {', '.join(bad)} missing or not verified; {fix}", file=sys.stderr)
            return 2
    try:
        folder = ensure_mnist(args.root)
    except (MnistUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, digest in MNIST_SHA256.items():
        print(f"verified {folder / name}  sha256={digest}")
    for train in (False,) if args.smoke_test else (True, False):
        images, labels = load_mnist(train, folder)
        split = "train" if train else "test"
        print(f"{split}: {images.shape[0]} images {tuple(images.shape[1:])}, label counts {labels.bincount().tolist()}")
    print(f"MNIST ready in {folder} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
