"""Validation: PSNR/SSIM on the validation sets, and ``best.safetensors`` for the best score."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mrvae.evaluation.metrics import psnr, ssim
from mrvae.nn.model import MRVAE, save_pretrained
from mrvae.training.config import TrainConfig
from mrvae.training.runlog import RunLog


@torch.no_grad()
def validate(model: MRVAE, loader: DataLoader, device: torch.device,
             keep: int = 0, name: str = "") -> tuple[dict[str, float], list[torch.Tensor]]:
    """Mean PSNR/SSIM of DR (and PSNR of GR) on the validation pairs, full-scale GR.

    Returns the metrics (``val_psnr``, ..., or ``val_<name>_psnr``, ... for a named set) and up
    to ``keep`` image rows ``(4, 3, H, W)``: low, GR, DR, ground truth.
    """
    was_training = model.training
    model.eval()
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


def validate_and_keep_best(model: MRVAE, val_loaders: dict[str, DataLoader],
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
