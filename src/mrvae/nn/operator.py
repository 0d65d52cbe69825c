"""GR's operator: a bilateral grid of local monotone tone curves applied to the full-resolution
input (model v3, ``ModelConfig.operator == "curves"``).

Instead of decoding a small image that is upsampled, GR predicts *how to change* the photo:
a grid of ``G x G`` cells over the image, each holding one tone curve per colour channel, given
by its values at ``K + 1`` evenly spaced knots (the *operator*, ``(B, 3, K + 1, G, G)``). A pixel
of channel ``c`` is mapped through the curve of channel ``c`` bilinearly interpolated between the
cells around it (cell centres at ``(i + 0.5) / G`` of the image's height and width, clamped at
the borders), read at a learned per-pixel *guide*: a global monotone curve per channel of the
pixel's own value, which spends the knots where the photos need them (deep shadows).

Constraints, by construction:

- every curve is non-decreasing from 0 at 0 to 1 at 1 (softmax increments, cumulated), and an
  interpolation of such curves is one too; so the output is in [0, 1], white stays white (no
  channel can be pushed past it, no magenta light sources) and each output channel is a
  non-decreasing function of the same input channel at the same pixel (the order of two
  intensities is never reversed). Channels are never mixed: white balance is one curve per
  channel.
- equal logits are the identity curve; the prediction's last layers start at zero, so an
  untrained operator is the identity (a well-exposed photo starts as itself).

Slicing reads only the pixel's coordinates in the full image, so a tile sliced with its box gives
the values the whole image gives there (:func:`slice_grid`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def monotone_knots(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """Knot values of non-decreasing curves from 0 to 1: softmax increments, cumulated.

    ``logits`` ``(..., K, ...)`` (``K`` along ``dim``) -> ``(..., K + 1, ...)``, first 0, last 1;
    equal logits give the identity ``k / K``.
    """
    steps = torch.softmax(logits, dim=dim).cumsum(dim=dim)
    return torch.cat([torch.zeros_like(steps.narrow(dim, 0, 1)), steps], dim=dim).clamp(0.0, 1.0)


def piecewise_linear(knots: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Curves through evenly spaced knots, read at ``t``.

    Args:
        knots: ``(B, C, K + 1, H, W)`` values at ``0, 1 / K, ..., 1`` (any size-1 dimension
            broadcasts: ``(1, C, K + 1, 1, 1)`` is one curve per channel for every pixel).
        t: ``(B, C, H, W)``, clamped to [0, 1].

    Returns:
        ``(B, C, H, W)``: a convex combination of the two knots around ``t`` (triangular
        weights, so no index gathering: exportable and differentiable in ``t``).
    """
    segments = knots.shape[2] - 1
    position = t.clamp(0.0, 1.0).unsqueeze(2) * segments
    index = torch.arange(segments + 1, device=t.device, dtype=t.dtype).view(1, 1, -1, 1, 1)
    weights = (1.0 - (position - index).abs()).clamp(min=0.0)
    return (knots * weights).sum(dim=2)


def cell_coordinates(start: int, length: int, full: int, cells: int,
                     device: torch.device) -> torch.Tensor:
    """Normalised (``align_corners=True``) grid coordinates ``(length,)`` of pixels
    ``start .. start + length - 1`` of a side of ``full`` pixels covered by ``cells`` cells."""
    pixels = torch.arange(start, start + length, device=device, dtype=torch.float32)
    index = (pixels + 0.5) * (cells / full) - 0.5  # cell i's centre is at index i
    return index * (2.0 / (cells - 1)) - 1.0


