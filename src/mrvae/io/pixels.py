"""Decoded pixels and what travels with them (:class:`LoadedImage`), the one error of an
unreadable file, the pixel limit, and resizing to a side. Pixels are float32 ``(H, W, C)`` in
[0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pillow_heif
from PIL import Image

DEFAULT_MAX_PIXELS = 200_000_000  # 200 MP: refuse larger headers before decoding anything

# We do our own pixel limit (before decoding), so PIL's bomb warning would only be noise.
Image.MAX_IMAGE_PIXELS = None
pillow_heif.register_heif_opener()  # HEIC/HEIF in PIL (PIL reads and writes 8-bit AVIF itself)


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


def icc_colour_space(icc: bytes) -> bytes:
    """The data colour space signature of an ICC profile (b"RGB ", b"GRAY", b"CMYK", ...)."""
    return bytes(icc[16:20])
