"""Reading images safely: one clear error for every kind of bad file.

Pixels come back as float32 ``(H, W, C)`` arrays in [0, 1] with the EXIF orientation applied;
the bit depth, alpha channel, colour mode, EXIF and ICC profile travel beside them so that a
writer can keep them. HEIC/HEIF come through ``pillow-heif`` (10-bit ones at 16 bits), AVIF
through Pillow (10/12-bit ones through ``imagecodecs``, at 16 bits), camera RAW through
:mod:`mrvae.io.raw`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import cv2
import imagecodecs
import numpy as np
import pillow_heif
import tifffile
from PIL import Image, UnidentifiedImageError
from PIL.TiffImagePlugin import IFDRational

# Camera RAW suffixes LibRaw reads (decoded by mrvae.io.raw; TIFF-based ones would open in PIL as
# their small preview image, so the suffix decides).
RAW_EXTENSIONS = (".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2",
                  ".raf", ".orf", ".rw2", ".rwl", ".pef", ".srw", ".kdc", ".dcr", ".mrw",
                  ".3fr", ".fff", ".iiq", ".erf", ".mef", ".mos", ".x3f")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif",
                    ".avif", *RAW_EXTENSIONS)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")  # read by mrvae.engine.video
# Containers mrvae.engine.video writes (they hold H.264), by suffix: FFmpeg's muxer names.
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
DEFAULT_MAX_PIXELS = 200_000_000  # 200 MP: refuse larger headers before decoding anything

# We do our own pixel limit (before decoding), so PIL's bomb warning would only be noise.
Image.MAX_IMAGE_PIXELS = None
pillow_heif.register_heif_opener()  # HEIC/HEIF in PIL (PIL reads and writes 8-bit AVIF itself)
# Deeper AVIF is written with 10 bits, as HEIF: the most that AV1's Main and High profiles hold
# (12 bits need its Professional profile). Pillow's AVIF speed: libavif's own default is tens of
# times slower.
AVIF_DEEP_BITS = 10
AVIF_SPEED = 6


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message names the file and the reason."""


class OutputExistsError(FileExistsError):
    """The output file exists and overwriting was not asked for."""


@dataclass
class LoadedImage:
    """A decoded image and what a writer needs to keep.

    Attributes:
        pixels: float32 ``(H, W, C)`` in [0, 1], C = 3 (colour) or 1 (grayscale).
        alpha: float32 ``(H, W)`` in [0, 1] or None.
        bit_depth: 8 or 16.
        grayscale: the source had a single colour channel.
        exif: raw EXIF bytes with the orientation reset to 1 (pixels are already upright), or None.
        icc_profile: raw ICC profile bytes or None.
        format: PIL's format name ("PNG", "JPEG", "HEIF", ...) or "RAW".
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    grayscale: bool = False
    exif: bytes | None = None
    icc_profile: bytes | None = None
    format: str = ""

    @property
    def rgb(self) -> np.ndarray:
        """Pixels as float32 ``(H, W, 3)``; grayscale is repeated to three channels."""
        return np.repeat(self.pixels, 3, axis=2) if self.pixels.shape[2] == 1 else self.pixels


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_raw_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def same_format_suffix(path: Path) -> str:
    """The suffix of an output "in the format of" ``path``: its own, but ``.tif`` (16 bits) for a
    camera RAW (no RAW writer) and ``.png`` for a name without an image suffix."""
    if is_raw_file(path):
        return ".tif"
    return path.suffix if is_image_file(path) else ".png"


def list_images(root: str | Path, recursive: bool = True, videos: bool = False) -> list[Path]:
    """Image files (and video files with ``videos``) under ``root`` (sorted), or ``[root]`` for
    a single file."""
    root = Path(root)
    if root.is_file():
        return [root]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.is_file()
                  and (is_image_file(p) or (videos and is_video_file(p))))


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
    from mrvae.io.raw import read_raw  # mrvae.io.raw builds on this module

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
                raw, scale, depth = _pil_to_array(im)
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
    if icc is not None and _icc_colour_space(icc) not in (b"RGB ", b"GRAY"):
        icc = None  # e.g. the CMYK profile of a CMYK JPEG: wrong for the RGB pixels we return
    np.clip(arr, 0.0, 1.0, out=arr)
    return LoadedImage(pixels=np.ascontiguousarray(arr), alpha=alpha,
                       bit_depth=depth, grayscale=arr.shape[2] == 1, exif=exif_bytes,
                       icc_profile=icc, format=fmt)


# ISO-BMFF major brands of HEIF and AVIF files (a truncated one is no longer identified by PIL)
HEIF_BRANDS = frozenset((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1",
                         b"avif", b"avis"))


def _icc_colour_space(icc: bytes) -> bytes:
    """The data colour space signature of an ICC profile (b"RGB ", b"GRAY", b"CMYK", ...)."""
    return bytes(icc[16:20])


def _pil_to_array(im: Image.Image) -> tuple[np.ndarray, float, int]:
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


def _shrink(img: np.ndarray, scale: float) -> np.ndarray:
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def fit_long_side(img: np.ndarray, max_side: int | None) -> np.ndarray:
    """``img (H, W[, C])`` shrunk by area averaging so its long side is at most ``max_side``.

    Returned as is when it already fits or ``max_side`` is None. OpenCV drops a single channel
    axis when it resizes.
    """
    if max_side is None or max(img.shape[:2]) <= max_side:
        return img
    return _shrink(img, max_side / max(img.shape[:2]))


def fit_short_side(img: np.ndarray, side: int) -> np.ndarray:
    """``img (H, W[, C])`` shrunk by area averaging so its short side is at most ``side``."""
    if min(img.shape[:2]) <= side:
        return img
    return _shrink(img, side / min(img.shape[:2]))


def read_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Read an image as uint8 ``(H, W, 3)`` RGB, optionally downscaled to ``max_side`` pixels."""
    rgb = fit_long_side(read_image(path).rgb, max_side)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
           ".bmp": "bmp", ".webp": "webp", ".heic": "heif", ".heif": "heif", ".avif": "avif"}


