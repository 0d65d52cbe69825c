"""Image quality metrics: a registry of name -> function with the direction of "better".

Images are float ``(H, W, 3)`` numpy arrays in [0, 1] (RGB). Full-reference metrics compare an
enhanced image with its ground truth; no-reference metrics judge the enhanced image alone (LOE
also needs the low-light input it came from). Nothing here downloads anything: the NIQE model
is fitted by ``scripts/fit_niqe.py`` and shipped in ``data/niqe_pristine.npz``; BRISQUE's
model comes with the ``brisque`` package.

Modules: ``common`` (luminance, pair check), ``full_reference``, ``no_reference``, ``nss``
(MSCN and GGD/AGGD fits shared by ``niqe`` and ``brisque``), ``halo`` (the night-scene halo
check), ``registry`` (``METRICS`` and the default lists). Every name is re-exported here.
"""

from mrvae.evaluation.metrics.brisque import (
    BRISQUE_MIN_SIDE,
    BRISQUEModel,
    brisque,
    brisque_features,
    live_model,
)
from mrvae.evaluation.metrics.common import check_pair, gray, luma_bt601
from mrvae.evaluation.metrics.full_reference import (
    ciede2000,
    colour_shift,
    psnr,
    psnr_gtmean,
    psnr_y,
    ssim,
    ssim_y,
)
from mrvae.evaluation.metrics.halo import (
    halo_rise,
    night_scene,
    night_scene_halos,
    radial_profile,
)
from mrvae.evaluation.metrics.niqe import NIQE_MODEL_PATH, NIQEModel, fit_niqe, niqe, niqe_features
from mrvae.evaluation.metrics.no_reference import (
    CLIP_LEVEL,
    brightness,
    clip_increase,
    clipped_fraction,
    contrast,
    entropy,
    lightness_order_error,
)
from mrvae.evaluation.metrics.nss import mscn
from mrvae.evaluation.metrics.registry import (
    FULL_REFERENCE,
    METRICS,
    NO_REFERENCE,
    PAIRED,
    Kind,
    Metric,
    get_metric,
)

__all__ = [
    "BRISQUE_MIN_SIDE",
    "CLIP_LEVEL",
    "FULL_REFERENCE",
    "METRICS",
    "NIQE_MODEL_PATH",
    "NO_REFERENCE",
    "PAIRED",
    "BRISQUEModel",
    "Kind",
    "Metric",
    "NIQEModel",
    "brightness",
    "brisque",
    "brisque_features",
    "check_pair",
    "ciede2000",
    "clip_increase",
    "clipped_fraction",
    "colour_shift",
    "contrast",
    "entropy",
    "fit_niqe",
    "get_metric",
    "gray",
    "halo_rise",
    "lightness_order_error",
    "live_model",
    "luma_bt601",
    "mscn",
    "night_scene",
    "night_scene_halos",
    "niqe",
    "niqe_features",
    "psnr",
    "psnr_gtmean",
    "psnr_y",
    "radial_profile",
    "ssim",
    "ssim_y",
]
