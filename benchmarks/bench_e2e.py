"""End to end: what a user of the ``mrvae`` command waits for, and the memory it takes.

Every row but the last runs the console script (``mrvae`` beside this Python) as a fresh
process, as a user would, on inputs made here (scikit-image photos, darkened, with sensor
noise):

* **start-up**: ``mrvae --help``, ``mrvae enhance --help`` and a missing input's error line;
  median wall time of ``--repeats`` runs;
* **12 MP** (4240x2832): ``mrvae enhance in.png -o out.png`` and the same for JPEG, median
  wall time of ``--timed-runs`` runs and the process's peak RSS (``os.wait4``);
* **folder**: ``mrvae enhance folder -o out`` on ``--folder-images`` 2 MP JPEGs, images/s,
  by default (decoding and encoding overlapping the network) and with ``--no-overlap-io``;
* **video**: ``mrvae enhance clip.mp4 -o out.mp4`` on a 720p H.264 clip of ``--frames``
  frames, frames/s;
* **Zero-DCE**: its network (tiled, ``mrvae.evaluation.baselines.zerodce``) and mrvae's engine
  (``Enhancer.enhance_array``, the shipped preset) on the same 12 MP photo, each in a fresh
  process after a warm-up, the median of ``--timed-runs`` runs each, and the ratio of their
  seconds. Without the published weights
  (``../shared/peers/zerodce``) random ones are timed: the network costs the same.

``--extra-args`` go to every ``mrvae enhance`` run (not to the start-up rows nor the in-process
engine row), to compare settings with the same inputs: ``--extra-args "--backend onnx"``,
``--extra-args "--jobs 2"``.

    python benchmarks/bench_e2e.py [--quick] [--folder-images 200] [--frames 60]
                                   [--extra-args "..."] [--repeats 5] [--timed-runs 3]
                                   [--out FILE]

``--quick`` enhances 20 folder images instead of 200. The report records the load average
before and after: on a shared machine, compare rows within one run. Targets (2-core CPU):
12 MP JPEG <= 5 s, PNG <= 6 s, peak RSS <= 1.5 GiB; >= 10x as fast as Zero-DCE; ``--help``
<= 0.5 s (the error line < 1 s); the folder >= 1.5x the images/s of ``--no-overlap-io``; 720p
>= 4 frames/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mrvae.nn.config import DEFAULT_MODEL  # no torch

FULL_SIZE = (4240, 2832)  # 12 MP, 3:2 as most cameras
FOLDER_SIZE = (1728, 1152)  # 2 MP, 3:2
VIDEO_SIZE = (1280, 720)
TARGET_HELP_S = 0.5
TARGET_ERROR_S = 1.0
TARGET_JPEG_S = 5.0
TARGET_PNG_S = 6.0
TARGET_RSS_MB = 1536.0
TARGET_ZERODCE_RATIO = 10.0
TARGET_VIDEO_FPS = 4.0
TARGET_FOLDER_RATIO = 1.5  # images/s of the default (overlapped) run over --no-overlap-io
SOURCES = ("astronaut", "coffee", "chelsea", "rocket")  # scikit-image photos, bundled


def mrvae_command() -> list[str]:
    """The console script installed beside this Python, else ``python -m mrvae``."""
    script = Path(sys.executable).parent / "mrvae"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mrvae"]


def dark_photo(size: tuple[int, int], source: str = "astronaut", seed: int = 0,
               shift: int = 0) -> np.ndarray:
    """A dark uint8 RGB photo of ``size`` (width, height): a scikit-image photo (rolled
    ``shift`` pixels sideways) resized, a quarter of its light, Gaussian sensor noise of std
    2/255."""
    import cv2
    from skimage import data

    photo = np.roll(getattr(data, source)(), shift, axis=1)
    photo = cv2.resize(photo, size, interpolation=cv2.INTER_LINEAR).astype(np.float32) * 0.25
    photo += np.random.default_rng(seed).standard_normal(photo.shape, np.float32) * 2
    return np.clip(np.round(photo), 0, 255).astype(np.uint8)


def write_photo(path: Path, photo: np.ndarray) -> Path:
    """``photo`` as PNG or JPEG (quality 95), by the suffix, written as mrvae writes."""
    from mrvae.io.encode import write_image

    return write_image(path, photo.astype(np.float32) / 255)


def dark_frames(frames: int) -> Iterator[np.ndarray]:
    """uint8 RGB 720p frames: a dark photo panned four pixels per frame, fresh noise in each."""
    width, height = VIDEO_SIZE
    photo = dark_photo((width + 4 * frames, height), "coffee").astype(np.float32)
    rng = np.random.default_rng(1)
    for i in range(frames):
        frame = photo[:, 4 * i:4 * i + width] + rng.standard_normal((height, width, 3),
                                                                     np.float32) * 2
        yield np.clip(frame, 0, 255).astype(np.uint8)


def run_process(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall seconds, peak RSS (MB), exit code and output's last lines."""
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode(errors="replace").strip().splitlines()
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "code": proc.returncode,
            "output": output[-3:]}


