"""Camera RAW vs 8-bit JPEG of the same shot: what the RAW's linear bits are worth.

Each held-out clean photo (``select_split(..., "val", 0.1)``, long side 512) is the ground truth
of one synthetic shot: the sRGB curve inverted to linear light, darkened by 4-6 stops, through
an RGGB Bayer filter onto a 12- or 14-bit sensor with Poisson shot noise and Gaussian read noise
(:func:`mrvae.io.raw.capture`), written as a DNG. The same shot is then enhanced three ways:

- ``dng``: the DNG as ``mrvae enhance`` reads it: a dark shot brightened in linear light by at
  most ``--raw-push`` stops towards ``--raw-stops`` (:class:`mrvae.io.raw.RawDevelop`), float sRGB
  into the network;
- ``dng, camera exposure``: the DNG developed at its own (dark) exposure, float sRGB: the bits
  without the exposure choice;
- ``jpeg``: what the camera would save instead: the same demosaic and white balance, the sRGB
  curve, a mild S tone curve (shadows down about 20%), 8 bits, JPEG quality 90;
- ``jpeg, exposure as dng``: that JPEG brightened by the same rule as the DNG (its pixels taken
  as sRGB, the gain applied in linear light): the same exposure choice, from 8 bits.

PSNR and SSIM against the clean photo. A second part makes one 24 MP DNG and reports the peak RSS
of a fresh process that enhances it to a 16-bit TIFF (as ``mrvae enhance`` does).

    python benchmarks/raw_vs_jpeg.py [--clean ../shared/data/clean] [--count 20] [--model lite]
                                     [--raw-stops -3] [--raw-push 1] [--split val] [--big-mp 24]
                                     [--out FILE]

``--split train`` runs the same comparison on photos outside the held-out split: the RAW
exposure (``--raw-stops``, ``--raw-push``) is chosen there, and the held-out figures reported.
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
from pathlib import Path

import cv2
import numpy as np

from mrvae.data.datasets import select_split
from mrvae.engine.enhancer import Enhancer
from mrvae.evaluation.metrics import psnr, ssim
from mrvae.io import raw
from mrvae.io.decode import read_image_bytes, read_rgb
from mrvae.io.encode import encode_image
from mrvae.io.files import list_images

SENSORS = (raw.Sensor(bits=12, black_level=256, full_well=10_000, read_noise=4.0),
           raw.Sensor(bits=14, black_level=512, full_well=20_000, read_noise=3.0))
TARGET_GAIN_DB = 1.0
TARGET_RSS_MB = 2048.0
INPUTS = ("dng", "dng, camera exposure", "jpeg", "jpeg, exposure as dng")
TONE_STRENGTH = 0.3  # the camera's S curve: y + s * y * (1 - y) * (2y - 1)


def camera_jpeg(linear: np.ndarray, quality: int = 90) -> bytes:
    """A camera's 8-bit JPEG of uint16 linear sRGB ``(H, W, 3)`` (no brightening)."""
    srgb = raw.develop(linear, 1.0)
    toned = srgb + TONE_STRENGTH * srgb * (1 - srgb) * (2 * srgb - 1)
    return encode_image(toned, fmt="jpeg", quality=quality)


def expose_srgb(srgb: np.ndarray, settings: raw.RawDevelop) -> np.ndarray:
    """Float sRGB ``(H, W, 3)`` brightened in linear light as ``settings`` brighten a RAW."""
    linear = raw.srgb_to_linear(srgb)
    return raw.linear_to_srgb(linear * settings.gain(linear))


def shoot(clean: np.ndarray, stops: float, sensor: raw.Sensor,
          rng: np.random.Generator) -> bytes:
    """The DNG of ``clean`` (float sRGB) photographed ``stops`` under."""
    linear = raw.srgb_to_linear(clean) * np.float32(2.0**-stops)
    return raw.encode_dng(raw.capture(linear, sensor, rng), sensor)


def linear_of(dng: bytes) -> np.ndarray:
    opened = raw.open_raw(dng, "shot.dng", 10**9)
    try:
        return raw.decode_linear(opened, "shot.dng")
    finally:
        opened.close()


