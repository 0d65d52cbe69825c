"""Fit the exposure trim (``refine.exposure_trim``) on data no reported number comes from.

1. Enhances, with the trim off, LOL's *training* split and the training-split photos that
   ``tune_refine.py`` uses (realistic and paper recipes, well-exposed), and scores each output
   moved by every EV of a grid (``mrvae.engine.exposure.apply_exposure`` on the output: a
   stand-in for moving GR's exposure, which DR follows).
2. Searches ``trim_pivot`` and ``trim_per_stop`` for the largest sum over those sets of the mean
   PSNR change, each set counted once.
3. Runs ``mrvae enhance``'s engine with the fitted trim, the current default and no trim on the
   same sets and on LOL's validation split (the check: nothing was fitted there).

    python research/fit_trim.py --model lite --limit 40 [--out report/fit_trim.json]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tune_refine import add_data_arguments, mean_psnr, test_sets

from mrvae.engine.enhancer import Enhancer
from mrvae.engine.exposure import apply_exposure
from mrvae.engine.refine import Refinement, brightening, darkness, luma, trim_stops
from mrvae.evaluation.metrics import psnr
from mrvae.evaluation.sets import TestSet, folder_samples
from mrvae.nn.model import load

FIT_SETS = ("lol_train", "realistic", "paper", "well_exposed")
EV_GRID = np.round(np.arange(-1.0, 1.0001, 0.05), 2)
PIVOTS = np.exp(np.linspace(math.log(0.03), math.log(0.3), 41))
PER_STOP = np.round(np.arange(0.0, 0.401, 0.01), 2)


def ev_table(enhancer: Enhancer, test_set: TestSet, grid: np.ndarray = EV_GRID
             ) -> dict[str, np.ndarray]:
    """Per photo: PSNR of the enhancer's output moved by each EV of ``grid`` (the trim is off
    when the enhancer's refinement turns it off), the median and mean luma of the global
    pass's input, GR's median luma, the output's mean luma and the photo's :func:`darkness`."""
    settings = enhancer.refine
    scores, medians, means, gr_medians, out_means, dark = [], [], [], [], [], []
    for sample in test_set.samples:
        decision = enhancer.global_pass(sample.low)
        small_low = decision.small[0].permute(1, 2, 0).numpy()
        global_image = decision.image[0].permute(1, 2, 0).numpy()
        gain = brightening(small_low, global_image, settings.tone_side)
        output = torch.from_numpy(enhancer.enhance_array(sample.low, decision)).permute(2, 0, 1)
        scores.append([min(psnr(apply_exposure(output[None], float(stops))[0].permute(1, 2, 0)
                                .numpy(), sample.high), 60.0) for stops in grid])
        medians.append(float(np.median(luma(small_low))))
        means.append(float(luma(small_low).mean()))
        gr_medians.append(float(np.median(luma(global_image))))
        out_means.append(float(luma(output.permute(1, 2, 0).numpy()).mean()))
        dark.append(darkness(gain, settings))
    return {"psnr": np.array(scores), "median": np.array(medians), "mean": np.array(means),
            "gr_median": np.array(gr_medians), "out_mean": np.array(out_means),
            "dark": np.array(dark)}


def score_at(psnr: np.ndarray, stops: np.ndarray, grid: np.ndarray) -> float:
    """Mean over photos of ``psnr (N, len(grid))`` at the grid EV nearest each photo's stops
    (the grid is required: the scripts score tables of different grids)."""
    index = np.abs(grid[None, :] - np.asarray(stops)[:, None]).argmin(axis=1)
    return float(psnr[np.arange(len(index)), index].mean())


def gain_of(table: dict[str, np.ndarray], pivot: float, per_stop: float, limit: float) -> float:
    """Mean PSNR change of a set under a trim rule (:func:`mrvae.engine.refine.trim_stops`, the rule
    the engine runs), at the EV grid's nearest step."""
    stops = trim_stops(table["median"], table["dark"], pivot, per_stop, limit)
    return score_at(table["psnr"], stops, EV_GRID) - float(table["psnr"][:, EV_GRID == 0].mean())


def fit(tables: list[dict[str, np.ndarray]], limit: float) -> tuple[float, float]:
    """``(trim_pivot, trim_per_stop)`` of the grid with the largest sum of :func:`gain_of`."""
    _, pivot, per_stop = max(
        (sum(gain_of(table, pivot, per_stop, limit) for table in tables), pivot, per_stop)
        for pivot in PIVOTS for per_stop in PER_STOP)
    return float(pivot), float(per_stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("report/fit_trim.json"))
    args = parser.parse_args()
    sets = {"lol_train": folder_samples(args.lol, split="train"),
            **test_sets(args.lol, args.clean, args.limit)}
    model = load(args.model)  # loaded once, shared by every setting
    untrimmed = replace(Refinement(), trim=False)
    tables = {name: ev_table(Enhancer(model, "cpu", refine=untrimmed), sets[name])
              for name in FIT_SETS}
    limit = Refinement().trim_max
    pivot, per_stop = fit(list(tables.values()), limit)
    print(f"fitted: trim_pivot {pivot:.3f}, trim_per_stop {per_stop:.2f} (EV grid estimate: "
          + ", ".join(f"{n} {gain_of(tables[n], pivot, per_stop, limit):+.2f}" for n in FIT_SETS)
          + " dB)")
    fitted = replace(Refinement(), trim_pivot=round(pivot, 3), trim_per_stop=per_stop)
    settings = {"off": untrimmed, "fitted": fitted}
    if Refinement() != fitted:
        settings["default"] = Refinement()
    scores = {label: {name: mean_psnr(Enhancer(model, "cpu", refine=refine), test_set)
                      for name, test_set in sets.items()} for label, refine in settings.items()}
    names = list(sets)
    print("| trim | " + " | ".join(names) + " |")
    print("|---" * (1 + len(names)) + "|")
    for label, row in scores.items():
        print(f"| {label} | " + " | ".join(
            f"{row[n]:.2f}" + ("" if label == "off" else f" ({row[n] - scores['off'][n]:+.2f})")
            for n in names) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": args.model, "limit": args.limit,
        "images": {n: len(s.samples) for n, s in sets.items()},
        "fitted": {"trim_pivot": pivot, "trim_per_stop": per_stop},
        "psnr": scores}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
