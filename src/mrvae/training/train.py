"""Training: one YAML config, step-based loop, validation, atomic checkpoints, exact resume, DDP.

``mrvae train --config configs/lite.yaml [--set a.b=c ...] [--resume RUN_DIR]`` calls
:func:`train`. Multi-process data parallel runs the same command through torchrun:
``torchrun --nproc_per_node N -m mrvae train --config ...`` (gloo on CPU, nccl on GPU;
``data.batch_size`` is per process).

A run directory holds ``config.yaml`` (the effective config), ``last.pt`` (everything needed to
continue exactly: model, optimiser, scheduler, grad scaler, step, best metric and every process's
RNG state), ``log.jsonl``, TensorBoard events, and ``best.safetensors`` + ``best.json`` (the model
with the best validation PSNR, loadable with :func:`mrvae.nn.model.from_pretrained`).

Every random choice is a pure function of ``(seed, step)`` or ``(seed, epoch, index)`` except the
latent sampling, whose torch RNG state is checkpointed; so a resumed run takes exactly the steps
the uninterrupted one would have taken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import sys
import time
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mrvae.io.images import atomic_file
from mrvae.nn.losses import LossConfig, distance, mrvae_loss
from mrvae.nn.model import (
    GROWABLE_FIELDS,
    MRVAE,
    ModelConfig,
    WeightsError,
    create_model,
    from_pretrained,
    load_matching,
    save_pretrained,
)
from mrvae.nn.model import PRESETS as MODEL_PRESETS
from mrvae.nn.model import resolve_device as model_device

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class ConfigError(ValueError):
    """A config that cannot be used: unknown key, wrong type, missing data folder, ..."""


# ----------------------------------------------------------------------------- config


@dataclass
class ModelSection:
    """A preset of :data:`mrvae.nn.model.PRESETS` plus optional field overrides."""

    preset: str = "lite"
    widths: list[int] | None = None
    latent_dim: int | None = None
    detail_width: int | None = None
    residual_blocks: int | None = None
    global_colour: bool | None = None
    half_width: int | None = None
    half_blocks: int | None = None
    noise_radius: int | None = None
    # a .safetensors from save_pretrained to start from; it may lack parts the run's model adds
    # (global_colour, DR's half-resolution branch and noise conditioning), which then start as
    # initialised
    init_weights: str | None = None


@dataclass
class SourceSection:
    """One source of a training mixture: real pairs from a folder, or synthetic pairs.

    ``paired``: ``root`` holds ``low/`` + ``high/`` (LOL layout); its training split is trained
    on and its fixed validation split (:func:`mrvae.data.datasets.pair_split_of`) is scored at every
    validation as ``val_<name>_psnr`` / ``val_<name>_ssim``, whole images. ``synthetic``: pairs
    made from ``data.roots`` with the recipes ``degrade`` (default: ``data.degrade``).
    """

    name: str = "synthetic"
    kind: Literal["synthetic", "paired"] = "synthetic"
    weight: float = 1.0
    root: str | None = None
    degrade: list[str] | None = None


@dataclass
class DataSection:
    """Synthetic pairs made on the fly from folders of clean photos, optionally mixed with
    other sources (``sources``: then each item comes from one source, by weight)."""

    roots: list[str] = field(default_factory=lambda: ["../shared/data/clean"])
    crop: int = 128
    batch_size: int = 8  # per process
    workers: int = 1
    val_fraction: float = 0.1
    max_side: int = 512
    degrade: str | list[str] = field(default_factory=lambda: ["paper", "realistic"])
    exclude: list[str] = field(default_factory=list)
    val_samples: int = 64
    val_crop: int = 256
    sources: list[SourceSection] = field(default_factory=list)
    mix_length: int = 2048  # items in one epoch of a mixture


@dataclass
class SceneSection:
    """The scene pass: with each crop batch, FPDC + GR also see a batch of whole scenes.

    At run time the global pass decides a photo's exposure and colour from the whole photo
    (long side up to 512 px); a training crop shows it only a part. Each scene item is a photo
    shrunk so its short side is ``side``, cropped square (most of the scene), and GR's output on
    it is scored against the truth with ``loss.global_distance``, times ``weight``. ``weight``
    0 turns the pass off. ``sources``: names of ``data.sources`` to draw from by their weights
    (all of them by default; the synthetic pairs of ``data.degrade`` without sources).
    """

    weight: float = 0.0
    side: int = 256
    batch_size: int = 4  # per process
    sources: list[str] | None = None


@dataclass
class OptimSection:
    """Adam with a learning-rate schedule and gradient-norm clipping."""

    lr: float = 1e-3
    schedule: Literal["exp", "cosine", "constant"] = "cosine"
    decay_rate: float = 0.96  # exp: factor every decay_steps (staircase, as the release)
    decay_steps: int = 5000
    min_lr: float = 1e-6
    warmup_steps: int = 0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    # names of the parts trained (prefixes of parameter names, e.g. ``detail_reconstruction``);
    # the rest is frozen. None trains everything.
    train_only: list[str] | None = None


@dataclass
class TrainConfig:
    """Everything a training run needs; ``TrainConfig.from_yaml(path, overrides)`` loads one."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossConfig = field(default_factory=LossConfig)
    scene: SceneSection = field(default_factory=SceneSection)
    optim: OptimSection = field(default_factory=OptimSection)
    steps: int = 20000
    log_interval: int = 50
    val_interval: int = 1000
    checkpoint_interval: int = 500
    val_images: int = 4  # validation images (low | GR | DR | truth) written to TensorBoard
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # mixed precision on GPU (ignored on CPU)
    threads: int = 0  # torch CPU threads per process; 0 = cores / processes
    channels_last: bool = True  # NHWC convolutions: about 2x faster on CPU (oneDNN)
    global_scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])
    best_metric: str = "val_psnr"  # the validation score that picks best.safetensors
    run_dir: str | None = None  # default runs/<preset>-<date>

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        config = _build(cls, data, source)
        config.validate(source)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
        """Load a YAML file (or the defaults when ``path`` is None) and apply ``a.b=c`` overrides.

        Raises:
            ConfigError: unreadable file, bad YAML, unknown key, wrong type or value.
        """
        data: dict[str, Any] = {}
        source = "defaults"
        if path is not None:
            source = str(path)
            try:
                loaded = yaml.safe_load(Path(path).read_text())
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: invalid YAML ({exc})") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{path}: a config must be a mapping of keys")
            data = loaded or {}
        for item in overrides:
            apply_override(data, item)
        return cls.from_dict(data, source)

    def validate(self, source: str = "config") -> None:
        from mrvae.data.degrade import PRESETS as RECIPES

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"{source}: {message}")

        check(self.model.preset in MODEL_PRESETS,
              f"model.preset must be one of {sorted(MODEL_PRESETS)}")
        for recipe in self.recipes + [r for src in self.data.sources for r in src.degrade or []]:
            check(recipe in RECIPES, f"data.degrade: unknown recipe {recipe!r}; "
                                     f"choose from {sorted(RECIPES)}")
        names = [source.name for source in self.data.sources]
        check(len(set(names)) == len(names), f"data.sources: names must differ, got {names}")
        for item in self.data.sources:  # not ``source``: check() reports that name
            check(item.weight >= 0, f"data.sources.{item.name}: weight must be >= 0")
            check(item.kind != "paired" or bool(item.root),
                  f"data.sources.{item.name}: a paired source needs a root folder")
        check(not self.data.sources or sum(s.weight for s in self.data.sources) > 0,
              "data.sources: the weights sum to 0")
        check(self.data.mix_length >= 1, "data.mix_length must be >= 1")
        scene = self.scene
        check(scene.weight >= 0, "scene.weight must be >= 0")
        check(scene.side >= 8 and scene.batch_size >= 1,
              "scene.side must be >= 8 and scene.batch_size >= 1")
        unknown = sorted(set(scene.sources or []) - set(names))
        check(not unknown, f"scene.sources: {unknown} not among data.sources {names}")
        check(scene.sources is None or sum(
            s.weight for s in self.data.sources if s.name in scene.sources) > 0,
            "scene.sources: their weights sum to 0")
        check(self.best_metric == "val_psnr" or any(
            self.best_metric in (f"val_{n}_psnr", f"val_{n}_ssim") for n in names),
            f"best_metric: {self.best_metric!r} is not scored; use val_psnr or "
            "val_<paired source>_psnr / _ssim")
        check(bool(self.data.roots), "data.roots is empty")
        check(self.data.crop >= 8 and self.data.val_crop >= 8, "data.crop must be >= 8")
        check(self.data.batch_size >= 1, "data.batch_size must be >= 1")
        check(self.data.workers >= 0, "data.workers must be >= 0")
        check(0.0 <= self.data.val_fraction < 1.0, "data.val_fraction must be in [0, 1)")
        check(self.steps >= 1, "steps must be >= 1")
        for name in ("log_interval", "val_interval", "checkpoint_interval"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1")
        check(bool(self.global_scales) and all(0 < s <= 1 for s in self.global_scales),
              "global_scales must be a non-empty list of numbers in (0, 1]")
        check(self.optim.lr > 0 and self.optim.decay_steps >= 1, "optim.lr and decay_steps > 0")
        try:
            self.model_config()
        except ValueError as exc:
            raise ConfigError(f"{source}: model: {exc}") from None

    @property
    def recipes(self) -> list[str]:
        degrade = self.data.degrade
        return [degrade] if isinstance(degrade, str) else list(degrade)

    def model_overrides(self) -> dict[str, Any]:
        # every field of ModelConfig has its optional twin in ModelSection
        return {field_.name: getattr(self.model, field_.name)
                for field_ in dataclasses.fields(ModelConfig)
                if getattr(self.model, field_.name) is not None}

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict({**MODEL_PRESETS[self.model.preset].to_dict(),
                                      **self.model_overrides()})


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b=c`` in a nested dict; the value is parsed as YAML (numbers, lists, null...)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=5e-4")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def _build(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    """A dataclass from a dict, rejecting unknown keys and values of the wrong type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, "
                          f"got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(prefix + key for key in set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known: "
                          f"{sorted(prefix + name for name in names)}")
    return cls(**{name: _coerce(value, hints[name], source, prefix + name)
                  for name, value in data.items()})


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    """``value`` checked against (and lightly converted to) the type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    where = f"{source}: {key}"
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, source, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if len(errors) == 1 else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, args[0], source, key) for v in value]
    checks = {bool: (lambda v: isinstance(v, bool), "true or false"),
              int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
              float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                      "a number"),
              str: (lambda v: isinstance(v, str), "a string")}
    if hint is float and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads 5e-4 (no dot) as a string
            value = float(value)
    if hint in checks:
        ok, expected = checks[hint]
        if not ok(value):
            raise ConfigError(f"{where} must be {expected}, got {value!r}")
        return float(value) if hint is float else value
    return value


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- data


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


def _loader_generator(config: TrainConfig) -> torch.Generator:
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


# ----------------------------------------------------------------------------- optimisation


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning rate at ``step`` as a factor of ``optim.lr``."""
    optim = config.optim
    floor = min(1.0, optim.min_lr / optim.lr)
    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "exp":
        return max(floor, optim.decay_rate ** (step // optim.decay_steps))
    if optim.schedule == "cosine":
        span = max(1, config.steps - optim.warmup_steps)
        progress = min(1.0, (step - optim.warmup_steps) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def global_scale_at(step: int, config: TrainConfig) -> float:
    """The GR scale of a step: a pure function of (seed, step), identical on every process."""
    rng = np.random.default_rng([config.seed, step])
    return float(config.global_scales[int(rng.integers(0, len(config.global_scales)))])


def build_model(config: TrainConfig) -> MRVAE:
    """A fresh model (seeded), or the weights of ``model.init_weights``."""
    torch.manual_seed(config.seed)
    model = create_model(config.model.preset, **config.model_overrides())
    if config.model.init_weights:
        try:
            pretrained = from_pretrained(config.model.init_weights)
        except WeightsError as exc:
            raise ConfigError(f"model.init_weights: {exc}") from None
        grown = dataclasses.replace(pretrained.config, **{
            name: getattr(model.config, name) for name in GROWABLE_FIELDS})
        if grown != model.config:
            raise ConfigError(f"model.init_weights: {config.model.init_weights} has config "
                              f"{pretrained.config.to_dict()}, the run wants "
                              f"{model.config.to_dict()}")
        fresh = load_matching(model, pretrained.state_dict())
        if fresh:
            log.warning("model.init_weights: %d new tensors start as initialised", len(fresh))
    return model


def trainable_parameters(model: nn.Module, prefixes: list[str] | None) -> list[nn.Parameter]:
    """The parameters whose names start with one of ``prefixes`` (all when None); the others
    are frozen (``requires_grad`` off).

    Raises:
        ConfigError: a prefix names no parameter.
    """
    named = dict(model.named_parameters())
    if prefixes is None:
        return list(named.values())
    unknown = [p for p in prefixes if not any(name.startswith(p) for name in named)]
    if unknown:
        raise ConfigError(f"optim.train_only: {unknown} name no part of the model")
    for name, parameter in named.items():
        parameter.requires_grad_(name.startswith(tuple(prefixes)))
    return [parameter for parameter in named.values() if parameter.requires_grad]


# ----------------------------------------------------------------------------- metrics


@torch.no_grad()
def validate(model: MRVAE, loader: DataLoader, device: torch.device,
             keep: int = 0, name: str = "") -> tuple[dict[str, float], list[torch.Tensor]]:
    """Mean PSNR/SSIM of DR (and PSNR of GR) on the validation pairs, full-scale GR.

    Returns the metrics (``val_psnr``, ..., or ``val_<name>_psnr``, ... for a named set) and up
    to ``keep`` image rows ``(4, 3, H, W)``: low, GR, DR, ground truth.
    """
    was_training = model.training
    model.eval()
    from mrvae.evaluation.metrics import psnr, ssim

    scores: dict[str, list[float]] = {"val_psnr": [], "val_ssim": [], "val_psnr_gr": []}
    rows: list[torch.Tensor] = []
    for batch in loader:
        out = model(batch["low"].to(device))
        for low, global_image, detail, high in zip(
                batch["low"], out.global_image.float().clamp(0, 1).cpu(),
                out.detail.float().clamp(0, 1).cpu(), batch["high"], strict=True):
            as_array = [x.permute(1, 2, 0).numpy() for x in (global_image, detail, high)]
            scores["val_psnr"].append(psnr(as_array[1], as_array[2]))
            scores["val_ssim"].append(ssim(as_array[1], as_array[2]))
            scores["val_psnr_gr"].append(psnr(as_array[0], as_array[2]))
            if len(rows) < keep:
                rows.append(torch.stack([low, global_image, detail, high]))
    model.train(was_training)
    prefix = f"val_{name}_" if name else "val_"
    return {k.replace("val_", prefix, 1): float(np.mean(v)) for k, v in scores.items() if v}, rows


# ----------------------------------------------------------------------------- checkpoints


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename: the old file survives a kill."""
    with atomic_file(path, fsync=True) as handle:
        torch.save(obj, handle)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read ``last.pt``. Raises ConfigError on a corrupt or foreign file."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise ConfigError(f"{path}: cannot read checkpoint ({exc})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not an mrvae training checkpoint")
    return checkpoint


# ----------------------------------------------------------------------------- the loop


@dataclass
class Dist:
    """This process's place in a (possibly single-process) group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun group when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(config: TrainConfig) -> str:
    """``"cpu"`` or ``"cuda"`` for the config's device (``auto`` picks CUDA when present)."""
    try:
        return model_device(config.device).type
    except ValueError as exc:
        raise ConfigError(f"device: {exc}") from None


def default_run_dir(config: TrainConfig) -> str:
    return str(Path("runs") / f"{config.model.preset}-{dt.datetime.now():%Y%m%d-%H%M%S}")


def _broadcast_str(value: str, ddp: Dist) -> str:
    if ddp.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj: Any, ddp: Dist) -> list[Any]:
    if ddp.world == 1:
        return [obj]
    out: list[Any] = [None] * ddp.world
    dist.all_gather_object(out, obj)
    return out


class RunLog:
    """``log.jsonl`` + TensorBoard, written by the main process only."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.writer = None
        if not enabled:
            return
        if self.path.exists():  # drop what a killed run logged after its last checkpoint
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and _step_of(line) <= start_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir), purge_step=start_step)

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in values.items():
            if isinstance(value, (int, float)) and self.writer is not None:
                group = "val" if name.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{name}", value, step)

    def images(self, step: int, rows: list[torch.Tensor]) -> None:
        """Each row ``(4, 3, H, W)`` shown side by side: low | GR | DR | ground truth."""
        if self.writer is not None and rows:
            strips = torch.stack([torch.cat(list(row), dim=-1) for row in rows])
            self.writer.add_images("val/low_gr_dr_truth", strips.clamp(0, 1), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62


def train(config: TrainConfig, progress: bool = True) -> Path:
    """Run ``config``, or continue it when its run dir already holds ``last.pt``.

    ``progress`` shows a progress bar (main process only) with the loss terms and images/s.

    Returns:
        The run directory.

    Raises:
        ConfigError: bad config, missing data, unreadable checkpoint.
    """
    device_kind = resolve_device(config)
    ddp = init_distributed(device_kind)
    try:
        return _train(config, device_kind, ddp, progress)
    finally:
        if ddp.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, device_kind: str, ddp: Dist, progress: bool) -> Path:
    from tqdm import tqdm

    threads = config.threads or max(1, (os.cpu_count() or 1) // ddp.world)
    torch.set_num_threads(threads)
    device = torch.device(f"cuda:{ddp.local_rank}" if device_kind == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, roots=[str(Path(root).resolve()) for root in config.data.roots]))
    run_dir = Path(_broadcast_str(config.run_dir or default_run_dir(config), ddp))
    config = dataclasses.replace(config, run_dir=str(run_dir))

    train_set, val_sets, scene_set = build_datasets(config)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config).to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(trainable_parameters(model, config.optim.train_only),
                                 lr=config.optim.lr,
                                 betas=tuple(config.optim.betas),  # type: ignore[arg-type]
                                 weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    checkpoint_path = run_dir / "last.pt"
    step, best = 0, {config.best_metric: -math.inf}
    if checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        step, best = int(checkpoint["step"]), dict(checkpoint["best"])
        states = checkpoint["rng"]
        if len(states) == ddp.world:
            set_rng_state(states[ddp.rank])
        else:
            log.warning("resuming with %d processes instead of %d: latent noise reseeded",
                        ddp.world, len(states))
            torch.manual_seed(config.seed + 1000 * ddp.rank + step)
    else:
        torch.manual_seed(config.seed + 1000 * ddp.rank)

    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        text = dump_config(config)
        (run_dir / "config.yaml").write_text(text)
        print((f"resuming at step {step}\n" if step else "") + text, file=sys.stderr)
    net: nn.Module = model
    if ddp.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    sampler, loader = _train_loader(train_set, config.data.batch_size, config, ddp, device)
    scene_batches = None
    if scene_set is not None:
        scene_batches = _endless(*_train_loader(scene_set, config.scene.batch_size, config, ddp,
                                                device), step)
    # Own generators: creating a loader iterator must not draw from the global torch RNG,
    # whose state (latent sampling) is part of the exact resume.
    # Paired sets are scored on whole images, which may differ in size: one at a time.
    val_loaders = {name: DataLoader(val_set, batch_size=1 if name else max(
                       1, config.data.batch_size // 2), generator=_loader_generator(config))
                   for name, val_set in val_sets.items()}
    run_log = RunLog(run_dir, step, ddp.main)
    with_target = config.loss.mode == "multi" and config.loss.content_weight > 0

    sums: dict[str, float] = {}
    count, images, tick = 0, 0, time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, disable=not (ddp.main and progress),
               dynamic_ncols=True, desc=run_dir.name, mininterval=1.0)
    net.train()
    batches = _endless(sampler, loader, step)
    while step < config.steps:
        batch = next(batches)
        low = batch["low"].to(device, non_blocking=True, memory_format=memory_format)
        high = batch["high"].to(device, non_blocking=True, memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            output = net(low, target=high if with_target else None,
                         global_scale=global_scale_at(step, config))
        output = dataclasses.replace(output, **{
            f.name: getattr(output, f.name).float() for f in dataclasses.fields(output)
            if getattr(output, f.name) is not None})
        loss, terms = mrvae_loss(output, high, config.loss)
        if scene_batches is not None:
            scene = next(scene_batches)
            scene_low = scene["low"].to(device, memory_format=memory_format)
            scene_loss = _scene_loss(model, scene_low, scene["high"].to(device), config, use_amp)
            loss = loss + scene_loss
            terms["scene"] = float(scene_loss.detach())
            terms["total"] = float(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            terms["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(),
                                                                config.optim.grad_clip))
        if use_amp or math.isfinite(terms.get("grad_norm", terms["total"])):
            scaler.step(optimizer)  # the AMP scaler skips non-finite steps itself
        else:
            log.warning("step %d: non-finite loss or gradient, update skipped", step + 1)
        scaler.update()
        scheduler.step()
        step += 1
        count += 1
        images += len(low) * ddp.world
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        bar.update(1)

        if step % config.log_interval == 0 or step == config.steps:
            elapsed = time.perf_counter() - tick
            means = {name: value / count for name, value in sums.items()}
            record = {**means, "lr": scheduler.get_last_lr()[0],
                      "images_per_s": images / max(elapsed, 1e-9),
                      "epoch": (step - 1) // len(sampler)}
            run_log.write(step, record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                             if k in ("total", "global", "detail", "content", "kl",
                                      "single_l2", "scene", "images_per_s")}, refresh=False)
            sums, count, images, tick = {}, 0, 0, time.perf_counter()
        if step % config.val_interval == 0 or step == config.steps:
            if ddp.main:
                _validate_and_keep_best(model, val_loaders, device, config, step, best,
                                        run_log, run_dir)
            tick = time.perf_counter()  # validation time is not training throughput
        if step % config.checkpoint_interval == 0 or step == config.steps:
            states = _gather(rng_state(), ddp)
            if ddp.main:
                save_atomic({"format": CHECKPOINT_FORMAT, "step": step,
                             "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict(), "best": best, "rng": states,
                             "config": config.to_dict()}, checkpoint_path)
    bar.close()
    run_log.close()
    return run_dir


def _train_loader(dataset: Dataset, batch_size: int, config: TrainConfig, ddp: Dist,
                  device: torch.device) -> tuple[EpochBatches, DataLoader]:
    sampler = EpochBatches(len(dataset), batch_size, config.seed, ddp.rank,  # type: ignore[arg-type]
                           ddp.world)
    if len(sampler) == 0:
        raise ConfigError(f"data: {len(dataset)} training items cannot fill one batch of "  # type: ignore[arg-type]
                          f"{batch_size} per process")
    workers = config.data.workers
    loader = DataLoader(EpochIndexed(dataset), batch_sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, worker_init_fn=_seed_worker,
                        pin_memory=device.type == "cuda", generator=_loader_generator(config))
    return sampler, loader


def _endless(sampler: EpochBatches, loader: DataLoader, step: int) -> Iterator[dict]:
    """The loader's batches from the one a run at ``step`` takes, over every later epoch."""
    epoch, first = divmod(step, len(sampler))
    while True:
        sampler.start(epoch, first)
        yield from loader
        epoch, first = epoch + 1, 0


def _scene_loss(model: MRVAE, low: torch.Tensor, high: torch.Tensor, config: TrainConfig,
                use_amp: bool) -> torch.Tensor:
    """``scene.weight`` times GR's distance to the truth on whole scenes (the latent mean: the
    decision the global pass makes at run time)."""
    with torch.autocast(low.device.type, dtype=torch.float16, enabled=use_amp):
        global_image = model.reconstruct_global(low)[0]
    return config.scene.weight * distance(global_image.float(), high,
                                          config.loss.global_distance)


def _validate_and_keep_best(model: MRVAE, val_loaders: dict[str, DataLoader],
                            device: torch.device, config: TrainConfig, step: int,
                            best: dict[str, Any], run_log: RunLog, run_dir: Path) -> None:
    """Validate on every set; write ``best.safetensors`` when ``config.best_metric`` improves
    (or always, with no validation pairs)."""
    metrics: dict[str, float] = {}
    for name, loader in val_loaders.items():
        scores, rows = validate(model, loader, device, keep=config.val_images, name=name)
        metrics.update(scores)
        if not name:
            run_log.images(step, rows)
    if metrics:
        run_log.write(step, metrics)
    key = config.best_metric
    improved = key not in metrics or metrics[key] > best.get(key, -math.inf)
    if improved:
        best.clear()
        best.update({key: metrics.get(key, -math.inf), "step": step})
        card = {"preset": config.model.preset, "step": step, **metrics,
                "data": {"roots": config.data.roots, "degrade": config.recipes,
                         "crop": config.data.crop, "exclude": config.data.exclude,
                         "sources": [dataclasses.asdict(s) for s in config.data.sources]},
                "train_config": config.to_dict(),
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        save_pretrained(model, run_dir / "best.safetensors", card)
