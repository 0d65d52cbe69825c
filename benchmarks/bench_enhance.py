"""Speed and memory of ``Enhancer.enhance_array`` against CLAHE and Zero-DCE.

For each input size (0.5, 2, 12 and 24 megapixels) and each method -- the MR-VAE presets (random
weights time the same as trained ones; ``mrvae:`` as ``mrvae enhance`` runs them, ``mrvae-raw:``
the network without the refinement, to show what the refinement costs), CLAHE (OpenCV) and Zero-DCE
(published weights from ``../shared/peers/zerodce``, row skipped when absent) -- one fresh process
enhances a synthetic dark photo and reports seconds, seconds per megapixel, CPU seconds (all
threads; steadier than wall time on a shared machine) and the peak RSS while enhancing (counted
from just before the call, in a fresh process per row). ``engine MB`` is what the call adds beyond
its float32 output array (peak minus the RSS just before the call, which holds the input, minus the
output): bounded memory shows as a flat column.

    python benchmarks/bench_enhance.py [--presets bilateral,lite,paper] [--raw-presets bilateral]
                                       [--sizes 0.5,2,12,24]
                                       [--paper-max-mp 2] [--threads 2] [--tile 512] [--out FILE]

The paper preset (about 20 times slower than lite) stops at ``--paper-max-mp``; its seconds per
megapixel hardly change with size.

Targets (2-core CPU): the shipped preset (bilateral) enhances 12 MP in <= 10 s with peak RSS
<= 2 GiB.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from mrvae.engine.enhancer import DEFAULT_TILE, Enhancer

# mrvae loads torch after setting its OpenMP wait policy, as in the CLI: no torch import above.
from mrvae.evaluation.baselines import MethodUnavailable, get_method, parse_mrvae
from mrvae.nn.config import DEFAULT_MODEL
from mrvae.nn.model import create_model

TARGET_SECONDS_12MP = 10.0
TARGET_RSS_MB = 2048.0
ASPECT = 4 / 3


def synthetic_photo(megapixels: float) -> np.ndarray:
    """A dark natural-looking float32 RGB photo of about ``megapixels`` (4:3)."""
    from skimage import data

    height = round((megapixels * 1e6 / ASPECT) ** 0.5)
    width = round(height * ASPECT)
    photo = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_LINEAR)
    photo = photo.astype(np.float32)
    photo *= 0.25 / 255
    photo += np.random.default_rng(0).standard_normal(photo.shape, np.float32) * (2 / 255)
    return np.clip(photo, 0, 1, out=photo)


def process_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Restart the peak-RSS count (Linux >= 4.0), so the peak is the enhancement's own."""
    Path("/proc/self/clear_refs").write_text("5")


def make_method(name: str, tile: int) -> Callable[[np.ndarray], np.ndarray]:
    """The callable for one row; raises MethodUnavailable when it cannot run here."""
    if (mrvae := parse_mrvae(name)) is not None:
        return Enhancer(create_model(mrvae.weights), "cpu", tile=tile,
                        refine={} if mrvae.refine else None,  # the model's own refinement
                        exposure=mrvae.exposure).enhance_array
    return get_method(name)


def worker(method: str, megapixels: float, threads: int, tile: int) -> dict:
    """Run one row in this process and return its measurements."""
    import torch  # loaded by mrvae already, after its OpenMP setting

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    torch.manual_seed(0)
    enhance = make_method(method, tile)
    enhance(synthetic_photo(0.05))  # warm-up: thread pools, kernels
    photo = synthetic_photo(megapixels)
    gc.collect()
    reset_peak_rss()
    before = status_mb("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    out = enhance(photo)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = status_mb("VmHWM")
    megapixels = photo.shape[0] * photo.shape[1] / 1e6
    return {"method": method, "megapixels": megapixels,
            "size": f"{photo.shape[1]}x{photo.shape[0]}", "seconds": seconds,
            "seconds_per_mp": seconds / megapixels, "cpu_seconds": cpu_seconds,
            "peak_rss_mb": peak, "rss_before_mb": before,
            "engine_mb": peak - before - out.nbytes / 2**20,
            "process_peak_rss_mb": process_peak_rss_mb()}


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
    header = (f"{'method':<16}{'MP':>6}{'size':>12}{'seconds':>10}{'s/MP':>8}{'CPU s':>8}"
              f"{'peak RSS MB':>13}{'engine MB':>11}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['method']:<16}{row['megapixels']:>6.1f}{row['size']:>12}"
              f"{row['seconds']:>10.2f}{row['seconds_per_mp']:>8.2f}{row['cpu_seconds']:>8.1f}"
              f"{row['peak_rss_mb']:>13.0f}{row['engine_mb']:>11.0f}")


def check_targets(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        if row["method"] == f"mrvae:{DEFAULT_MODEL}" and round(row["megapixels"]) == 12:
            ok_time = row["seconds"] <= TARGET_SECONDS_12MP
            ok_rss = row["peak_rss_mb"] <= TARGET_RSS_MB
            lines.append(f"target 12 MP <= {TARGET_SECONDS_12MP:.0f} s: {row['seconds']:.1f} s "
                         f"{'PASS' if ok_time else 'FAIL'}; peak RSS <= {TARGET_RSS_MB:.0f} MB: "
                         f"{row['peak_rss_mb']:.0f} MB {'PASS' if ok_rss else 'FAIL'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=f"{DEFAULT_MODEL},lite,paper")
    parser.add_argument("--raw-presets", default=DEFAULT_MODEL,
                        help="presets also timed without the refinement")
    parser.add_argument("--baselines", default="clahe,zerodce")
    parser.add_argument("--sizes", default="0.5,2,12,24", help="megapixels, comma separated")
    parser.add_argument("--paper-max-mp", type=float, default=2.0,
                        help="largest size for the (slow) paper preset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_enhance.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-mp", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        try:
            print(json.dumps(worker(args.worker, args.worker_mp, args.threads, args.tile)))
        except MethodUnavailable as exc:
            print(exc)
            sys.exit(3)
        return

    methods = [f"mrvae:{p}" for p in args.presets.split(",") if p] + [
        f"mrvae-raw:{p}" for p in args.raw_presets.split(",") if p] + [
        b for b in args.baselines.split(",") if b]
    rows = []
    for megapixels in (float(s) for s in args.sizes.split(",")):
        for method in methods:
            if method.endswith(":paper") and megapixels > args.paper_max_mp:
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
