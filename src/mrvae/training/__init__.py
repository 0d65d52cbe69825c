"""Training MR-VAE: the YAML config (:mod:`~mrvae.training.config`), the data loaders, the
loop with validation, checkpoints and data parallel runs (:mod:`~mrvae.training.loop`), and
ablations that train one variant per config for ``mrvae eval --ablation``
(:mod:`~mrvae.training.ablation`)."""

from mrvae.training.config import ConfigError, TrainConfig
from mrvae.training.loop import train

__all__ = ["ConfigError", "TrainConfig", "train"]
