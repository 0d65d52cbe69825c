"""Writing images: float32 ``(H, W, C)`` pixels in [0, 1] encoded to PNG, JPEG, TIFF, WebP,
BMP, HEIF or AVIF with their bit depth, alpha, EXIF and ICC profile where the format holds them,
written atomically."""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import pillow_heif
import tifffile
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from mrvae.io.files import FORMATS, format_of, write_bytes_atomic
from mrvae.io.pixels import icc_colour_space

# Deeper AVIF is written with 10 bits, as HEIF: the most that AV1's Main and High profiles hold
# (12 bits need its Professional profile). Pillow's AVIF speed: libavif's own default is tens of
# times slower.
AVIF_DEEP_BITS = 10
AVIF_SPEED = 6


QUANTISE_ROWS = 256  # rows per band: float temporaries stay small whatever the image size
# PNG compression level (encode_image). 1, the default, is zlib's run-length strategy after the
# Average filter, deflated in strips on all cores (_deflate_rows): a 12 MP enhanced photo in
# 0.30 s and 17.3 MB on 2 cores, against 0.56 s and 17.4 MB through libpng with a filter chosen
# per row (mrvae's level 1 up to 0.5.2) and 3.3 s / 18.2 MB at Pillow's level 6 (up to 0.4.x);
# a clean camera photo 7.4 MB against libpng's 6.6. zlib's levels 2-9 (libpng) make clean, flat
# photos up to 30 % smaller (that photo: 5.2 MB at 9) in 2-50x the time (benchmarks/bench_png.py).
PNG_LEVEL = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Filtered bytes per strip of _deflate_rows: fixed, so the file does not depend on the core count.
PNG_STRIP_BYTES = 4 << 20


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


def _png_chunk_parts(kind: bytes, *body: bytes) -> list[bytes]:
    """A PNG chunk of ``kind`` whose data are the ``body`` parts, in parts (an image's data,
    tens of MB, are joined once, with the whole file)."""
    crc = zlib.crc32(kind)
    for part in body:
        crc = zlib.crc32(part, crc)
    length = struct.pack(">I", sum(len(part) for part in body))
    return [length, kind, *body, struct.pack(">I", crc & 0xFFFFFFFF)]


def _png_chunk(kind: bytes, *body: bytes) -> bytes:
    return b"".join(_png_chunk_parts(kind, *body))


def _deflate_rows(rows: np.ndarray, bytes_per_pixel: int) -> list[bytes]:
    """PNG's image data (the IDAT chunk's, in parts) for ``rows`` ``(H, row bytes)`` uint8:
    every row with the Average filter, deflated with zlib's run-length strategy in strips on a
    thread each (numpy and zlib release the GIL), which make one zlib stream: each strip ends
    on a flush, the last one finishes it, and the strips' Adler-32 checksums are combined."""
    count = max(1, min(rows.shape[0], rows.size // PNG_STRIP_BYTES))
    bounds = np.linspace(0, rows.shape[0], count + 1).astype(int)

    def strip(index: int) -> tuple[bytes, int, int]:
        top, bottom = bounds[index], bounds[index + 1]
        part = rows[top:bottom]
        up = np.zeros_like(part)  # the row above (none above the first)
        up[1:] = part[:-1]
        if top:
            up[0] = rows[top - 1]
        left = np.zeros_like(part)  # the same byte of the pixel on the left
        left[:, bytes_per_pixel:] = part[:, :-bytes_per_pixel]
        filtered = np.empty((part.shape[0], part.shape[1] + 1), np.uint8)
        filtered[:, 0] = 3  # Average: each byte minus the floored mean of left and up
        np.subtract(part, (left >> 1) + (up >> 1) + (left & up & 1), out=filtered[:, 1:])
        deflate = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
        last = index == count - 1  # zlib reads the array's buffer: no copy as bytes
        body = deflate.compress(filtered) + deflate.flush(
            zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
        return body, zlib.adler32(filtered), filtered.nbytes

    with ThreadPoolExecutor(min(count, os.cpu_count() or 1)) as pool:
        strips = list(pool.map(strip, range(count)))
    checksum = 1
    for _, adler, length in strips:
        checksum = _adler32_combine(checksum, adler, length)
    return [b"\x78\x01", *(body for body, _, _ in strips), struct.pack(">I", checksum)]


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """Adler-32 of two byte strings joined, from each one's (zlib's ``adler32_combine``)."""
    base = 65521
    low = ((first & 0xFFFF) + (second & 0xFFFF) - 1) % base
    high = ((first >> 16) + (second >> 16) + second_length * (first & 0xFFFF)
            - second_length) % base
    return low | (high << 16)


def _fast_png(out: np.ndarray, exif: bytes | None, icc: bytes | None) -> bytes:
    """uint8 or uint16 ``(H, W)`` or ``(H, W, 2 | 3 | 4)`` pixels as PNG bytes, level 1."""
    pixels = out if out.ndim == 3 else out[:, :, None]
    height, width, channels = pixels.shape
    bits = pixels.dtype.itemsize * 8
    big_endian = pixels.astype(">u2") if bits == 16 else pixels  # PNG's byte order
    rows = big_endian.reshape(height, -1).view(np.uint8)
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # gray, gray + alpha, RGB, RGBA
    header = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)
    return b"".join([PNG_SIGNATURE, _png_chunk(b"IHDR", header), _metadata_chunks(exif, icc),
                     *_png_chunk_parts(b"IDAT", *_deflate_rows(rows, channels * bits // 8)),
                     _png_chunk(b"IEND")])


def _metadata_chunks(exif: bytes | None, icc: bytes | None) -> bytes:
    """The iCCP and eXIf chunks of an ICC profile and raw EXIF (each where given)."""
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        chunks += _png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00"))
    return chunks


def _png_with_metadata(png: bytes, exif: bytes | None, icc: bytes | None) -> bytes:
    """Insert iCCP / eXIf chunks after IHDR (OpenCV writes the PNG but no metadata)."""
    ihdr_end = len(PNG_SIGNATURE) + 4 + 4 + 13 + 4  # IHDR: length, type, 13 data bytes, CRC
    return b"".join([png[:ihdr_end], _metadata_chunks(exif, icc), png[ihdr_end:]])


def _encode_png(out: np.ndarray, level: int, exif: bytes | None, icc: bytes | None) -> bytes:
    """uint8 or uint16 ``(H, W)`` or ``(H, W, 2 | 3 | 4)`` pixels as PNG bytes.

    Level 1 is :func:`_fast_png`'s; other levels go through OpenCV's libpng at zlib's
    ``level`` (libpng picks each row's filter), or Pillow for gray + alpha, which OpenCV cannot
    write (8 bits; deeper gray + alpha is made RGBA before it gets here).
    :func:`_png_with_metadata` adds the EXIF and ICC profile.
    """
    if level == 1:
        return _fast_png(out, exif, icc)
    if out.ndim == 3 and out.shape[2] == 2:
        stream = BytesIO()
        options = {k: v for k, v in (("exif", exif), ("icc_profile", icc)) if v}
        Image.fromarray(out).save(stream, format="PNG", compress_level=level, **options)
        return stream.getvalue()
    bgr = out if out.ndim == 2 else cv2.cvtColor(
        out, cv2.COLOR_RGB2BGR if out.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, level])
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
            strategy on all cores, the fastest; 2..9 are zlib's levels, slower, and smaller
            only for clean, flat images (see :data:`PNG_LEVEL`). The pixels are the same at
            every level.

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
    if icc is not None and icc_colour_space(icc) != wanted_space:
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
