"""research/exposure_headroom.py: the exposure headroom numbers, on made-up score tables."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "research"))
import exposure_headroom as eh


def scores(best_ev: np.ndarray) -> np.ndarray:
    """PSNR falling off quadratically from each photo's best EV, peak 30 dB."""
    return 30.0 - 10.0 * (eh.GRID[None, :] - best_ev[:, None]) ** 2


def test_best_ev_and_the_score_there() -> None:
    best = np.array([-0.5, 0.0, 0.8])
    table = scores(best)
    assert eh.best_stops(table) == pytest.approx(best)
    assert eh.score_at(table, best, eh.GRID) == pytest.approx(30.0)
    untouched = 30.0 - 10.0 * (0.25 + 0.64) / 3
    assert eh.score_at(table, np.zeros(3), eh.GRID) == pytest.approx(untouched)


def test_a_larger_exposure_error_scores_lower() -> None:
    table = scores(np.random.default_rng(1).choice(eh.GRID[10:-10], 40))  # on the grid
    results = [eh.score_with_error(table, sd) for sd in (0.0, 0.2, 0.5)]
    assert results[0] == pytest.approx(30.0)
    assert results[0] > results[1] > results[2]
    # quadratic fall-off: the expected loss is 10 * sd^2 (grid rounding aside)
    assert results[2] == pytest.approx(30.0 - 2.5, abs=0.3)


def test_ridge_recovers_a_linear_rule_and_cv_prefers_little_penalty() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(120, 3))
    best = np.round(0.3 * features[:, 0] - 0.2 * features[:, 2], 2)
    table = scores(best)
    penalty = eh.choose_penalty(features, table)
    predicted = eh.fit_ridge(features, eh.best_stops(table), penalty)(features)
    assert penalty <= 1.0
    assert np.corrcoef(predicted, best)[0, 1] > 0.99
    assert eh.score_at(table, predicted, eh.GRID) > 29.9


def test_noise_features_get_a_large_penalty() -> None:
    rng = np.random.default_rng(3)
    table = scores(rng.uniform(-0.8, 0.8, 120))
    penalty = eh.choose_penalty(rng.normal(size=(120, 3)), table)
    assert penalty >= 100.0
