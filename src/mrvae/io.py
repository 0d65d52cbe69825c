"""Reading images safely: one clear error for every kind of bad file.

Pixels come back as float32 ``(H, W, C)`` arrays in [0, 1] with the EXIF orientation applied;
the bit depth, alpha channel, colour mode, EXIF and ICC profile travel beside them so that a
writer can keep them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
DEFAULT_MAX_PIXELS = 200_000_000  # 200 MP: refuse larger headers before decoding anything

# We do our own pixel limit (before decoding), so PIL's bomb warning would only be noise.
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message names the file and the reason."""


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
        format: PIL's format name ("PNG", "JPEG", ...).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    grayscale: bool = False
    exif: bytes | None = None
    icc_profile: bytes | None = None
    format: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rgb(self) -> np.ndarray:
        """Pixels as float32 ``(H, W, 3)``; grayscale is repeated to three channels."""
        return np.repeat(self.pixels, 3, axis=2) if self.pixels.shape[2] == 1 else self.pixels


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(root: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (sorted), or ``[root]`` for a single file."""
    root = Path(root)
    if root.is_file():
        return [root]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.is_file() and is_image_file(p))


def _is_16bit(im: Image.Image) -> bool:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return True
    if im.format == "PNG":
        return any(";16" in str(tile.args) for tile in im.tile)
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return False


def _decode_16bit(data: bytes, path: Path) -> np.ndarray:
    """16-bit PNG/TIFF pixels through OpenCV (PIL keeps only 8 bits of 16-bit colour)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8),
                       cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None:
        raise ImageReadError(f"{path}: cannot decode 16-bit image data")
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


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
    data = path.read_bytes()
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        import io as _io

        im = Image.open(_io.BytesIO(data))
    except Exception as exc:  # PIL raises several types for unknown data
        raise ImageReadError(f"{path}: not a readable image ({type(exc).__name__})") from exc
    width, height = im.size
    if width * height > max_pixels:
        raise ImageReadError(
            f"{path}: {width}x{height} = {width * height / 1e6:.0f} MP exceeds the limit of "
            f"{max_pixels / 1e6:.0f} MP (possible decompression bomb)")
    exif = im.getexif()
    orientation = int(exif.get(0x0112, 1) or 1)
    icc = im.info.get("icc_profile")
    fmt = im.format or ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if _is_16bit(im) and im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raw = _decode_16bit(data, path)
                scale, depth = 65535.0, 16
            else:
                im.load()
                raw, scale, depth = _pil_to_array(im)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{path}: corrupt or truncated image data ({exc})") from exc
    raw = _apply_orientation(raw, orientation)
    arr = raw.astype(np.float32) / scale
    alpha = None
    if arr.shape[2] in (2, 4):
        alpha = arr[:, :, -1].copy()
        arr = arr[:, :, :-1]
    if orientation != 1:
        exif[0x0112] = 1
    exif_bytes = exif.tobytes() if len(exif) else None
    return LoadedImage(pixels=np.ascontiguousarray(np.clip(arr, 0.0, 1.0)), alpha=alpha,
                       bit_depth=depth, grayscale=arr.shape[2] == 1, exif=exif_bytes,
                       icc_profile=icc, format=fmt)


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


def read_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Read an image as uint8 ``(H, W, 3)`` RGB, optionally downscaled to ``max_side`` pixels."""
    img = read_image(path)
    rgb = img.rgb
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        scale = max_side / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def write_image(path: str | Path, pixels: np.ndarray, bit_depth: int = 8,
                alpha: np.ndarray | None = None, quality: int = 95) -> Path:
    """Write float ``(H, W, C)`` pixels in [0, 1] atomically (temp file + rename).

    The format follows the suffix; 16-bit is kept for PNG and TIFF only.
    """
    path = Path(path)
    arr = np.clip(pixels, 0.0, 1.0)
    if alpha is not None:
        if arr.shape[2] == 1:  # OpenCV has no gray + alpha layout: widen to RGBA
            arr = np.repeat(arr, 3, axis=2)
        arr = np.concatenate([arr, np.clip(alpha, 0.0, 1.0)[:, :, None]], axis=2)
    suffix = path.suffix.lower()
    if bit_depth == 16 and suffix in (".png", ".tif", ".tiff"):
        out = np.round(arr * 65535.0).astype(np.uint16)
    else:
        out = np.round(arr * 255.0).astype(np.uint8)
    if out.shape[2] == 3:
        out = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
    elif out.shape[2] == 4:
        out = cv2.cvtColor(out, cv2.COLOR_RGBA2BGRA)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, out, params)
    if not ok:
        raise OSError(f"{path}: cannot encode as {suffix}")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(buf.tobytes())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
