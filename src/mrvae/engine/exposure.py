"""Exposure control: EV stops relative to the exposure the network chose ("auto").

The enhancer applies :func:`apply_exposure` to GR's output (the global pass image) before DR:
DR follows GR's brightness closely, so the whole result moves by about the same stops. In
linear light the image is multiplied by ``2 ** ev``; brightening rolls the highlights off on a
smooth shoulder instead of clipping them, darkening is a plain multiplication.
"""

from __future__ import annotations

import math

import torch
from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb

MAX_EV = 3.0  # the range offered by the CLI, the web app and the eval method names
# Linear value where the highlight shoulder starts (sRGB 0.48); below it 2**ev is exact. The
# shoulder squeezes [KNEE, 2**ev] into [KNEE, 1], so a high knee crowds the highlights at white:
# at +1 EV a knee of 0.8 sends every value above sRGB 205/255 to 250 or more, 0.2 only those
# above 242/255.
KNEE = 0.2


def check_exposure(ev: float) -> float:
    """``ev`` as a float if it is a number of stops within ``±MAX_EV``.

    Raises:
        ValueError: not finite or outside the range (one line naming the value).
    """
    ev = float(ev)
    if not math.isfinite(ev) or abs(ev) > MAX_EV:
        raise ValueError(f"exposure {ev:g} EV is outside -{MAX_EV:g}..+{MAX_EV:g} stops")
    return ev


def shoulder(linear: torch.Tensor, peak: float, knee: float = KNEE) -> torch.Tensor:
    """Map linear values in ``[0, peak]`` (``peak > 1``) onto ``[0, 1]``, ``peak`` to 1.

    Identity below ``knee``; above it the rational curve ``knee + t / (1 + t / c)`` of
    ``t = x - knee`` (Reinhard's, shifted), with ``c`` chosen so that ``peak`` lands on 1: it
    continues the identity with slope 1 (no visible kink), rises strictly and flattens towards
    ``peak``. As ``peak`` falls to 1 it becomes the identity, and for a pixel ``x * 2**ev`` it
    rises strictly with ``ev``: ``1/t + 1/c`` falls with ``peak`` because ``x < 1``.
    """
    scale = (peak - knee) * (1.0 - knee) / (peak - 1.0)
    excess = (linear - knee).clamp(min=0.0)
    return torch.where(linear > knee, knee + excess / (1.0 + excess / scale), linear)


def apply_exposure(image: torch.Tensor, ev: float) -> torch.Tensor:
    """Change the exposure of sRGB ``image`` ``(B, 3, H, W)`` in [0, 1] by ``ev`` stops.

    The result has the same shape and lies in [0, 1]. ``ev = 0`` returns ``image`` itself; for
    every value in (0, 1) the result rises strictly with ``ev``; 0 stays 0 and, when
    brightening, 1 stays 1 (already clipped pixels stay clipped, nothing else reaches 1).
    """
    gain = 2.0**ev
    if gain == 1.0:  # ev = 0, or too small to change a float
        return image
    linear = rgb_to_linear_rgb(image.clamp(0.0, 1.0)) * gain
    if gain > 1.0:
        linear = shoulder(linear, gain)
    return linear_rgb_to_rgb(linear.clamp(0.0, 1.0))
