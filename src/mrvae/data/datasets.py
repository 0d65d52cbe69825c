"""Datasets: pairs synthesised on the fly from clean photos, and pairs read from folders.

Samples are dicts ``{"low": (3, H, W), "high": (3, H, W), "level": int, "name": str}`` with
float32 tensors in [0, 1]; the default collate stacks them to ``(B, 3, H, W)``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mrvae.data.degrade import PRESETS, DegradeConfig, add_lamps, synthesize
from mrvae.io.decode import read_rgb
from mrvae.io.files import atomic_file, list_images, write_bytes_atomic
from mrvae.io.pixels import ImageReadError, fit_short_side

log = logging.getLogger(__name__)

Split = Literal["train", "val", "all"]


def split_of(name: str, val_fraction: float) -> Literal["train", "val"]:
    """Deterministic train/validation split by a hash of the file name (not the path)."""
    digest = hashlib.sha1(Path(name).name.encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


# Numbered pairs (LOL): blocks of 20 numbers, every sixth block held out. LOL shot some scenes
# several times under neighbouring numbers, so whole blocks keep near-duplicates on one side.
PAIR_BLOCK, PAIR_VAL_EVERY = 20, 6


def pair_split_of(name: str, val_fraction: float = 0.1) -> Literal["train", "val"]:
    """The fixed split of a paired set: by number block for numbered files (``N.png`` is
    validation when ``(N // 20) % 6 == 0``), else :func:`split_of` by name hash."""
    stem = Path(name).stem
    if stem.isdigit():
        return "val" if (int(stem) // PAIR_BLOCK) % PAIR_VAL_EVERY == 0 else "train"
    return split_of(name, val_fraction)


def select_split(paths: Sequence[Path], split: Split, val_fraction: float) -> list[Path]:
    if split == "all":
        return list(paths)
    return [p for p in paths if split_of(p.name, val_fraction) == split]


def default_cache_dir() -> Path:
    return Path(os.environ.get("MRVAE_CACHE", Path.home() / ".cache" / "mrvae"))


class ImageCache:
    """Decoded, downscaled copies of photos, kept as ``.npy`` files and in memory.

    Large camera JPEGs take a second or more to decode; training reads each photo many times, so
    each is decoded once, downscaled to ``max_side`` and stored under ``cache_dir`` keyed by path,
    size and modification time (a changed file is decoded again).
    """

    def __init__(self, max_side: int = 512, cache_dir: str | Path | None = None) -> None:
        self.max_side = max_side
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "images"
        self._memory: dict[Path, np.ndarray] = {}

    def _key(self, path: Path) -> Path:
        stat = path.stat()
        ident = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.max_side}"
        return self.cache_dir / f"{hashlib.sha1(ident.encode()).hexdigest()}.npy"

    def get(self, path: Path) -> np.ndarray:
        """uint8 ``(H, W, 3)`` RGB, long side at most ``max_side``. Raises ImageReadError."""
        if path in self._memory:
            return self._memory[path]
        key = self._key(path)
        try:
            arr = np.load(key)
        except (OSError, ValueError):
            arr = read_rgb(path, self.max_side)
            key.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(key) as handle:
                np.save(handle, arr)
        self._memory[path] = arr
        return arr

    def readable(self, paths: Sequence[Path]) -> list[Path]:
        """The paths that decode, warming the cache; unreadable ones are logged and dropped."""
        good = []
        for path in paths:
            try:
                self.get(path)
                good.append(path)
            except (ImageReadError, OSError) as exc:
                log.warning("skipping unreadable image: %s", exc)
        return good


def random_crop_flip(img: np.ndarray, size: int, rng: np.random.Generator,
                     augment: bool = True, scene: bool = False) -> np.ndarray:
    """A ``size`` x ``size`` crop (upscaled first if the image is smaller) with random flips.

    ``scene``: shrink the image first so its short side is ``size``; the crop then holds most of
    the scene, as the global pass sees a whole photo at run time (at most 4 channels).
    """
    if scene:
        img = fit_short_side(img, size)
    height, width = img.shape[:2]
    if min(height, width) < size:
        scale = size / min(height, width)
        img = cv2.resize(img, (max(size, round(width * scale)), max(size, round(height * scale))),
                         interpolation=cv2.INTER_CUBIC)
        height, width = img.shape[:2]
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    crop = img[top:top + size, left:left + size]
    if augment:
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1]
        if rng.random() < 0.5:
            crop = crop.transpose(1, 0, 2)
    return np.ascontiguousarray(crop)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 or float ``(H, W, C)`` array -> float32 ``(C, H, W)`` tensor in [0, 1]."""
    arr = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def jpeg_roundtrip(img: torch.Tensor, quality: int) -> torch.Tensor:
    """Compress a ``(3, H, W)`` image as JPEG at ``quality`` and decode it again."""
    arr = np.round(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", arr[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return img
    return to_tensor(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


def make_pair(high: torch.Tensor, level: int, recipe: DegradeConfig,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The pair for a clean photo ``(3, H, W)``: the recipe's lamps painted in (the target keeps
    them), the recipe, then its JPEG step if any.

    All randomness comes from ``rng``: a lamp seed and count (only when the recipe paints
    lamps), a noise seed, then the JPEG quality, in that order.

    Returns:
        ``(low, high, info)``: the low-light image, the target, and the parameters used (those
        of :func:`synthesize`, plus ``lamps`` and ``jpeg_quality`` when the recipe has them).
    """
    lamps = 0
    if recipe.lamps:
        lamp_generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        lamps = int(rng.integers(1, recipe.lamps, endpoint=True))
        high = add_lamps(high.unsqueeze(0), lamps, lamp_generator)[0]
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    low, info = synthesize(high, level, recipe, generator)
    if lamps:
        info["lamps"] = lamps
    if recipe.jpeg_quality is not None:
        info["jpeg_quality"] = int(rng.integers(*recipe.jpeg_quality, endpoint=True))
        low = jpeg_roundtrip(low, info["jpeg_quality"])
    return low, high, info


class SyntheticPairs(Dataset):
    """(low, high) pairs synthesised on the fly from a folder (or folders) of clean photos.

    Each item takes a random crop with flips of one photo, a random recipe (when ``degrade``
    lists several: names of :data:`mrvae.data.degrade.PRESETS` or configs) and a random
    brightness level. The randomness of item ``i`` comes from ``(seed, epoch, i)`` only, so it
    is the same in any worker process and any run; call :meth:`set_epoch` to draw new crops
    each epoch. Validation items (``augment=False``) are fixed crops at fixed levels. ``scene``
    crops shrunk photos (see :func:`random_crop_flip`).
    """

    def __init__(self, roots: str | Path | Sequence[str | Path], crop: int = 128,
                 split: Split = "train", val_fraction: float = 0.1,
                 degrade: DegradeConfig | str | Sequence[DegradeConfig | str] = "paper",
                 seed: int = 0, max_side: int = 512,
                 cache_dir: str | Path | None = None, augment: bool | None = None,
                 repeat: int = 1, exclude: Sequence[str] = (), scene: bool = False) -> None:
        roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        paths = [p for root in roots for p in list_images(root)]
        paths = [p for p in paths if p.stem not in set(exclude)]
        self.cache = ImageCache(max_side, cache_dir)
        self.paths = self.cache.readable(select_split(paths, split, val_fraction))
        self.crop, self.scene = crop, scene
        recipes = [degrade] if isinstance(degrade, (str, DegradeConfig)) else list(degrade)
        self.recipes = [PRESETS[r] if isinstance(r, str) else r for r in recipes]
        self.seed = seed
        self.epoch = 0
        self.augment = split != "val" if augment is None else augment
        self.repeat = repeat

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths) * self.repeat

    def __getitem__(self, index: int) -> dict:
        epoch = self.epoch if self.augment else 0
        rng = np.random.default_rng([self.seed, epoch, index])
        path = self.paths[index % len(self.paths)]
        high = to_tensor(random_crop_flip(self.cache.get(path), self.crop, rng, self.augment,
                                          self.scene))
        recipe = self.recipes[int(rng.integers(0, len(self.recipes)))]
        level = int(rng.integers(0, recipe.num_levels))
        low, high, _ = make_pair(high, level, recipe, rng)
        return {"low": low, "high": high, "level": level, "name": path.name}


