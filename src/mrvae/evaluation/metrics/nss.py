"""Natural scene statistics shared by NIQE and BRISQUE (Mittal et al. 2012, 2013).

MSCN coefficients, the products of neighbouring coefficients, and moment-matching fits of a
generalised Gaussian (GGD) and an asymmetric one (AGGD) over the table of shapes
0.2, 0.201, ..., 10 that the authors' MATLAB code searches.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
from scipy.special import gamma as gamma_fn

_SHAPES = np.arange(0.2, 10.001, 0.001)
# r(alpha) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) increases with alpha: look it up by bisection.
_RATIOS = gamma_fn(2 / _SHAPES) ** 2 / (gamma_fn(1 / _SHAPES) * gamma_fn(3 / _SHAPES))

# Neighbour offsets (rows, columns) of the paired products: horizontal, vertical, two diagonals.
NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))


def mscn(luminance: np.ndarray, border: int = cv2.BORDER_REPLICATE
         ) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients of a 0..255 image and its local std.

    ``(H, W)`` -> two ``(H, W)`` float64 arrays. 7x7 Gaussian window of sigma 7/6, the
    coefficients divided by ``sigma + 1``; ``border`` is OpenCV's border mode for the window
    (replicated as in NIQE's reference code; ``cv2.BORDER_CONSTANT`` is MATLAB's ``filter2``
    zero padding, as in BRISQUE's).
    """
    lum = luminance.astype(np.float64)
    mu = cv2.GaussianBlur(lum, (7, 7), 7 / 6, borderType=border)
    var = cv2.GaussianBlur(lum * lum, (7, 7), 7 / 6, borderType=border) - mu * mu
    sigma = np.sqrt(np.abs(var))
    return (lum - mu) / (sigma + 1.0), sigma


def paired_products(coefficients: np.ndarray) -> list[np.ndarray]:
    """Products of each coefficient with its neighbour in the four :data:`NEIGHBOURS`
    directions, wrapping around (MATLAB's ``circshift``), within each patch.

    ``(N, h, w)`` -> four ``(N, h * w)`` arrays.
    """
    flat = coefficients.reshape(len(coefficients), -1)
    return [flat * np.roll(coefficients, shift, axis=(1, 2)).reshape(len(coefficients), -1)
            for shift in NEIGHBOURS]


def _nearest_shape(ratio: np.ndarray) -> np.ndarray:
    """The tabled shapes whose ratio r(alpha) is nearest each of ``ratio`` (any shape); NaN
    (e.g. 0/0 of a flat patch) gives the first shape, as MATLAB's ``min`` does."""
    ratio = np.nan_to_num(ratio, nan=_RATIOS[0], posinf=_RATIOS[-1])
    index = np.clip(np.searchsorted(_RATIOS, ratio), 1, len(_SHAPES) - 1)
    nearer_left = np.abs(_RATIOS[index - 1] - ratio) <= np.abs(_RATIOS[index] - ratio)
    return _SHAPES[index - nearer_left]


def ggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean generalised Gaussian fit of each row of ``x`` ``(N, M)`` (moment matching,
    MATLAB ``estimateggdparam``): the shape and the variance ``mean(x^2)``, each ``(N,)``.

    The shape matches ``mean(|x|)^2 / mean(x^2)`` to r(alpha), the reciprocal of the ratio the
    MATLAB code matches; the nearest table entry is the same but on rare near-ties, one step
    (0.001) apart.
    """
    variance = (x * x).mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(x).mean(1) ** 2 / variance
    return _nearest_shape(ratio), variance


class AGGD(NamedTuple):
    """Asymmetric generalised Gaussian fits of ``N`` samples, each field ``(N,)``.

    Attributes:
        alpha: the shape.
        left_std: root mean square of the negative samples.
        right_std: root mean square of the positive samples (zeros count on neither side).
    """

    alpha: np.ndarray
    left_std: np.ndarray
    right_std: np.ndarray

    def scales(self) -> tuple[np.ndarray, np.ndarray]:
        """Left and right scale parameters ``std * sqrt(Gamma(1/alpha) / Gamma(3/alpha))``."""
        factor = np.sqrt(gamma_fn(1 / self.alpha) / gamma_fn(3 / self.alpha))
        return self.left_std * factor, self.right_std * factor

    def mean(self) -> np.ndarray:
        """The mean of the fitted distribution, ``(right - left scale) G(2/a) / G(1/a)``."""
        left, right = self.scales()
        return (right - left) * gamma_fn(2 / self.alpha) / gamma_fn(1 / self.alpha)


def aggd_fit(x: np.ndarray) -> AGGD:
    """Asymmetric generalised Gaussian fit of each row of ``x`` ``(N, M)`` (moment matching,
    MATLAB ``estimateaggdparam``)."""
    left = x < 0
    right = x > 0
    left_std = np.sqrt((x * x * left).sum(1) / np.maximum(left.sum(1), 1))
    right_std = np.sqrt((x * x * right).sum(1) / np.maximum(right.sum(1), 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_hat = left_std / right_std
        r_hat = np.abs(x).mean(1) ** 2 / (x * x).mean(1)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    return AGGD(_nearest_shape(r_norm), left_std, right_std)
