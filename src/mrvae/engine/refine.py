"""Refinement around the network: the photo's own light order and its own detail.

The steps run after DR (see :class:`Refinement`); all are cheap and work on tiles or strips of
rows, so they keep the engine's bounded memory. Images here are float32 ``(H, W, 3)`` RGB in
[0, 1].

1. **Detail** (inside each tile). DR removes noise, and on a clean photo it removes texture
   with it. The input's own high frequencies, brightened by the global pass's gain, are blended
   back with a weight that falls from 1 to 0 as the *amplified* noise (input noise times that
   gain) rises from ``noise_low`` to ``noise_high``: clean photos keep their texture, noisy ones
   keep DR's denoising.
2. **Sharpen** (after all tiles; off unless a model's card turns it on).
   DR leaves a smooth image; an unsharp mask on its luma makes it crisper where the amplified
   noise is low (:func:`sharpen_weight`), and leaves DR's denoising alone where it is not.
3. **Tone** (after the sharpening). The network may reorder the brightness of regions, which looks
   unnatural (lightness order error). The output's coarse lightness is replaced by a monotone
   map of the input's coarse lightness with the same distribution as the output's (quantile
   matching), applied as a gain map that a guided filter aligns with the photo's edges (no
   halos), so regions keep their order and the network keeps its exposure and colour.
4. **Keep** (after the tone step). Where the global pass barely brightens (a well-exposed photo,
   a bright sky, a lamp) the input is kept as it is, moved by the exposure control only; where
   it brightens a lot, the network's output is kept; in between they are blended. A photo the
   network brightens as a whole (its median brightening past ``dark_photo_low``) is a dark
   photo, even one stop under: there only what the network leaves about as it is (a sky, a
   lamp) is kept, by the lower ``dark_keep_*`` thresholds. The weight map is coarse and
   aligned with the photo's edges by the same guided filter, so a dark building against the
   sky gets no band of the other's light. A noisy input is not kept: the
   step fades out as the input's own noise rises from ``noise_low`` to ``noise_high`` (the
   detail step's thresholds), so DR's denoising stays.

Before all four, the **exposure trim** (:func:`exposure_trim`) corrects the network's
exposure of a dark photo: the network lifts a photo one stop darker than another to an output
that is still darker than the other's, while the ground truth of real dark photos is about as
bright whatever the input's darkness. The trim adds ``trim_per_stop`` EV for each stop that the
input's median luma lies below ``trim_pivot`` (and takes it away above), weighted by how dark
the photo is (the keep rule's ``dark_photo_*``), so well-exposed photos are left alone. It acts
as the exposure control does (GR's output and the kept input move together), added to it; the
keep weights come from the network's own, untrimmed exposure.

Each stage must earn its place for the network it follows, so a model's card may change these
defaults (:func:`model_refinement`): the 0.5.2 ``bilateral`` card turns the trim off, which
that network does not need (docs/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import torch

from mrvae.engine.exposure import MAX_EV
from mrvae.io.pixels import fit_short_side

# BT.601 luma weights
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_EPS = 1.0 / 255.0  # floor for ratios of dark pixels
# Immerkaer's noise filter: [1, -2, 1] outer [1, -2, 1]
_LAPLACIAN_DIFFERENCE = np.outer([1, -2, 1], [1, -2, 1]).astype(np.float32)
# ``Enhancer(refine=...)``'s default: the model's own refinement, unchanged
MODEL_REFINEMENT: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Refinement:
    """Settings of the refinement; ``Enhancer(refine=None)`` returns the network output as is.

    Args:
        tone: keep the input's coarse lightness order (step 2).
        tone_side: short side, in pixels, of the coarse lightness maps the order is taken from.
        guide_kernel, guide_eps: guided filter that fits the gain map to the edges, at the
            resolution of the global pass.
        max_gain: the tone gain is clamped to ``[1 / max_gain, max_gain]``.
        detail: strength of the detail step (0 turns it off, 1 is the full weight).
        detail_sigma: Gaussian sigma (pixels) that splits detail from the base layer.
        noise_low, noise_high: amplified noise (std, in [0, 1] units) where the detail weight
            starts to fall and where it reaches 0.
        sharpen: strength of the sharpening (0 turns it off, 1 the full weight).
        sharpen_sigma: Gaussian sigma (pixels) of the sharpening's unsharp mask.
        sharpen_noise_high: amplified noise where the sharpening weight reaches 0 (it starts
            to fall at ``noise_low``).
        keep: keep the input where the global pass barely brightens it (step 3).
        keep_low, keep_high: coarse brightening (global pass over input) at or below which the
            input is kept, and at or above which the network's output is.
        dark_photo_low, dark_photo_high: median brightening of the whole photo from which on
            it counts as dark, and from which on it is dark; the keep thresholds move from
            ``keep_*`` to ``dark_keep_*`` in between.
        dark_keep_low, dark_keep_high: the keep thresholds of a dark photo.
        trim: correct the exposure of dark photos (:func:`exposure_trim`).
        trim_pivot: median luma of the input (in [0, 1]) at which the trim is 0.
        trim_per_stop: EV of trim for each stop of the input's median luma below the pivot
            (negative above it).
        trim_max: the trim is clamped to ``±trim_max`` EV.
    """

    tone: bool = True
    tone_side: int = 64
    guide_kernel: int = 15
    guide_eps: float = 1e-3
    max_gain: float = 4.0
    detail: float = 0.0  # off by default: it cost SSIM on LOL's validation pairs (RESULTS.md)
    detail_sigma: float = 4.0
    noise_low: float = 2.0 / 255.0
    noise_high: float = 12.0 / 255.0
    # off by default; a model's card turns it on where it earned its place (RESULTS.md)
    sharpen: float = 0.0
    sharpen_sigma: float = 2.0  # chosen on both validation sets and the halo test (RESULTS.md)
    sharpen_noise_high: float = 6.0 / 255.0
    keep: bool = True
    keep_low: float = 1.4  # chosen on LOL's validation split (RESULTS.md)
    keep_high: float = 2.5
    # chosen on training-split photos (research/tune_refine.py, RESULTS.md): one stop under
    # (brightening 1.5-2.5) is dark; most well-exposed photos' median brightening is under 1.3
    dark_photo_low: float = 1.35
    dark_photo_high: float = 1.7
    dark_keep_low: float = 1.0
    dark_keep_high: float = 1.2
    # fitted on training-split photos (research/fit_trim.py, RESULTS.md)
    trim: bool = True
    trim_pivot: float = 0.1
    trim_per_stop: float = 0.15
    trim_max: float = 1.0

    def __post_init__(self) -> None:
        if (self.tone_side < 2 or self.guide_kernel < 1 or self.max_gain < 1
                or not 0 <= self.detail <= 1 or self.detail_sigma <= 0
                or not 0 <= self.noise_low < self.noise_high
                or self.sharpen < 0 or self.sharpen_sigma <= 0
                or not self.noise_low < self.sharpen_noise_high
                or not 0 < self.keep_low < self.keep_high
                or not 0 < self.dark_keep_low < self.dark_keep_high
                or not 0 < self.dark_photo_low < self.dark_photo_high
                or not 0 < self.trim_pivot < 1 or self.trim_per_stop < 0
                or not 0 <= self.trim_max <= MAX_EV):
            raise ValueError(f"bad refinement settings: {self}")

    @property
    def detail_radius(self) -> int:
        """Pixels of context the detail step reads around each output pixel."""
        return blur_radius(self.detail_sigma) if self.detail > 0 else 0

    @property
    def sharpen_radius(self) -> int:
        """Pixels of context the sharpening reads around each output pixel."""
        return blur_radius(self.sharpen_sigma) if self.sharpen > 0 else 0


def model_refinement(card: Mapping[str, Any] | None,
                     changes: Mapping[str, Any] = MODEL_REFINEMENT) -> Refinement:
    """The refinement a model was validated with, then ``changes``: :class:`Refinement`'s
    defaults, changed by the card's ``refinement`` entry (``{"trim": false}``) if it has one.

    Raises:
        ValueError: a setting :class:`Refinement` does not have, or a bad value.
    """
    settings = {**((card or {}).get("refinement") or {}), **changes}
    unknown = sorted(set(settings) - {field.name for field in fields(Refinement)})
    if unknown:
        raise ValueError(f"unknown refinement setting(s): {', '.join(unknown)}")
    return Refinement(**settings)


def luma(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` -> ``(H, W)`` float32 BT.601 luma (OpenCV's transform: all cores)."""
    return cv2.transform(np.ascontiguousarray(rgb, np.float32), _LUMA[None]).reshape(
        rgb.shape[:2])


