"""Batches: running the jobs that :func:`mrvae.engine.jobs.plan_jobs` planned.

:func:`run_job` enhances one photo or video with an :class:`Enhancer` and turns every
expected problem into a one-line result, so a batch goes on past a bad file.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from mrvae.engine.enhancer import Enhancer, read_for_output, write_enhanced
from mrvae.engine.jobs import Job, JobResult
from mrvae.io.encode import PNG_LEVEL
from mrvae.io.files import OutputExistsError, is_video_file
from mrvae.io.pixels import DEFAULT_MAX_PIXELS, ImageReadError, LoadedImage

if TYPE_CHECKING:
    from mrvae.engine.video import VideoSettings

T = TypeVar("T")
def _attempt(job: Job, work: Callable[[], T]) -> T | JobResult:
    """``work()``, or the skipped or failed result that its expected problem means."""
    try:
        return work()
    except OutputExistsError as exc:
        return JobResult(str(job.src), "skipped", str(exc))
    except ImageReadError as exc:
        return JobResult(str(job.src), "failed", str(exc))
    except OSError as exc:
        where = exc.filename or job.dst
        return JobResult(str(job.src), "failed",
                         f"{where}: cannot write the output ({exc.strerror or exc})")
    except (ValueError, MemoryError, ImportError) as exc:
        return JobResult(str(job.src), "failed", f"{job.src}: {exc or type(exc).__name__}")


def _done(job: Job, start: float, megapixels: float | JobResult) -> JobResult:
    if isinstance(megapixels, JobResult):
        return megapixels
    return JobResult(str(job.src), "done", seconds=time.perf_counter() - start,
                     megapixels=megapixels)


def _megapixels(image: LoadedImage) -> float:
    return image.pixels.shape[0] * image.pixels.shape[1] / 1e6


def run_job(enhancer: Enhancer, job: Job, quality: int = 95, overwrite: bool = False,
            max_pixels: int = DEFAULT_MAX_PIXELS, png_level: int = PNG_LEVEL,
            video: VideoSettings | None = None,
            frame_progress: Callable[[Path, int, int | None], None] | None = None
            ) -> JobResult:
    """Enhance one photo or video; every expected problem becomes a skipped or failed result.

    ``video`` and ``frame_progress`` (called with the source, frames done and expected) go to
    :meth:`Enhancer.enhance_video`.
    """
    start = time.perf_counter()

    def work() -> float:
        job.dst.parent.mkdir(parents=True, exist_ok=True)
        if is_video_file(job.src):
            progress = functools.partial(frame_progress, job.src) if frame_progress else None
            return enhancer.enhance_video(job.src, job.dst, video, overwrite,
                                          progress).megapixels
        return _megapixels(enhancer.enhance_file(job.src, job.dst, quality, overwrite,
                                                 max_pixels, job.compare, png_level))

    return _done(job, start, _attempt(job, work))


def run_overlapped(enhancer: Enhancer, jobs: list[Job], quality: int = 95,
                   overwrite: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                   png_level: int = PNG_LEVEL, **video_settings: Any) -> Iterator[JobResult]:
    """Run jobs one at a time through the network while, on two more threads, the next photo
    is decoded and the previous one encoded; yield results as they finish.

    The same outputs and results as :func:`run_job` on each job in turn. At most three photos
    are in memory at once (the next, the current and the previous one); videos run as
    :func:`run_job` runs them (they overlap their own frames). ``video_settings`` are
    :func:`run_job`'s ``video`` and ``frame_progress``.
    """
    def decode(job: Job) -> tuple[float, LoadedImage | JobResult]:
        def work() -> LoadedImage:
            job.dst.parent.mkdir(parents=True, exist_ok=True)
            return read_for_output(job.src, job.dst, overwrite, max_pixels, job.compare)

        return time.perf_counter(), _attempt(job, work)

    def encode(job: Job, start: float, image: LoadedImage, enhanced: np.ndarray) -> JobResult:
        return _done(job, start, _attempt(job, lambda: _megapixels(
            write_enhanced(image, enhanced, job.dst, quality, job.compare, png_level))))

    photos = [job for job in jobs if not is_video_file(job.src)]
    with ThreadPoolExecutor(1, thread_name_prefix="mrvae-decode") as decoder, \
            ThreadPoolExecutor(1, thread_name_prefix="mrvae-encode") as encoder:
        later = iter(photos)
        first = next(later, None)
        reading = decoder.submit(decode, first) if first is not None else None
        writing: Future[JobResult] | None = None
        for job in jobs:
            if is_video_file(job.src):
                yield run_job(enhancer, job, quality, overwrite, max_pixels, png_level,
                              **video_settings)
                continue
            start, image = reading.result()  # this photo's: photos keep the jobs' order
            following = next(later, None)
            reading = decoder.submit(decode, following) if following is not None else None
            if isinstance(image, JobResult):
                yield image
                continue
            enhanced = _attempt(job, lambda image=image: enhancer.enhance_pixels(image.pixels))
            if isinstance(enhanced, JobResult):
                yield enhanced
                continue
            if writing is not None:
                yield writing.result()
            writing = encoder.submit(encode, job, start, image, enhanced)
        if writing is not None:
            yield writing.result()


def run_jobs(enhancer: Enhancer, jobs: list[Job], parallel: int = 1, overlap: bool = True,
             **settings: Any) -> Iterator[JobResult]:
    """Run jobs and yield results as they finish; ``settings`` go to :func:`run_job`.

    One image at a time, with decoding and encoding overlapping the network
    (:func:`run_overlapped`), or ``parallel`` images at a time (threads sharing the model and
    the cores: give the enhancer ``workers=threads_per_job(parallel)`` so the tiles share them
    too); ``overlap=False`` runs one after the other.
    """
    if parallel <= 1:
        if overlap:
            yield from run_overlapped(enhancer, jobs, **settings)
        else:
            yield from (run_job(enhancer, job, **settings) for job in jobs)
        return
    with ThreadPoolExecutor(parallel, initializer=torch.set_num_threads,
                            initargs=(threads_per_job(parallel),)) as pool:
        futures = [pool.submit(run_job, enhancer, job, **settings) for job in jobs]
        yield from (future.result() for future in as_completed(futures))


def threads_per_job(parallel: int) -> int:
    """Threads for each of ``parallel`` images enhanced at once."""
    return max(1, torch.get_num_threads() // max(1, parallel))
