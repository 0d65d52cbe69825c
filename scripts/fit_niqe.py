"""Fit the pristine NIQE model on clean photos; writes the one mrvae ships (``NIQE_MODEL_PATH``).

Default output: ``src/mrvae/evaluation/metrics/data/niqe_pristine.npz``.

Usage: ``python scripts/fit_niqe.py [CLEAN_DIR] [--max-side 512] [--split train] [--out PATH]``

The shipped model is fitted on the training split
(``mrvae.data.datasets.split_of(name, 0.1) == "train"``) of ``../shared/data/clean``, each photo
downscaled so its long side is at most 512 pixels (the size the evaluation works at), so the
held-out validation photos never shape the model.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from mrvae.data.datasets import ImageCache, select_split
from mrvae.evaluation.metrics import NIQE_MODEL_PATH, fit_niqe
from mrvae.io.files import list_images

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean_dir", nargs="?", type=Path,
                        default=REPO.parent / "shared/data/clean")
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--split", choices=("train", "val", "all"), default="train")
    parser.add_argument("--out", type=Path, default=NIQE_MODEL_PATH)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if not args.clean_dir.is_dir():
        raise SystemExit(f"error: {args.clean_dir}: no such directory")
    start = time.perf_counter()
    cache = ImageCache(args.max_side)
    paths = cache.readable(select_split(list_images(args.clean_dir), args.split, 0.1))
    images = [cache.get(p).astype(np.float32) / 255.0 for p in paths]
    source = f"{args.clean_dir.name} ({args.split} split, max side {args.max_side})"
    model = fit_niqe(images, source=source, max_side=args.max_side)
    model.save(args.out)
    print(f"fitted on {model.num_patches} sharp patches of {model.num_images} photos in "
          f"{time.perf_counter() - start:.0f} s -> {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
