"""How much of DR's denoising to keep: score blends of GR's operator output and DR's output.

For an operator model (``operator="affine"`` or ``"curves"``) the engine's global image is the
operator applied to the full-resolution photo: the input's own detail and noise at the new
exposure. DR's output is that image denoised. ``strength`` s gives ``op + s * (DR - op)``. This
scores each strength through the engine (no refinement) on a paired set's validation split
(PSNR, GT-mean PSNR, SSIM) and on a folder of real dark photos (NIQE, BRISQUE), so a default can
be chosen on both validation sets.

    python research/denoise_strength.py W --pairs ../shared/data/paired/LOL \\
        --real real --strengths 0,1,2-12,4-20 --out report/strength.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mrvae.data.datasets import PairedFolder
from mrvae.engine.decision import global_region
from mrvae.engine.denoise import amplified_noise
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.tiling import upsample_region
from mrvae.evaluation.metrics import get_metric
from mrvae.io.decode import read_image
from mrvae.io.files import list_images
from mrvae.nn.model import from_pretrained


def operator_and_network(engine: Enhancer, rgb: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The operator's image, DR's output (``(H, W, 3)`` each) and the amplified noise map
    ``(H, W, 1)`` (:func:`mrvae.engine.denoise.amplified_noise`, at full resolution)."""
    photo = engine.decide(rgb)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    height, width = rgb.shape[:2]
    box = (0, height, 0, width)
    region = global_region(engine.backend, photo, x, box)
    noise = upsample_region(amplified_noise(photo), (height, width), box)[0, 0, ..., None]
    return region[0].permute(1, 2, 0).numpy(), engine.enhance_array(rgb), noise.numpy()


def strength_rules(spec: str) -> dict[str, Callable[[np.ndarray], np.ndarray | float]]:
    """``"1,0.5,4-12"``: constant strengths, and ramps from 0 at amplified noise ``lo``/255 to 1
    at ``hi``/255."""
    rules: dict[str, Callable[[np.ndarray], np.ndarray | float]] = {}
    for item in spec.split(","):
        if "-" in item:
            lo, hi = (float(v) / 255 for v in item.split("-"))
            rules[f"ramp {item}"] = lambda n, lo=lo, hi=hi: np.clip((n - lo) / (hi - lo), 0, 1)
        else:
            rules[f"s={float(item):g}"] = lambda n, s=float(item): s
    return rules


def blends(op: np.ndarray, dr: np.ndarray, noise: np.ndarray,
           rules: dict[str, Callable[[np.ndarray], np.ndarray | float]]
           ) -> dict[str, np.ndarray]:
    return {name: np.clip(op + rule(noise) * (dr - op), 0, 1) for name, rule in rules.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--pairs", type=Path)
    parser.add_argument("--real", type=Path)
    parser.add_argument("--strengths", default="0,1,2-12,4-20",
                        help="constant strengths and noise ramps LO-HI (in /255)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rules = strength_rules(args.strengths)
    engine = Enhancer(from_pretrained(args.weights), "cpu", refine=None)
    scores: dict[str, dict[str, list[float]]] = {}

    def add(rule: str, metric: str, value: float) -> None:
        scores.setdefault(rule, {}).setdefault(metric, []).append(float(value))

    if args.pairs:
        full = {name: get_metric(name) for name in ("psnr", "psnr_gtmean", "ssim")}
        for item in PairedFolder(args.pairs, split="val"):
            low = np.ascontiguousarray(item["low"].permute(1, 2, 0).numpy())
            truth = item["high"].permute(1, 2, 0).numpy()
            for rule, out in blends(*operator_and_network(engine, low), rules).items():
                for name, fn in full.items():
                    add(rule, f"lol_{name}", fn(out, truth))
    if args.real:
        blind = {name: get_metric(name) for name in ("niqe", "brisque")}
        for path in list_images(args.real):
            rgb = read_image(path).rgb
            for rule, out in blends(*operator_and_network(engine, rgb), rules).items():
                for name, fn in blind.items():
                    add(rule, f"real_{name}", fn(out))
    table = {row: {k: float(np.mean(v)) for k, v in metrics.items()}
             for row, metrics in scores.items()}
    for row, metrics in table.items():
        print(row, " ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"weights": str(args.weights), "scores": table}, indent=2))


if __name__ == "__main__":
    main()
