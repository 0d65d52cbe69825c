"""Score weights on a paired set's validation split by calling the network directly on whole
images (no engine, no refinement): GR's operator at full resolution, as training validates.

For models the engine cannot run as intended yet (model v3's operator, ``operator="curves"``).
Prints and writes JSON: mean PSNR, SSIM and GT-mean PSNR of DR's output and of the global image.

    python research/score_direct.py runs/grid_probe/best.safetensors \\
        --data ../shared/data/paired/LOL --out runs/grid_probe/score_val.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mrvae.data.datasets import PairedFolder
from mrvae.evaluation.metrics import psnr, psnr_gtmean, ssim
from mrvae.nn.model import from_pretrained


@torch.no_grad()
def score(weights: Path, data: Path, split: str, global_scale: float) -> dict[str, float]:
    model = from_pretrained(weights)
    pairs = PairedFolder(data, split=split)  # type: ignore[arg-type]
    scores: dict[str, list[float]] = {}
    for item in pairs:
        out = model(item["low"][None], global_scale=global_scale)
        truth = item["high"].permute(1, 2, 0).numpy()
        for name, image in (("", out.detail), ("global_", out.global_image)):
            array = image[0].clamp(0, 1).permute(1, 2, 0).numpy()
            for metric, fn in (("psnr", psnr), ("ssim", ssim), ("psnr_gtmean", psnr_gtmean)):
                scores.setdefault(name + metric, []).append(fn(array, truth))
    return {"images": len(pairs), **{k: float(np.mean(v)) for k, v in scores.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/paired/LOL"))
    parser.add_argument("--split", default="val", choices=["train", "val", "all"])
    parser.add_argument("--global-scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = score(args.weights, args.data, args.split, args.global_scale)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
