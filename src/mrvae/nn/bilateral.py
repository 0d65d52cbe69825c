"""GR's operator as a bilateral grid of local affine colour transforms (model v3,
``ModelConfig.operator == "affine"``; HDRNet, Gharbi et al. 2017).

The grid has ``G x G`` cells over the image and ``D`` cells along a per-pixel *guide* intensity;
each cell holds a 3 x 4 affine colour transform (the *operator*, ``(B, 12, D, G, G)``: row-major
``[r_r, r_g, r_b, r_1, g_r, ...]``). A pixel gets the transform trilinearly interpolated at its
position in the full image and its guide value, and its output is ``A @ [r, g, b, 1]``, clamped
to [0, 1]. Unlike the per-channel curves (:mod:`mrvae.nn.operator`), the transforms mix the
channels, so they can restore the saturation that brightening takes away; the guide axis lets
the dark and the bright pixels of one cell get different transforms (a lamp and the night around
it), so edges come from the input and nothing rings around a light.

The guide is learned: a convex mix of the channels read through a global monotone curve (it
starts as a gamma that spreads the dark pixels over the depth cells). The transforms start as the
identity (the head's logits start at zero), so an untrained operator returns its input.

Slicing reads only the pixel's coordinates in the full image and its own guide value, so a tile
sliced with its box gives the values the whole image gives there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrvae.nn.operator import monotone_knots, position_grid

IDENTITY = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def affine_operator(logits: torch.Tensor, depth: int) -> torch.Tensor:
    """A :class:`~mrvae.nn.operator.GridHead`'s logits ``(B, 12 * D, G, G)`` -> transforms
    ``(B, 12, D, G, G)``: the identity plus the logits (zero logits are the identity)."""
    identity = torch.tensor(IDENTITY, dtype=logits.dtype, device=logits.device)
    return logits.unflatten(1, (12, depth)) + identity.view(1, 12, 1, 1, 1)


class LuminanceGuide(nn.Module):
    """The guide: a convex mix of the channels (softmax weights, equal at first) read through
    a global non-decreasing curve of ``segments`` pieces from 0 to 1 (``x ** gamma`` at first).

    ``x (B, 3, H, W)`` -> ``(B, 1, H, W)`` in [0, 1].
    """

    def __init__(self, segments: int, gamma: float = 0.45) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.zeros(3))
        knots = torch.linspace(0.0, 1.0, segments + 1) ** gamma
        self.logits = nn.Parameter(knots.diff().clamp(min=1e-6).log()[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.mix, dim=0).to(x.dtype)
        grey = (x * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        return read_curve(monotone_knots(self.logits, dim=1)[0].to(x.dtype), grey)


def read_curve(knots: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One curve through evenly spaced knots ``(K + 1,)`` read at every value of ``t`` (clamped
    to [0, 1]); the values of :func:`~mrvae.nn.operator.piecewise_linear`, by looking up the two
    knots around each value (a full-resolution tile would otherwise hold ``K + 1`` copies)."""
    segments = knots.shape[0] - 1
    position = t.clamp(0.0, 1.0) * segments
    index = position.detach().floor().clamp(max=segments - 1)
    low = knots[index.long()]
    return low + (knots[index.long() + 1] - low) * (position - index)


