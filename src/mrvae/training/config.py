"""The training config: one YAML file, ``a.b=c`` overrides, checked keys and types.

:class:`TrainConfig` has one dataclass section per concern (model, data, loss, scene pass,
optimiser) and the loop's own settings. :meth:`TrainConfig.from_yaml` loads a file (or the
defaults), applies ``--set`` overrides with :func:`apply_override` and rejects unknown keys,
values of the wrong type and unusable settings with :class:`ConfigError`;
:func:`dump_config` writes the effective config back as YAML.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mrvae.nn.config import PRESETS as MODEL_PRESETS
from mrvae.nn.config import ModelConfig
from mrvae.nn.losses import LossConfig


class ConfigError(ValueError):
    """A config that cannot be used: unknown key, wrong type, missing data folder, ..."""


@dataclass
class ModelSection:
    """A preset of :data:`mrvae.nn.config.PRESETS` plus optional field overrides."""

    preset: str = "lite"
    widths: list[int] | None = None
    latent_dim: int | None = None
    detail_width: int | None = None
    residual_blocks: int | None = None
    global_colour: bool | None = None
    half_width: int | None = None
    half_blocks: int | None = None
    noise_radius: int | None = None
    operator: Literal["image", "curves", "affine"] | None = None
    grid_size: int | None = None
    curve_knots: int | None = None
    grid_depth: int | None = None
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
    # mixed precision: float16 on a GPU, bfloat16 on a CPU that computes it natively (AMX,
    # AVX-512 BF16; 1.2-1.6x the images/s of float32 here), else float32
    # (nn.model.mixed_precision)
    amp: bool = True
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
