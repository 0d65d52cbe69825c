"""Paths and files: which suffixes are images, RAW or videos, folders of them, output formats
by suffix, and atomic writes (no numpy here: the CLI checks paths before it loads anything)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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


class OutputExistsError(FileExistsError):
    """The output file exists and overwriting was not asked for."""


def refuse_existing(path: str | Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` when ``path`` exists and ``overwrite`` is false."""
    if not overwrite and Path(path).exists():
        raise OutputExistsError(f"{path}: output exists (use --overwrite to replace it)")


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
