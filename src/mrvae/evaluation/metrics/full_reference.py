"""Image quality metrics: a registry of name -> function with the direction of "better".

Images are float ``(H, W, 3)`` numpy arrays in [0, 1] (RGB). Full-reference metrics compare an
enhanced image with its ground truth; no-reference metrics judge the enhanced image alone (LOE
also needs the low-light input it came from). Nothing here downloads anything: the NIQE model
is fitted by ``scripts/fit_niqe.py`` and shipped in ``metrics_data/niqe_pristine.npz``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from scipy.special import gamma as gamma_fn
from skimage.color import deltaE_ciede2000, rgb2lab

from mrvae.io.images import atomic_file, fit_short_side

NIQE_MODEL_PATH = Path(__file__).parent / "metrics_data" / "niqe_pristine.npz"

Kind = Literal["full_reference", "no_reference"]


# ----------------------------------------------------------------------------- colour helpers

def luma_bt601(img: np.ndarray) -> np.ndarray:
    """Studio-range Y of YCbCr (ITU-R BT.601, as MATLAB's ``rgb2ycbcr``), in [16/255, 235/255]."""
    img = np.asarray(img, np.float64)
    return (16.0 + img @ np.array([65.481, 128.553, 24.966])) / 255.0


def gray(img: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] with MATLAB ``rgb2gray`` weights; a 2-D image is returned as is."""
    img = np.asarray(img, np.float64)
    return img if img.ndim == 2 else img @ np.array([0.2989, 0.5870, 0.1140])


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {target.shape}")


# ----------------------------------------------------------------------- full-reference metrics

def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for data range 1 (``inf`` for identical images)."""
    _check_pair(pred, target)
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def psnr_y(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR on the BT.601 Y channel."""
    _check_pair(pred, target)
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
    _check_pair(pred, target)
    if min(pred.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {pred.shape[:2]}")
    a, b = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if a.ndim == 2:
        return float(_ssim_map(a, b).mean())
    return float(np.mean([_ssim_map(a[..., c], b[..., c]).mean() for c in range(a.shape[2])]))


def ssim_y(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM on the BT.601 Y channel (the convention of most enhancement papers' tables)."""
    _check_pair(pred, target)
    return ssim(luma_bt601(pred), luma_bt601(target))


def psnr_gtmean(pred: np.ndarray, target: np.ndarray) -> float:
    """GT-mean PSNR: PSNR after scaling ``pred`` so its mean grey equals the ground truth's.

    All channels are multiplied by ``mean(gray(target)) / mean(gray(pred))`` and clipped to
    [0, 1], as recent low-light papers (e.g. LLFlow, KinD's "GT-mean" tables) report it: the
    score of the colours and detail with the overall exposure factored out. A black ``pred``
    cannot be scaled and is scored as it is.
    """
    _check_pair(pred, target)
    pred = np.asarray(pred, np.float64)
    pred_mean = gray(pred).mean()
    if pred_mean > 0:
        pred = np.clip(pred * (gray(target).mean() / pred_mean), 0.0, 1.0)
    return psnr(pred, target)


def colour_shift(pred: np.ndarray, target: np.ndarray) -> float:
    """Colour cast against the ground truth: the distance between the mean ``(a*, b*)`` of the
    two images in CIELAB (sRGB, D65); 0 when their average colours agree, whatever the detail.
    """
    _check_pair(pred, target)
    mean_ab = [rgb2lab(np.clip(np.asarray(img, np.float32), 0, 1))[..., 1:].reshape(-1, 2)
               .mean(axis=0) for img in (pred, target)]
    return float(np.hypot(*(mean_ab[0] - mean_ab[1])))


def ciede2000(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference (sRGB, D65); 0 for identical images."""
    _check_pair(pred, target)
    lab_pred = rgb2lab(np.clip(np.asarray(pred, np.float32), 0, 1))
    lab_target = rgb2lab(np.clip(np.asarray(target, np.float32), 0, 1))
    return float(np.mean(deltaE_ciede2000(lab_pred, lab_target)))


# ------------------------------------------------------------------------ no-reference metrics

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
    _check_pair(enhanced, low)
    return clipped_fraction(enhanced) - clipped_fraction(low)


def lightness_order_error(enhanced: np.ndarray, low: np.ndarray, side: int = 50) -> float:
    """Lightness order error (Wang et al. 2013, as used by LIME; lower is better).

    The lightness ``L = max(R, G, B)`` of both images is downscaled so that the short side is
    ``side`` pixels (the LIME authors' setting); for every pixel, count the other pixels whose
    lightness order (``>=``) differs between input and output; return the mean count.
    """
    _check_pair(enhanced, low)

    def lightness(img: np.ndarray) -> np.ndarray:
        return fit_short_side(np.asarray(img, np.float32).max(axis=2), side).ravel()

    out, ref = lightness(enhanced), lightness(low)
    differing = 0
    for start in range(0, out.size, 2048):  # chunks keep the pairwise matrix small
        order_out = out[start:start + 2048, None] >= out[None, :]
        order_ref = ref[start:start + 2048, None] >= ref[None, :]
        differing += int(np.count_nonzero(order_out != order_ref))
    return differing / out.size


# -------------------------------------------------------------------------------- halo check

def night_scene(size: int = 160, lamps: int = 3, seed: int = 0, lamp_radius: float = 3.0
                ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A synthetic dark night scene with small bright lamps, for the halo check.

    A dim textured background (smooth random shapes and fine grain, 0.05..0.25 before
    darkening) with ``lamps`` white discs of ``lamp_radius`` pixels whose glow falls off softly
    (``1 / (1 + (d / r)^2)``) and never rises with the distance, then darkened by gamma 2.2 (the
    lamps stay at 1, clipped as in a real night photo). Lamps keep 3 glow radii + 12 pixels from
    the borders and from each other.

    Returns:
        float32 ``(size, size, 3)`` RGB in [0, 1], and the lamp centres ``(y, x)``.
    """
    rng = np.random.default_rng(seed)
    shapes = cv2.resize(rng.random((8, 8)), (size, size), interpolation=cv2.INTER_CUBIC)
    grain = cv2.GaussianBlur(rng.random((size, size)), (0, 0), 1.0)
    background = 0.05 + 0.12 * np.clip(shapes, 0, 1) + 0.08 * grain
    margin = 6 * lamp_radius + 12
    centres: list[tuple[float, float]] = []
    while len(centres) < lamps:
        y, x = rng.uniform(margin, size - margin, 2)
        if all(np.hypot(y - cy, x - cx) > 2 * margin for cy, cx in centres):
            centres.append((float(y), float(x)))
        if len(centres) < lamps and rng.random() < 0.01:  # no room left: start over
            centres.clear()
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    light = np.zeros((size, size))
    for cy, cx in centres:
        distance = np.maximum(np.hypot(yy - cy, xx - cx) - lamp_radius, 0.0)
        light = np.maximum(light, 1.0 / (1.0 + (distance / lamp_radius) ** 2))
    scene = np.clip(np.maximum(background, light), 0.0, 1.0) ** 2.2
    return np.repeat(scene[..., None], 3, axis=2).astype(np.float32), centres


def radial_profile(img: np.ndarray, centre: tuple[float, float], radius: int) -> np.ndarray:
    """Mean luminance of ``img`` in the rings ``[k, k + 1)`` pixels from ``centre``,
    ``k = 0..radius`` (ring 0 always holds the pixel nearest the centre)."""
    lum = gray(img)
    yy, xx = np.indices(lum.shape)
    rings = np.floor(np.hypot(yy - centre[0], xx - centre[1])).astype(np.int64)
    inside = rings <= radius
    sums = np.bincount(rings[inside], lum[inside], minlength=radius + 1)
    counts = np.bincount(rings[inside], minlength=radius + 1)
    return sums / np.maximum(counts, 1)


def _rise(profile: np.ndarray) -> float:
    """Brightness gained going outwards, in units of the background's (the mean of the three
    outermost rings); 0 when the profile never rises."""
    background = max(float(profile[-3:].mean()), 1e-3)
    return float(np.clip(np.diff(profile), 0.0, None).sum()) / background


def halo_rise(output: np.ndarray, low: np.ndarray, centres: Sequence[tuple[float, float]],
              radius: int, inner: int = 0) -> float:
    """Halo around light sources: how far the output's brightness profile around each source
    stops falling with the distance, beyond the input's own (lower is better, 0: none).

    For each centre the mean luminance of the rings ``inner``..``radius`` pixels out (``inner``:
    the source's own radius, to look only around it) is taken in the input and in the output;
    an order-preserving mapping keeps a falling profile falling. The
    summed outward rises of the output's profile, in units of its background brightness (the
    outermost rings), minus the same for the input, are averaged over the sources: 0.5 is, for
    instance, a ring half as bright again as the background beyond it. A dark ring around a
    lamp (a local gain that dips next to it) and a bright ring away from it both rise; a glow
    that only widens, still falling, is not counted.
    """
    _check_pair(output, low)
    excess = [_rise(radial_profile(output, c, radius)[inner:])
              - _rise(radial_profile(low, c, radius)[inner:]) for c in centres]
    return float(np.mean(np.clip(excess, 0.0, None)))


# -------------------------------------------------------------------------------------- NIQE

_GAM = np.arange(0.2, 10.001, 0.001)
# r(alpha) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) is increasing in alpha: look it up by bisection.
_R_GAM = gamma_fn(2 / _GAM) ** 2 / (gamma_fn(1 / _GAM) * gamma_fn(3 / _GAM))


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


def mscn(luminance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients of a 0..255 image and its local std.

    7x7 Gaussian window of sigma 7/6 with replicated borders, as in the NIQE reference code.
    """
    lum = luminance.astype(np.float64)
    mu = cv2.GaussianBlur(lum, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
    var = cv2.GaussianBlur(lum * lum, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE) - mu * mu
    sigma = np.sqrt(np.abs(var))
    return (lum - mu) / (sigma + 1.0), sigma


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalised Gaussian fit of each row of ``x`` (moment matching).

    Returns:
        (alpha, left scale, right scale), each of shape ``(N,)``.
    """
    left = x < 0
    right = x > 0
    left_std = np.sqrt((x * x * left).sum(1) / np.maximum(left.sum(1), 1))
    right_std = np.sqrt((x * x * right).sum(1) / np.maximum(right.sum(1), 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_hat = left_std / right_std
        r_hat = np.abs(x).mean(1) ** 2 / (x * x).mean(1)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    r_norm = np.nan_to_num(r_norm, nan=_R_GAM[0], posinf=_R_GAM[-1])
    index = np.clip(np.searchsorted(_R_GAM, r_norm), 1, len(_GAM) - 1)
    nearer_left = np.abs(_R_GAM[index - 1] - r_norm) <= np.abs(_R_GAM[index] - r_norm)
    alpha = _GAM[index - nearer_left]
    factor = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left_std * factor, right_std * factor


def _patch_features(coefficients: np.ndarray) -> np.ndarray:
    """18 NIQE features of each patch ``(N, p, p)`` of MSCN coefficients -> ``(N, 18)``.

    The AGGD shape and mean scale of the coefficients, then shape, mean, left and right scale of
    the products of neighbours in four orientations (horizontal, vertical, two diagonals).
    """
    flat = coefficients.reshape(len(coefficients), -1)
    alpha, left, right = _aggd_fit(flat)
    features = [alpha, (left + right) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        shifted = np.roll(coefficients, shift, axis=(1, 2)).reshape(len(coefficients), -1)
        alpha, left, right = _aggd_fit(flat * shifted)
        mean = (right - left) * gamma_fn(2 / alpha) / gamma_fn(1 / alpha)
        features += [alpha, mean, left, right]
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


# ---------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes:
        fn: ``fn(output, other)`` for full-reference metrics and those that need the input
            (``other`` is the ground truth, resp. the low-light input), ``fn(output)``
            otherwise.
        higher_is_better: direction of "better"; None for descriptive numbers (brightness).
        kind: full_reference (needs ground truth) or no_reference.
        needs_input: the metric compares the output with the low-light input (LOE,
            clip_increase).
    """

    name: str
    fn: Callable[..., float]
    higher_is_better: bool | None
    kind: Kind
    description: str
    needs_input: bool = False

    def __call__(self, output: np.ndarray, target: np.ndarray | None = None,
                 low: np.ndarray | None = None) -> float:
        if self.kind == "full_reference":
            if target is None:
                raise ValueError(f"{self.name} needs a ground-truth image")
            return self.fn(output, target)
        if self.needs_input:
            if low is None:
                raise ValueError(f"{self.name} needs the low-light input")
            return self.fn(output, low)
        return self.fn(output)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("psnr", psnr, True, "full_reference", "PSNR (dB) on RGB"),
    Metric("psnr_y", psnr_y, True, "full_reference", "PSNR (dB) on the BT.601 Y channel"),
    Metric("ssim", ssim, True, "full_reference", "SSIM (Gaussian window) averaged over RGB"),
    Metric("ssim_y", ssim_y, True, "full_reference", "SSIM on the BT.601 Y channel"),
    Metric("psnr_gtmean", psnr_gtmean, True, "full_reference",
           "PSNR (dB) after scaling the output to the ground truth's mean grey (GT-mean)"),
    Metric("ciede2000", ciede2000, False, "full_reference", "mean CIEDE2000 colour difference"),
    Metric("colour_shift", colour_shift, False, "full_reference",
           "colour cast: distance of the mean a*b* (CIELAB) from the ground truth's"),
    Metric("niqe", niqe, False, "no_reference", "NIQE with our pristine model"),
    Metric("loe", lightness_order_error, False, "no_reference",
           "lightness order error against the input", needs_input=True),
    Metric("clip_increase", clip_increase, False, "no_reference",
           f"fraction of pixels clipped (a channel >= {CLIP_LEVEL}/255) in the output minus "
           "in the input", needs_input=True),
    Metric("entropy", entropy, True, "no_reference", "luminance histogram entropy (bits)"),
    Metric("brightness", brightness, None, "no_reference", "mean luminance"),
    Metric("contrast", contrast, True, "no_reference", "RMS contrast (luminance std)"),
)}

FULL_REFERENCE = ("psnr", "psnr_gtmean", "ssim", "ssim_y", "ciede2000", "colour_shift")
NO_REFERENCE = ("niqe", "loe", "entropy", "brightness", "contrast")
PAIRED = (*FULL_REFERENCE, "clip_increase")  # the default for paired test sets


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}") from None