def depth_cells(guide: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where guide values fall along ``depth`` cells: the lower of the two cells around each
    value (whole numbers ``0 .. max(depth - 2, 0)``, as floats) and the weight of the upper
    one, linear between the cells' centres ``(k + 0.5) / depth`` and clamped beyond the first
    and last centres."""
    position = (guide * depth - 0.5).clamp(0.0, depth - 1.0)
    below = position.detach().floor().clamp(max=max(depth - 2, 0))
    return below, position - below


def slice_bilateral(operator: torch.Tensor, guide: torch.Tensor, box: tuple[int, int] = (0, 0),
                    full_size: tuple[int, int] | None = None) -> torch.Tensor:
    """The transforms at every pixel of a tile.

    Args:
        operator: ``(B, 12, D, G, G)``.
        guide: ``(B, 1, h, w)`` in [0, 1].
        box: ``(top, left)`` of the tile in the full image.
        full_size: ``(H, W)`` of the full image; default the tile's size.

    Returns:
        ``(B, 12, h, w)``: bilinear in position between the cell centres (clamped at the
        borders), linear in the guide between the depth cells' centres ``(k + 0.5) / D``.
    """
    batch, channels, depth, cells, _ = operator.shape
    if depth == 1:  # one depth cell: a pair of equal ones
        operator = operator.expand(-1, -1, 2, -1, -1)
    # Trilinear interpolation as one 2D bilinear read (PyTorch's 2D grid_sample is vectorised
    # on CPUs, its 3D one is not: 3x faster): the depth cells (k, k + 1) side by side in the
    # channels, their pairs stacked down an atlas, each with a copy of its last row so that a
    # read at the bottom border stays inside its pair; the pair's two reads mixed by the guide.
    pairs = torch.cat([operator[:, :, :-1], operator[:, :, 1:]], dim=1)  # (B, 24, P, G, G)
    rows = cells + 1
    atlas = torch.cat([pairs, pairs[:, :, :, -1:]], dim=3).flatten(2, 3)  # (B, 24, P*rows, G)
    pair, weight = depth_cells(guide[:, 0].to(operator.dtype), depth)
    plane = position_grid(tuple(guide.shape[-2:]), box, full_size, cells, batch, operator)
    row = (plane[..., 1].clamp(-1.0, 1.0) + 1.0) * (0.5 * (cells - 1)) + pair * rows
    y = row * (2.0 / (atlas.shape[2] - 1)) - 1.0
    sliced = F.grid_sample(atlas, torch.stack([plane[..., 0], y], dim=-1), mode="bilinear",
                           padding_mode="border", align_corners=True)
    # under autocast the read is bfloat16 and the guide's weight float32
    return torch.lerp(sliced[:, :channels], sliced[:, channels:],
                      weight.unsqueeze(1).to(sliced.dtype))


def apply_affine_grid(operator: torch.Tensor, x: torch.Tensor, guide: torch.Tensor,
                      box: tuple[int, int] = (0, 0),
                      full_size: tuple[int, int] | None = None) -> torch.Tensor:
    """The operator applied to a tile ``x (B, 3, h, w)`` with its guide ``(B, 1, h, w)``
    (``box``, ``full_size`` as in :func:`slice_bilateral`) -> ``(B, 3, h, w)`` in [0, 1]."""
    transform = slice_bilateral(operator, guide, box, full_size).unflatten(1, (3, 4))
    x = x.contiguous()
    out = transform[:, :, 3] + transform[:, :, 0] * x[:, :1]
    for channel in (1, 2):
        out = torch.addcmul(out, transform[:, :, channel], x[:, channel:channel + 1])
    return out.clamp(0.0, 1.0)


def grey_ramp(operator: torch.Tensor, guide: LuminanceGuide, levels: int = 33) -> torch.Tensor:
    """The operator's output for grey inputs ``0 .. 1`` (``levels`` of them) at every cell centre.

    At a cell centre the transform is that cell's own, read along the guide at the same
    :func:`depth_cells` as :func:`slice_bilateral` reads it, so this is what the operator
    makes of a grey ramp there (clamped to [0, 1] as :func:`apply_affine_grid` clamps). A
    photo's order of brightness is kept where every channel rises with the level
    (:func:`mrvae.nn.losses.order_reversal`).

    Args:
        operator: ``(B, 12, D, G, G)``.

    Returns:
        ``(B, 3, levels, G, G)``.
    """
    depth = operator.shape[2]
    value = torch.linspace(0.0, 1.0, levels, dtype=operator.dtype, device=operator.device)
    level = guide(value.view(1, 1, levels, 1).expand(1, 3, levels, 1)).view(levels)
    below, weight = depth_cells(level.to(operator.dtype), depth)
    below = below.long()
    above = (below + 1).clamp(max=depth - 1)
    weight = weight.view(1, 1, levels, 1, 1)
    transform = operator[:, :, below] + (operator[:, :, above] - operator[:, :, below]) * weight
    transform = transform.unflatten(1, (3, 4))  # (B, 3, 4, levels, G, G)
    out = transform[:, :, :3].sum(dim=2) * value.view(1, 1, levels, 1, 1) + transform[:, :, 3]
    return out.clamp(0.0, 1.0)
