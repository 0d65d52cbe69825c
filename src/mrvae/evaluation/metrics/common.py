"""What the metrics share: luminance conversions and the check that two images pair up."""

from __future__ import annotations

import numpy as np


def luma_bt601(img: np.ndarray) -> np.ndarray:
    """Studio-range Y of YCbCr (ITU-R BT.601, as MATLAB's ``rgb2ycbcr``), in [16/255, 235/255].

    ``(..., 3)`` RGB in [0, 1] -> ``(...)`` float64.
    """
    img = np.asarray(img, np.float64)
    return (16.0 + img @ np.array([65.481, 128.553, 24.966])) / 255.0


def gray(img: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] with MATLAB ``rgb2gray`` weights: ``(H, W, 3)`` -> ``(H, W)``
    float64; a 2-D image is returned as is (as float64)."""
    img = np.asarray(img, np.float64)
    return img if img.ndim == 2 else img @ np.array([0.2989, 0.5870, 0.1140])


def check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    """Raise ``ValueError`` unless the two images have the same shape."""
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {target.shape}")
