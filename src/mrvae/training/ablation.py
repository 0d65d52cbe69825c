"""Ablations for ``mrvae eval --ablation``: one MR-VAE variant per training config.

:func:`ablation_methods` loads each config's ``best.safetensors`` (training it when missing) as
a method of the evaluation report; :func:`ablation_test_set` is the synthetic validation set of
a config's first data root; :data:`ABLATION_METRICS` the metrics the variants are compared by.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mrvae.engine.enhancer import Enhancer
from mrvae.evaluation.baselines import Method
from mrvae.evaluation.sets import TestSet, synthetic_samples
from mrvae.nn.model import WeightsError, from_pretrained
from mrvae.training.config import ConfigError, TrainConfig
from mrvae.training.loop import train

log = logging.getLogger(__name__)

ABLATION_METRICS = ("psnr", "ssim", "niqe")


def ablation_methods(config_paths: Sequence[str | Path], runs_dir: str | Path,
                     steps: int | None = None,
                     train_fn: Callable[..., Path] | None = None
                     ) -> tuple[dict[str, Method], dict[str, str], dict[str, dict[str, Any]]]:
    """One MR-VAE variant per training config: its ``best.safetensors``, trained if missing.

    A config without ``run_dir`` trains into ``runs_dir/<config name>``. ``steps`` overrides
    the config's step count for a quick run, which always uses ``runs_dir/<config name>``, so
    its weights are never mistaken for those of the full run. Variants that fail to load or
    train are returned as unavailable with the reason.

    Returns:
        (methods, unavailable, extra columns: description, parameter count, weights file).
    """
    train_fn = train_fn or train
    methods: dict[str, Method] = {}
    unavailable: dict[str, str] = {}
    extra: dict[str, dict[str, Any]] = {}
    for path in map(Path, config_paths):
        name = path.stem
        try:
            config = TrainConfig.from_yaml(path, [f"steps={steps}"] if steps else [])
            if config.run_dir is None or steps:  # quick runs never land in a real run dir
                config = replace(config, run_dir=str(Path(runs_dir) / name))
            weights = Path(config.run_dir) / "best.safetensors"
            if not weights.is_file():
                log.warning("%s: no %s, training it", name, weights)
                weights = Path(train_fn(config, progress=False)) / "best.safetensors"
            model = from_pretrained(weights)
        except (ConfigError, WeightsError, FileNotFoundError, ValueError) as exc:
            log.warning("%s: %s", name, exc)
            unavailable[name] = str(exc)
            continue
        # the networks are compared, so without the refinement
        methods[name] = Enhancer(model, device="cpu", refine=None).enhance_array
        extra[name] = {"description": f"{_first_comment(path)} ({path})".lstrip(),
                       "params": sum(p.numel() for p in model.parameters()),
                       "weights": str(weights)}
    return methods, unavailable, extra


def _first_comment(path: Path) -> str:
    """The first ``# comment`` line of a config: what the variant changes."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return "MR-VAE variant"


def ablation_test_set(config_path: str | Path, recipe: str = "paper", max_side: int = 512,
                      limit: int | None = None, seed: int = 0) -> TestSet:
    """The synthetic validation set of a training config's first data root (held out).

    Raises:
        ConfigError: a bad config; FileNotFoundError: no photos.
    """
    config = TrainConfig.from_yaml(config_path)
    return synthetic_samples(config.data.roots[0], recipe, max_side, limit, seed,
                             config.data.val_fraction, config.data.exclude)
