"""Tiling: how a photo of any size is cut into tiles that DR computes as on the whole image.

DR is a stack of convolutions with a finite receptive field, so each tile is read with a margin
of context (by default that radius) on every side and only its core is kept: tiled results agree
with untiled ones to float rounding, with no blending pass. Boxes are ``(y0, y1, x0, x1)`` in
image pixels. Small maps (the global pass's image, refinement maps) are sampled at a tile's or
a strip's pixels only (:func:`upsample_region`), so no full-size copy of them is ever made.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrvae.nn.model import MRVAE


def receptive_radius(model: MRVAE) -> int:
    """Pixels of context one DR output pixel depends on, on each side.

    Every convolution of the encoder stem and of DR lies on the one longest path (the residual
    skips are shorter), so the radii add up. In DR's half-resolution branch a pixel is two
    wide, and the 2x2 blocks it is cut into add one more. The noise conditioning joins DR's
    features beside the stem, reading ``NoiseConditioning.reach`` pixels.
    """
    detail = model.detail_reconstruction
    half = detail.half_resolution
    inside = set() if half is None else set(half.modules())
    radius = max(_conv_radius(model.encoder.stages[0].modules()),
                 0 if detail.noise is None else detail.noise.reach)
    radius += _conv_radius(m for m in detail.modules() if m not in inside)
    return radius if half is None else radius + 2 * _conv_radius(inside) + 1


def _conv_radius(modules: Iterable[nn.Module]) -> int:
    """Sum of the radii of the convolutions among ``modules``."""
    return sum((m.kernel_size[0] - 1) // 2 * m.dilation[0] for m in modules
               if isinstance(m, nn.Conv2d))


def tile_alignment(model: MRVAE) -> int:
    """Multiple that a tile's offsets must be for DR to compute it as on the whole image: 2
    with the half-resolution branch (its 2x2 blocks must fall where they fall there), else 1."""
    return 1 if model.detail_reconstruction.half_resolution is None else 2


def global_size_for(height: int, width: int, global_size: int) -> tuple[int, int]:
    """Size of the global pass: long side at most ``global_size``, never upscaled."""
    scale = min(1.0, global_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass(frozen=True)
class Tile:
    """A tile: ``core`` is the box it writes, ``context`` the larger box it reads.

    Boxes are ``(y0, y1, x0, x1)`` in image pixels.
    """

    core: tuple[int, int, int, int]
    context: tuple[int, int, int, int]

    @property
    def crop(self) -> tuple[slice, slice]:
        """Where the core lies inside the context box."""
        (y0, y1, x0, x1), (cy0, _, cx0, _) = self.core, self.context
        return slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0)


def _spans(size: int, tile: int, overlap: int, align: int = 1
           ) -> list[tuple[int, int, int, int]]:
    """``(start, stop, context start, context stop)`` along one axis.

    Cores are evenly sized (at most ``tile``); every context has the same length (the largest
    core plus ``overlap`` on both sides, or the whole axis), shifted inward at the borders, so
    that all tiles have one shape: the allocator and the kernels' caches see the same sizes
    again and again instead of fragmenting over many slightly different ones. Context starts
    are multiples of ``align``: each is moved back to one, and the length has room for that
    and leaves a multiple of ``align`` before the end of the axis.
    """
    count = math.ceil(size / tile)
    cuts = [round(i * size / count) for i in range(count + 1)]
    length = min(size, math.ceil(size / count) + 2 * overlap + align - 1)
    length += (size - length) % align
    spans = []
    for start, stop in itertools.pairwise(cuts):
        context = min(max(0, start - overlap), size - length)
        context -= context % align
        spans.append((start, stop, context, context + length))
    return spans


def tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> Iterator[Tile]:
    """Cores of at most ``tile`` pixels covering the image, each read with at least ``overlap``
    pixels of context on every side where the image has them, from offsets that are multiples
    of ``align``; all contexts share one shape."""
    for y0, y1, cy0, cy1 in _spans(height, tile, overlap, align):
        for x0, x1, cx0, cx1 in _spans(width, tile, overlap, align):
            yield Tile((y0, y1, x0, x1), (cy0, cy1, cx0, cx1))


def upsample_region(small: torch.Tensor, full_size: tuple[int, int],
                    box: tuple[int, int, int, int]) -> torch.Tensor:
    """The pixels ``box`` of ``small`` resized to ``full_size``, without the full-size image.

    Same values as bilinear ``F.interpolate(small, full_size, align_corners=False)`` there:
    output pixel ``i`` samples the normalised coordinate ``(i + 0.5) * 2 / size - 1``, and
    border padding reproduces interpolate's clamping at the edges.
    """
    y0, y1, x0, x1 = box
    if tuple(small.shape[-2:]) == tuple(full_size):
        return small[..., y0:y1, x0:x1]
    height, width = full_size
    gy = (torch.arange(y0, y1, dtype=torch.float64) + 0.5) * 2 / height - 1
    gx = (torch.arange(x0, x1, dtype=torch.float64) + 0.5) * 2 / width - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).float().unsqueeze(0)
    return F.grid_sample(small, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def region_window(small_size: tuple[int, int], full_size: tuple[int, int],
                  box: tuple[int, int, int, int]) -> tuple[slice, slice]:
    """The rows and columns of a small map that :func:`upsample_region` reads for ``box``:
    its values there lie between that window's minimum and maximum."""

    def window(small: int, full: int, start: int, stop: int) -> slice:
        def source(i: int) -> int:  # the lower neighbour of output pixel i, as interpolate
            return math.floor((i + 0.5) * small / full - 0.5)
        return slice(max(source(start), 0), min(source(stop - 1) + 2, small))

    y0, y1, x0, x1 = box
    return (window(small_size[0], full_size[0], y0, y1),
            window(small_size[1], full_size[1], x0, x1))


def upsample_rows(plane: np.ndarray, full_size: tuple[int, int], start: int, stop: int
                  ) -> np.ndarray:
    """Rows ``start:stop`` of a small ``(h, w)`` map resized to ``full_size``, as
    ``(rows, W, 1)`` float32: the values of :func:`upsample_region` over whole rows.

    Bilinear is separable: the rows are interpolated here (half-pixel centres, clamped at the
    edges, as ``F.interpolate``), then OpenCV stretches them across (the same rule), several
    times faster than a grid sample of every pixel.
    """
    height = plane.shape[0]
    source = np.clip((np.arange(start, stop) + 0.5) * (height / full_size[0]) - 0.5, 0,
                     height - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, height - 1)
    share = (source - low)[:, None]
    rows = (plane[low] * (1.0 - share) + plane[high] * share).astype(np.float32)
    stretched = cv2.resize(rows, (full_size[1], stop - start), interpolation=cv2.INTER_LINEAR)
    return stretched.reshape(stop - start, full_size[1], 1)
