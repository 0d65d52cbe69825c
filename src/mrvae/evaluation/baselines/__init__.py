"""Enhancement methods to compare with, by name: ``get_method("clahe")(image)``.

A method maps a float32 ``(H, W, 3)`` RGB image in [0, 1] to an image of the same shape, like
:meth:`mrvae.engine.enhancer.Enhancer.enhance_array`. ``mrvae:NAME_OR_PATH`` names the MR-VAE
model (shipped preset or weights file) as ``mrvae enhance`` runs it, and
``mrvae-raw:NAME_OR_PATH`` the network alone, without :mod:`mrvae.engine.refine` (and with DR's
full denoising, :mod:`mrvae.engine.denoise`); either takes
an exposure in EV stops after ``@ev=`` (``mrvae:lite@ev=+1``, as
``mrvae enhance --exposure 1``) and a backend after ``@backend=``
(``mrvae:bilateral@backend=torch-float32``, as ``mrvae enhance --backend``). Deep methods whose
weights are absent raise :class:`MethodUnavailable`.
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
        from mrvae.evaluation.baselines import classical

        function = getattr(classical, function_name)
        return (lambda img: function(img, **options)) if options else function

    return factory


def _input(**_: Any) -> Method:
    return lambda img: np.asarray(img, np.float32)


def _zerodce(**options: Any) -> Method:
    from mrvae.evaluation.baselines.zerodce import ZeroDCE

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
EXPOSURE_TAG = "@ev="
BACKEND_TAG = "@backend="
DEFAULT_BACKEND = "torch"


@dataclass(frozen=True)
class MrvaeSpec:
    """A parsed ``mrvae:`` / ``mrvae-raw:`` method name.

    Attributes:
        weights: a preset name ("lite") or a weights path.
        refine: with the refinement (``mrvae:``) or the network alone (``mrvae-raw:``).
        exposure: EV stops relative to the automatic exposure (``@ev=``).
        backend: the engine's backend (``@backend=``, a name in
            :data:`mrvae.engine.backends.BACKENDS`).
    """

    weights: str
    refine: bool = True
    exposure: float = 0.0
    backend: str = DEFAULT_BACKEND

    def label(self, weights: str | None = None) -> str:
        """The method name, with ``weights`` in place of the weights (a shorter label)."""
        prefix = next(p for p, refine in MRVAE_PREFIXES.items() if refine == self.refine)
        exposure = f"{EXPOSURE_TAG}{self.exposure:+g}" if self.exposure else ""
        backend = f"{BACKEND_TAG}{self.backend}" if self.backend != DEFAULT_BACKEND else ""
        return f"{prefix}{weights or self.weights}{exposure}{backend}"


def _split_tags(spec: str) -> tuple[str, dict[str, str]]:
    """``spec`` without its trailing ``@ev=`` and ``@backend=`` tags (either order), and their
    values by tag; a weights path may hold an ``@`` of its own."""
    tags: dict[str, str] = {}
    while True:
        head, at, tail = spec.rpartition("@")
        key, equals, value = tail.partition("=")
        tag = f"@{key}="
        if not at or not equals or tag not in (EXPOSURE_TAG, BACKEND_TAG) or tag in tags:
            return spec, tags
        tags[tag], spec = value, head


def parse_mrvae(name: str) -> MrvaeSpec | None:
    """The :class:`MrvaeSpec` of ``mrvae:SPEC[@ev=EV][@backend=NAME]`` or the same with
    ``mrvae-raw:``; None for any other name.

    Raises:
        ValueError: an exposure that is not a number of stops within ``±3``, or an unknown
            backend.
    """
    from mrvae.engine.backends import BACKENDS
    from mrvae.engine.exposure import check_exposure

    for prefix, refine in MRVAE_PREFIXES.items():
        if not name.startswith(prefix):
            continue
        weights, tags = _split_tags(name.removeprefix(prefix))
        exposure = 0.0
        if EXPOSURE_TAG in tags:
            try:
                exposure = check_exposure(float(tags[EXPOSURE_TAG]))
            except ValueError as exc:
                raise ValueError(f"{name}: bad exposure ({exc}); write e.g. "
                                 f"{prefix}lite{EXPOSURE_TAG}+1") from None
        backend = tags.get(BACKEND_TAG, DEFAULT_BACKEND)
        if backend not in BACKENDS:
            raise ValueError(f"{name}: unknown backend {backend!r}; choose from "
                             f"{', '.join(BACKENDS)}")
        return MrvaeSpec(weights, refine, exposure, backend)
    return None


def mrvae_method(spec: MrvaeSpec) -> Method:
    """The MR-VAE model as a method: weights, refinement and exposure from ``spec``.

    Raises:
        MethodUnavailable: no enhancer module yet, or the weights are missing / invalid.
    """
    from mrvae.nn.model import WeightsError

    name = spec.label()
    try:
        from mrvae.engine.denoise import Denoise
        from mrvae.engine.enhancer import Enhancer
    except ImportError as exc:
        raise MethodUnavailable(f"{name}: mrvae.enhance is not available ({exc})") from exc
    try:
        # the network alone: DR's full denoising too
        return Enhancer(spec.weights, device="cpu", refine={} if spec.refine else None,
                        denoise=Denoise() if spec.refine else Denoise(1.0),
                        exposure=spec.exposure, backend=spec.backend).enhance_array
    except (WeightsError, FileNotFoundError) as exc:
        raise MethodUnavailable(f"{name}: {exc}") from exc


def get_method(name: str, **options: Any) -> Method:
    """The method called ``name`` (a key of :data:`METHODS`, ``mrvae:NAME_OR_PATH`` or
    ``mrvae-raw:NAME_OR_PATH``, each with an optional ``@ev=EV`` and ``@backend=NAME``).

    Raises:
        ValueError: unknown name, a bad exposure or an unknown backend.
        MethodUnavailable: a known method that cannot run here.
    """
    if (mrvae := parse_mrvae(name)) is not None:
        return mrvae_method(mrvae)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}, "
                         "mrvae:NAME_OR_PATH or mrvae-raw:NAME_OR_PATH (optionally @ev=EV, "
                         "@backend=NAME)")
    return METHODS[name].factory(**options)