class MixedPairs(Dataset):
    """Pairs drawn from several datasets (real pairs, synthetic recipes, ...) by weight.

    Item ``i`` of an epoch picks its source with probability proportional to ``weights`` and a
    random item of that source, both from ``(seed, epoch, i)``; ``set_epoch`` reaches every
    source, so crops change from epoch to epoch. Every source must yield the same crop size.
    """

    def __init__(self, sources: Sequence[Dataset], weights: Sequence[float], length: int,
                 seed: int = 0) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("MixedPairs needs one weight per source, and a source")
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {weights}")
        empty = [i for i, source in enumerate(sources) if len(source) == 0]  # type: ignore[arg-type]
        if empty:
            raise ValueError(f"source(s) {empty} of the mixture hold no pairs")
        self.sources = list(sources)
        self.probabilities = np.asarray(weights, dtype=np.float64) / float(sum(weights))
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for source in self.sources:
            source.set_epoch(epoch)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index, 7])
        source = self.sources[int(rng.choice(len(self.sources), p=self.probabilities))]
        return source[int(rng.integers(0, len(source)))]  # type: ignore[arg-type]


def level_from_name(name: str) -> int:
    """The level written into a file name by ``mrvae synth`` (``photo_L2.png`` -> 2), else -1."""
    stem = Path(name).stem
    head, sep, tail = stem.rpartition("_L")
    return int(tail) if sep and head and tail.isdigit() else -1


