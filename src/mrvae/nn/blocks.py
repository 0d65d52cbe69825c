"""Building blocks of the MR-VAE network and the tensor helpers it shares with the engine.

Tensors are ``(B, C, H, W)`` float.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from torch import nn


def conv_relu(cin: int, cout: int) -> list[nn.Module]:
    """A 3x3 convolution and a ReLU."""
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN plus identity (SRResNet)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.PReLU(width),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class HalfResolutionBranch(nn.Module):
    """DR's features at half resolution: each 2x2 block of pixels becomes one pixel of four
    times the channels (pixel unshuffle), residual blocks run there and pixel shuffle brings the
    result back. A convolution there sees twice as far for a quarter of the pixels, which
    heavy noise needs and a 12 MP photo can afford. The last convolution starts at zero, so a
    model grown by this branch starts as the model it grew from. Odd sizes are padded at the
    bottom and right (replicate), so the tiled engine needs even tile offsets.
    """

    def __init__(self, channels: int, width: int, blocks: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(4 * channels, width, 3, padding=1), nn.PReLU(width),
            *[ResidualBlock(width) for _ in range(blocks)],
            nn.Conv2d(width, 4 * channels, 3, padding=1), nn.PixelShuffle(2))
        nn.init.zeros_(self.body[-2].weight)
        nn.init.zeros_(self.body[-2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, H, W)`` -> a residual of the same shape."""
        height, width = x.shape[-2:]
        padded = F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")
        return self.body(padded)[..., :height, :width]


class NoiseConditioning(nn.Module):
    """Scales and shifts DR's features by the input's local noise level and brightness.

    The same DR sees a phone's faint sensor noise and a heavily degraded photo; its few
    convolutions see too few pixels to tell them apart, and trained on both it smooths one too
    much or the other too little. The noise level (Immerkaer's estimate: the mean absolute
    response of luma to the difference of two Laplacians, scaled to a standard deviation) and
    the mean luma are averaged over a ``2 * radius + 1`` window, and a per-pixel MLP (1x1
    convolutions) of their log2 turns them into a scale and a shift per channel. Its last
    convolution starts at zero, so a model grown by this part starts as the model it grew
    from. At the borders the filter's response and the windows are padded by replication.
    """

    def __init__(self, channels: int, radius: int) -> None:
        super().__init__()
        self.radius = radius
        laplacian = torch.tensor([1.0, -2.0, 1.0])
        kernel = torch.outer(laplacian, laplacian) * (math.sqrt(math.pi / 2) / 6)
        self.register_buffer("kernel", kernel[None, None], persistent=False)
        self.mlp = nn.Sequential(nn.Conv2d(2, 8, 1), nn.PReLU(8), nn.Conv2d(8, 2 * channels, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @property
    def reach(self) -> int:
        """Pixels of input one output pixel reads on each side: the 3x3 filter and the window."""
        return 1 + self.radius

    def box_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``x (B, C, H, W)`` over a ``2 * radius + 1`` square (separable; pooling is
        about twice as fast as kornia's ``box_blur`` convolution on this hot path)."""
        size, r = 2 * self.radius + 1, self.radius
        x = F.avg_pool2d(F.pad(x, (r, r, 0, 0), mode="replicate"), (1, size), stride=1)
        return F.avg_pool2d(F.pad(x, (0, 0, r, r), mode="replicate"), (size, 1), stride=1)

    def levels(self, image: torch.Tensor) -> torch.Tensor:
        """``image (B, 3, H, W)`` -> ``(B, 2, H, W)``: log2 of the local noise std and of the
        local mean luma."""
        luma = rgb_to_grayscale(image)  # BT.601, as refine.noise_sigma
        height, width = luma.shape[-2:]
        # the filter where it fits (images under 3 px are first padded to 3); the outermost
        # pixels take their neighbours' response
        fits = F.pad(luma, (0, max(0, 3 - width), 0, max(0, 3 - height)), mode="replicate")
        response = F.conv2d(fits, self.kernel).abs()
        response = F.pad(response, (1, 1, 1, 1), mode="replicate")[..., :height, :width]
        local = self.box_mean(torch.cat([response, luma], dim=1))
        return torch.log2(local + 2.0 ** -12)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mlp(self.levels(image)).chunk(2, dim=1)
        return features * (1 + scale) + shift


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple (reflect where possible, replicate for tiny inputs)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
