"""Reading images safely: one clear error for every kind of bad file.

Pixels come back as float32 ``(H, W, C)`` arrays in [0, 1] with the EXIF orientation applied;
the bit depth, alpha channel, colour mode, EXIF and ICC profile travel beside them so that a
writer can keep them. HEIC/HEIF come through ``pillow-heif`` (10-bit ones at 16 bits), AVIF
through Pillow (10/12-bit ones through ``imagecodecs``, at 16 bits), camera RAW through
:mod:`mrvae.io.raw`.
"""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import pillow_heif
from PIL import Image, UnidentifiedImageError

from mrvae.io.files import is_raw_file
from mrvae.io.pixels import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    LoadedImage,
    fit_long_side,
    icc_colour_space,
)


def _bits_per_sample(im: Image.Image, data: bytes) -> int:
    """Bits per sample of the file's pixels: 8, or more for deep PNG, TIFF, HEIF and AVIF."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return 16
    if im.format == "PNG":
        return 16 if any(";16" in str(tile.args) for tile in im.tile) else 8
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,))
    if im.format == "HEIF":
        return int(im.info.get("bit_depth", 8))
    if im.format == "AVIF":  # PIL does not say; libheif reads it from the container, no decoding
        try:
            return int(pillow_heif.open_heif(BytesIO(data)).info["bit_depth"])
        except Exception:  # a file libheif cannot parse still decodes through PIL, at 8 bits
            return 8
    return 8


def _decode_deep(data: bytes, name: str, fmt: str, bits: int) -> tuple[np.ndarray, float]:
    """Pixels of more than 8 bits (PIL keeps only 8 of them) and their full-scale value: 16-bit
    PNG/TIFF through OpenCV, 10/12-bit HEIF through pillow-heif (shifted to 16 bits), 10/12-bit
    AVIF through imagecodecs (libavif)."""
    if fmt == "HEIF":
        arr = np.asarray(pillow_heif.open_heif(BytesIO(data), convert_hdr_to_8bit=False))
        return (arr[:, :, None] if arr.ndim == 2 else arr), 65535.0
    if fmt == "AVIF":  # index 0: the first frame, not all frames of an animated AVIF
        arr = imagecodecs.avif_decode(data, index=0)
        return (arr[:, :, None] if arr.ndim == 2 else arr), float(2**bits - 1)
    if fmt == "PNG":  # chunk CRCs and completeness, so libpng never sees a truncated stream
        Image.open(BytesIO(data)).verify()
    # libtiff warns through OpenCV's log about EXIF tags in a TIFF's first IFD (TIFF/EP style,
    # as our 16-bit TIFFs carry them); the pixels are fine.
    level = cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8),
                           cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if arr is None:
        raise ImageReadError(f"{name}: corrupt or truncated image data")
    if arr.ndim == 2:
        return arr[:, :, None], 65535.0
    code = cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(arr, code), 65535.0


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an ``(H, W, C)`` array."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file.

    Raises:
        ImageReadError: missing, empty, truncated or non-image file, or more than ``max_pixels``
            pixels in the header (checked before any pixel is decoded).
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return read_image_bytes(data, str(path), max_pixels)


def read_image_bytes(data: bytes, name: str = "<bytes>",
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an encoded image held in memory; ``name`` labels the error messages, and a RAW
    suffix in it (:data:`RAW_EXTENSIONS`) sends the data to :func:`mrvae.io.raw.read_raw`.

    Raises:
        ImageReadError: empty, truncated or non-image data, or more than ``max_pixels`` pixels
            in the header (checked before any pixel is decoded).
    """
    from mrvae.io.raw import read_raw  # LibRaw (rawpy) loads with the first RAW

    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    if is_raw_file(name):
        return read_raw(data, name, max_pixels)
    try:
        im = Image.open(BytesIO(data))
    except UnidentifiedImageError as exc:
        if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
            raise ImageReadError(f"{name}: corrupt or truncated HEIF/AVIF data") from exc
        raise ImageReadError(f"{name}: not an image (unknown file format)") from exc
    except Exception as exc:  # PIL raises several types for broken headers
        raise ImageReadError(f"{name}: not a readable image ({exc})") from exc
    width, height = im.size
    if width * height > max_pixels:
        raise ImageReadError(f"{name}: {width}x{height} = {width * height / 1e6:.0f} MP exceeds "
                             f"the limit of {max_pixels / 1e6:.0f} MP "
                             "(possible decompression bomb)")
    bits = _bits_per_sample(im, data)  # before getexif(), which may decode a PNG, dropping tiles
    try:
        exif = im.getexif()
    except Exception:  # a broken EXIF block should not cost the pixels
        exif = Image.Exif()
    orientation = int(exif.get(0x0112, 1) or 1)
    icc = im.info.get("icc_profile")
    fmt = im.format or ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if bits > 8 and im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raw, scale = _decode_deep(data, name, fmt, bits)
                depth = 16
            else:
                im.load()
                raw, scale, depth = pil_to_array(im)
    except ImageReadError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())  # decoders' messages may span lines (libheif)
        raise ImageReadError(f"{name}: corrupt or truncated image data ({reason})") from exc
    raw = _apply_orientation(raw, orientation)
    arr = raw.astype(np.float32)
    arr /= np.float32(scale)  # in place: one full-size float copy, not three
    alpha = None
    if arr.shape[2] in (2, 4):
        alpha = arr[:, :, -1].copy()
        arr = arr[:, :, :-1]
    if orientation != 1:
        exif[0x0112] = 1
    exif_bytes = exif.tobytes() if len(exif) else None
    if icc is not None and icc_colour_space(icc) not in (b"RGB ", b"GRAY"):
        icc = None  # e.g. the CMYK profile of a CMYK JPEG: wrong for the RGB pixels we return
    np.clip(arr, 0.0, 1.0, out=arr)
    return LoadedImage(pixels=np.ascontiguousarray(arr), alpha=alpha,
                       bit_depth=depth, grayscale=arr.shape[2] == 1, exif=exif_bytes,
                       icc_profile=icc, format=fmt)


# ISO-BMFF major brands of HEIF and AVIF files (a truncated one is no longer identified by PIL)
HEIF_BRANDS = frozenset((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1",
                         b"avif", b"avis"))


def pil_to_array(im: Image.Image) -> tuple[np.ndarray, float, int]:
    """PIL image -> ``(H, W, C)`` array, its full-scale value and bit depth."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.uint16 if mode.startswith("I;16") else np.int32)
        return np.clip(arr, 0, 65535).astype(np.uint16)[:, :, None], 65535.0, 16
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "F":
        arr = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        return arr[:, :, None], 1.0, 16
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, 255.0, 8


def read_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Read an image as uint8 ``(H, W, 3)`` RGB, optionally downscaled to ``max_side`` pixels."""
    rgb = fit_long_side(read_image(path).rgb, max_side)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
