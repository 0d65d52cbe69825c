"""Test sets for the evaluation: samples of a low-light input and, when paired, its truth.

Paired folders (``low/`` + ``high/``: ``mrvae synth`` output, LOL layouts, whole or one side of
their fixed split) give full-reference sets; folders of real dark photos give no-reference
sets; :func:`synthetic_samples` makes a reproducible paired set from one split of clean photos
(the held-out one by default), and :func:`well_exposed_samples` the same photos untouched, each
its own ground truth (is a good photo left alone?).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrvae.data.datasets import (
    ImageCache,
    PairedFolder,
    Split,
    make_pair,
    select_split,
    to_tensor,
)
from mrvae.data.degrade import PRESETS as RECIPES
from mrvae.io.decode import read_image
from mrvae.io.files import list_images
from mrvae.io.pixels import ImageReadError, fit_long_side

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One test image: the low-light input and, for paired sets, its ground truth."""

    name: str
    low: np.ndarray
    high: np.ndarray | None = None

    @property
    def megapixels(self) -> float:
        return self.low.shape[0] * self.low.shape[1] / 1e6


@dataclass
class TestSet:
    """Samples plus where they came from (recorded in the report)."""

    samples: list[Sample]
    source: str
    paired: bool
    skipped: list[str]
    settings: dict[str, Any]


def _to_array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.permute(1, 2, 0).numpy(), dtype=np.float32)


def is_paired_folder(root: Path) -> bool:
    return any((root / low).is_dir() and (root / high).is_dir()
               for low, high in PairedFolder.LAYOUTS)


def folder_samples(root: str | Path, max_side: int | None = None,
                   limit: int | None = None, split: Split = "all") -> TestSet:
    """A paired folder (``low/`` + ``high/``, LOL layouts) or a folder of dark photos as is.

    ``split`` picks one side of a paired folder's fixed split
    (:func:`mrvae.data.datasets.pair_split_of`: LOL's validation pairs are those never trained
    on).

    Raises:
        FileNotFoundError: no such folder, or no readable image in it.
        ValueError: a split other than "all" for a folder without pairs.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    samples, skipped = [], []
    paired = root.is_dir() and is_paired_folder(root)
    if split != "all" and not paired:
        raise ValueError(f"{root}: --split {split} needs a paired folder (low/ + high/)")
    if paired:
        pairs = PairedFolder(root, split=split)
        for index in range(len(pairs) if limit is None else min(limit, len(pairs))):
            item = pairs[index]
            samples.append(Sample(Path(item["name"]).stem,
                                  fit_long_side(_to_array(item["low"]), max_side),
                                  fit_long_side(_to_array(item["high"]), max_side)))
        paired = True
    else:
        for path in list_images(root)[:limit]:
            try:
                # floats as decoded: 16-bit files and RAW keep their extra bits
                low = fit_long_side(read_image(path).rgb, max_side)
            except ImageReadError as exc:
                log.warning("skipping %s", exc)
                skipped.append(str(exc))
                continue
            name = path.relative_to(root).with_suffix("").as_posix() if root.is_dir() \
                else path.stem
            samples.append(Sample(name.replace("/", "__"), low))
    if not samples:
        raise FileNotFoundError(f"{root}: no readable images" + (
            f" in the {split} split" if split != "all" else ""))
    settings = {"max_side": max_side, "limit": limit}
    if paired:
        settings["split"] = split
    return TestSet(samples, str(root), paired, skipped, settings)


def split_photos(clean_dir: str | Path, max_side: int = 512, val_fraction: float = 0.1,
                 exclude: Sequence[str] = (), split: Split = "val"
                 ) -> tuple[list[tuple[Path, np.ndarray]], list[str]]:
    """One split of a folder of clean photos (sorted by path, names in ``exclude`` left out),
    each uint8 ``(H, W, 3)`` downscaled to ``max_side``, and the unreadable paths. ``"val"`` is
    the held-out split the tests report; ``"train"`` the other photos, for choosing settings.

    Raises:
        FileNotFoundError: no such folder.
    """
    clean_dir = Path(clean_dir)
    if not clean_dir.is_dir():
        raise FileNotFoundError(f"{clean_dir}: no such directory")
    cache = ImageCache(max_side)
    paths = [p for p in select_split(list_images(clean_dir), split, val_fraction)
             if p.stem not in set(exclude)]
    good = cache.readable(paths)
    return [(p, cache.get(p)) for p in good], [str(p) for p in paths if p not in set(good)]


def _split_name(split: Split) -> str:
    return "validation" if split == "val" else "training-split"


def synthetic_samples(clean_dir: str | Path, recipe: str = "paper", max_side: int = 512,
                      limit: int | None = None, seed: int = 0, val_fraction: float = 0.1,
                      exclude: Sequence[str] = (), split: Split = "val") -> TestSet:
    """Pairs synthesised from one split of clean photos (default: the held-out one), reproducibly.

    Each photo (``split_of(name, val_fraction) == split``, sorted by path) is downscaled to
    ``max_side`` and darkened at one level, cycling through the recipe's levels by index; every
    random number comes from ``(seed, index)``, so the set is the same in every run.

    Raises:
        FileNotFoundError: no such folder, or no readable photo in the split.
        ValueError: unknown recipe.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    config = RECIPES[recipe]
    photos, skipped = split_photos(clean_dir, max_side, val_fraction, exclude, split)
    samples = []
    for index, (path, photo) in enumerate(photos[:limit]):
        rng = np.random.default_rng([seed, index])
        level = index % config.num_levels
        high = to_tensor(photo)
        low, high, _ = make_pair(high, level, config, rng)
        samples.append(Sample(f"{path.stem}_L{level}", _to_array(low), _to_array(high)))
    if not samples:
        raise FileNotFoundError(f"{clean_dir}: no readable {_split_name(split)} photos")
    settings = {"recipe": recipe, "max_side": max_side, "limit": limit, "seed": seed,
                "val_fraction": val_fraction, "split": split, "levels": "index % num_levels"}
    return TestSet(samples, f"synthetic from {clean_dir}", True, skipped, settings)


def well_exposed_samples(clean_dir: str | Path, max_side: int = 512, limit: int | None = None,
                         val_fraction: float = 0.1, split: Split = "val") -> TestSet:
    """The clean photos of :func:`synthetic_samples` (same split, same downscaling),
    each its own ground truth (``low`` is ``high``): scores how much a method changes a photo
    that needs nothing (PSNR against the input, added clipping).

    Raises:
        FileNotFoundError: no such folder, or no readable photo in the split.
    """
    photos, skipped = split_photos(clean_dir, max_side, val_fraction, split=split)
    samples = []
    for path, photo in photos[:limit]:
        image = _to_array(to_tensor(photo))
        samples.append(Sample(path.stem, image, image))
    if not samples:
        raise FileNotFoundError(f"{clean_dir}: no readable {_split_name(split)} photos")
    settings = {"max_side": max_side, "limit": limit, "val_fraction": val_fraction,
                "split": split, "ground_truth": "the input itself (well-exposed photos)"}
    return TestSet(samples, f"well-exposed photos from {clean_dir}", True, skipped, settings)
