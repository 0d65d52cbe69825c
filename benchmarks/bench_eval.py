"""Speed of the baselines and metrics of ``mrvae eval`` at evaluation size and at 12 MP.

Usage: ``python benchmarks/bench_eval.py [--sizes 512x341,4000x3000] [--out FILE.json]``

Prints one table (seconds per image and per megapixel for every method and metric) and writes
the rows as JSON. Zero-DCE runs only at sizes up to ``--deep-max-mp`` megapixels (it is a CNN
at full resolution: minutes on a 2-core CPU for 12 MP).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from skimage import data

from mrvae.evaluation.baselines import BASELINES, MethodUnavailable, get_method
from mrvae.evaluation.metrics import METRICS


def timed(fn: Callable[..., object], *args: object, repeats: int = 1) -> float:
    """Best wall-clock time of ``repeats`` calls (the machine may be shared)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512x341,4000x3000")
    parser.add_argument("--deep-max-mp", type=float, default=1.0)
    parser.add_argument("--out", default="benchmarks/results/bench_eval.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    photo = data.astronaut().astype(np.float32) / 255.0
    rows = []
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        clean = np.clip(cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
        dark = (0.5 * clean**2.5).astype(np.float32)
        megapixels = width * height / 1e6
        repeats = 3 if megapixels < 1 else 1
        for name in BASELINES:
            if name == "zerodce" and megapixels > args.deep_max_mp:
                continue
            try:
                method = get_method(name)
            except MethodUnavailable as exc:
                print(f"skip {name}: {exc}")
                continue
            method(dark[:64, :64])  # warm-up (imports, thread pools)
            seconds = timed(method, dark, repeats=repeats)
            rows.append({"kind": "method", "name": name, "size": size, "seconds": seconds,
                         "seconds_per_mp": seconds / megapixels})
        for name, metric in METRICS.items():
            metric(clean[:128, :128], dark[:128, :128], dark[:128, :128])  # warm-up
            seconds = timed(metric, clean, dark, dark, repeats=repeats)
            rows.append({"kind": "metric", "name": name, "size": size, "seconds": seconds,
                         "seconds_per_mp": seconds / megapixels})
    print(f"{'kind':<7} {'name':<11} {'size':>10} {'s/image':>9} {'s/MP':>8}")
    for row in rows:
        print(f"{row['kind']:<7} {row['name']:<11} {row['size']:>10} {row['seconds']:>9.3f} "
              f"{row['seconds_per_mp']:>8.3f}")
    with open(args.out, "w") as handle:
        json.dump({"cpu_count": os.cpu_count(), "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
