"""Jobs: which files a batch reads and where each output goes (no torch: the CLI plans and
reports bad paths before it loads the network)."""

from __future__ import annotations

import glob
import itertools
from dataclasses import dataclass
from pathlib import Path

from mrvae.io.files import (
    VIDEO_CONTAINERS,
    is_image_file,
    is_video_file,
    list_images,
    same_format_suffix,
)

GLOB_CHARS = frozenset("*?[")
OUTPUT_FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "tiff": ".tif", "tif": ".tif",
                  "webp": ".webp", "bmp": ".bmp", "heic": ".heic", "avif": ".avif"}


@dataclass(frozen=True)
class Job:
    """One image to enhance: read ``src``, write ``dst`` (and a side-by-side ``compare``)."""

    src: Path
    dst: Path
    compare: Path | None = None


@dataclass(frozen=True)
class JobResult:
    """What happened to one input. ``status`` is "done", "skipped" or "failed"; ``message`` is
    the one-line reason for the last two; ``megapixels`` counts the enhanced pixels."""

    source: str
    status: str
    message: str = ""
    seconds: float = 0.0
    megapixels: float = 0.0


def _expand(item: str, recursive: bool) -> tuple[list[tuple[Path, Path]], str]:
    """``(file, base folder)`` pairs for one INPUT argument, or an error message."""
    path = Path(item)
    if path.is_file():
        return [(path, path.parent)], ""
    if path.is_dir():
        found = list_images(path, recursive, videos=True)
        if not found:
            return [], f"{path}: folder contains no images or videos" + (
                "" if recursive else " (use --recursive to look in subfolders)")
        return [(p, path) for p in found], ""
    if GLOB_CHARS & set(item):
        base = Path(*[part for part in itertools.takewhile(
            lambda part: not GLOB_CHARS & set(part), path.parts)])
        found = sorted(Path(p) for p in glob.glob(item, recursive=True))
        found = [p for p in found if p.is_file() and (is_image_file(p) or is_video_file(p))]
        if not found:
            return [], f"{item}: no image or video matches this pattern"
        return [(p, base) for p in found], ""
    return [], f"{path}: no such file or directory"


def plan_jobs(inputs: list[str], out: Path | None = None, recursive: bool = False,
              suffix: str = "_enhanced", fmt: str = "same", compare: bool = False
              ) -> tuple[list[Job], list[JobResult]]:
    """Expand INPUT arguments (files, folders, globs) into jobs.

    Outputs go beside each input when ``out`` is None; to ``out`` itself when there is one input
    file and ``out`` has an image or video suffix; else into the folder ``out``, keeping each
    file's path relative to its input folder (or to the fixed part of its glob). Names get
    ``suffix``; the format of photos is ``fmt`` (a name from :data:`OUTPUT_FORMATS`) or the
    input's own ("same"; 16-bit TIFF for a camera RAW); videos keep their container where
    :mod:`mrvae.engine.video` writes it, else get .mp4, and no ``compare`` image.

    Returns:
        The jobs, and a failed :class:`JobResult` for each input that yields none (missing path,
        folder without images, pattern matching nothing, an output colliding with another).

    Raises:
        ValueError: an unknown format, or a file ``out`` for several inputs.
    """
    if fmt != "same" and fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose from same, "
                         f"{', '.join(OUTPUT_FORMATS)}")
    pairs, failures = [], []
    for item in inputs:
        found, error = _expand(item, recursive)
        pairs += found
        if error:
            failures.append(JobResult(item, "failed", error))
    single_file = len(inputs) == 1 and len(pairs) == 1 and Path(inputs[0]).is_file()
    out_is_file = out is not None and not out.is_dir() and (is_image_file(out)
                                                            or is_video_file(out))
    if out_is_file and not single_file:
        raise ValueError(f"{out}: an output file needs exactly one input file; "
                         "give a folder for several")
    jobs, taken = [], {}
    for src, base in pairs:
        if is_video_file(src):
            ext = src.suffix if src.suffix.lower() in VIDEO_CONTAINERS else ".mp4"
        else:
            ext = OUTPUT_FORMATS[fmt] if fmt != "same" else same_format_suffix(src)
        name = f"{src.stem}{suffix}{ext}"
        if out is None:
            dst = src.parent / name
        elif out_is_file:
            dst = out
        else:
            dst = out / src.relative_to(base).parent / name
        key = dst.resolve()
        if key == src.resolve():
            failures.append(JobResult(str(src), "failed", f"{src}: the output would replace "
                                      "the input; give a --suffix or an output folder"))
        elif key in taken:
            failures.append(JobResult(str(src), "failed", f"{src}: output {dst} is already "
                                      f"written for {taken[key]}"))
        else:
            taken[key] = src
            compare_path = (dst.with_name(f"{dst.stem}_compare{dst.suffix}")
                            if compare and not is_video_file(src) else None)
            jobs.append(Job(src, dst, compare_path))
    return jobs, failures
