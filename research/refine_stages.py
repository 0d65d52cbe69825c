"""Does each refinement stage earn its place? Score the engine with each stage left out.

Runs ``mrvae enhance``'s engine (default denoising) with the model's own refinement
(:func:`mrvae.engine.refine.model_refinement`: its card's, else the defaults), with each stage
turned off in turn (``trim``, ``sharpen``, ``tone``, ``keep``), with the detail step on
(``detail``), with no refinement at all (``none``; DR's share by the noise ramp) and with the
network alone (``raw``: no refinement, DR everywhere), on both validation sets: LOL's
validation split (PSNR, GT-mean PSNR, SSIM) and a folder of real dark photos (NIQE, BRISQUE).
A stage stays in the default only where it helps on both.
``--halo`` also scores the halo test's three synthetic night scenes
(:func:`mrvae.evaluation.metrics.night_scene_halos`, the largest of the three).

    python research/refine_stages.py --model bilateral --pairs ../shared/data/paired/LOL \\
        --real real --halo --out report/refine_stages.json
    python research/refine_stages.py --model runs/X/best.safetensors --refinement-of bilateral \\
        --pairs ../shared/data/paired/LOL --real real --variants "default,no sharpen"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from mrvae.data.datasets import PairedFolder
from mrvae.engine.denoise import Denoise
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.refine import Refinement, model_refinement
from mrvae.evaluation.metrics import get_metric, night_scene_halos
from mrvae.io.decode import read_image
from mrvae.io.files import list_images
from mrvae.nn.config import DEFAULT_MODEL
from mrvae.nn.model import load

# name -> (changes to the model's own refinement, or None for none; DR's denoising strength)
VARIANTS: dict[str, tuple[dict[str, Any] | None, Denoise]] = {
    "default": ({}, Denoise()),
    "no trim": ({"trim": False}, Denoise()),
    "no tone": ({"tone": False}, Denoise()),
    "no keep": ({"keep": False}, Denoise()),
    "no sharpen": ({"sharpen": 0.0}, Denoise()),
    "detail": ({"detail": 1.0}, Denoise()),
    "none": (None, Denoise()),
    "raw": (None, Denoise(1.0)),  # the network alone: DR everywhere
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="preset name or weights path")
    parser.add_argument("--pairs", type=Path)
    parser.add_argument("--real", type=Path)
    parser.add_argument("--halo", action="store_true", help="score the night-scene halo test")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--refinement-of", help="start each variant from this model's "
                        "refinement (preset or weights; e.g. the shipped default's, for a "
                        "training run whose card names none) instead of the model's own")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = load(args.model)
    card = getattr(load(args.refinement_of) if args.refinement_of else model, "card", None)

    def refinement(changes: dict[str, Any] | None) -> Refinement | None:
        return None if changes is None else model_refinement(card, changes)

    engines = {name: Enhancer(model, "cpu", refine=refinement(VARIANTS[name][0]),
                              denoise=VARIANTS[name][1])
               for name in args.variants.split(",")}
    scores: dict[str, dict[str, list[float]]] = {name: {} for name in engines}

    def score(metrics: dict, prefix: str, outputs: dict[str, np.ndarray], *truth) -> None:
        for name, out in outputs.items():
            for metric, fn in metrics.items():
                scores[name].setdefault(f"{prefix}_{metric}", []).append(float(fn(out, *truth)))

    if args.pairs:
        paired = {name: get_metric(name) for name in ("psnr", "psnr_gtmean", "ssim")}
        for item in PairedFolder(args.pairs, split="val"):
            low = np.ascontiguousarray(item["low"].permute(1, 2, 0).numpy())
            truth = item["high"].permute(1, 2, 0).numpy()
            score(paired, "lol", {n: e.enhance_array(low) for n, e in engines.items()}, truth)
    if args.real:
        blind = {name: get_metric(name) for name in ("niqe", "brisque")}
        for path in list_images(args.real):
            rgb = read_image(path).rgb
            score(blind, "real", {n: e.enhance_array(rgb) for n, e in engines.items()})
    if args.halo:
        for name, engine in engines.items():
            scores[name]["halo_rise_max"] = [max(night_scene_halos(engine.enhance_array))]
    table = {row: {k: float(np.mean(v)) for k, v in metrics.items()}
             for row, metrics in scores.items()}
    for row, metrics in table.items():
        print(f"{row:10s}", " ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "scores": table}, indent=2))


if __name__ == "__main__":
    main()
