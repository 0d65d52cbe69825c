"""research/fit_trim.py: the search that sets the exposure trim's defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "research"))
import fit_trim


def table(best_ev: np.ndarray, medians: np.ndarray, dark: np.ndarray) -> dict[str, np.ndarray]:
    """PSNR falling off quadratically from each photo's best EV."""
    psnr = 30.0 - 10.0 * (fit_trim.EV_GRID[None, :] - best_ev[:, None]) ** 2
    return {"psnr": psnr, "median": medians, "dark": dark}


def test_the_search_finds_the_rule_the_photos_follow() -> None:
    rng = np.random.default_rng(0)
    medians = np.exp(rng.uniform(np.log(0.01), np.log(0.3), 60))
    dark = np.ones(60)
    best = -0.2 * np.log2(medians / 0.06)
    tables = [table(best, medians, dark)]
    pivot, per_stop = fit_trim.fit(tables, limit=1.0)
    assert per_stop == pytest.approx(0.2, abs=0.011)
    assert pivot == pytest.approx(0.06, rel=0.1)
    assert fit_trim.gain_of(tables[0], pivot, per_stop, 1.0) > 0.5
    assert fit_trim.gain_of(tables[0], pivot, 0.0, 1.0) == 0.0
    # a set of well-exposed photos whose best EV is 0: untouched, whatever the rule
    bright = table(np.zeros(20), np.full(20, 0.4), np.zeros(20))
    assert fit_trim.gain_of(bright, pivot, per_stop, 1.0) == 0.0