def repeated_row(name: str, cmd: list[str], repeats: int, expect_code: int = 0) -> dict:
    """``cmd`` run ``repeats`` times: the median wall time, each run's, the largest peak RSS,
    and the last run's exit code and output."""
    runs = [run_process(cmd) for _ in range(repeats)]
    if failed := next((run for run in runs if run["code"] != expect_code), None):
        raise RuntimeError(f"{name}: exit code {failed['code']}:\n" + "\n".join(failed["output"]))
    return {"row": name, "seconds": statistics.median(run["seconds"] for run in runs),
            "runs_s": [round(run["seconds"], 3) for run in runs],
            "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
            "code": runs[-1]["code"], "output": runs[-1]["output"]}


def enhance_row(name: str, args: list[str], extra: list[str], work: float, unit: str,
                repeats: int = 1) -> dict:
    """``mrvae enhance ARGS EXTRA --no-progress --overwrite`` ``repeats`` times
    (:func:`repeated_row`); ``work`` units done each time."""
    row = repeated_row(name, [*mrvae_command(), "enhance", *args, *extra, "--no-progress",
                              "--overwrite"], repeats)
    return {**row, "rate": work / row["seconds"], "unit": unit}


def startup_row(name: str, args: list[str], repeats: int, expect_code: int) -> dict:
    """``mrvae ARGS`` ``repeats`` times (:func:`repeated_row`), exiting with ``expect_code``."""
    return repeated_row(name, [*mrvae_command(), *args], repeats, expect_code)


def worker(method: str, photo_path: Path, weights: Path | None, runs: int) -> dict:
    """Time one method on the photo in this (fresh) process, after a warm-up: the median of
    ``runs`` runs."""
    from mrvae import Enhancer
    from mrvae.evaluation.baselines.zerodce import ZeroDCE
    from mrvae.io.decode import read_image

    photo = read_image(photo_path).pixels
    enhance = (ZeroDCE(weights) if method == "zerodce"
               else Enhancer(DEFAULT_MODEL, "cpu").enhance_array)
    enhance(photo[:256, :256])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        enhance(photo)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "runs_s": [round(t, 3) for t in times],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def zerodce_weights(folder: Path) -> tuple[Path, str]:
    """The published Zero-DCE weights, else random ones saved in ``folder``, and which."""
    import torch

    from mrvae.evaluation.baselines.zerodce import ZeroDCENet, weights_path

    if weights_path().is_file():
        return weights_path(), "published"
    torch.manual_seed(0)
    path = folder / "zerodce_random.pth"
    torch.save(ZeroDCENet().state_dict(), path)
    return path, "random"


