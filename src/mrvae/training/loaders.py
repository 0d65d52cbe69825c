"""Training data: the datasets a config asks for and loaders that resume mid-epoch.

Items are fetched by ``(epoch, index)`` in a seeded shuffle per epoch, sharded across processes,
so the batches of a run are a pure function of the seed and a resumed run takes the same ones
the uninterrupted run would have taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from mrvae.training.config import ConfigError, SourceSection, TrainConfig
from mrvae.training.distributed import Dist


class EpochIndexed(Dataset):
    """Wraps a dataset with ``set_epoch`` so that items are fetched by ``(epoch, index)``.

    Persistent worker processes hold their own copy of the dataset, so calling ``set_epoch`` in
    the main process would not reach them; passing the epoch with the index does.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        return self.dataset[index]


class EpochBatches:
    """Batches of ``(epoch, index)``: a seeded shuffle per epoch, sharded across processes.

    ``start(epoch, batch)`` positions it so a resumed run continues mid-epoch without loading
    the batches it skips.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.first = 0, 0

    def __len__(self) -> int:
        return (self.size // self.world) // self.batch_size

    def start(self, epoch: int, batch: int) -> None:
        self.epoch, self.first = epoch, batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(
            self.seed * 100003 + self.epoch)).tolist()
        mine = order[self.rank::self.world]
        for batch in range(self.first, len(self)):
            chunk = mine[batch * self.batch_size:(batch + 1) * self.batch_size]
            yield [(self.epoch, index) for index in chunk]


def _seed_worker(worker_id: int) -> None:
    # Items draw their randomness from (seed, epoch, index); this only covers stray global RNGs.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    torch.set_num_threads(1)


def loader_generator(config: TrainConfig) -> torch.Generator:
    """A loader's own generator: creating its iterator leaves the global torch RNG alone."""
    return torch.Generator().manual_seed(config.seed)


def build_datasets(config: TrainConfig) -> tuple[Dataset, dict[str, Dataset], Dataset | None]:
    """The training set (synthetic pairs, or the mixture of ``data.sources``), the
    validation sets by name (``""`` for the synthetic pairs of the held-out clean photos, a
    paired source's name for its validation split) and the scene pass's set (None when off).

    Raises:
        ConfigError: a missing folder, or no training photos.
    """
    from mrvae.data.datasets import MixedPairs, PairedFolder, SyntheticPairs

    data = config.data
    for root in data.roots + [s.root for s in data.sources if s.kind == "paired"]:
        if not Path(root).is_dir():  # type: ignore[arg-type]
            raise ConfigError(f"data: {root}: no such folder")

    def synthetic(recipes: list[str], **kwargs: Any) -> Dataset:
        pairs = SyntheticPairs(data.roots, val_fraction=data.val_fraction, degrade=recipes,
                               seed=config.seed, max_side=data.max_side, exclude=data.exclude,
                               **kwargs)
        if len(pairs) == 0:
            raise ConfigError(f"data.roots: no readable photos in {', '.join(data.roots)}")
        return pairs

    def paired(source: SourceSection, **kwargs: Any) -> Dataset:
        try:
            return PairedFolder(source.root, seed=config.seed, **kwargs)  # type: ignore[arg-type]
        except FileNotFoundError as exc:
            raise ConfigError(f"data.sources.{source.name}: {exc}") from None

    def mixture(chosen: list[SourceSection], crop: int, scene: bool) -> Dataset:
        if not data.sources:
            return synthetic(config.recipes, crop=crop, split="train", scene=scene)
        sources = [paired(source, crop=crop, split="train", augment=True, scene=scene)
                   if source.kind == "paired" else
                   synthetic(source.degrade or config.recipes, crop=crop, split="train",
                             scene=scene) for source in chosen]
        try:
            # the scene pass draws its own sequence of sources and photos
            return MixedPairs(sources, [s.weight for s in chosen], data.mix_length,
                              config.seed + int(scene))
        except ValueError as exc:
            raise ConfigError(f"data.sources: {exc}") from None

    val_pairs = synthetic(config.recipes, crop=data.val_crop, split="val", augment=False)
    val_sets: dict[str, Dataset] = {"": Subset(val_pairs, range(min(len(val_pairs),
                                                                    data.val_samples)))}
    val_sets.update({source.name: paired(source, split="val") for source in data.sources
                     if source.kind == "paired"})
    train_set = mixture(data.sources, data.crop, scene=False)
    scene = config.scene
    scene_set = None
    if scene.weight > 0:
        scene_set = mixture([s for s in data.sources
                             if scene.sources is None or s.name in scene.sources],
                            scene.side, scene=True)
    return train_set, val_sets, scene_set


def train_loader(dataset: Dataset, batch_size: int, config: TrainConfig, ddp: Dist,
                 device: torch.device) -> tuple[EpochBatches, DataLoader]:
    """This process's sampler of ``dataset`` and a loader of its batches.

    Raises:
        ConfigError: too few items for one batch per process.
    """
    sampler = EpochBatches(len(dataset), batch_size, config.seed, ddp.rank,  # type: ignore[arg-type]
                           ddp.world)
    if len(sampler) == 0:
        raise ConfigError(f"data: {len(dataset)} training items cannot fill one batch of "  # type: ignore[arg-type]
                          f"{batch_size} per process")
    workers = config.data.workers
    loader = DataLoader(EpochIndexed(dataset), batch_sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, worker_init_fn=_seed_worker,
                        pin_memory=device.type == "cuda", generator=loader_generator(config))
    return sampler, loader


def endless(sampler: EpochBatches, loader: DataLoader, step: int) -> Iterator[dict]:
    """The loader's batches from the one a run at ``step`` takes, over every later epoch."""
    epoch, first = divmod(step, len(sampler))
    while True:
        sampler.start(epoch, first)
        yield from loader
        epoch, first = epoch + 1, 0