def compare(args: argparse.Namespace) -> dict:
    paths = select_split(list_images(args.clean), args.split, 0.1)[: args.count]
    if not paths:
        raise SystemExit(f"{args.clean}: no {args.split} photos")
    enhancer = Enhancer(args.model, device="cpu")
    settings = raw.RawDevelop(stops=args.raw_stops, max_push=args.raw_push)
    rng = np.random.default_rng(args.seed)
    rows: dict[str, list[dict]] = {name: [] for name in INPUTS}
    per_image = []
    for index, path in enumerate(paths):
        clean = read_rgb(path, args.max_side).astype(np.float32) / 255.0
        stops = float(rng.uniform(4.0, 6.0))
        sensor = SENSORS[index % len(SENSORS)]
        dng = shoot(clean, stops, sensor, rng)
        linear = linear_of(dng)
        jpeg = read_image_bytes(camera_jpeg(linear), "shot.jpg").pixels
        inputs = {"dng": raw.read_raw(dng, "shot.dng", settings=settings).pixels,
                  "dng, camera exposure": raw.develop(linear, 1.0),
                  "jpeg": jpeg,
                  "jpeg, exposure as dng": expose_srgb(jpeg, settings)}
        scores = {}
        for name, pixels in inputs.items():
            out = enhancer.enhance_array(pixels)
            scores[name] = {"psnr": psnr(out, clean), "ssim": ssim(out, clean)}
            rows[name].append(scores[name])
        per_image.append({"name": path.name, "stops": stops, "bits": sensor.bits, **scores})
        print(f"{index + 1:>3}/{len(paths)} {path.name:<28} -{stops:.1f} EV {sensor.bits} bit  "
              + "  ".join(f"{n}: {s['psnr']:.2f}" for n, s in scores.items()), flush=True)
    means = {name: {metric: float(np.mean([s[metric] for s in scores]))
                    for metric in ("psnr", "ssim")} for name, scores in rows.items()}
    return {"images": len(paths), "means": means, "per_image": per_image,
            "gain_db": means["dng"]["psnr"] - means["jpeg"]["psnr"],
            "gain_same_exposure_db": means["dng"]["psnr"]
            - means["jpeg, exposure as dng"]["psnr"]}


def big_child(dng: str, out: str, model: str) -> None:
    """In a fresh process: enhance one DNG to a 16-bit TIFF; print seconds and peak RSS."""
    enhancer = Enhancer(model, device="cpu")
    start = time.perf_counter()
    enhancer.enhance_file(dng, out, overwrite=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak}))


def big_row(args: argparse.Namespace) -> dict:
    from skimage import data

    height = round((args.big_mp * 1e6 * 3 / 4) ** 0.5)
    width = round(height * 4 / 3)
    scene = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_LINEAR)
    linear = raw.srgb_to_linear(scene / np.float32(255.0)) * np.float32(2.0**-5)
    sensor = SENSORS[1]
    dng = raw.encode_dng(raw.capture(linear, sensor, np.random.default_rng(0)), sensor)
    del scene, linear
    with tempfile.TemporaryDirectory() as folder:
        src = Path(folder) / "big.dng"
        src.write_bytes(dng)
        result = subprocess.run([sys.executable, __file__, "--big-child", str(src),
                                 str(Path(folder) / "big.tif"), "--model", args.model],
                                capture_output=True, text=True, check=True)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    return {"megapixels": width * height / 1e6, "width": width, "height": height, **row,
            "target_rss_mb": TARGET_RSS_MB}


def print_table(results: dict) -> None:
    photos = "held-out" if results["split"] == "val" else "training-split"
    print(f"\nRAW vs JPEG, {results['images']} {photos} photos, model {results['model']}, "
          f"RAW exposure {results['raw_stops']:+g} stops, push <= {results['raw_push']:g}")
    print(f"{'input':<26}{'PSNR':>8}{'SSIM':>8}")
    for name, means in results["means"].items():
        print(f"{name:<26}{means['psnr']:>8.2f}{means['ssim']:>8.3f}")
    print(f"DNG - JPEG: {results['gain_db']:+.2f} dB (target >= +{TARGET_GAIN_DB:g} dB); "
          f"with the same exposure choice: {results['gain_same_exposure_db']:+.2f} dB")
    if "big" in results:
        big = results["big"]
        print(f"{big['megapixels']:.1f} MP DNG -> 16-bit TIFF: {big['seconds']:.1f} s, "
              f"peak RSS {big['peak_rss_mb']:.0f} MB (target <= {TARGET_RSS_MB:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", type=Path, default=Path("../shared/data/clean"))
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--model", default="lite", help="preset or weights path")
    parser.add_argument("--raw-stops", type=float, default=raw.RawDevelop().stops,
                        help="exposure the DNG is developed to (stops below a normal one)")
    parser.add_argument("--raw-push", type=float, default=raw.RawDevelop().max_push,
                        help="the most stops a DNG is brightened by (inf: up to --raw-stops)")
    parser.add_argument("--split", choices=("val", "train"), default="val",
                        help="val: the held-out photos (report); train: for choosing --raw-stops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--big-mp", type=float, default=24.0, help="0 skips the memory row")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/raw_vs_jpeg.json"))
    parser.add_argument("--big-child", nargs=2, metavar=("DNG", "TIFF"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_child:
        big_child(*args.big_child, args.model)
        return
    results = {"model": args.model, "raw_stops": args.raw_stops, "raw_push": args.raw_push,
               "split": args.split,
               "seed": args.seed,
               "max_side": args.max_side, "python": platform.python_version(),
               **compare(args)}
    if args.big_mp > 0:
        results["big"] = big_row(args)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
