"""Choose the refinement's keep thresholds on data that no reported number comes from.

Scores ``mrvae enhance`` (one model, several :class:`mrvae.engine.refine.Refinement` settings) on:
- ``lol_val``: LOL's fixed validation split (never trained on; the checkpoint was picked there);
- ``realistic`` / ``paper``: pairs synthesised from the clean photos *outside* the held-out
  split (``--split train`` in ``mrvae eval``), so the held-out synthetic tests stay untouched;
- ``well_exposed``: those same training-split photos as their own ground truth.

Prints mean PSNR per set and setting, and each dark set's change against the same model without
the keep step (the issue's "no loss on dark photos" is judged on that difference).

    python research/tune_refine.py --model lite --limit 40 \
        --keep default --keep 1.4:2.5:1.4:2.5 --keep 1.4:2.5:1.0:1.3 [--out report/tune.json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from mrvae.engine.enhancer import Enhancer
from mrvae.engine.refine import Refinement
from mrvae.evaluation.metrics import psnr
from mrvae.evaluation.sets import (
    TestSet,
    folder_samples,
    synthetic_samples,
    well_exposed_samples,
)
from mrvae.nn.model import load

DARK_SETS = ("lol_val", "realistic", "paper")
KEEP_FIELDS = ("keep_low", "keep_high", "dark_keep_low", "dark_keep_high", "dark_photo_low",
               "dark_photo_high")


def test_sets(lol: Path, clean: Path, limit: int) -> dict[str, TestSet]:
    return {"lol_val": folder_samples(lol, split="val"),
            "realistic": synthetic_samples(clean, "realistic", limit=limit, split="train"),
            "paper": synthetic_samples(clean, "paper", limit=limit, split="train"),
            "well_exposed": well_exposed_samples(clean, limit=limit, split="train")}


def setting(spec: str) -> Refinement:
    """``off`` (no keep step), ``default``, or keep thresholds ``LOW:HIGH[:DARK_LOW:DARK_HIGH
    [:PHOTO_LOW:PHOTO_HIGH]]`` (the fields of :data:`KEEP_FIELDS`, in order; the rest default).
    Before 0.4.2 the rule was ``1.4:2.5:1.4:2.5``: the same thresholds for dark photos."""
    if spec == "off":
        return replace(Refinement(), keep=False)
    values = [] if spec == "default" else [float(v) for v in spec.split(":")]
    if len(values) not in (0, 2, 4, 6):
        raise SystemExit(f"--keep {spec}: give off, default, or 2, 4 or 6 numbers")
    return replace(Refinement(), **dict(zip(KEEP_FIELDS, values, strict=False)))


def mean_psnr(enhancer: Enhancer, test_set: TestSet) -> float:
    scores = [psnr(enhancer.enhance_array(s.low), s.high) for s in test_set.samples]
    return float(np.mean(np.minimum(scores, 60.0)))  # identical outputs count as 60 dB


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and the photos :func:`test_sets` reads (shared with ``fit_trim.py``)."""
    parser.add_argument("--model", default="lite", help="preset or weights path")
    parser.add_argument("--lol", type=Path, default=Path("../shared/data/paired/LOL"))
    parser.add_argument("--clean", type=Path, default=Path("../shared/data/clean"))
    parser.add_argument("--limit", type=int, default=40, help="photos per synthetic set")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--keep", action="append", default=None,
                        help="keep thresholds (see setting()), default, or off (repeat)")
    parser.add_argument("--out", type=Path, default=Path("report/tune_refine.json"))
    args = parser.parse_args()
    specs = list(dict.fromkeys(["off", *(args.keep or ["default"])]))
    sets = test_sets(args.lol, args.clean, args.limit)
    model = load(args.model)  # loaded once, shared by every setting
    scores = {spec: {name: mean_psnr(Enhancer(model, "cpu", refine=setting(spec)), test_set)
                     for name, test_set in sets.items()} for spec in specs}
    names = list(sets)
    print("| keep | " + " | ".join(names) + " | " + " | ".join(f"{n} vs off" for n in DARK_SETS)
          + " |")
    print("|---" * (1 + len(names) + len(DARK_SETS)) + "|")
    for spec, row in scores.items():
        changes = [row[n] - scores["off"][n] for n in DARK_SETS]
        print(f"| {spec} | " + " | ".join(f"{row[n]:.2f}" for n in names) + " | "
              + " | ".join(f"{c:+.2f}" for c in changes) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "limit": args.limit,
                                    "images": {n: len(s.samples) for n, s in sets.items()},
                                    "psnr": scores}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
