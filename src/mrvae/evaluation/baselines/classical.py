"""Classical low-light enhancement baselines, vectorised on numpy / OpenCV / scikit-image.

Every method maps a float32 ``(H, W, 3)`` RGB image in [0, 1] to an image of the same shape.
Methods that change brightness only (HE, CLAHE, adaptive gamma) work on the HSV value
``V = max(R, G, B)`` and scale RGB by ``V' / V``, which keeps hue and saturation. Large
Gaussian blurs run on a downscaled copy, so a 12 MP photo takes seconds, not minutes.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.linalg import solve_banded
from skimage.exposure import equalize_hist

from mrvae.io.pixels import fit_long_side

EPS = 1e-6


def _value(img: np.ndarray) -> np.ndarray:
    return img.max(axis=2)


def _with_value(img: np.ndarray, value: np.ndarray, new_value: np.ndarray) -> np.ndarray:
    """Scale RGB so that ``max(R, G, B)`` becomes ``new_value`` (hue and saturation kept)."""
    ratio = new_value / np.maximum(value, EPS)
    return np.clip(img * ratio[..., None], 0.0, 1.0).astype(np.float32)


def histogram_equalization(img: np.ndarray, bins: int = 1024) -> np.ndarray:
    """Global histogram equalisation of the value channel."""
    value = _value(img)
    return _with_value(img, value, equalize_hist(value, nbins=bins).astype(np.float32))


def clahe(img: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV) of the value channel.

    On 8-bit levels: OpenCV scales the clip limit by the number of histogram bins, so on 16-bit
    input the same limit clips almost everything and CLAHE barely changes the image.
    """
    value = _value(img)
    levels = np.round(value * 255).astype(np.uint8)
    equalized = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(levels)
    return _with_value(img, value, equalized.astype(np.float32) / 255.0)


def adaptive_gamma(img: np.ndarray, weight_alpha: float = 0.5, bins: int = 256) -> np.ndarray:
    """Adaptive gamma correction with weighting distribution (AGCWD, Huang et al. 2013).

    The gamma of each intensity level is ``1 - cdf_w(level)``, where ``cdf_w`` is the cumulative
    of the value histogram flattened by a power ``weight_alpha``: frequent dark levels get small
    gammas (strong lift), rare bright ones stay close to identity.
    """
    value = _value(img)
    pdf = np.histogram(value, bins=bins, range=(0.0, 1.0))[0].astype(np.float64)
    pdf /= max(pdf.sum(), 1.0)
    spread = max(pdf.max() - pdf.min(), EPS)
    weighted = pdf.max() * ((pdf - pdf.min()) / spread) ** weight_alpha
    cdf = np.cumsum(weighted) / max(weighted.sum(), EPS)
    levels = (np.arange(bins) + 0.5) / bins
    curve = levels ** (1.0 - cdf)
    return _with_value(img, value, np.interp(value, levels, curve).astype(np.float32))


def gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D or 3-D float32 array; wide blurs run on a downscaled copy.

    The result of a blur wider than 8 pixels is smooth, so it is computed at a resolution where
    sigma is 4 pixels and upsampled; the error is far below the 8-bit step.
    """
    if sigma <= 8:
        return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    factor = sigma / 4.0
    height, width = x.shape[:2]
    small_size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = cv2.resize(x, small_size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _stretch(x: np.ndarray, clip: float, per_channel: bool) -> np.ndarray:
    """Clip ``clip`` of the darkest and brightest values and stretch the rest to [0, 1]."""
    axes = (0, 1) if per_channel else None
    sample = x[:: max(1, x.shape[0] // 512), :: max(1, x.shape[1] // 512)]  # quantiles of a grid
    low = np.quantile(sample, clip, axis=axes)
    high = np.quantile(sample, 1.0 - clip, axis=axes)
    return np.clip((x - low) / np.maximum(high - low, EPS), 0.0, 1.0).astype(np.float32)


def _log_retinex(log_img: np.ndarray, intensity: np.ndarray, sigmas: Sequence[float]
                 ) -> np.ndarray:
    """Mean over scales of ``log I - log (G_sigma * I)``."""
    return np.mean([log_img - np.log(gaussian_smooth(intensity, s)) for s in sigmas], axis=0)


def single_scale_retinex(img: np.ndarray, sigma: float = 80.0, clip: float = 0.01) -> np.ndarray:
    """Single-scale Retinex (Jobson et al. 1997): log ratio to the Gaussian surround, stretched."""
    intensity = img.astype(np.float32) * 255.0 + 1.0
    return _stretch(_log_retinex(np.log(intensity), intensity, [sigma]), clip, per_channel=False)


def msrcr(img: np.ndarray, sigmas: Sequence[float] = (15.0, 80.0, 250.0), alpha: float = 125.0,
          beta: float = 46.0, clip: float = 0.01) -> np.ndarray:
    """Multi-scale Retinex with colour restoration (Jobson, Rahman, Woodell 1997).

    The colour restoration ``beta * log(alpha * I_c / sum_c I_c)`` multiplies the multi-scale
    Retinex output; the final gain/offset is a per-channel stretch with ``clip`` clipping (the
    "simplest colour balance" of Petro et al. 2014).
    """
    intensity = img.astype(np.float32) * 255.0 + 1.0
    log_img = np.log(intensity)
    restoration = beta * (np.log(alpha) + log_img - np.log(intensity.sum(axis=2, keepdims=True)))
    return _stretch(_log_retinex(log_img, intensity, sigmas) * restoration, clip, per_channel=True)


def _solve_rows(values: np.ndarray, weights: np.ndarray, lam: float) -> np.ndarray:
    """Solve ``(I + lam * L) u = f`` row by row, L the 1-D Laplacian weighted by ``weights``.

    ``weights (H, W - 1)`` couple horizontal neighbours; rows are independent, so the whole
    image is one tridiagonal system (zero coupling across row ends) for LAPACK's ``gtsv``.
    """
    height, width = values.shape
    coupling = np.zeros((height, width))
    coupling[:, :-1] = lam * weights
    coupling = coupling.ravel()
    diagonal = 1.0 + coupling + np.concatenate([[0.0], coupling[:-1]])
    banded = np.zeros((3, height * width))
    banded[0, 1:] = -coupling[:-1]
    banded[1] = diagonal
    banded[2, :-1] = -coupling[:-1]
    return solve_banded((1, 1), banded, values.ravel(), check_finite=False).reshape(height, width)


def refine_illumination(initial: np.ndarray, alpha: float = 0.15, sigma: float = 2.0,
                        eps: float = 1e-3, iterations: int = 3) -> np.ndarray:
    """LIME's structure-aware illumination refinement (Guo, Li, Ling 2017), sped-up objective.

    Minimises ``||T - T0||^2 + alpha * sum_d w_d (d T)^2`` with the strategy-III weights
    ``w_d = 1 / ((|G_sigma * d T0| + eps) (|d T0| + eps))``: flat regions are smoothed, strong
    consistent edges kept. The 2-D sparse system is solved by alternating 1-D tridiagonal
    solves along rows and columns with a decreasing weight schedule (the fast global smoother of
    Min et al. 2014), O(pixels) instead of a large sparse factorisation.
    """
    t0 = initial.astype(np.float64)
    grad_x, grad_y = np.diff(t0, axis=1), np.diff(t0, axis=0)
    smooth_x = cv2.GaussianBlur(grad_x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    smooth_y = cv2.GaussianBlur(grad_y, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    weight_x = 1.0 / ((np.abs(smooth_x) + eps) * (np.abs(grad_x) + eps))
    weight_y = 1.0 / ((np.abs(smooth_y) + eps) * (np.abs(grad_y) + eps))
    result = t0
    for step in range(1, iterations + 1):
        lam = alpha * 1.5 * 4.0 ** (iterations - step) / (4.0**iterations - 1)
        result = _solve_rows(result, weight_x, lam)
        result = _solve_rows(result.T, weight_y.T, lam).T
    return np.clip(result, 0.0, 1.0)


def lime(img: np.ndarray, alpha: float = 0.15, gamma: float = 0.8, sigma: float = 2.0,
         max_side: int = 1024, floor: float = 0.02) -> np.ndarray:
    """LIME: low-light enhancement by illumination map estimation (Guo et al. 2017).

    The initial illumination is ``max(R, G, B)``; it is refined structure-aware
    (:func:`refine_illumination`, on a copy with long side at most ``max_side`` -- the map is
    smooth, so it is upsampled bilinearly), gamma-corrected, and the image divided by it.
    Denoising (BM3D in the paper) is not part of this baseline.
    """
    initial = _value(img)
    height, width = initial.shape
    work = fit_long_side(initial, max_side)
    illumination = refine_illumination(work, alpha, sigma).astype(np.float32)
    if work.shape != initial.shape:
        illumination = cv2.resize(illumination, (width, height), interpolation=cv2.INTER_LINEAR)
    illumination = np.maximum(illumination, floor) ** gamma
    return np.clip(img / illumination[..., None], 0.0, 1.0).astype(np.float32)
