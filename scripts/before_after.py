"""Regenerate ``docs/img/before_after.jpg``, the README's picture: a bundled dark example beside
what ``mrvae enhance`` (shipped weights, default settings) makes of it. Rerun it after the
weights or the refinement change.

    python scripts/before_after.py                          # examples/dark_coffee.jpg
    python scripts/before_after.py --model runs/lite/best.safetensors --out /tmp/ba.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mrvae.engine.enhancer import Enhancer
from mrvae.io.decode import read_image
from mrvae.io.encode import write_image
from mrvae.io.pixels import fit_long_side
from mrvae.nn.config import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=ROOT / "examples" / "dark_coffee.jpg")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="preset name or weights path")
    parser.add_argument("--width", type=int, default=500, help="width of each half, pixels")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "before_after.jpg")
    args = parser.parse_args()
    dark = read_image(args.input).rgb
    enhanced = Enhancer(args.model).enhance_array(dark)
    halves = [fit_long_side(img, args.width) for img in (dark, enhanced)]
    write_image(args.out, np.concatenate(halves, axis=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
