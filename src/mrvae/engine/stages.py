"""The refinement around the network as named stages, each one object with one interface.

The engine runs every photo through the same phases (:class:`mrvae.engine.enhancer.Enhancer`):

1. global decision: each stage may add EV to the network's exposure (:meth:`Stage.exposure`);
2. each stage makes its :class:`Step` for the photo once the exposure is final
   (:meth:`Stage.plan`; ``None`` when it has nothing to do for this photo);
3. local pass: after DR on each tile, every step's :meth:`Step.tile` (reading ``margin`` more
   pixels of context around the tile);
4. whole image: every step's :meth:`Step.finish`, in order, strip by strip.

:func:`refinement_stages` lists the stages in the order they run; the maths is in
:mod:`mrvae.engine.refine`. Images are float32 ``(H, W, 3)`` RGB in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from mrvae.engine.decision import Photo, as_image, as_pixels
from mrvae.engine.exposure import apply_exposure
from mrvae.engine.refine import (
    Refinement,
    detail_weight,
    exposure_trim,
    high_frequencies,
    keep_weight,
    luma,
    order_preserving_gain,
    restore_detail,
    sharpen_weight,
)
from mrvae.engine.tiling import region_window, upsample_region, upsample_rows

STRIP_ROWS = 256  # whole-image steps work in strips of rows: no full-size map is ever made


def for_each_strip(height: int, work: Callable[[int, int], None]) -> None:
    """``work(start, stop)`` on every strip of :data:`STRIP_ROWS` rows of an image ``height``
    rows high, on as many threads as torch uses (numpy and torch release the GIL, and the
    strips write disjoint rows)."""
    strips = [(start, min(height, start + STRIP_ROWS)) for start in range(0, height, STRIP_ROWS)]
    threads = min(torch.get_num_threads(), len(strips))
    if threads <= 1:
        for start, stop in strips:
            work(start, stop)
        return
    with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        list(pool.map(lambda strip: work(*strip), strips))


class Step:
    """What a stage does to one photo: a tile step, a whole-image step, or both."""

    margin: int = 0  # pixels of context the tile step reads around each tile

    def tile(self, photo: Photo, box: tuple[int, int, int, int], out: np.ndarray) -> np.ndarray:
        """The DR output ``out`` of the tile read from ``box`` (``(y0, y1, x0, x1)``), refined."""
        return out

    def finish(self, photo: Photo, out: np.ndarray) -> None:
        """Refine the whole ``out`` (``(H, W, 3)``) in place."""


@dataclass(frozen=True)
class Stage:
    """A named stage of the refinement, configured by :class:`Refinement`."""

    settings: Refinement
    name = "stage"

    @property
    def enabled(self) -> bool:
        """Whether ``settings`` turn this stage on."""
        return True

    def exposure(self, photo: Photo) -> float:
        """EV this stage adds to ``photo``'s exposure in the global decision."""
        return 0.0

    def plan(self, photo: Photo) -> Step | None:
        """This stage's step for ``photo`` at its final exposure, or ``None``."""
        return None


class ExposureTrim(Stage):
    """A dark photo's exposure, corrected (:func:`mrvae.engine.refine.exposure_trim`)."""

    name = "trim"

    @property
    def enabled(self) -> bool:
        return self.settings.trim

    def exposure(self, photo: Photo) -> float:
        return exposure_trim(photo.small, photo.network_gain(self.settings.tone_side),
                             self.settings)


class Detail(Stage):
    """The input's own detail, blended back inside each tile where its noise allows."""

    name = "detail"

    @property
    def enabled(self) -> bool:
        return self.settings.detail > 0

    def plan(self, photo: Photo) -> Step | None:
        gain = photo.gain(self.settings.tone_side)
        weight = detail_weight(photo.noise, float(np.median(gain)), self.settings)
        if weight <= 0:
            return None
        return _DetailStep(self.settings, weight, torch.from_numpy(gain.astype(np.float32)))


@dataclass
class _DetailStep(Step):
    settings: Refinement
    weight: float
    gain: torch.Tensor  # (h, w) brightening at the final exposure

    def __post_init__(self) -> None:
        self.margin = self.settings.detail_radius

    def tile(self, photo: Photo, box: tuple[int, int, int, int], out: np.ndarray) -> np.ndarray:
        y0, y1, x0, x1 = box
        gain = upsample_region(self.gain[None, None], photo.size, box)[0, 0, ..., None]
        return restore_detail(photo.rgb[y0:y1, x0:x1], out, gain.numpy(), self.weight,
                              self.settings.detail_sigma)


