"""How much of DR's denoising a photo gets, for models whose GR predicts an operator.

With an operator (``ModelConfig.operator`` ``"curves"`` or ``"affine"``) the global image of a
tile is the operator applied to the tile itself: the photo's own detail and noise at the new
exposure. DR's output is that image denoised. A strength ``s`` gives
``global + s * (DR - global)`` per pixel: 1 is the network's output, 0 the operator's image.

By default (``strength=None``) ``s`` follows the noise the brightening makes visible at each
pixel (the input's noise std times the network's coarse brightening there, at the photo's
exposure): 0 up to ``noise_low``, rising to 1 at ``noise_high``. A clean photo keeps its
texture, the deep shadows of a noisy one get the whole denoising. The two thresholds were chosen
on the validation sets (docs/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mrvae.engine.decision import Photo
from mrvae.engine.refine import noise_ramp
from mrvae.engine.tiling import region_window, upsample_region

GAIN_SIDE = 64  # short side of the coarse brightening map


def amplified_noise(photo: Photo) -> torch.Tensor:
    """The noise the output shows, ``(1, 1, h, w)`` with short side :data:`GAIN_SIDE`: the
    input's noise std times the coarse brightening at the photo's exposure."""
    return torch.from_numpy(photo.amplified_noise(GAIN_SIDE))[None, None]


@dataclass(frozen=True)
class Denoise:
    """DR's denoising strength: ``strength`` in [0, 1], or ``None`` for the noise ramp.

    Attributes:
        strength: the same strength everywhere, or ``None``: per pixel, from the amplified noise.
        noise_low, noise_high: amplified noise std (in [0, 1] units) where the ramp leaves 0 and
            reaches 1.
    """

    strength: float | None = None
    noise_low: float = 4.0 / 255.0  # chosen on LOL's validation split and the real-photo set
    noise_high: float = 12.0 / 255.0

    def __post_init__(self) -> None:
        if self.strength is not None and not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"denoise strength must be in [0, 1], got {self.strength}")
        if not 0.0 <= self.noise_low < self.noise_high:
            raise ValueError(f"bad denoise ramp {self.noise_low}..{self.noise_high}")

    def plan(self, photo: Photo
             ) -> Callable[[tuple[int, int, int, int]], torch.Tensor | None] | None:
        """The strength of each tile's pixels (``box`` -> ``(1, 1, h, w)``, a scalar tensor,
        or ``None`` for 1 everywhere), or ``None`` where DR's output stays as it is in every
        tile: strength 1, or a model whose GR outputs an image (its global image is GR's
        upsampled guess, not the photo's detail).
        """
        if photo.decision.operator is None or self.strength == 1.0:
            return None
        if self.strength is not None:
            constant = torch.tensor(self.strength)
            return lambda box: constant
        noise = amplified_noise(photo)
        low, high = self.noise_low, self.noise_high

        def ramp(box: tuple[int, int, int, int]) -> torch.Tensor | None:
            # most tiles of a dark photo lie wholly above the ramp (or below): no map to make
            window = noise[(..., *region_window(noise.shape[-2:], photo.size, box))]
            if window.min() >= high:
                return None
            if window.max() <= low:
                return torch.zeros(())
            return noise_ramp(upsample_region(noise, photo.size, box), low, high)

        return ramp


def parse_denoise(text: str) -> Denoise:
    """``"auto"`` (the noise ramp) or a strength in [0, 1], as the command line writes it.

    Raises:
        ValueError: anything else.
    """
    if text.strip().lower() == "auto":
        return Denoise()
    try:
        return Denoise(float(text))
    except ValueError:
        raise ValueError(f"--denoise {text!r}: write auto or a strength from 0 to 1") from None


def blend(global_image: torch.Tensor, detail: torch.Tensor,
          strength: torch.Tensor) -> torch.Tensor:
    """``global_image + strength * (detail - global_image)``; images ``(1, 3, h, w)``,
    ``strength`` broadcasts (``(1, 1, h, w)`` or a scalar)."""
    return torch.lerp(global_image, detail, strength.to(detail.dtype))
