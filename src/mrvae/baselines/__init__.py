"""Enhancement methods to compare with, by name: ``get_method("clahe")(image)``.

A method maps a float32 ``(H, W, 3)`` RGB image in [0, 1] to an image of the same shape, like
:meth:`mrvae.enhance.Enhancer.enhance_array`. ``mrvae:NAME_OR_PATH`` names the MR-VAE model
(shipped preset or weights file) as ``mrvae enhance`` runs it, and ``mrvae-raw:NAME_OR_PATH`` the
network alone, without :mod:`mrvae.refine`; deep methods whose weights are absent raise
:class:`MethodUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Method = Callable[[np.ndarray], np.ndarray]


class MethodUnavailable(RuntimeError):
    """A method that cannot run here (weights or module missing); the message says why."""


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: ``factory(**options)`` returns the callable."""

    name: str
    description: str
    factory: Callable[..., Method]


def _classical(function_name: str) -> Callable[..., Method]:
    def factory(**options: Any) -> Method:
        from . import classical

        function = getattr(classical, function_name)
        return (lambda img: function(img, **options)) if options else function

    return factory


def _input(**_: Any) -> Method:
    return lambda img: np.asarray(img, np.float32)


def _zerodce(**options: Any) -> Method:
    from .zerodce import ZeroDCE

    return ZeroDCE(**options)


METHODS: dict[str, MethodInfo] = {info.name: info for info in (
    MethodInfo("input", "the low-light input unchanged (reference row)", _input),
    MethodInfo("he", "global histogram equalisation of the HSV value", _classical(
        "histogram_equalization")),
    MethodInfo("clahe", "contrast-limited adaptive histogram equalisation (8x8 tiles, clip 2)",
               _classical("clahe")),
    MethodInfo("gamma", "adaptive gamma correction with weighting distribution (AGCWD)",
               _classical("adaptive_gamma")),
    MethodInfo("ssr", "single-scale Retinex (sigma 80)", _classical("single_scale_retinex")),
    MethodInfo("msrcr", "multi-scale Retinex with colour restoration (sigmas 15, 80, 250)",
               _classical("msrcr")),
    MethodInfo("lime", "LIME illumination-map estimation with structure-aware refinement",
               _classical("lime")),
    MethodInfo("zerodce", "Zero-DCE (CVPR 2020), published weights from ../shared/peers",
               _zerodce),
)}

BASELINES = tuple(name for name in METHODS if name != "input")


MRVAE_PREFIXES = {"mrvae:": True, "mrvae-raw:": False}  # prefix -> refined?


def parse_mrvae(name: str) -> tuple[str, bool] | None:
    """``(spec, refined)`` for ``mrvae:SPEC`` or ``mrvae-raw:SPEC``; None for any other name."""
    for prefix, refine in MRVAE_PREFIXES.items():
        if name.startswith(prefix):
            return name.removeprefix(prefix), refine
    return None


def mrvae_method(spec: str, refine: bool = True) -> Method:
    """The MR-VAE model as a method: ``spec`` is a preset name ("lite") or a weights path;
    ``refine=False`` gives the network's output without the refinement.

    Raises:
        MethodUnavailable: no enhancer module yet, or the weights are missing / invalid.
    """
    from ..model import WeightsError

    name = f"mrvae{'' if refine else '-raw'}:{spec}"
    try:
        from ..enhance import Enhancer
        from ..refine import Refinement
    except ImportError as exc:
        raise MethodUnavailable(f"{name}: mrvae.enhance is not available ({exc})") from exc
    try:
        return Enhancer(spec, device="cpu", refine=Refinement() if refine else None).enhance_array
    except (WeightsError, FileNotFoundError) as exc:
        raise MethodUnavailable(f"{name}: {exc}") from exc


def get_method(name: str, **options: Any) -> Method:
    """The method called ``name`` (a key of :data:`METHODS`, ``mrvae:NAME_OR_PATH`` or
    ``mrvae-raw:NAME_OR_PATH``).

    Raises:
        ValueError: unknown name.
        MethodUnavailable: a known method that cannot run here.
    """
    if (mrvae := parse_mrvae(name)) is not None:
        return mrvae_method(*mrvae)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}, "
                         "mrvae:NAME_OR_PATH or mrvae-raw:NAME_OR_PATH")
    return METHODS[name].factory(**options)
