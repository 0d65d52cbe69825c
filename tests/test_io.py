"""Reading and writing images: bad files fail clearly, metadata and bit depth survive."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageCms
from PIL.TiffImagePlugin import IFDRational

from mrvae.io import encode
from mrvae.io.decode import read_image, read_image_bytes
from mrvae.io.encode import encode_image, write_image
from mrvae.io.files import write_bytes_atomic
from mrvae.io.pixels import ImageReadError, fit_long_side, fit_short_side

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


@pytest.fixture()
def rgb(astronaut: np.ndarray) -> np.ndarray:
    return astronaut[:40, :56]


def _exif(make: str = "TestCam", orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0112] = orientation
    return exif.tobytes()


# --- bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, reason", [
    ("empty.jpg", b"", "empty file"),
    ("text.jpg", b"this is not a photo\n", "not an image"),
    ("bomb.png", bomb_png(), "decompression bomb"),
])
def test_bad_bytes_name_the_file_and_reason(tmp_path: Path, name: str, content: bytes,
                                            reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)


@pytest.mark.parametrize("suffix, bit_depth", [(".jpg", 8), (".png", 8), (".png", 16)])
def test_truncated_files(tmp_path: Path, rgb: np.ndarray, suffix: str, bit_depth: int,
                         capfd: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / f"full{suffix}"
    write_image(full, rgb / 255.0, bit_depth)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="corrupt or truncated") as info:
        read_image(cut)
    assert str(cut) in str(info.value)
    assert "libpng" not in capfd.readouterr().err  # no noise from the decoder


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path, rgb: np.ndarray) -> None:
    path = write_image(tmp_path / "ok.png", rgb / 255.0)
    assert read_image(path, max_pixels=rgb.shape[0] * rgb.shape[1]).pixels.shape[:2] == (40, 56)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image(path, max_pixels=100)


def test_read_image_bytes_labels_errors_with_the_name(rgb: np.ndarray) -> None:
    good = encode_image(rgb / 255.0, fmt="png")
    assert read_image_bytes(good, "upload.png").pixels.shape == (40, 56, 3)
    with pytest.raises(ImageReadError, match=r"^upload\.jpg: not an image"):
        read_image_bytes(b"GIF? no", "upload.jpg")
    with pytest.raises(ImageReadError, match=r"^upload\.png: empty"):
        read_image_bytes(b"", "upload.png")


# --- modes ----------------------------------------------------------------------------------


def test_cmyk_jpeg_reads_as_rgb_without_its_cmyk_profile(tmp_path: Path, rgb: np.ndarray) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    img = read_image(path)
    assert img.pixels.shape == (40, 56, 3) and not img.grayscale and img.icc_profile is None
    assert np.abs(img.pixels * 255 - rgb).mean() < 12


def test_palette_png_reads_as_rgb(tmp_path: Path, rgb: np.ndarray) -> None:
    path = tmp_path / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    img = read_image(path)
    assert img.pixels.shape == (40, 56, 3) and img.alpha is None and img.bit_depth == 8


def test_16bit_png_keeps_16_bits(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 40 * 56 * 3).reshape(40, 56, 3).astype(np.uint16)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), ramp[:, :, ::-1])
    img = read_image(path)
    assert img.bit_depth == 16
    np.testing.assert_array_equal(np.round(img.pixels * 65535).astype(np.uint16), ramp)


def test_exif_orientation_is_applied_and_reset(tmp_path: Path, rgb: np.ndarray) -> None:
    path = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).save(path, exif=_exif(orientation=6), quality=95)
    img = read_image(path)
    assert img.pixels.shape == (56, 40, 3)  # 90 degrees clockwise: upright now
    exif = Image.Exif()
    exif.load(img.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam"


# --- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff", "webp", "heif", "avif"])
def test_exif_and_icc_survive_a_round_trip(rgb: np.ndarray, fmt: str) -> None:
    data = encode_image(rgb / 255.0, fmt=fmt, exif=_exif(), icc=SRGB)
    img = read_image_bytes(data, f"x.{fmt}")
    assert img.icc_profile == SRGB
    assert img.exif is not None and b"TestCam" in img.exif


def test_deep_avif_with_metadata_keeps_the_metadata_over_the_extra_bits(rgb: np.ndarray) -> None:
    ramp = np.linspace(0, 1, 40 * 56, dtype=np.float32).reshape(56, 40, 1).repeat(3, axis=2)
    bare = read_image_bytes(encode_image(ramp, bit_depth=16, fmt="avif"), "x.avif")
    assert bare.bit_depth == 16 and bare.icc_profile is None
    kept = read_image_bytes(encode_image(ramp, bit_depth=16, fmt="avif", exif=_exif(),
                                         icc=SRGB), "x.avif")
    assert kept.icc_profile == SRGB and b"TestCam" in kept.exif and kept.bit_depth == 8


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_round_trip_is_exact_with_alpha(fmt: str, channels: int) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (9, 11, channels)).astype(np.float32) / 65535
    alpha = rng.integers(0, 65536, (9, 11)).astype(np.float32) / 65535
    img = read_image_bytes(encode_image(pixels, alpha, 16, fmt, icc=SRGB if channels == 3
                                        else None), "deep")
    assert img.bit_depth == 16
    np.testing.assert_array_equal(img.alpha, alpha)
    np.testing.assert_array_equal(img.rgb, np.repeat(pixels, 3 // channels, axis=2))
    if channels == 3:
        assert img.icc_profile == SRGB


def test_grayscale_and_alpha_round_trip_8bit() -> None:
    gray = np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(30, 20, 1)
    img = read_image_bytes(encode_image(gray, 1 - gray[:, :, 0], 8, "png"), "g.png")
    assert img.grayscale and img.pixels.shape == (30, 20, 1)
    np.testing.assert_allclose(img.alpha, 1 - gray[:, :, 0], atol=0.5 / 255)


@pytest.mark.parametrize("level", range(10))
@pytest.mark.parametrize("bit_depth, channels, with_alpha", [
    (8, 3, False), (8, 3, True), (8, 1, False), (8, 1, True), (16, 3, False), (16, 3, True),
    (16, 1, False)])
def test_every_png_level_keeps_pixels_depth_alpha_and_metadata(
        level: int, bit_depth: int, channels: int, with_alpha: bool) -> None:
    rng = np.random.default_rng(level)
    full = 2**bit_depth - 1
    pixels = rng.integers(0, full + 1, (24, 40, channels)).astype(np.float32) / full
    pixels[:, :20] = np.linspace(0, 1, 24 * 20 * channels).reshape(24, 20, channels)  # runs
    pixels = np.round(pixels * full) / full
    alpha = (rng.integers(0, full + 1, (24, 40)).astype(np.float32) / full
             if with_alpha else None)
    icc = SRGB if channels == 3 else None
    data = encode_image(pixels, alpha, bit_depth, "png", exif=_exif(), icc=icc, png_level=level)
    img = read_image_bytes(data, "x.png")
    assert img.bit_depth == bit_depth and img.grayscale == (channels == 1)
    np.testing.assert_array_equal(img.pixels, pixels)
    if with_alpha:
        np.testing.assert_array_equal(img.alpha, alpha)
    else:
        assert img.alpha is None
    assert img.icc_profile == icc
    assert img.exif is not None and b"TestCam" in img.exif


@pytest.mark.parametrize("strip_bytes", [1, 500, 1 << 30])
@pytest.mark.parametrize("bit_depth", [8, 16])
def test_the_default_png_deflated_in_strips_is_one_valid_zlib_stream(
        monkeypatch: pytest.MonkeyPatch, rgb: np.ndarray, strip_bytes: int,
        bit_depth: int) -> None:
    # one strip per row, a few rows per strip, one strip: the same pixels and a valid checksum
    monkeypatch.setattr(encode, "PNG_STRIP_BYTES", strip_bytes)
    photo = rgb[:37, :53] / np.float32(255)
    data = encode_image(photo, bit_depth=bit_depth, fmt="png")
    idat, at = b"", 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        idat += data[at + 8:at + 8 + length] if kind == b"IDAT" else b""
        at += 12 + length
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    filtered = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(37, -1)  # checks Adler-32
    assert (filtered[:, 0] == 3).all()  # the Average filter on every row (it reads the row above)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    full = 2**bit_depth - 1
    np.testing.assert_array_equal(decoded[:, :, ::-1], np.round(photo * full).astype(dtype))


def test_png_level_reaches_the_encoder_and_is_checked(rgb: np.ndarray) -> None:
    photo = rgb / 255.0
    stored, fast, best = (encode_image(photo, fmt="png", png_level=level) for level in (0, 1, 9))
    assert len(stored) > max(len(fast), len(best)) and fast != best
    for level in (-1, 10):
        with pytest.raises(ValueError, match=r"must be 0\.\.9"):
            encode_image(photo, fmt="png", png_level=level)


def test_mismatched_icc_profile_is_dropped() -> None:
    gray = np.full((8, 8, 1), 0.5, np.float32)
    assert read_image_bytes(encode_image(gray, fmt="png", icc=SRGB), "g").icc_profile is None


def test_jpeg_quality_changes_the_size(rgb: np.ndarray) -> None:
    low = encode_image(rgb / 255.0, fmt="jpeg", quality=20)
    high = encode_image(rgb / 255.0, fmt="jpeg", quality=98)
    assert len(low) < len(high)


def test_unknown_format_is_refused(tmp_path: Path, rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        encode_image(rgb / 255.0, fmt="gif")
    with pytest.raises(ValueError, match="unsupported image format"):
        write_image(tmp_path / "x.gif", rgb / 255.0)


def test_failed_write_leaves_neither_file_nor_temp(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(target, b"new content")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_written_files_get_the_usual_permissions(tmp_path: Path, rgb: np.ndarray) -> None:
    reference = tmp_path / "reference"
    reference.write_bytes(b"")
    path = write_image(tmp_path / "out.png", rgb / 255.0)
    assert path.stat().st_mode == reference.stat().st_mode


def test_fit_long_side_shrinks_only_what_is_too_large() -> None:
    img = np.zeros((300, 120, 3), np.float32)
    img[:150] = 1.0
    small = fit_long_side(img, 100)
    assert small.shape == (100, 40, 3)
    assert small[:45].min() == 1.0 and small[55:].max() == 0.0  # area average keeps the layout
    assert fit_long_side(img, 300) is img and fit_long_side(img, None) is img
    assert fit_long_side(img[..., :1], 150).shape == (150, 60)  # OpenCV drops a lone channel


def test_fit_short_side_shrinks_the_short_side() -> None:
    img = np.zeros((300, 120, 3), np.float32)
    img[:150] = 1.0
    small = fit_short_side(img, 60)
    assert small.shape == (150, 60, 3)
    assert small[:70].min() == 1.0 and small[80:].max() == 0.0
    assert fit_short_side(img, 120) is img


# --- phone formats: HEIC/HEIF and AVIF -------------------------------------------------------


@pytest.mark.parametrize("suffix", [".heic", ".heif", ".avif"])
def test_phone_formats_round_trip(tmp_path: Path, rgb: np.ndarray, suffix: str) -> None:
    path = write_image(tmp_path / f"photo{suffix}", rgb / 255.0, quality=95)
    img = read_image(path)
    assert img.format == ("AVIF" if suffix == ".avif" else "HEIF")
    assert img.pixels.shape == (40, 56, 3) and img.bit_depth == 8
    assert np.abs(img.pixels * 255 - rgb).mean() < 6  # lossy, but the same picture


@pytest.mark.parametrize("fmt", ["heif", "avif"])
def test_sixteen_bit_output_keeps_ten_bits(fmt: str) -> None:
    ramp = np.linspace(0, 1, 40 * 56 * 3, dtype=np.float32).reshape(40, 56, 3)
    # metadata only for HEIF: a deep AVIF with metadata is written at 8 bits (test below)
    metadata = {"exif": _exif(), "icc": SRGB} if fmt == "heif" else {}
    data = encode_image(ramp, bit_depth=16, fmt=fmt, quality=100, **metadata)
    img = read_image_bytes(data, f"x.{fmt}")
    assert img.bit_depth == 16
    if fmt == "heif":
        assert img.icc_profile == SRGB and b"TestCam" in img.exif
    levels = np.unique(np.round(img.pixels[:, :, 1] * 65535))
    assert len(levels) > 256  # more steps than 8 bits hold
    assert np.abs(img.pixels - ramp).mean() < 0.01


def _deep_avif(bits: int, shape: tuple[int, ...] = (24, 40, 3)) -> tuple[bytes, np.ndarray]:
    """A lossless ``bits``-bit AVIF of random pixels (imagecodecs) and the pixels in [0, 1]."""
    top = 2**bits - 1
    values = np.random.default_rng(bits).integers(0, top + 1, shape).astype(np.uint16)
    values[0, 0] = top  # full scale is 1.0
    return imagecodecs.avif_encode(values, level=100, bitspersample=bits), values / top


@pytest.mark.parametrize("bits", [10, 12])
def test_deep_avif_is_read_at_sixteen_bits(bits: int) -> None:
    data, pixels = _deep_avif(bits)
    img = read_image_bytes(data, "x.avif")
    assert img.format == "AVIF" and img.bit_depth == 16 and img.alpha is None
    np.testing.assert_allclose(img.pixels, pixels, atol=0.5 / (2**bits - 1))


def test_deep_avif_keeps_its_alpha() -> None:
    data, pixels = _deep_avif(10, (24, 40, 4))
    img = read_image_bytes(data, "x.avif")
    np.testing.assert_allclose(img.pixels, pixels[:, :, :3], atol=0.5 / 1023)
    np.testing.assert_allclose(img.alpha, pixels[:, :, 3], atol=0.5 / 1023)


@pytest.mark.parametrize("fmt", ["heif", "avif"])
def test_phone_format_orientation_is_applied(rgb: np.ndarray, fmt: str) -> None:
    img = read_image_bytes(encode_image(rgb / 255.0, fmt=fmt, exif=_exif(orientation=6)), "x")
    assert img.pixels.shape == (56, 40, 3)  # upright, turned once (not twice)
    exif = Image.Exif()
    exif.load(img.exif)
    assert exif.get(0x0112, 1) == 1 and exif[0x010F] == "TestCam"


@pytest.mark.parametrize("suffix, deep, tail", [
    (".heic", False, False), (".avif", False, False),
    (".avif", True, False),  # 10 bits, half the file: PIL no longer knows it
    (".avif", True, True),  # 10 bits, the pixel data's last bytes: libavif cannot decode it
])
def test_truncated_phone_formats_name_the_reason(tmp_path: Path, rgb: np.ndarray, suffix: str,
                                                 deep: bool, tail: bool) -> None:
    data = _deep_avif(10)[0] if deep else encode_image(rgb / 255.0, fmt=suffix[1:])
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[:-10] if tail else data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="corrupt or truncated") as info:
        read_image(cut)
    assert str(cut) in str(info.value) and "\n" not in str(info.value)


def test_sixteen_bit_tiff_keeps_camera_exif() -> None:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif.get_ifd(0x8769).update({0x829A: IFDRational(1, 60), 0x8827: 1600})
    img = read_image_bytes(encode_image(np.full((8, 8, 3), 0.5, np.float32), bit_depth=16,
                                        fmt="tiff", exif=exif.tobytes()), "x.tif")
    kept = Image.Exif()
    kept.load(img.exif)
    assert img.bit_depth == 16
    assert kept[0x010F] == "TestCam" and kept[0x829A] == 1 / 60 and kept[0x8827] == 1600
