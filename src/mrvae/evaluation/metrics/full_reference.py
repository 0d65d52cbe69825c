"""Full-reference metrics: an enhanced image against its ground truth (float RGB in [0, 1])."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

from mrvae.evaluation.metrics.common import check_pair, gray, luma_bt601


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for data range 1 (``inf`` for identical images)."""
    check_pair(pred, target)
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def psnr_y(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR on the BT.601 Y channel."""
    check_pair(pred, target)
    return psnr(luma_bt601(pred), luma_bt601(target))


def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Wang et al. (2004) SSIM map of two 2-D float64 images with data range 1.

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03; the border where the window leaves
    the image is cropped, as scikit-image does.
    """
    c1, c2 = 0.01**2, 0.03**2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    return (numerator / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))[5:-5, 5:-5]


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean structural similarity over the RGB channels (Gaussian-window SSIM, data range 1).

    Equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)``, several times faster on large images.
    """
    check_pair(pred, target)
    if min(pred.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {pred.shape[:2]}")
    a, b = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if a.ndim == 2:
        return float(_ssim_map(a, b).mean())
    return float(np.mean([_ssim_map(a[..., c], b[..., c]).mean() for c in range(a.shape[2])]))


def ssim_y(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM on the BT.601 Y channel (the convention of most enhancement papers' tables)."""
    check_pair(pred, target)
    return ssim(luma_bt601(pred), luma_bt601(target))


def psnr_gtmean(pred: np.ndarray, target: np.ndarray) -> float:
    """GT-mean PSNR: PSNR after scaling ``pred`` so its mean grey equals the ground truth's.

    All channels are multiplied by ``mean(gray(target)) / mean(gray(pred))`` and clipped to
    [0, 1], as recent low-light papers (e.g. LLFlow, KinD's "GT-mean" tables) report it: the
    score of the colours and detail with the overall exposure factored out. A black ``pred``
    cannot be scaled and is scored as it is.
    """
    check_pair(pred, target)
    pred = np.asarray(pred, np.float64)
    pred_mean = gray(pred).mean()
    if pred_mean > 0:
        pred = np.clip(pred * (gray(target).mean() / pred_mean), 0.0, 1.0)
    return psnr(pred, target)


def colour_shift(pred: np.ndarray, target: np.ndarray) -> float:
    """Colour cast against the ground truth: the distance between the mean ``(a*, b*)`` of the
    two images in CIELAB (sRGB, D65); 0 when their average colours agree, whatever the detail.
    """
    check_pair(pred, target)
    mean_ab = [rgb2lab(np.clip(np.asarray(img, np.float32), 0, 1))[..., 1:].reshape(-1, 2)
               .mean(axis=0) for img in (pred, target)]
    return float(np.hypot(*(mean_ab[0] - mean_ab[1])))


def ciede2000(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference (sRGB, D65); 0 for identical images."""
    check_pair(pred, target)
    lab_pred = rgb2lab(np.clip(np.asarray(pred, np.float32), 0, 1))
    lab_target = rgb2lab(np.clip(np.asarray(target, np.float32), 0, 1))
    return float(np.mean(deltaE_ciede2000(lab_pred, lab_target)))


