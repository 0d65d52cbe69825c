"""NIQE (Mittal et al. 2013) with our own pristine model.

The model is fitted by ``scripts/fit_niqe.py`` and shipped in ``data/niqe_pristine.npz``;
nothing is downloaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mrvae.evaluation.metrics.common import gray
from mrvae.evaluation.metrics.nss import aggd_fit, mscn, paired_products
from mrvae.io.files import atomic_file

NIQE_MODEL_PATH = Path(__file__).parent / "data" / "niqe_pristine.npz"


@dataclass(frozen=True)
class NIQEModel:
    """The pristine multivariate Gaussian of NIQE features and how it was fitted."""

    mean: np.ndarray
    cov: np.ndarray
    patch_size: int = 96
    max_side: int = 512
    num_images: int = 0
    num_patches: int = 0
    source: str = ""

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as handle:
            np.savez_compressed(handle, mean=self.mean.astype(np.float64),
                                cov=self.cov.astype(np.float64), patch_size=self.patch_size,
                                max_side=self.max_side, num_images=self.num_images,
                                num_patches=self.num_patches, source=self.source)
        return path

    @classmethod
    def load(cls, path: str | Path = NIQE_MODEL_PATH) -> NIQEModel:
        with np.load(path) as data:
            return cls(mean=data["mean"], cov=data["cov"], patch_size=int(data["patch_size"]),
                       max_side=int(data["max_side"]), num_images=int(data["num_images"]),
                       num_patches=int(data["num_patches"]), source=str(data["source"]))


@functools.lru_cache(maxsize=4)
def _cached_model(path: str) -> NIQEModel:
    return NIQEModel.load(path)


def _patch_features(coefficients: np.ndarray) -> np.ndarray:
    """18 NIQE features of each patch ``(N, p, p)`` of MSCN coefficients -> ``(N, 18)``.

    The AGGD shape and mean scale of the coefficients, then shape, mean, left and right scale of
    the products of neighbours in four orientations (horizontal, vertical, two diagonals).
    """
    fit = aggd_fit(coefficients.reshape(len(coefficients), -1))
    left, right = fit.scales()
    features = [fit.alpha, (left + right) / 2]
    for products in paired_products(coefficients):
        fit = aggd_fit(products)
        features += [fit.alpha, fit.mean(), *fit.scales()]
    return np.stack(features, axis=1)


def _patches(img: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping ``size`` x ``size`` patches of a 2-D image (row-major) -> ``(N, s, s)``."""
    rows, cols = img.shape[0] // size, img.shape[1] // size
    img = img[: rows * size, : cols * size]
    return img.reshape(rows, size, cols, size).transpose(0, 2, 1, 3).reshape(-1, size, size)


def niqe_features(img: np.ndarray, patch_size: int = 96,
                  sharpness_threshold: float | None = None) -> np.ndarray:
    """NIQE features ``(N, 36)`` of the ``patch_size`` patches of an image at two scales.

    Args:
        img: RGB or grey float image in [0, 1].
        sharpness_threshold: keep only patches whose mean local deviation exceeds this fraction
            of the sharpest patch's (0.75 when fitting the pristine model; None keeps all).

    Raises:
        ValueError: the image holds no full patch.
    """
    lum = gray(img) * 255.0
    if min(lum.shape) < patch_size:
        raise ValueError(f"NIQE needs images of at least {patch_size}x{patch_size} pixels, "
                         f"got {lum.shape[0]}x{lum.shape[1]}")
    rows, cols = lum.shape[0] // patch_size, lum.shape[1] // patch_size
    lum = lum[: rows * patch_size, : cols * patch_size]
    scales = []
    keep = slice(None)
    for scale in range(2):
        size = patch_size // 2**scale
        coefficients, sigma = mscn(lum)
        if scale == 0 and sharpness_threshold is not None:
            sharpness = _patches(sigma, size).mean(axis=(1, 2))
            keep = sharpness > sharpness_threshold * sharpness.max()
        scales.append(_patch_features(_patches(coefficients, size)[keep]))
        lum = cv2.resize(lum, (lum.shape[1] // 2, lum.shape[0] // 2),
                         interpolation=cv2.INTER_AREA)
    return np.concatenate(scales, axis=1)


def niqe(img: np.ndarray, model: NIQEModel | str | Path | None = None) -> float:
    """Natural Image Quality Evaluator (Mittal et al. 2013); lower is more natural.

    The Mahalanobis-like distance between the multivariate Gaussian of the image's patch features
    and the pristine model fitted on clean photos (``scripts/fit_niqe.py``).
    """
    if not isinstance(model, NIQEModel):
        model = _cached_model(str(model or NIQE_MODEL_PATH))
    features = niqe_features(img, model.patch_size)
    features = features[np.isfinite(features).all(axis=1)]
    if len(features) == 0:
        raise ValueError("NIQE: no patch with finite features (flat image?)")
    mean = features.mean(axis=0)
    cov = np.cov(features, rowvar=False) if len(features) > 1 else np.zeros_like(model.cov)
    diff = model.mean - mean
    distance = diff @ np.linalg.pinv((model.cov + cov) / 2) @ diff
    return float(np.sqrt(max(distance, 0.0)))


def fit_niqe(images: Sequence[np.ndarray], patch_size: int = 96,
             sharpness_threshold: float = 0.75, source: str = "",
             max_side: int = 512) -> NIQEModel:
    """Fit the pristine NIQE Gaussian on clean photos (float RGB in [0, 1], already resized).

    Only the sharp patches of each photo are used (the reference method's selection).
    """
    features = [niqe_features(img, patch_size, sharpness_threshold) for img in images
                if min(img.shape[:2]) >= patch_size]
    stacked = np.concatenate(features)
    stacked = stacked[np.isfinite(stacked).all(axis=1)]
    if len(stacked) < 2:
        raise ValueError("too few pristine patches to fit NIQE")
    return NIQEModel(mean=stacked.mean(axis=0), cov=np.cov(stacked, rowvar=False),
                     patch_size=patch_size, max_side=max_side, num_images=len(features),
                     num_patches=len(stacked), source=source)


