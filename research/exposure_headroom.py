"""How much of the gap on LOL's pairs a better exposure could close, and how well the exposure
can be predicted from simple numbers (issue 13's 22 dB).

1. Enhances LOL's training and validation splits as ``mrvae enhance`` does (trim included) and
   scores each output moved by every EV of a grid (:func:`fit_trim.ev_table`).
2. Reports the best EV per photo (its spread and the score with it), the score when that EV
   is missed by a random error of a given SD, and how much the brightness of the truth and of
   the outputs varies from photo to photo.
3. Fits a ridge regression from the input's and GR's log luma to the best EV on the training
   split (penalty by blocked cross-validation there) and scores it on the validation split.

    python research/exposure_headroom.py --model lite [--out report/exposure_headroom.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fit_trim import ev_table, score_at

from mrvae.engine.enhancer import Enhancer
from mrvae.engine.refine import luma
from mrvae.evaluation.sets import folder_samples
from mrvae.nn.model import load

GRID = np.round(np.arange(-1.5, 1.5001, 0.05), 2)
ERROR_SDS = (0.1, 0.2, 0.3, 0.4, 0.5)
PENALTIES = np.logspace(-1, 4, 21)


def best_stops(psnr: np.ndarray, grid: np.ndarray = GRID) -> np.ndarray:
    """Per photo, the grid EV with the highest PSNR."""
    return grid[psnr.argmax(axis=1)]


def score_with_error(psnr: np.ndarray, error_sd: float, draws: int = 50, seed: int = 0,
                     grid: np.ndarray = GRID) -> float:
    """Mean score when each photo's best EV is missed by a normal error of SD ``error_sd``."""
    rng = np.random.default_rng(seed)
    best = best_stops(psnr, grid)
    return float(np.mean([score_at(psnr, best + rng.normal(0.0, error_sd, len(best)), grid)
                          for _ in range(draws)]))


def fit_ridge(features: np.ndarray, target: np.ndarray, penalty: float
              ) -> Callable[[np.ndarray], np.ndarray]:
    """Ridge regression on standardised ``features (N, F)``; returns the predictor."""
    centre, scale, offset = features.mean(axis=0), features.std(axis=0) + 1e-6, target.mean()
    z = (features - centre) / scale
    weights = np.linalg.solve(z.T @ z + penalty * np.eye(z.shape[1]), z.T @ (target - offset))
    return lambda new: ((new - centre) / scale) @ weights + offset


def choose_penalty(features: np.ndarray, psnr: np.ndarray, folds: int = 6) -> float:
    """The penalty of :data:`PENALTIES` with the best blocked cross-validated score (photos in
    their order, so neighbouring shots of one scene share a fold)."""
    fold = np.arange(len(features)) * folds // len(features)
    target = best_stops(psnr)

    def cv_score(penalty: float) -> float:
        predicted = np.empty(len(target))
        for k in range(folds):
            held = fold == k
            predicted[held] = fit_ridge(features[~held], target[~held], penalty)(features[held])
        return score_at(psnr, predicted, GRID)

    return float(max(PENALTIES, key=cv_score))


def features_of(table: dict[str, np.ndarray]) -> np.ndarray:
    """log2 median and mean luma of the input and GR's log2 median luma, ``(N, 3)``."""
    return np.log2(np.maximum(np.stack([table["median"], table["mean"], table["gr_median"]],
                                       axis=1), 1e-3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lite", help="preset or weights path")
    parser.add_argument("--lol", type=Path, default=Path("../shared/data/paired/LOL"))
    parser.add_argument("--out", type=Path, default=Path("report/exposure_headroom.json"))
    args = parser.parse_args()
    enhancer = Enhancer(load(args.model), "cpu")
    report: dict[str, dict] = {}
    tables = {}
    for split in ("train", "val"):
        samples = folder_samples(args.lol, split=split)
        table = tables[split] = ev_table(enhancer, samples, GRID)
        truth = np.array([luma(s.high).mean() for s in samples.samples])
        best = best_stops(table["psnr"])
        report[split] = {
            "photos": len(best), "psnr": score_at(table["psnr"], np.zeros(len(best)), GRID),
            "psnr_best_ev": float(table["psnr"].max(axis=1).mean()),
            "best_ev_sd": float(best.std()),
            "psnr_with_error": {f"{sd:g}": score_with_error(table["psnr"], sd)
                                for sd in ERROR_SDS},
            "truth_mean_luma": float(truth.mean()),
            "truth_log2_sd": float(np.log2(truth).std()),
            "output_mean_luma": float(table["out_mean"].mean()),
            "output_log2_sd": float(np.log2(table["out_mean"]).std())}
    penalty = choose_penalty(features_of(tables["train"]), tables["train"]["psnr"])
    predictor = fit_ridge(features_of(tables["train"]), best_stops(tables["train"]["psnr"]),
                          penalty)
    predicted = predictor(features_of(tables["val"]))
    report["ridge"] = {"penalty": penalty,
                       "val_psnr": score_at(tables["val"]["psnr"], predicted, GRID),
                       "val_correlation": float(np.corrcoef(
                           predicted, best_stops(tables["val"]["psnr"]))[0, 1])}
    for split in ("train", "val"):
        row = report[split]
        print(f"{split}: {row['photos']} photos, {row['psnr']:.2f} dB; best EV per photo "
              f"{row['psnr_best_ev']:.2f} dB (SD {row['best_ev_sd']:.2f} EV); missed by SD "
              + ", ".join(f"{sd} EV {v:.2f}" for sd, v in row["psnr_with_error"].items())
              + f" dB; mean luma, truth {row['truth_mean_luma']:.2f} (log2 SD "
              f"{row['truth_log2_sd']:.2f}), output {row['output_mean_luma']:.2f} (log2 SD "
              f"{row['output_log2_sd']:.2f})")
    ridge = report["ridge"]
    print(f"ridge from log luma (fitted on train, penalty {penalty:g}): val "
          f"{ridge['val_psnr']:.2f} dB, correlation with the best EV "
          f"{ridge['val_correlation']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, **report}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
