"""The metric registry (as in pyiqa): name -> :class:`Metric`, with the direction of "better",
and the default lists of metrics for paired sets and for real photos."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mrvae.evaluation.metrics.brisque import brisque
from mrvae.evaluation.metrics.full_reference import (
    ciede2000,
    colour_shift,
    psnr,
    psnr_gtmean,
    psnr_y,
    ssim,
    ssim_y,
)
from mrvae.evaluation.metrics.niqe import niqe
from mrvae.evaluation.metrics.no_reference import (
    CLIP_LEVEL,
    brightness,
    clip_increase,
    contrast,
    entropy,
    lightness_order_error,
)

Kind = Literal["full_reference", "no_reference"]


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
    Metric("brisque", brisque, False, "no_reference",
           "BRISQUE with the LIVE-trained model of the brisque package"),
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
NO_REFERENCE = ("niqe", "brisque", "loe", "entropy", "brightness", "contrast")
PAIRED = (*FULL_REFERENCE, "clip_increase")  # the default for paired test sets


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}") from None