def format_of(path: str | Path) -> str:
    """Canonical format name ("png", "jpeg", "tiff", "bmp", "webp", "heif", "avif") from a file
    suffix.

    Raises:
        ValueError: an unsupported suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unsupported image format {suffix or '(no suffix)'}; "
                         f"use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[suffix]


QUANTISE_ROWS = 256  # rows per band: float temporaries stay small whatever the image size
# PNG compression level (encode_image). 1, zlib's run-length strategy, is the fastest, and on
# photos with some noise (as the network's outputs) the smallest too: a 12 MP enhanced photo
# takes 13.5 MB in 0.75 s, against 14.0 MB in 5.3 s with Pillow's level 6 (what mrvae wrote
# before); zlib's levels 2-9 make clean, flat photos up to 20 % smaller (a clean 12 MP camera
# photo: 6.6 -> 5.2 MB), in 1.1-27x the time (benchmarks/bench_png.py).
PNG_LEVEL = 1


def _quantise(pixels: np.ndarray, alpha: np.ndarray | None, bits: int) -> np.ndarray:
    """Float pixels (and alpha) in [0, 1] -> one ``(H, W, C)`` array of ``bits``-bit integers
    (uint8 for 8, else uint16), band by band."""
    dtype, scale = (np.uint8 if bits == 8 else np.uint16), float(2**bits - 1)
    channels = pixels.shape[2] + (alpha is not None)
    out = np.empty((*pixels.shape[:2], channels), dtype)
    for top in range(0, pixels.shape[0], QUANTISE_ROWS):
        rows = slice(top, top + QUANTISE_ROWS)
        band = pixels[rows] if alpha is None else np.concatenate(
            [pixels[rows], alpha[rows, :, None]], axis=2)
        out[rows] = np.round(np.clip(band, 0.0, 1.0) * scale)
    return out


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _png_with_metadata(png: bytes, exif: bytes | None, icc: bytes | None) -> bytes:
    """Insert iCCP / eXIf chunks after IHDR (OpenCV writes the PNG but no metadata)."""
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        chunks += _png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00"))
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 data bytes, CRC
    return png[:ihdr_end] + chunks + png[ihdr_end:]


def _encode_png(out: np.ndarray, level: int, exif: bytes | None, icc: bytes | None) -> bytes:
    """uint8 or uint16 ``(H, W)`` or RGB(A) ``(H, W, 3 | 4)`` pixels as PNG bytes.

    OpenCV's libpng writes them: at ``level`` 1 with zlib's run-length strategy, else with
    zlib's ``level``; libpng picks each row's filter, but 16 bits at level 1 take OpenCV's
    defaults (run-length, the Sub filter on every row: 1.7x faster than a choice per row, 2 %
    larger). :func:`_png_with_metadata` adds the EXIF and ICC profile. Gray + alpha, which
    OpenCV cannot write, goes through Pillow at zlib's ``level`` (8 bits; deeper gray + alpha
    is made RGBA before it gets here).
    """
    if out.ndim == 3 and out.shape[2] == 2:
        stream = BytesIO()
        options = {k: v for k, v in (("exif", exif), ("icc_profile", icc)) if v}
        Image.fromarray(out).save(stream, format="PNG", compress_level=level, **options)
        return stream.getvalue()
    bgr = out if out.ndim == 2 else cv2.cvtColor(
        out, cv2.COLOR_RGB2BGR if out.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    if level == 1 and out.dtype == np.uint16:
        params = []
    else:  # the strategy after the level: OpenCV resets it when it reads a level
        strategy = (cv2.IMWRITE_PNG_STRATEGY_RLE if level == 1
                    else cv2.IMWRITE_PNG_STRATEGY_DEFAULT)
        params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, strategy]
    ok, buf = cv2.imencode(".png", bgr, params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode this {out.dtype} image as PNG")
    return _png_with_metadata(buf.tobytes(), exif, icc)


def encode_image(pixels: np.ndarray, alpha: np.ndarray | None = None, bit_depth: int = 8,
                 fmt: str = "png", quality: int = 95, exif: bytes | None = None,
                 icc: bytes | None = None, png_level: int = PNG_LEVEL) -> bytes:
    """Encode float ``(H, W, C)`` pixels in [0, 1] (C = 1 or 3) as an image file in memory.

    Args:
        alpha: float ``(H, W)`` in [0, 1]; dropped for JPEG and BMP.
        bit_depth: 8 or 16; 16 is kept for PNG and TIFF, HEIF and AVIF store it as 10 bits,
            other formats get 8. 10-bit AVIF is written by imagecodecs, which cannot add EXIF or
            an ICC profile: an AVIF with either to keep is written at 8 bits instead (a photo's
            colour space and camera data matter more than its two extra bits).
        fmt: "png", "jpeg" (or "jpg"), "tiff" (or "tif"), "bmp", "webp", "heif" (or "heic")
            or "avif".
        quality: JPEG / WebP / HEIF / AVIF quality, 1..100.
        exif, icc: raw EXIF (as :func:`read_image` returns it) and ICC profile, kept where the
            format can hold them (EXIF: all but BMP, 16-bit TIFF only its camera and exposure
            tags; ICC: all but BMP). A profile whose colour space does not match the pixels (RGB
            vs gray) is dropped.
        png_level: PNG compression, 0 (none) to 9: 1, the default, is zlib's run-length
            strategy, the fastest; 2..9 are zlib's levels, slower, and smaller only for clean,
            flat images (see :data:`PNG_LEVEL`). The pixels are the same at every level.

    Raises:
        ValueError: an unknown format, a bad pixel shape or ``png_level``.
    """
    if not 0 <= png_level <= 9:
        raise ValueError(f"PNG compression level must be 0..9, got {png_level}")
    name = FORMATS.get(f".{fmt.lower()}")
    if name is None:
        raise ValueError(f"unsupported image format {fmt!r}; use one of png, jpeg, tiff, bmp, "
                         "webp, heif, avif")
    fmt = name
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"pixels must be (H, W, 1) or (H, W, 3), got {pixels.shape}")
    if fmt in ("jpeg", "bmp"):
        alpha = None
    bit_depth = 16 if bit_depth == 16 and fmt in ("png", "tiff", "heif", "avif") else 8
    if fmt == "avif" and (exif or icc):  # 10-bit AVIF (imagecodecs) holds no metadata
        bit_depth = 8
    if pixels.shape[2] == 1 and bit_depth == 16 and (alpha is not None
                                                     or fmt in ("heif", "avif")):
        # no 16-bit gray + alpha (OpenCV), no deep gray HEIF (pillow-heif) or AVIF (imagecodecs)
        pixels = np.repeat(pixels, 3, axis=2)
    out = _quantise(pixels, alpha, AVIF_DEEP_BITS if bit_depth == 16 and fmt == "avif"
                    else bit_depth)
    if out.shape[2] == 1:
        out = out[:, :, 0]
    wanted_space = b"GRAY" if pixels.shape[2] == 1 else b"RGB "
    if icc is not None and _icc_colour_space(icc) != wanted_space:
        icc = None
    if fmt == "png":
        return _encode_png(out, png_level, exif, icc)
    if bit_depth == 16 and fmt == "tiff":  # tifffile writes 16-bit colour, ICC and tags
        stream = BytesIO()
        tifffile.imwrite(stream, out, photometric="minisblack" if out.ndim == 2 else "rgb",
                         extrasamples=("unassalpha",) if alpha is not None else None,
                         compression="zlib", iccprofile=icc, extratags=_tiff_exif_tags(exif))
        return stream.getvalue()
    if bit_depth == 16 and fmt == "avif":  # PIL writes 8-bit AVIF only; 4:2:0 as PIL does
        return imagecodecs.avif_encode(out, level=int(quality), speed=AVIF_SPEED,
                                       bitspersample=AVIF_DEEP_BITS, pixelformat="420")
    options: dict = {}
    if fmt in ("jpeg", "webp", "heif", "avif"):
        options["quality"] = int(quality)
    if bit_depth == 16:  # HEIF: pillow-heif stores 16-bit colour as 10 bits
        mode = "RGB;16" if out.shape[2] == 3 else "RGBA;16"
        heif = pillow_heif.from_bytes(mode, (out.shape[1], out.shape[0]), out.tobytes())
        stream = BytesIO()
        heif.save(stream, exif=exif, icc_profile=icc, **options)
        return stream.getvalue()
    if fmt != "bmp":
        options.update({k: v for k, v in (("exif", exif), ("icc_profile", icc)) if v})
    if fmt == "tiff":
        options["compression"] = "tiff_deflate"
    stream = BytesIO()
    Image.fromarray(out).save(stream, format=fmt.upper(), **options)
    return stream.getvalue()


# Camera and exposure tags a 16-bit TIFF keeps in its first IFD (TIFF/EP style, as DNG does):
# make, model, date, artist, copyright, exposure time, f-number, ISO, dates taken and digitised,
# focal length, lens make and model.
TIFF_EXIF_TAGS = (0x010F, 0x0110, 0x0132, 0x013B, 0x8298, 0x829A, 0x829D, 0x8827, 0x9003,
                  0x9004, 0x920A, 0xA433, 0xA434)


def _tiff_exif_tags(exif: bytes | None) -> list[tuple]:
    """tifffile ``extratags`` for the :data:`TIFF_EXIF_TAGS` found in raw EXIF bytes."""
    if not exif:
        return []
    parsed = Image.Exif()
    parsed.load(exif)
    values = {**dict(parsed), **parsed.get_ifd(0x8769)}
    tags = []
    for tag in TIFF_EXIF_TAGS:
        value = values.get(tag)
        if isinstance(value, str):
            tags.append((tag, "s", 0, value, True))
        elif isinstance(value, IFDRational) and value.numerator >= 0 and value.denominator > 0:
            tags.append((tag, "2I", 1, (int(value.numerator), int(value.denominator)), True))
        elif isinstance(value, int) and 0 <= value < 2**32:
            tags.append((tag, "I", 1, value, True))
    return tags


@contextlib.contextmanager
def atomic_file(path: str | Path, fsync: bool = False) -> Iterator[BinaryIO]:
    """An open binary file that becomes ``path`` only when the block ends without an error.

    The data goes to a temporary file in the same folder, then a rename, so a crash never leaves
    a half-written file and an old ``path`` survives until the new one is complete. ``fsync``
    also flushes the data to disk before the rename (for checkpoints: survives a power cut).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # Mode 0o666 filtered by the umask, like any new file (mkstemp would give 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as handle:
        handle.write(data)
    return Path(path)


def write_image(path: str | Path, pixels: np.ndarray, bit_depth: int = 8,
                alpha: np.ndarray | None = None, quality: int = 95, exif: bytes | None = None,
                icc: bytes | None = None, png_level: int = PNG_LEVEL) -> Path:
    """Write float ``(H, W, C)`` pixels in [0, 1] atomically (temp file + rename).

    The format follows the suffix; see :func:`encode_image` for what each format keeps and for
    ``png_level``.
    """
    data = encode_image(pixels, alpha, bit_depth, format_of(path), quality, exif, icc,
                        png_level)
    return write_bytes_atomic(path, data)
