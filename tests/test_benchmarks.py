"""The training benchmark runs end to end (its rows come from real ``mrvae train`` runs on the
scikit-image samples it writes), with and without mixed precision."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_bench_train_measures_each_precision(tmp_path: Path) -> None:
    out = tmp_path / "bench_train.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_train.py"), "--presets", "tiny", "--crops", "32",
         "--processes", "1", "--steps", "3", "--warmup", "1", "--amp", "on,off",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["amp"] for row in rows] == [True, False]
    assert all("error" not in row and row["images_per_s"] > 0 for row in rows), rows
    assert "vs float32" in result.stdout