class PairedFolder(Dataset):
    """Pairs read from ``ROOT/low/`` and ``ROOT/high/`` with the same file names.

    Reads the output of ``mrvae synth`` and LOL-style folders (``low``/``high``, or
    ``input``/``target``); ``split`` follows :func:`pair_split_of`. ``crop`` takes a random
    (train) or centre (``augment=False``) crop; with ``scene`` both images are first shrunk so
    their short side is ``crop`` (see :func:`random_crop_flip`).
    Pairs with unreadable files are dropped with a warning when the dataset is built.
    """

    LAYOUTS = (("low", "high"), ("input", "target"), ("input", "gt"))

    def __init__(self, root: str | Path, crop: int | None = None, split: Split = "all",
                 val_fraction: float = 0.1, seed: int = 0, augment: bool = False,
                 scene: bool = False) -> None:
        root = Path(root)
        for low_name, high_name in self.LAYOUTS:
            if (root / low_name).is_dir() and (root / high_name).is_dir():
                low_dir, high_dir = root / low_name, root / high_name
                break
        else:
            raise FileNotFoundError(f"{root}: no low/ and high/ folders")
        highs = {p.relative_to(high_dir): p for p in list_images(high_dir)}
        pairs = []
        for low in list_images(low_dir):
            rel = low.relative_to(low_dir)
            high = highs.get(rel) or next(
                (h for r, h in highs.items() if r.with_suffix("") == rel.with_suffix("")), None)
            if high is None:
                log.warning("no ground truth for %s: skipped", low)
                continue
            pairs.append((low, high))
        pairs = [pair for pair in pairs if split == "all"
                 or pair_split_of(pair[0].name, val_fraction) == split]
        self.cache = ImageCache(max_side=1 << 30)
        good = set(self.cache.readable([p for pair in pairs for p in pair]))
        self.pairs = [pair for pair in pairs if pair[0] in good and pair[1] in good]
        self.crop, self.seed, self.augment, self.epoch = crop, seed, augment, 0
        self.scene = scene

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        low_path, high_path = self.pairs[index]
        low, high = self.cache.get(low_path), self.cache.get(high_path)
        if low.shape != high.shape:
            high = cv2.resize(high, (low.shape[1], low.shape[0]), interpolation=cv2.INTER_AREA)
        if self.crop is not None:
            if self.scene:  # one at a time: OpenCV shrinks at most 4 channels
                low, high = fit_short_side(low, self.crop), fit_short_side(high, self.crop)
            rng = np.random.default_rng([self.seed, self.epoch if self.augment else 0, index])
            if not self.augment:
                low, high = _center_crop(low, self.crop), _center_crop(high, self.crop)
            else:
                stacked = random_crop_flip(np.concatenate([low, high], axis=2), self.crop, rng)
                low, high = stacked[:, :, :3], stacked[:, :, 3:]
        return {"low": to_tensor(low), "high": to_tensor(high),
                "level": level_from_name(low_path.name), "name": low_path.name}


def _center_crop(img: np.ndarray, size: int) -> np.ndarray:
    height, width = img.shape[:2]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return np.ascontiguousarray(img[top:top + size, left:left + size])


def write_synthetic_pairs(src: str | Path, out: str | Path, degrade: DegradeConfig,
                          levels: Sequence[int] | None = None, seed: int = 0,
                          crop: int | None = None, max_side: int | None = None) -> dict:
    """Synthesise a paired data set on disk: ``out/low/NAME_L{k}.png``, ``out/high/`` alike.

    One low image per source photo and level; the high image of each pair is the (cropped)
    source under the same name. ``out/manifest.json`` records every pair's parameters and the
    recipe, so the set can be made again. Unreadable sources are skipped and listed.

    Returns:
        The manifest dict.
    """
    import json

    from mrvae.io.encode import write_image

    src, out = Path(src), Path(out)
    paths = list_images(src)
    if not paths:
        raise FileNotFoundError(f"{src}: no images found")
    levels = list(range(degrade.num_levels)) if levels is None else list(levels)
    for level in levels:
        degrade.level_strength(level)  # validates the index
    (out / "low").mkdir(parents=True, exist_ok=True)
    (out / "high").mkdir(parents=True, exist_ok=True)
    manifest: dict = {"source": str(src), "seed": seed, "crop": crop, "max_side": max_side,
                      "degrade": degrade.to_dict(), "pairs": [], "skipped": []}
    for index, path in enumerate(paths):
        try:
            img = read_rgb(path, max_side)
        except ImageReadError as exc:
            log.warning("skipping %s", exc)
            manifest["skipped"].append({"file": str(path), "reason": str(exc)})
            continue
        rng = np.random.default_rng([seed, index])
        if crop is not None:
            img = random_crop_flip(img, crop, rng, augment=False)
        high = to_tensor(img)
        stem = path.relative_to(src).with_suffix("").as_posix().replace("/", "__") \
            if src.is_dir() else path.stem
        for level in levels:
            low, target, info = make_pair(high, level, degrade, rng)
            name = f"{stem}_L{level}.png"
            write_image(out / "low" / name, low.permute(1, 2, 0).numpy())
            write_image(out / "high" / name, target.permute(1, 2, 0).numpy())
            manifest["pairs"].append({"name": name, "source": str(path), **info})
    write_bytes_atomic(out / "manifest.json", json.dumps(manifest, indent=2).encode())
    return manifest
