"""PNG writing: seconds and size of each compression level of ``encode_image`` at 12 MP.

For each image, 8 bits: ``encode_image(..., png_level=N)`` for N = 0..9 (1: the Average filter
and zlib's run-length strategy, deflated in strips on all cores; the others through OpenCV's
libpng) against libpng's level 1 with the run-length strategy and a filter chosen per row (what
mrvae wrote at level 1 up to 0.5.2) and Pillow's ``compress_level`` 1..9 (up to 0.4.x, at 6);
16 bits: levels 1 and 6, and libpng's level 1 (OpenCV's defaults, as mrvae wrote them up to
0.5.2). Every output is decoded and compared with the input pixels. Seconds are the best of
``--repeats`` encodings of float pixels in memory (quantisation included, no disk).

Images: the default is a 12 MP (4240x2832) photo-like image, scikit-image's astronaut resized
with Gaussian noise of std 2/255; ``--image`` adds files (e.g. an enhanced photo, a clean
camera JPEG), resized to the same size.

    python benchmarks/bench_png.py [--image PATH ...] [--repeats 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mrvae.io.decode import read_image, read_image_bytes
from mrvae.io.encode import encode_image

SIZE = (4240, 2832)


def noisy_astronaut() -> np.ndarray:
    from skimage import data

    photo = cv2.resize(data.astronaut(), SIZE, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    photo += np.random.default_rng(0).standard_normal(photo.shape, np.float32) * 2
    return np.clip(np.round(photo), 0, 255).astype(np.uint8)


def from_file(path: Path) -> np.ndarray:
    pixels = np.round(read_image(path).rgb * 255).astype(np.uint8)
    return cv2.resize(pixels, SIZE, interpolation=cv2.INTER_AREA)


def png(pixels: np.ndarray, level: int) -> bytes:
    bits = 16 if pixels.dtype == np.uint16 else 8
    return encode_image(pixels / np.float32(2**bits - 1), bit_depth=bits, png_level=level)


def pillow(pixels: np.ndarray, level: int) -> bytes:
    quantised = np.round(pixels / np.float32(255) * 255).astype(np.uint8)
    stream = BytesIO()
    Image.fromarray(quantised).save(stream, format="PNG", compress_level=level)
    return stream.getvalue()


def libpng_rle(pixels: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    params = [] if pixels.dtype == np.uint16 else [
        cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    return cv2.imencode(".png", bgr, params)[1].tobytes()


def encoders() -> dict[str, tuple[Callable[[np.ndarray], bytes], int]]:
    """Encoders by name, each with the bit depth it is given."""
    table: dict[str, tuple[Callable[[np.ndarray], bytes], int]] = {}
    for level in range(10):
        table[f"mrvae {level}"] = (functools.partial(png, level=level), 8)
    table["libpng 1 (up to 0.5.2)"] = (libpng_rle, 8)
    for level in range(1, 10):
        table[f"pillow {level}"] = (functools.partial(pillow, level=level), 8)
    for level in (1, 6):
        table[f"16-bit mrvae {level}"] = (functools.partial(png, level=level), 16)
    table["16-bit libpng 1 (up to 0.5.2)"] = (libpng_rle, 16)
    return table


def measure(name: str, encode: Callable[[np.ndarray], bytes], pixels: np.ndarray,
            repeats: int) -> dict:
    """Encode integer ``pixels`` (from float, as mrvae does) ``repeats`` times; the best
    seconds, the size and whether they decode to the same pixels."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data = encode(pixels)
        best = min(best, time.perf_counter() - start)
    scale = 65535 if pixels.dtype == np.uint16 else 255
    decoded = np.round(read_image_bytes(data, "x.png").pixels * scale).astype(pixels.dtype)
    return {"encoder": name, "seconds": round(best, 3), "mb": round(len(data) / 1e6, 3),
            "exact": bool(np.array_equal(decoded, pixels))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, action="append", default=[])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_png.json")
    args = parser.parse_args()
    images = {"astronaut + noise": noisy_astronaut,
              **{path.name: (lambda path=path: from_file(path)) for path in args.image}}
    report: dict = {"machine": platform.processor() or platform.machine(),
                    "size": f"{SIZE[0]}x{SIZE[1]}", "repeats": args.repeats, "images": {}}
    for image, make in images.items():
        pixels = make()
        deep = pixels.astype(np.uint16) * 257  # 16 bits with noisy low bits, as enhanced
        deep += np.random.default_rng(1).integers(0, 257, deep.shape, dtype=np.uint16)
        rows = []
        for name, (encode, bits) in encoders().items():
            rows.append(measure(name, encode, deep if bits == 16 else pixels, args.repeats))
            print(f"  {image}: {name}: {rows[-1]['seconds']:.2f} s, {rows[-1]['mb']:.1f} MB",
                  flush=True)
        report["images"][image] = rows
    print(f"\n{'encoder':<24}" + "".join(f"{image[:22]:>24}" for image in report["images"]))
    for i, row in enumerate(next(iter(report["images"].values()))):
        cells = [rows[i] for rows in report["images"].values()]
        print(f"{row['encoder']:<24}" + "".join(
            f"{c['seconds']:>10.2f} s {c['mb']:>7.1f} MB" + ("" if c["exact"] else "!")
            for c in cells))
    report["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
