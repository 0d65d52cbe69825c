"""The halo check: a synthetic night scene with lamps, and how far an enhancement makes the
brightness around each lamp rise with the distance instead of falling."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from mrvae.evaluation.metrics.common import check_pair, gray


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
    check_pair(output, low)
    excess = [_rise(radial_profile(output, c, radius)[inner:])
              - _rise(radial_profile(low, c, radius)[inner:]) for c in centres]
    return float(np.mean(np.clip(excess, 0.0, None)))


def night_scene_halos(enhance: Callable[[np.ndarray], np.ndarray], scenes: int = 3
                      ) -> list[float]:
    """The halo check as the tests and the studies run it: ``enhance`` on the night scenes of
    seeds ``0 .. scenes - 1`` (the defaults of :func:`night_scene`), each scored by
    :func:`halo_rise` out to 16 pixels beyond the lamps' 4."""
    rises = []
    for seed in range(scenes):
        low, centres = night_scene(seed=seed)
        rises.append(halo_rise(enhance(low), low, centres, 16, inner=4))
    return rises