def noise_sigma(rgb: np.ndarray, rows: int = 512) -> float:
    """Standard deviation of white noise in ``rgb``'s luma (Immerkaer 1996, fast estimate).

    The image is filtered with the difference of two Laplacians, ``[1,-2,1]`` outer
    ``[1,-2,1]``, which cancels smooth content; the mean absolute response is proportional to
    the noise std. Texture counts as noise too, so the estimate is an upper bound. Computed in
    strips of ``rows`` rows, so memory stays bounded on any image size.
    """
    height, width = rgb.shape[:2]
    if height < 3 or width < 3:
        return 0.0
    total = 0.0
    for start in range(0, height - 2, rows):  # OpenCV's filters use all cores
        strip = luma(rgb[start:min(height, start + rows + 2)])
        response = cv2.filter2D(strip, -1, _LAPLACIAN_DIFFERENCE)
        total += cv2.norm(response[1:-1, 1:-1], cv2.NORM_L1)  # the valid part only
    return math.sqrt(math.pi / 2) * total / (6 * (height - 2) * (width - 2))


def brightening(small_low: np.ndarray, small_global: np.ndarray, short_side: int) -> np.ndarray:
    """Coarse luma gain of the global pass: ``(h, w)`` map of ``global / low``."""
    return ((fit_short_side(luma(small_global), short_side) + _EPS)
            / (fit_short_side(luma(small_low), short_side) + _EPS))


