"""No-reference metrics and those that compare the output with its low-light input (float RGB
in [0, 1]): histogram entropy, brightness, contrast, clipping, lightness order error."""

from __future__ import annotations

import numpy as np

from mrvae.evaluation.metrics.common import check_pair, gray
from mrvae.io.pixels import fit_short_side


def entropy(img: np.ndarray) -> float:
    """Shannon entropy (bits) of the 256-bin luminance histogram; at most 8."""
    levels = np.clip(np.round(gray(img) * 255), 0, 255).astype(np.int64)
    hist = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    prob = hist[hist > 0] / hist.sum()
    return float(-(prob * np.log2(prob)).sum())


def brightness(img: np.ndarray) -> float:
    """Mean luminance in [0, 1]."""
    return float(gray(img).mean())


def contrast(img: np.ndarray) -> float:
    """RMS contrast: standard deviation of the luminance."""
    return float(gray(img).std())


CLIP_LEVEL = 250  # an 8-bit channel value from which a pixel counts as clipped


def clipped_fraction(img: np.ndarray) -> float:
    """Fraction of pixels with any channel at or above ``CLIP_LEVEL / 255`` (in 8-bit steps)."""
    img = np.asarray(img, np.float64)
    return float((np.round(img * 255) >= CLIP_LEVEL).any(axis=-1).mean())


def clip_increase(enhanced: np.ndarray, low: np.ndarray) -> float:
    """Clipped pixels the enhancement added: :func:`clipped_fraction` of the output minus that
    of its input (negative when it recovers highlights); lower is better."""
    check_pair(enhanced, low)
    return clipped_fraction(enhanced) - clipped_fraction(low)


def lightness_order_error(enhanced: np.ndarray, low: np.ndarray, side: int = 50) -> float:
    """Lightness order error (Wang et al. 2013, as used by LIME; lower is better).

    The lightness ``L = max(R, G, B)`` of both images is downscaled so that the short side is
    ``side`` pixels (the LIME authors' setting); for every pixel, count the other pixels whose
    lightness order (``>=``) differs between input and output; return the mean count.
    """
    check_pair(enhanced, low)

    def lightness(img: np.ndarray) -> np.ndarray:
        return fit_short_side(np.asarray(img, np.float32).max(axis=2), side).ravel()

    out, ref = lightness(enhanced), lightness(low)
    differing = 0
    for start in range(0, out.size, 2048):  # chunks keep the pairwise matrix small
        order_out = out[start:start + 2048, None] >= out[None, :]
        order_ref = ref[start:start + 2048, None] >= ref[None, :]
        differing += int(np.count_nonzero(order_out != order_ref))
    return differing / out.size