class Sharpen(Stage):
    """The output's luma sharpened where the brightened noise is low, strip by strip."""

    name = "sharpen"

    @property
    def enabled(self) -> bool:
        return self.settings.sharpen > 0

    def plan(self, photo: Photo) -> Step | None:
        weight = sharpen_weight(photo.amplified_noise(self.settings.tone_side), self.settings)
        if weight.max() <= 0:  # too noisy everywhere
            return None
        return _SharpenStep(self.settings, weight)


@dataclass
class _SharpenStep(Step):
    settings: Refinement
    weight: np.ndarray  # (h, w) coarse sharpening weight

    def finish(self, photo: Photo, out: np.ndarray) -> None:
        # Strips run in parallel and in place, so the luma of the rows each one reads across
        # its two cuts is taken first, before any strip is sharpened (no wider tile context,
        # which would cost DR more than this pass).
        height, width = photo.size
        radius = self.settings.sharpen_radius
        cuts = range(STRIP_ROWS, height, STRIP_ROWS)
        above = {cut: luma(out[max(0, cut - radius):cut]) for cut in cuts}
        below = {cut: luma(out[cut:cut + radius]) for cut in cuts}
        no_rows = np.empty((0, width), np.float32)

        def sharpen_rows(start: int, stop: int) -> None:
            rows, _ = region_window(tuple(self.weight.shape), photo.size, (start, stop, 0, width))
            if float(self.weight[rows].max()) <= 0:  # 0 on these rows
                return
            top = above.get(start, no_rows)
            light = np.concatenate([top, luma(out[start:stop]), below.get(stop, no_rows)])
            detail = high_frequencies(light, self.settings.sharpen_sigma)[len(top):][:stop - start]
            weight = upsample_rows(self.weight, photo.size, start, stop)
            out[start:stop] += weight * detail[..., None]

        for_each_strip(height, sharpen_rows)


class Tone(Stage):
    """The input's coarse lightness order, put back on the output by a gain map."""

    name = "tone"

    @property
    def enabled(self) -> bool:
        return self.settings.tone

    def plan(self, photo: Photo) -> Step | None:
        return _ToneStep(self.settings)


@dataclass
class _ToneStep(Step):
    settings: Refinement

    def finish(self, photo: Photo, out: np.ndarray) -> None:
        gain = order_preserving_gain(photo.rgb, out, photo.small, self.settings)

        def scale(start: int, stop: int) -> None:
            out[start:stop] *= upsample_rows(gain, photo.size, start, stop)

        for_each_strip(photo.size[0], scale)


class Keep(Stage):
    """The input, at the output's exposure, kept where the network barely brightens it."""

    name = "keep"

    @property
    def enabled(self) -> bool:
        return self.settings.keep

    def plan(self, photo: Photo) -> Step | None:
        side = self.settings.tone_side
        weight = keep_weight(photo.network_gain(side), photo.small, photo.noise, self.settings)
        # all ones (most dark photos): the network's output everywhere, nothing to blend
        return None if weight.min() >= 1.0 else _KeepStep(weight)


@dataclass
class _KeepStep(Step):
    weight: np.ndarray  # (h, w): 0 keeps the input, 1 the network's output

    def finish(self, photo: Photo, out: np.ndarray) -> None:
        def blend(start: int, stop: int) -> None:
            weight = upsample_rows(self.weight, photo.size, start, stop)
            if weight.min() >= 1.0:  # the input is not kept in these rows
                return
            base = photo.rgb[start:stop]
            if photo.exposure:
                base = as_pixels(apply_exposure(as_image(base), photo.exposure))
            out[start:stop] = base + weight * (out[start:stop] - base)

        for_each_strip(photo.size[0], blend)


def refinement_stages(settings: Refinement | None) -> tuple[Stage, ...]:
    """The stages ``settings`` turn on, in the order they run; none for ``None``."""
    if settings is None:
        return ()
    stages = (
        ExposureTrim(settings),  # before the others: they see the final exposure
        Detail(settings),        # inside the tiles
        Sharpen(settings),       # on the tiles' output, before it is toned
        Tone(settings),          # on the tiles' output
        Keep(settings),          # last: the input, where it is kept, is not re-toned
    )
    return tuple(stage for stage in stages if stage.enabled)