def noise_ramp(amplified: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """How visible noise of std ``amplified`` (any shape) is: 0 at or below ``low``, rising
    linearly to 1 at ``high``."""
    return ((amplified - low) / (high - low)).clamp(0.0, 1.0)


def clean_share(sigma: float, settings: Refinement) -> float:
    """How clean noise of std ``sigma`` looks: 1 at or below ``noise_low``, falling to 0 at
    ``noise_high``."""
    visible = noise_ramp(torch.tensor(sigma, dtype=torch.float64), settings.noise_low,
                         settings.noise_high)
    return 1.0 - float(visible)


def detail_weight(sigma: float, gain: float, settings: Refinement) -> float:
    """Blend weight of the input's detail when its noise ``sigma`` is brightened by ``gain``."""
    return settings.detail * clean_share(sigma * gain, settings)


def blur_radius(sigma: float) -> int:
    """Half-width of the Gaussian blurs here: truncated at ``4 sigma``."""
    return math.ceil(4 * sigma)


def high_frequencies(image: np.ndarray, sigma: float) -> np.ndarray:
    """An ``(H, W)`` or ``(H, W, C)`` image minus its Gaussian blur of ``sigma`` (truncated at
    ``4 sigma``): what an unsharp mask adds. Pixels within ``blur_radius(sigma)`` of a border
    that is not the image's border are not exact."""
    radius = blur_radius(sigma)
    return image - cv2.GaussianBlur(image, (2 * radius + 1, 2 * radius + 1), sigma)


def restore_detail(low: np.ndarray, enhanced: np.ndarray, gain: np.ndarray, weight: float,
                   sigma: float) -> np.ndarray:
    """``enhanced`` with its high frequencies moved ``weight`` of the way to the input's.

    ``gain`` is the ``(H, W, 1)`` brightening that puts ``low`` at the output's exposure; the
    high frequencies are :func:`high_frequencies`' (borders as there).
    """
    if weight <= 0:
        return enhanced
    # high_pass(a) - high_pass(b) = high_pass(a - b): one blur instead of two
    return enhanced + weight * high_frequencies(low * gain - enhanced, sigma)


def sharpen_weight(amplified: np.ndarray, settings: Refinement) -> np.ndarray:
    """Sharpening weight where the input's noise is brightened to std ``amplified`` (any
    shape): ``sharpen`` at or below ``noise_low``, falling (a smoothstep in log) to 0 at
    ``sharpen_noise_high``, so that the noise DR leaves is not sharpened."""
    visible = log_step(np.maximum(amplified, 1e-12), settings.noise_low,
                       settings.sharpen_noise_high)
    return (settings.sharpen * (1.0 - visible)).astype(np.float32)


def order_preserving_gain(low: np.ndarray, enhanced: np.ndarray, small_low: np.ndarray,
                          settings: Refinement) -> np.ndarray:
    """Gain map, at ``small_low``'s resolution, that puts ``low``'s lightness order on ``enhanced``.

    Lightness is ``max(R, G, B)`` (as in the lightness order error). At ``tone_side`` the target
    lightness is the input's, mapped monotonically onto the output's distribution; the gain
    ``target / output`` is then upsampled to ``small_low`` and fitted to its edges by a guided
    filter (guided by ``small_low``'s lightness over its 99th percentile). Returns ``(h, w)``
    float32.
    """
    light_low = fit_short_side(low, settings.tone_side).max(axis=2)
    light_out = fit_short_side(enhanced, settings.tone_side).max(axis=2)
    # quantile matching: the k-th darkest input region gets the k-th darkest output lightness
    target = np.interp(light_low, np.sort(light_low, axis=None), np.sort(light_out, axis=None))
    gain = np.clip(np.maximum(target, _EPS) / np.maximum(light_out, _EPS),
                   1 / settings.max_gain, settings.max_gain).astype(np.float32)
    return fit_to_edges(gain, small_low, settings)


def fit_to_edges(coarse: np.ndarray, small_low: np.ndarray, settings: Refinement) -> np.ndarray:
    """A coarse ``(h', w')`` map upsampled to ``small_low``'s resolution and fitted to its edges
    by a guided filter (guided by its lightness over its 99th percentile). Returns ``(h, w)``
    float32."""
    guide = small_low.max(axis=2)
    # normalised, so that ``guide_eps`` means the same edge contrast in dark and bright photos
    guide = guide / max(float(np.percentile(guide, 99)), _EPS)
    plane = cv2.resize(coarse.astype(np.float32), guide.shape[::-1],
                       interpolation=cv2.INTER_LINEAR)
    kernel = min(settings.guide_kernel, *guide.shape) // 2 * 2 + 1  # odd, fits the image
    return guided_filter(guide, plane, kernel, settings.guide_eps)


def guided_filter(guide: np.ndarray, plane: np.ndarray, kernel: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter of the ``(h, w)`` float32 ``plane`` by the ``(h, w)`` float32
    ``guide``, box windows of ``kernel`` pixels, mirrored borders (as kornia's ``guided_blur``).

    OpenCV's box filter keeps running sums, so its cost does not grow with the window; a
    convolution's does (kornia's: 9 times slower on the engine's 512 px maps).
    """
    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (kernel, kernel), borderType=cv2.BORDER_REFLECT_101)

    guide, plane = guide.astype(np.float32), plane.astype(np.float32)
    mean_guide, mean_plane = box(guide), box(plane)
    variance = box(guide * guide) - mean_guide * mean_guide
    covariance = box(guide * plane) - mean_guide * mean_plane
    slope = covariance / (variance + np.float32(eps))
    offset = mean_plane - slope * mean_guide
    return box(slope) * guide + box(offset)


def log_step(x: np.ndarray | float, low: float, high: float) -> np.ndarray:
    """0 at or below ``low``, 1 at or above ``high``, a smoothstep in ``log(x)`` between."""
    ramp = np.clip((np.log(x) - math.log(low)) / (math.log(high) - math.log(low)), 0.0, 1.0)
    return ramp * ramp * (3.0 - 2.0 * ramp)


def darkness(gain: np.ndarray, settings: Refinement) -> float:
    """How dark a photo with coarse brightening map ``gain`` is: 0 while its median brightening
    is at most ``dark_photo_low``, 1 from ``dark_photo_high`` on, a log smoothstep between."""
    return float(log_step(float(np.median(gain)), settings.dark_photo_low,
                          settings.dark_photo_high))


def exposure_trim(small_low: np.ndarray, gain: np.ndarray, settings: Refinement) -> float:
    """EV to add to the global pass's exposure of a photo (``small_low``, float32 ``(h, w, 3)``)
    that it brightens by ``gain`` (:func:`brightening`): ``trim_per_stop`` per stop of median
    luma below ``trim_pivot``, clamped to ``±trim_max``, times :func:`darkness`; 0 when
    ``trim`` is off."""
    if not settings.trim:
        return 0.0
    return float(trim_stops(np.median(luma(small_low)), darkness(gain, settings),
                            settings.trim_pivot, settings.trim_per_stop, settings.trim_max))


def trim_stops(median_luma: np.ndarray | float, dark: np.ndarray | float, pivot: float,
               per_stop: float, limit: float) -> np.ndarray:
    """The trim's rule on numbers (element-wise): ``per_stop`` EV per stop of ``median_luma``
    (floored at 1/255) below ``pivot``, clamped to ``±limit``, times ``dark``."""
    stops = -per_stop * np.log2(np.maximum(median_luma, _EPS) / pivot)
    return dark * np.clip(stops, -limit, limit)


def keep_thresholds(gain: np.ndarray, settings: Refinement) -> tuple[float, float]:
    """The keep thresholds for a photo with coarse brightening map ``gain``: ``keep_*``, or
    ``dark_keep_*`` as its :func:`darkness` rises (log-blended)."""
    dark = darkness(gain, settings)
    low, high = (math.exp((1.0 - dark) * math.log(normal) + dark * math.log(darker))
                 for normal, darker in ((settings.keep_low, settings.dark_keep_low),
                                        (settings.keep_high, settings.dark_keep_high)))
    return low, high


def keep_weight(gain: np.ndarray, small_low: np.ndarray, sigma: float,
                settings: Refinement) -> np.ndarray:
    """Weight of the network's output against the input, ``(h, w)`` at ``small_low``'s
    resolution, from the coarse brightening ``gain`` (:func:`brightening`): 0 at or below the
    low threshold of :func:`keep_thresholds`, 1 at or above the high one, smooth in between,
    fitted to the edges; 1 everywhere when the input's noise ``sigma`` reaches ``noise_high``
    (:func:`clean_share`)."""
    weight = fit_to_edges(log_step(gain, *keep_thresholds(gain, settings)), small_low, settings)
    return 1.0 - clean_share(sigma, settings) * (1.0 - np.clip(weight, 0.0, 1.0))
