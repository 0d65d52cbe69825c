"""Video enhancement: speed, memory and flicker of ``mrvae.engine.video.enhance_video``.

Clips are synthetic and made here: a dark photo from scikit-image panned one pixel per frame at
25 fps, with fresh sensor noise in every frame (H.264, crf 12).

* **speed**: frames per second of ``enhance_video`` (decode, enhance, encode) with the shipped
  preset at 720p and 1080p, in a fresh process per row; CPU seconds per frame too (all threads:
  steadier than wall time on a shared machine), and the peak RSS.
* **memory**: peak RSS for the same clip at 30 and 90 frames: streaming shows as a flat column.
* **flicker**: mean frame-to-frame |change of mean brightness| / mean brightness, of the input
  and of the outputs on a clip with steady lighting: mrvae smoothed (the default), mrvae frame by
  frame (``smoothing=0``) and Zero-DCE frame by frame (published weights from
  ``../shared/peers/zerodce``; row skipped when absent).
* **light change**: a lamp switched on (3x the light in one frame) and a dimmer (3x over 0.5 s):
  seconds after the change until the smoothed output's brightness stays within 10 % of the
  frame-by-frame output's.

Speed rows use 720p / 1080p clips of ``--speed-frames`` frames; memory 270p clips of 30 and 90
frames; flicker a 270p clip of 40 frames; light changes 180p clips of 50 frames (the decision
sees the whole frame at any size).

    python benchmarks/bench_video.py [--speed-frames 30] [--threads 2] [--out FILE]

Targets (2-core CPU): output flicker <= 1.5x the input's on steady lighting; a light change
followed within 1 s; 720p >= 2 frames/s; memory flat in clip length.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from mrvae.engine.enhancer import Enhancer
from mrvae.engine.video import VideoSettings, enhance_video, flicker

# mrvae loads torch after setting its OpenMP wait policy, as in the CLI: no torch import above.
from mrvae.evaluation.baselines import MethodUnavailable, get_method
from mrvae.io.video import read_frames
from mrvae.nn.config import DEFAULT_MODEL

FPS = 25
TARGET_FLICKER_RATIO = 1.5
TARGET_FOLLOW_SECONDS = 1.0
TARGET_FPS_720P = 2.0
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def dark_frames(width: int, height: int, frames: int, light: Callable[[int], float]
                ) -> Iterator[np.ndarray]:
    """uint8 RGB frames: a photo panned one pixel per frame, lit ``light(i)`` times a dark base
    level (mean about 0.06), with fresh Gaussian sensor noise (std 2/255)."""
    from skimage import data

    photo = cv2.resize(data.coffee(), (width + frames, height), interpolation=cv2.INTER_LINEAR)
    photo = photo.astype(np.float32) * 0.15
    rng = np.random.default_rng(0)
    for i in range(frames):
        frame = photo[:, i:i + width] * light(i)
        frame += rng.standard_normal(frame.shape, np.float32) * 2
        yield np.clip(frame, 0, 255).astype(np.uint8)


def write_clip(path: Path, frames: Iterator[np.ndarray]) -> Path:
    with av.open(str(path), "w") as container:
        stream = None
        for i, pixels in enumerate(frames):
            if stream is None:
                stream = container.add_stream("libx264", rate=FPS)
                stream.height, stream.width = pixels.shape[:2]
                stream.pix_fmt, stream.options = "yuv420p", {"crf": "12", "preset": "veryfast"}
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def brightness(frames: Iterator[np.ndarray]) -> np.ndarray:
    return np.array([float(frame.mean()) / 255 for frame in frames])


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def worker(src: Path, dst: Path, threads: int, global_size: int, smoothing: float) -> dict:
    """Enhance one clip in this (fresh) process; its measurements."""
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    enhancer = Enhancer(DEFAULT_MODEL, "cpu", global_size=global_size)
    enhancer.enhance_array(np.full((64, 64, 3), 0.1, np.float32))  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    result = enhance_video(enhancer, src, dst, VideoSettings(smoothing=smoothing), overwrite=True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"frames": result.frames, "size": f"{result.width}x{result.height}",
            "seconds": seconds, "fps": result.frames / seconds,
            "cpu_seconds_per_frame": cpu / result.frames, "global_size": global_size,
            "peak_rss_mb": status_mb("VmHWM"),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_worker(src: Path, dst: Path, threads: int, global_size: int = 512,
               smoothing: float = 0.4) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(src), str(dst), "--threads", str(threads),
           "--global-size", str(global_size), "--smoothing", str(smoothing)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{src} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def follow_seconds(levels: np.ndarray, reference: np.ndarray, change: int) -> float:
    """Seconds from frame ``change`` until ``levels`` stays within 10 % of ``reference``."""
    off = np.abs(levels - reference) > 0.1 * reference
    late = np.nonzero(off[change:])[0]
    return 0.0 if not late.size else (late[-1] + 1) / FPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-frames", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_video.json")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--global-size", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--smoothing", type=float, default=0.4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.threads, args.global_size, args.smoothing)))
        return

    report: dict = {"machine": platform.processor() or platform.machine(),
                    "threads": args.threads, "preset": DEFAULT_MODEL}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        steady = lambda i: 1.0  # noqa: E731

        speed = []
        for name, global_size in (("720p", 512), ("720p", 256), ("1080p", 512)):
            src = folder / f"{name}.mp4"
            if not src.exists():
                write_clip(src, dark_frames(*SIZES[name], args.speed_frames, steady))
            row = run_worker(src, folder / "out.mp4", args.threads, global_size)
            speed.append({"clip": name, **row})
            print(f"  speed {name} global {global_size}: {row['fps']:.2f} frames/s", flush=True)
        report["speed"] = speed

        memory = []
        for frames in (30, 90):
            src = write_clip(folder / f"mem{frames}.mp4", dark_frames(480, 270, frames, steady))
            row = run_worker(src, folder / "out.mp4", args.threads)
            memory.append({"clip": "270p", **row})
            print(f"  memory {frames} frames: {row['peak_rss_mb']:.0f} MB", flush=True)
        report["memory"] = memory

        src = write_clip(folder / "steady.mp4", dark_frames(480, 270, 40, steady))
        levels = {"input": brightness(read_frames(src))}
        for label, smoothing in (("mrvae smoothed", 0.4), ("mrvae frame by frame", 0.0)):
            run_worker(src, folder / "out.mp4", args.threads, smoothing=smoothing)
            levels[label] = brightness(read_frames(folder / "out.mp4"))
        try:
            zerodce = get_method("zerodce")
            levels["zero-dce frame by frame"] = brightness(
                zerodce(frame.astype(np.float32) / 255) * 255 for frame in read_frames(src))
        except MethodUnavailable as exc:
            print(f"  skipped zero-dce: {exc}")
        base = flicker(levels["input"])
        report["flicker"] = [{"method": k, "flicker": flicker(v),
                              "ratio_to_input": flicker(v) / base,
                              "mean_brightness": float(v.mean())} for k, v in levels.items()]
        print("  flicker: " + ", ".join(f"{r['method']} {r['flicker']:.4f}"
                                        for r in report["flicker"]), flush=True)

        follow = []
        change = FPS // 2  # half a second of the dark room first
        lights = {"lamp (3x in one frame)": lambda i: 1.0 if i < change else 3.0,
                  "dimmer (3x over 0.5 s)": lambda i: 3.0 ** float(np.clip(
                      (i - change) / (FPS / 2), 0, 1))}
        for label, light in lights.items():
            src = write_clip(folder / "light.mp4", dark_frames(320, 180, 2 * FPS, light))
            runs = {}
            for smoothing in (0.4, 0.0):
                run_worker(src, folder / "out.mp4", args.threads, smoothing=smoothing)
                runs[smoothing] = brightness(read_frames(folder / "out.mp4"))
            follow.append({"change": label, "follow_seconds":
                           follow_seconds(runs[0.4], runs[0.0], change),
                           "max_overshoot": float(np.max(runs[0.4][change:] / runs[0.0][change:])
                                                  - 1)})
            print(f"  {label}: followed after {follow[-1]['follow_seconds']:.2f} s", flush=True)
        report["light_change"] = follow

    print_report(report)
    report["targets"] = check_targets(report)
    for line in report["targets"]:
        print(line)
    report["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def print_report(report: dict) -> None:
    print(f"\n{'clip':<8}{'global':>8}{'frames':>8}{'frames/s':>10}{'CPU s/frame':>13}"
          f"{'peak RSS MB':>13}")
    for row in report["speed"] + report["memory"]:
        print(f"{row['clip']:<8}{row['global_size']:>8}{row['frames']:>8}{row['fps']:>10.2f}"
              f"{row['cpu_seconds_per_frame']:>13.2f}{row['peak_rss_mb']:>13.0f}")
    print(f"\n{'flicker (steady lighting)':<28}{'flicker':>9}{'x input':>9}{'brightness':>12}")
    for row in report["flicker"]:
        print(f"{row['method']:<28}{row['flicker']:>9.4f}{row['ratio_to_input']:>9.2f}"
              f"{row['mean_brightness']:>12.3f}")
    print(f"\n{'light change':<28}{'followed after s':>18}{'overshoot':>11}")
    for row in report["light_change"]:
        print(f"{row['change']:<28}{row['follow_seconds']:>18.2f}{row['max_overshoot']:>11.0%}")
    print()


def check_targets(report: dict) -> list[str]:
    ratio = next(r["ratio_to_input"] for r in report["flicker"] if r["method"] == "mrvae smoothed")
    follow = max(r["follow_seconds"] for r in report["light_change"])
    fps = next(r["fps"] for r in report["speed"] if r["clip"] == "720p"
               and r["global_size"] == 512)
    memory = [r["peak_rss_mb"] for r in report["memory"]]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    return [f"target flicker <= {TARGET_FLICKER_RATIO}x input: {ratio:.2f}x "
            f"{verdict(ratio <= TARGET_FLICKER_RATIO)}",
            f"target light change followed <= {TARGET_FOLLOW_SECONDS:.0f} s: {follow:.2f} s "
            f"{verdict(follow <= TARGET_FOLLOW_SECONDS)}",
            f"target 720p >= {TARGET_FPS_720P:.0f} frames/s: {fps:.2f} "
            f"{verdict(fps >= TARGET_FPS_720P)}",
            f"memory 30 -> 90 frames: {memory[0]:.0f} -> {memory[1]:.0f} MB "
            f"{verdict(memory[1] <= memory[0] * 1.1)}"]


if __name__ == "__main__":
    main()
