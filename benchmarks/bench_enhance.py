"""Speed and memory of ``Enhancer.enhance_array`` against CLAHE and Zero-DCE.

For each input size (0.5, 2, 12 and 24 megapixels) and each method -- the MR-VAE presets (random
weights time the same as trained ones), CLAHE (OpenCV) and Zero-DCE (published weights from
``../shared/peers/zerodce``, row skipped when absent) -- one fresh process enhances a synthetic
dark photo and reports seconds, seconds per megapixel and peak RSS. A fresh process per row
makes the peak RSS that row's own. ``RSS - buffers`` subtracts the float32 input and output
arrays, the part that must grow with the image: bounded memory shows as a flat column.

    python benchmarks/bench_enhance.py [--presets lite,paper] [--sizes 0.5,2,12,24]
                                       [--threads 2] [--tile 512] [--out FILE]

Targets (2-core CPU): the shipped preset (lite) enhances 12 MP in <= 10 s with peak RSS
<= 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TARGET_SECONDS_12MP = 10.0
TARGET_RSS_MB = 2048.0
SHIPPED_PRESET = "lite"
ASPECT = 4 / 3


def synthetic_photo(megapixels: float) -> np.ndarray:
    """A dark natural-looking float32 RGB photo of about ``megapixels`` (4:3)."""
    import cv2
    from skimage import data

    height = round((megapixels * 1e6 / ASPECT) ** 0.5)
    width = round(height * ASPECT)
    photo = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_LINEAR)
    noise = np.random.default_rng(0).normal(0, 2, photo.shape)
    return np.clip((photo * 0.25 + noise) / 255.0, 0, 1).astype(np.float32)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_method(name: str, tile: int) -> Callable[[np.ndarray], np.ndarray]:
    """The callable for one row; raises MethodUnavailable when it cannot run here."""
    if name.startswith("mrvae:"):
        from mrvae.enhance import Enhancer
        from mrvae.model import create_model

        return Enhancer(create_model(name.removeprefix("mrvae:")), "cpu", tile=tile).enhance_array
    from mrvae.baselines import get_method

    return get_method(name)


def worker(method: str, megapixels: float, threads: int, tile: int) -> dict:
    """Run one row in this process and return its measurements."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    torch.manual_seed(0)
    enhance = make_method(method, tile)
    enhance(synthetic_photo(0.05))  # warm-up: thread pools, kernels
    photo = synthetic_photo(megapixels)
    before = peak_rss_mb()
    start = time.perf_counter()
    out = enhance(photo)
    seconds = time.perf_counter() - start
    buffers_mb = (photo.nbytes + out.nbytes) / 2**20
    return {"method": method, "megapixels": photo.shape[0] * photo.shape[1] / 1e6,
            "size": f"{photo.shape[1]}x{photo.shape[0]}", "seconds": seconds,
            "seconds_per_mp": seconds / (photo.shape[0] * photo.shape[1] / 1e6),
            "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before,
            "rss_minus_buffers_mb": peak_rss_mb() - buffers_mb}


def run_row(method: str, megapixels: float, threads: int, tile: int) -> dict | None:
    """One row in a fresh process; None when the method is unavailable here."""
    cmd = [sys.executable, __file__, "--worker", method, "--worker-mp", str(megapixels),
           "--threads", str(threads), "--tile", str(tile)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 3:
        print(f"  skipped {method}: {proc.stdout.strip()}")
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"{method} at {megapixels} MP failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    header = (f"{'method':<14}{'MP':>6}{'size':>12}{'seconds':>10}{'s/MP':>8}"
              f"{'peak RSS MB':>13}{'RSS - buffers':>15}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['method']:<14}{row['megapixels']:>6.1f}{row['size']:>12}"
              f"{row['seconds']:>10.2f}{row['seconds_per_mp']:>8.2f}"
              f"{row['peak_rss_mb']:>13.0f}{row['rss_minus_buffers_mb']:>15.0f}")


def check_targets(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        if row["method"] == f"mrvae:{SHIPPED_PRESET}" and round(row["megapixels"]) == 12:
            ok_time = row["seconds"] <= TARGET_SECONDS_12MP
            ok_rss = row["peak_rss_mb"] <= TARGET_RSS_MB
            lines.append(f"target 12 MP <= {TARGET_SECONDS_12MP:.0f} s: {row['seconds']:.1f} s "
                         f"{'PASS' if ok_time else 'FAIL'}; peak RSS <= {TARGET_RSS_MB:.0f} MB: "
                         f"{row['peak_rss_mb']:.0f} MB {'PASS' if ok_rss else 'FAIL'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="lite,paper")
    parser.add_argument("--baselines", default="clahe,zerodce")
    parser.add_argument("--sizes", default="0.5,2,12,24", help="megapixels, comma separated")
    parser.add_argument("--paper-max-mp", type=float, default=2.0,
                        help="largest size for the (slow) paper preset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_enhance.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-mp", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        from mrvae.baselines import MethodUnavailable

        try:
            print(json.dumps(worker(args.worker, args.worker_mp, args.threads, args.tile)))
        except MethodUnavailable as exc:
            print(exc)
            sys.exit(3)
        return

    methods = [f"mrvae:{p}" for p in args.presets.split(",") if p] + [
        b for b in args.baselines.split(",") if b]
    rows = []
    for megapixels in (float(s) for s in args.sizes.split(",")):
        for method in methods:
            if method == "mrvae:paper" and megapixels > args.paper_max_mp:
                continue
            row = run_row(method, megapixels, args.threads, args.tile)
            if row is not None:
                rows.append(row)
                print(f"  {method} {row['megapixels']:.1f} MP: {row['seconds']:.2f} s, "
                      f"{row['peak_rss_mb']:.0f} MB", flush=True)
    print()
    print_table(rows)
    targets = check_targets(rows)
    for line in targets:
        print(line)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    report = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "tile": args.tile, "load_average": load, "rows": rows, "targets": targets}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