def run_worker(method: str, photo: Path, weights: Path, runs: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(photo), "--weights", str(weights),
           "--timed-runs", str(runs)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def targets(rows: dict[str, dict]) -> dict[str, tuple[str, bool]]:
    """Each row's target, as text, and whether it is met."""
    checks = {"mrvae --help": (f"<= {TARGET_HELP_S} s", rows["mrvae --help"]["seconds"]
                               <= TARGET_HELP_S),
              "mrvae enhance --help": (f"<= {TARGET_HELP_S} s",
                                       rows["mrvae enhance --help"]["seconds"] <= TARGET_HELP_S),
              "missing input error": (f"< {TARGET_ERROR_S:.0f} s",
                                      rows["missing input error"]["seconds"] < TARGET_ERROR_S)}
    for name, limit in (("12 MP JPEG -> JPEG", TARGET_JPEG_S), ("12 MP PNG -> PNG", TARGET_PNG_S)):
        row = rows[name]
        checks[name] = (f"<= {limit:.0f} s, <= {TARGET_RSS_MB / 1024:.1f} GiB",
                        row["seconds"] <= limit and row["peak_rss_mb"] <= TARGET_RSS_MB)
    ratio = rows["Zero-DCE network 12 MP"]["ratio"]
    checks["Zero-DCE network 12 MP"] = (f">= {TARGET_ZERODCE_RATIO:.0f}x mrvae",
                                        ratio >= TARGET_ZERODCE_RATIO)
    folder = next(row for row in rows.values() if row.get("ratio_of") == "sequential")
    checks[folder["row"]] = (f">= {TARGET_FOLDER_RATIO}x sequential",
                             folder["ratio"] >= TARGET_FOLDER_RATIO)
    checks["720p video"] = (f">= {TARGET_VIDEO_FPS:.0f} frames/s",
                            rows["720p video"]["rate"] >= TARGET_VIDEO_FPS)
    return checks


def print_table(rows: dict[str, dict], checks: dict[str, tuple[str, bool]]) -> None:
    header = (f"{'row':<26}{'seconds':>9}{'rate':>20}{'peak RSS MB':>13}   "
              f"{'target':<26}")
    print(header)
    print("-" * (len(header) + 5))
    for name, row in rows.items():
        rate = f"{row['rate']:.2f} {row['unit']}" if "rate" in row else ""
        if "ratio" in row:
            rate = f"{row['ratio']:.2f}x {row['ratio_of']}"
        target, ok = checks.get(name, ("", None))
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{name:<26}{row['seconds']:>9.2f}{rate:>20}{row['peak_rss_mb']:>13.0f}   "
              f"{target:<26}{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 folder images instead of 200")
    parser.add_argument("--folder-images", type=int, help="2 MP photos in the folder row")
    parser.add_argument("--frames", type=int, default=60, help="frames of the 720p clip")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each start-up row")
    parser.add_argument("--timed-runs", type=int, default=3,
                        help="runs of the 12 MP rows (the median counts)")
    parser.add_argument("--extra-args", default="",
                        help='options for every `mrvae enhance`, e.g. "--backend onnx"')
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_e2e.json")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args.weights,
                                args.timed_runs)))
        return

    folder_images = args.folder_images or (20 if args.quick else 200)
    extra = shlex.split(args.extra_args)
    rows: dict[str, dict] = {}
    load_at_start = Path("/proc/loadavg").read_text().split()[:3]  # other jobs on the machine

    def done(row: dict) -> None:
        rows[row["row"]] = row
        print(f"  {row['row']}: {row['seconds']:.2f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        done(startup_row("mrvae --help", ["--help"], args.repeats, 0))
        done(startup_row("mrvae enhance --help", ["enhance", "--help"], args.repeats, 0))
        done(startup_row("missing input error", ["enhance", str(work / "nothere.jpg")],
                         args.repeats, 1))

        photo = dark_photo(FULL_SIZE)
        megapixels = photo.shape[0] * photo.shape[1] / 1e6
        for suffix, name in ((".jpg", "12 MP JPEG -> JPEG"), (".png", "12 MP PNG -> PNG")):
            src = write_photo(work / f"full{suffix}", photo)
            done(enhance_row(name, [str(src), "-o", str(work / f"out{suffix}")], extra,
                             megapixels, "MP/s", args.timed_runs))

        weights, kind = zerodce_weights(work)
        engine = run_worker("mrvae", work / "full.png", weights, args.timed_runs)
        done({"row": "mrvae engine 12 MP", **engine})
        zerodce = run_worker("zerodce", work / "full.png", weights, args.timed_runs)
        done({"row": "Zero-DCE network 12 MP", **zerodce, "weights": kind,
              "ratio": zerodce["seconds"] / engine["seconds"], "ratio_of": "mrvae"})

        photos = work / "photos"
        photos.mkdir()
        for i in range(folder_images):
            write_photo(photos / f"photo_{i:03d}.jpg", dark_photo(
                FOLDER_SIZE, SOURCES[i % len(SOURCES)], seed=i, shift=17 * i))
        sequential = enhance_row("folder, --no-overlap-io", [
            str(photos), "-o", str(work / "out_sequential"), "--no-overlap-io"],
            extra, folder_images, "images/s")
        done(sequential)
        overlapped = enhance_row(f"folder {folder_images} x 2 MP JPEG", [
            str(photos), "-o", str(work / "out")], extra, folder_images, "images/s")
        done({**overlapped, "ratio": overlapped["rate"] / sequential["rate"],
              "ratio_of": "sequential"})

        from bench_video import write_clip  # H.264 at 25 frames/s, as bench_video's clips

        clip = write_clip(work / "clip.mp4", dark_frames(args.frames))
        done(enhance_row("720p video", [str(clip), "-o", str(work / "out.mp4")], extra,
                         args.frames, "frames/s"))

    checks = targets(rows)
    print()
    print_table(rows, checks)
    import torch  # only now: the rows above time fresh processes

    from mrvae.engine.backends import native_bfloat16

    report = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              # the torch backend's default runs parts of the network in bfloat16 where true
              "cpu_bfloat16": native_bfloat16(torch.device("cpu")),
              "quick": args.quick, "extra_args": extra, "preset": DEFAULT_MODEL,
              "load_average_start": load_at_start,
              "load_average": Path("/proc/loadavg").read_text().split()[:3],
              "rows": list(rows.values()),
              "targets": {name: {"target": target, "pass": ok}
                          for name, (target, ok) in checks.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
