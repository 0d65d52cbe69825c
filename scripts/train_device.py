"""Train the next release candidate (configs/bilateral_v2.yaml, from the shipped bilateral weights)
on a lent GPU machine within a time budget.

The device machine reaches nothing outside it and gets only the checkout (plus up to 64 MiB of
git-ignored paths), so the training photos travel in a compact set inside the checkout.

1. Here, once: build the set (git-ignored ``cache/train_set/``, about 55 MiB) from ../shared::

       python scripts/train_device.py build

   LOL: all 300 pairs (the config's LOL validation split picks the best step and is never trained
   on), shrunk to half size (300 x 200, area average, which also halves the noise: the full-size
   pairs do not fit) and stored losslessly (WebP); clean photos: every photo of
   ../shared/data/clean shrunk to ``--clean-side`` px on the long side, JPEG quality 92.

2. On the device machine (the ``run`` tool with ``carry: ["cache/train_set"]``)::

       python scripts/train_device.py train --minutes 9

   A calibration run of ``--calibration-steps`` steps measures images/s, then the real run takes
   as many steps as fit in what is left of ``--minutes`` at 90% of that rate (the cosine
   schedule ends on time; a run that still overruns is stopped, keeping the best weights
   validated so far, every 250 steps). Weights
   (``best.safetensors`` + its card ``best.json``), ``log.jsonl`` and ``config.yaml`` are copied
   to ``$OUT`` (or ``--out``). ``--steps N`` skips the calibration; ``--set key=value`` adds config
   overrides, e.g. a CPU check here::

       python scripts/train_device.py train --steps 4 --out /tmp/device_check \\
           --set data.batch_size=2 --set data.crop=64 --set scene.side=64 --set data.workers=0 \\
           --set data.val_samples=2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "bilateral_v2.yaml"
# it continues from the shipped default, which travels with the checkout
INIT_WEIGHTS = ROOT / "src" / "mrvae" / "nn" / "weights" / "mrvae_bilateral.safetensors"
TRAIN_SET = ROOT / "cache" / "train_set"
SHARED = ROOT.parent / "shared" / "data"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
# One H200, 16 cores: larger batches than the CPU config (crops of 192 px: the half-size LOL
# frames are 300 x 200); the synthesis of pairs
# runs in the loader workers.
DEVICE_SETTINGS = ["data.batch_size=16", "data.crop=192", "data.workers=12", "scene.batch_size=8",
                   "scene.side=192", "threads=4", "val_interval=250", "checkpoint_interval=250",
                   "log_interval=20"]
FILES_OUT = ("best.safetensors", "best.json", "log.jsonl", "config.yaml")
RATE_MARGIN = 0.9  # the real run's steps assume 90% of the calibrated images/s


def images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def shrink(image: cv2.typing.MatLike, long_side: int) -> cv2.typing.MatLike:
    """``image`` shrunk (area average) so its long side is at most ``long_side``."""
    scale = long_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def build(shared: Path, dest: Path, lol_side: int, clean_side: int) -> None:
    """Write the compact training set: ``dest/LOL/{low,high}/*.webp`` and ``dest/clean/``."""
    if dest.exists():
        shutil.rmtree(dest)
    for kind in ("low", "high"):
        for path in images_under(shared / "paired" / "LOL" / kind):
            out = dest / "LOL" / kind / f"{path.stem}.webp"
            out.parent.mkdir(parents=True, exist_ok=True)
            image = shrink(cv2.imread(str(path), cv2.IMREAD_COLOR), lol_side)
            cv2.imwrite(str(out), image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # 101: lossless
    clean = shared / "clean"
    for path in images_under(clean):
        out = (dest / "clean" / path.relative_to(clean)).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        image = shrink(cv2.imread(str(path), cv2.IMREAD_COLOR), clean_side)
        cv2.imwrite(str(out), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {len(images_under(dest))} images, {size / 2**20:.1f} MiB")


def device_config(train_set: Path, run_dir: Path) -> Path:
    """The config with its data read from ``train_set``, written beside the run."""
    config = yaml.safe_load(CONFIG.read_text())
    config["model"]["init_weights"] = str(INIT_WEIGHTS)
    config["data"]["roots"] = [str(train_set / "clean")]
    for source in config["data"]["sources"]:
        if source["kind"] == "paired":
            source["root"] = str(train_set / "LOL")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_training(config: Path, run_dir: Path, overrides: list[str],
                 timeout: float | None = None) -> None:
    """``mrvae train`` in a child process (from this checkout, installed or not); stopped after
    ``timeout`` seconds (its best validated weights stay)."""
    sets = [arg for item in [*overrides, f"run_dir={run_dir}"] for arg in ("--set", item)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        subprocess.run([sys.executable, "-m", "mrvae", "train", "--config", str(config), *sets,
                        "--no-progress"], check=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{run_dir}: stopped after {timeout:.0f} s; keeping its best weights")


def measured_rate(run_dir: Path) -> float:
    """Images/s of the last logged interval of a run (the first one includes the start-up)."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["images_per_s"] for r in records if "images_per_s" in r][-1]


def train(args: argparse.Namespace) -> None:
    start = time.monotonic()
    out = Path(args.out or os.environ.get("OUT") or ROOT / "runs" / "device")
    work = ROOT / "runs" / "device_work"
    if work.exists():
        shutil.rmtree(work)
    overrides = [*DEVICE_SETTINGS, *args.set]
    config = device_config(args.train_set, work / "run")
    steps = args.steps
    if steps is None:
        calibration = work / "calibration"
        run_training(config, calibration, [*overrides, f"steps={args.calibration_steps}"])
        rate = measured_rate(calibration)
        batch = int(next(s for s in reversed(overrides)
                         if s.startswith("data.batch_size=")).split("=")[1])
        left = args.minutes * 60 - (time.monotonic() - start) - args.reserve
        steps = max(1, int(left * rate * RATE_MARGIN / batch))
        print(f"calibration: {rate:.1f} images/s; {steps} steps fit in {left:.0f} s")
    left = args.minutes * 60 - (time.monotonic() - start)
    run_training(config, work / "run", [*overrides, f"steps={steps}"],
                 timeout=max(60.0, left - 20) if args.steps is None else None)
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES_OUT:
        if (work / "run" / name).exists():
            shutil.copy2(work / "run" / name, out / name)
    print(f"{out}: {sorted(p.name for p in out.iterdir())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    building = commands.add_parser("build", help="build the compact training set (here)")
    building.add_argument("--shared", type=Path, default=SHARED)
    building.add_argument("--dest", type=Path, default=TRAIN_SET)
    building.add_argument("--lol-side", type=int, default=300, help="LOL's long side, px")
    building.add_argument("--clean-side", type=int, default=320,
                          help="clean photos' long side, px")
    training = commands.add_parser("train", help="train within the budget (device machine)")
    training.add_argument("--train-set", type=Path, default=TRAIN_SET)
    training.add_argument("--out", type=Path, default=None, help="default: $OUT")
    training.add_argument("--minutes", type=float, default=9.0)
    training.add_argument("--reserve", type=float, default=75.0,
                          help="seconds kept for start-up, validations and copying")
    training.add_argument("--calibration-steps", type=int, default=60)
    training.add_argument("--steps", type=int, default=None, help="fixed steps, no calibration")
    training.add_argument("--set", action="append", default=[], help="config override")
    args = parser.parse_args()
    if args.command == "build":
        build(args.shared, args.dest, args.lol_side, args.clean_side)
    else:
        train(args)


if __name__ == "__main__":
    main()
