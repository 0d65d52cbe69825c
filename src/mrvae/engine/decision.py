"""The global decision for one photo: the network on a small copy of it, then the exposure.

Images here are float32 numpy ``(H, W, 3)`` RGB in [0, 1] (the engine's working layout) or
torch ``(1, 3, h, w)`` tensors for what the network returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import torch

from mrvae.engine.backends import Backend, OperatorBackend
from mrvae.engine.exposure import apply_exposure
from mrvae.engine.refine import brightening, noise_sigma
from mrvae.engine.tiling import global_size_for, upsample_region
from mrvae.nn.blocks import resize

T = TypeVar("T")


@dataclass(frozen=True)
class GlobalPass:
    """The global pass of one image: ``small``, the input downscaled to the global size, and
    ``image``, GR's output for it; both ``(1, 3, h, w)`` in [0, 1].

    For a model whose GR predicts an operator, ``operator`` is it (applied at full resolution,
    tile by tile: :func:`global_region`), ``image`` is it applied to ``small``, and ``scale``
    (``(1, 3, 1, 1)`` or None) multiplies its output, as a video's smoothing scales ``image``.
    """

    small: torch.Tensor
    image: torch.Tensor
    operator: torch.Tensor | None = None
    scale: torch.Tensor | None = None


def as_rgb(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` as contiguous float32 ``(H, W, 3)``.

    Raises:
        ValueError: another shape.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    return np.ascontiguousarray(rgb, dtype=np.float32)


def as_image(rgb: np.ndarray) -> torch.Tensor:
    """A ``(1, 3, H, W)`` view of float32 ``(H, W, 3)`` (channels-last strides, no copy)."""
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)


def as_pixels(image: torch.Tensor) -> np.ndarray:
    """A ``(H, W, 3)`` numpy view of a ``(1, 3, H, W)`` CPU tensor."""
    return image[0].permute(1, 2, 0).numpy()


def global_pass(backend: Backend, rgb: np.ndarray, global_size: int,
                operator: torch.Tensor | None = None) -> GlobalPass:
    """FPDC + GR on a copy of float32 ``(H, W, 3)`` ``rgb`` with long side ``global_size``
    (never upscaled): the whole photo's exposure and colour decision.

    ``operator``, an earlier pass's (a video's previous frame), is applied to this copy instead
    of running the network (models whose GR predicts an operator)."""
    small = resize(as_image(rgb), global_size_for(*rgb.shape[:2], global_size))
    if operator is None and isinstance(backend, OperatorBackend):
        operator = backend.global_operator(small)
    if operator is None:
        return GlobalPass(small, backend.global_image(small).clamp(0.0, 1.0))
    image = backend.operator_region(operator, small, (0, 0), tuple(small.shape[-2:]))
    return GlobalPass(small, image.clamp(0.0, 1.0), operator)


@dataclass(frozen=True)
class Photo:
    """One photo on its way through the engine: the input, its global pass and its exposure.

    ``exposure`` is in EV stops on top of the network's own (the user's, plus what the stages
    add). Quantities that do not depend on it (the input's noise, the network's brightening)
    are computed once, on first use, and shared by :meth:`with_exposure`'s copies; those that
    do (the amplified noise) are kept by exposure.
    """

    rgb: np.ndarray
    decision: GlobalPass
    exposure: float = 0.0
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def _memo(self, key: Any, compute: Callable[[], T]) -> T:
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def with_exposure(self, exposure: float) -> Photo:
        """The same photo at another exposure."""
        return replace(self, exposure=exposure)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the input."""
        return self.rgb.shape[0], self.rgb.shape[1]

    @cached_property
    def small(self) -> np.ndarray:
        """The input at the global pass's size, ``(h, w, 3)``."""
        return as_pixels(self.decision.small)

    @property
    def noise(self) -> float:
        """Std of the input's white noise (:func:`mrvae.engine.refine.noise_sigma`)."""
        return self._memo("noise", lambda: noise_sigma(self.rgb))

    def network_gain(self, side: int) -> np.ndarray:
        """Coarse brightening of the network at its own exposure, short side ``side``."""
        return self._memo(("gain", side), lambda: brightening(
            self.small, as_pixels(self.decision.image), side))

    def gain(self, side: int) -> np.ndarray:
        """Coarse brightening at this photo's exposure (GR's image over the input), short side
        ``side``: how much the output amplifies the input's noise."""
        if not self.exposure:
            return self.network_gain(side)
        return brightening(self.small, as_pixels(self.image), side)

    def amplified_noise(self, side: int) -> np.ndarray:
        """The noise the output shows, short side ``side``: the input's noise std times the
        coarse brightening at this photo's exposure (what the denoising ramp and the
        sharpening read); computed once per exposure."""
        return self._memo(("amplified noise", side, self.exposure),
                          lambda: (self.noise * self.gain(side)).astype(np.float32))

    @cached_property
    def image(self) -> torch.Tensor:
        """GR's image at this photo's exposure, ``(1, 3, h, w)``."""
        if not self.exposure:
            return self.decision.image
        return apply_exposure(self.decision.image, self.exposure)


def global_region(backend: Backend, photo: Photo, x_tile: torch.Tensor,
                  box: tuple[int, int, int, int]) -> torch.Tensor:
    """GR's image of the pixels ``box`` (``(y0, y1, x0, x1)``, read as ``x_tile``) at the
    photo's exposure, ``(1, 3, y1 - y0, x1 - x0)``: GR's small image upsampled there, or the
    operator applied to the tile itself at full resolution."""
    operator = photo.decision.operator
    if operator is None:
        return upsample_region(photo.image, photo.size, box)
    if not isinstance(backend, OperatorBackend):
        raise ValueError("this backend cannot apply GR's operator; use --backend torch")
    region = backend.operator_region(operator, x_tile, (box[0], box[2]), photo.size)
    if photo.decision.scale is not None:
        region = region * photo.decision.scale
    region = region.clamp(0.0, 1.0)
    return apply_exposure(region, photo.exposure) if photo.exposure else region