def position_grid(size: tuple[int, int], box: tuple[int, int], full_size: tuple[int, int] | None,
                  cells: int, batch: int, like: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` coordinates ``(batch, h, w, 2)`` (x, y; dtype and device of ``like``) of
    the pixels of a tile of ``size`` at ``box`` in an image of ``full_size`` (default ``size``),
    on a grid of ``cells x cells`` cells."""
    height, width = full_size or size
    ys = cell_coordinates(box[0], size[0], height, cells, like.device)
    xs = cell_coordinates(box[1], size[1], width, cells, like.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2): x, y
    return grid.to(like.dtype).expand(batch, -1, -1, -1)


def slice_grid(operator: torch.Tensor, size: tuple[int, int], box: tuple[int, int] = (0, 0),
               full_size: tuple[int, int] | None = None) -> torch.Tensor:
    """The operator's curves at every pixel of a tile.

    Args:
        operator: ``(B, 3, K + 1, G, G)`` knot values of the cells.
        size: ``(h, w)`` of the tile.
        box: ``(top, left)`` of the tile in the full image.
        full_size: ``(H, W)`` of the full image; default ``size`` (the tile is the image).

    Returns:
        ``(B, 3, K + 1, h, w)``; the same values as slicing the full image and cropping it.
    """
    batch, channels, knots, cells, _ = operator.shape
    grid = position_grid(size, box, full_size, cells, batch, operator)
    sliced = F.grid_sample(operator.flatten(1, 2), grid, mode="bilinear",
                           padding_mode="border", align_corners=True)
    return sliced.unflatten(1, (channels, knots))


def pooling_matrix(length: int, cells: int, device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    """``(cells, length)``: row ``i`` averages the pixels ``floor(i * length / cells)`` to
    ``ceil((i + 1) * length / cells) - 1``, the windows of ``adaptive_avg_pool``; as a matrix
    product, the pooling exports to ONNX with dynamic sizes."""
    cell = torch.arange(cells, device=device)[:, None]
    pixel = torch.arange(length, device=device)[None, :]
    inside = (pixel >= cell * length // cells) & (pixel < -(-(cell + 1) * length // cells))
    weights = inside.to(dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def adaptive_mean(x: torch.Tensor, cells: int) -> torch.Tensor:
    """``x (B, C, H, W)`` averaged over ``cells x cells`` windows -> ``(B, C, cells, cells)``
    (``F.adaptive_avg_pool2d``'s windows; smaller inputs repeat pixels)."""
    rows = pooling_matrix(x.shape[-2], cells, x.device, x.dtype)
    columns = pooling_matrix(x.shape[-1], cells, x.device, x.dtype)
    return rows @ x @ columns.T


class MonotoneGuide(nn.Module):
    """The learned per-pixel guide: one global non-decreasing curve per channel of ``segments``
    linear pieces from 0 to 1, the identity at initialisation.

    ``x (B, 3, H, W)`` -> ``(B, 3, H, W)`` in [0, 1] (inputs are clamped to [0, 1]).
    """

    def __init__(self, segments: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3, segments))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        knots = monotone_knots(self.logits, dim=1).to(x.dtype)
        return piecewise_linear(knots[None, :, :, None, None], x)


class GridHead(nn.Module):
    """GR's head predicting an operator's per-cell logits from its decoder's features of the
    small copy.

    Every decoder stage is average-pooled to the ``cells x cells`` grid and concatenated; a
    1x1 and a 3x3 convolution mix them, a 1x1 convolution gives ``outputs`` logits per cell
    and, with ``scene``, a per-image shift of those logits predicted from the latent averaged
    over the whole image (exposure and white balance). The last layers start at zero, so the
    logits start at zero (each operator's identity).
    """

    def __init__(self, widths: tuple[int, ...], latent_dim: int, cells: int, outputs: int,
                 scene: bool, hidden: int = 64) -> None:
        super().__init__()
        self.cells = cells
        self.local = nn.Sequential(nn.Conv2d(sum(widths), hidden, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, outputs, 1))
        nn.init.zeros_(self.local[-1].weight)
        nn.init.zeros_(self.local[-1].bias)
        self.scene = None
        if scene:
            self.scene = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, outputs))
            nn.init.zeros_(self.scene[-1].weight)
            nn.init.zeros_(self.scene[-1].bias)

    def forward(self, features: list[torch.Tensor], latent: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
        """Logits ``(B, outputs, cells, cells)``.

        Args:
            features: decoder stage outputs ``(B, width_i, H_i, W_i)``, finest last, of the
                small copy padded to a multiple of ``2 ** depth``.
            latent: ``(B, latent_dim, h, w)``.
            size: ``(h, w)`` of the small copy before padding; the padding is cropped off.
        """
        finest = features[-1].shape[-2:]
        pooled = []
        for feature in features:
            scale = finest[0] // feature.shape[-2]
            crop = feature[..., : -(-size[0] // scale), : -(-size[1] // scale)]
            pooled.append(adaptive_mean(crop, self.cells))
        logits = self.local(torch.cat(pooled, dim=1))
        if self.scene is not None:
            logits = logits + self.scene(latent.mean(dim=(2, 3)))[:, :, None, None]
        return logits


def curve_operator(logits: torch.Tensor) -> torch.Tensor:
    """A :class:`GridHead`'s logits ``(B, 3 * K, G, G)`` -> curves ``(B, 3, K + 1, G, G)``."""
    return monotone_knots(logits.unflatten(1, (3, -1)), dim=2)


def apply_operator(operator: torch.Tensor, guide: torch.Tensor, box: tuple[int, int] = (0, 0),
                   full_size: tuple[int, int] | None = None) -> torch.Tensor:
    """The operator applied to a tile, given its guide.

    Args:
        operator: ``(B, 3, K + 1, G, G)``.
        guide: ``(B, 3, h, w)`` in [0, 1], the tile's :class:`MonotoneGuide` output.
        box, full_size: the tile's ``(top, left)`` in the full image of ``(H, W)`` pixels
            (default: the tile is the image).

    Returns:
        ``(B, 3, h, w)`` in [0, 1].
    """
    sliced = slice_grid(operator, tuple(guide.shape[-2:]), box, full_size)
    return piecewise_linear(sliced, guide)
