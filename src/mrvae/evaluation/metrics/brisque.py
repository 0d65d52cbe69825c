"""BRISQUE (Mittal, Moorthy, Bovik 2012) with the LIVE-trained model of the ``brisque`` package.

The 36 features are computed here, as the authors' MATLAB ``brisque_feature.m`` does; the
support vector regression and the feature ranges it was trained with are read from the files
that the PyPI package ``brisque`` (0.2.0) installs, ``brisque/models/svm.txt`` (libsvm's text
format) and ``brisque/models/normalize.pickle``, and evaluated with numpy. The package's own
code is neither imported nor run (its features fail on NumPy 2), and nothing is downloaded.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

from mrvae.evaluation.metrics.common import gray
from mrvae.evaluation.metrics.nss import aggd_fit, ggd_fit, mscn, paired_products

BRISQUE_MIN_SIDE = 32  # the half-scale image still holds 16x16 coefficients


def _cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize``'s bicubic kernel (Keys, a = -0.5)."""
    x = np.abs(x)
    return np.where(x <= 1, 1.5 * x**3 - 2.5 * x**2 + 1,
                    np.where(x <= 2, -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2, 0.0))


# Halving, MATLAB stretches the kernel to 8 taps (antialiasing): taps 3.5 .. 0.5 .. 3.5 pixels
# from the output pixel's centre, which lies between input pixels 2i and 2i + 1.
_HALVE_WEIGHTS = _cubic(np.abs(np.arange(-3.5, 4.0)) / 2)
_HALVE_WEIGHTS /= _HALVE_WEIGHTS.sum()


def _halve_rows(img: np.ndarray) -> np.ndarray:
    """Half the rows of ``(H, W)`` -> ``(ceil(H / 2), W)``, as MATLAB's ``imresize(img, 0.5)``
    does along one axis (bicubic, antialiased, mirrored borders)."""
    padded = np.pad(img, ((4, 4), (0, 0)), mode="symmetric")
    rows = -(-len(img) // 2)
    return sum(w * padded[1 + k: 1 + k + 2 * rows: 2] for k, w in enumerate(_HALVE_WEIGHTS))


def halve_like_matlab(img: np.ndarray) -> np.ndarray:
    """MATLAB's ``imresize(img, 0.5)`` (bicubic, antialiased) of ``(H, W)`` float64 ->
    ``(ceil(H / 2), ceil(W / 2))``."""
    return _halve_rows(_halve_rows(img).T).T


def brisque_features(img: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features ``(36,)`` of an RGB ``(H, W, 3)`` or grey ``(H, W)`` float image
    in [0, 1].

    As MATLAB's ``brisquescore`` on an 8-bit image: the luminance (``rgb2gray`` weights) is
    rounded to 0..255; at full and half scale (:func:`halve_like_matlab`), the MSCN coefficients
    (zero-padded 7x7 Gaussian window, as ``filter2``) give the GGD shape and variance, and
    their products with the four neighbours (wrapping around) the AGGD shape, mean, and left
    and right variance: 2 x (2 + 4 x 4) features.

    Raises:
        ValueError: a side shorter than ``BRISQUE_MIN_SIDE``, or a flat image (no statistics).
    """
    lum = np.clip(np.round(gray(img) * 255.0), 0.0, 255.0)
    if min(lum.shape) < BRISQUE_MIN_SIDE:
        raise ValueError(f"BRISQUE needs images of at least {BRISQUE_MIN_SIDE}x"
                         f"{BRISQUE_MIN_SIDE} pixels, got {lum.shape[0]}x{lum.shape[1]}")
    if lum.min() == lum.max():
        raise ValueError("BRISQUE: a flat image has no statistics to score")
    features: list[np.ndarray] = []
    for _ in range(2):
        coefficients = mscn(lum, cv2.BORDER_CONSTANT)[0][None]
        features += ggd_fit(coefficients.reshape(1, -1))
        for products in paired_products(coefficients):
            fit = aggd_fit(products)
            features += [fit.alpha, fit.mean(), fit.left_std**2, fit.right_std**2]
        lum = halve_like_matlab(lum)
    return np.concatenate(features)


class _PlainUnpickler(pickle.Unpickler):
    """Reads only plain containers and numbers: the feature ranges need no classes."""

    def find_class(self, module: str, name: str) -> type:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


@dataclass(frozen=True)
class BRISQUEModel:
    """An epsilon-SVR with an RBF kernel over range-scaled features.

    Attributes:
        support_vectors: ``(S, F)`` scaled features of the support vectors.
        coefficients: ``(S,)`` their dual coefficients.
        gamma: the kernel's ``exp(-gamma |x - sv|^2)``.
        rho: the offset subtracted from the kernel sum.
        feature_min, feature_max: ``(F,)`` the ranges mapped to [-1, 1] before the regression.
    """

    support_vectors: np.ndarray
    coefficients: np.ndarray
    gamma: float
    rho: float
    feature_min: np.ndarray
    feature_max: np.ndarray

    @classmethod
    def load(cls, svm_path: str | Path, ranges_path: str | Path) -> BRISQUEModel:
        """Read a libsvm text model (epsilon-SVR, RBF) and a pickled ``{"min_", "max_"}``."""
        lines = Path(svm_path).read_text().splitlines()
        start = lines.index("SV")
        header = dict(line.split(maxsplit=1) for line in lines[:start])
        if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
            raise ValueError(f"{svm_path}: not an epsilon-SVR with an RBF kernel")
        with open(ranges_path, "rb") as handle:
            ranges = _PlainUnpickler(handle).load()
        feature_min = np.asarray(ranges["min_"], np.float64)
        support_vectors = np.zeros((len(lines) - start - 1, len(feature_min)))
        coefficients = np.empty(len(support_vectors))
        for row, line in enumerate(lines[start + 1:]):
            coefficient, *entries = line.split()
            coefficients[row] = float(coefficient)
            for entry in entries:  # libsvm leaves out zeros: "index:value", 1-based
                index, value = entry.split(":")
                support_vectors[row, int(index) - 1] = float(value)
        return cls(support_vectors, coefficients, float(header["gamma"]), float(header["rho"]),
                   feature_min, np.asarray(ranges["max_"], np.float64))

    def predict(self, features: np.ndarray) -> float:
        """The regression's value for raw features ``(F,)`` (libsvm's ``svm_predict``)."""
        scaled = -1.0 + 2.0 * (features - self.feature_min) / (self.feature_max -
                                                                 self.feature_min)
        distances = ((self.support_vectors - scaled) ** 2).sum(axis=1)
        return float(self.coefficients @ np.exp(-self.gamma * distances) - self.rho)


@functools.cache
def live_model() -> BRISQUEModel:
    """The LIVE-trained model shipped by the ``brisque`` package (located, not imported)."""
    try:
        package = metadata.distribution("brisque")
    except metadata.PackageNotFoundError:
        raise ModuleNotFoundError("BRISQUE's model comes with the `brisque` package: "
                                  "pip install brisque") from None
    models = Path(package.locate_file("brisque/models"))
    return BRISQUEModel.load(models / "svm.txt", models / "normalize.pickle")


def brisque(img: np.ndarray) -> float:
    """Blind/Referenceless Image Spatial Quality Evaluator; lower is better, about 0-100
    (slightly negative on some very clean photos).

    :func:`brisque_features` fed to the LIVE-trained regression of the ``brisque`` package
    (:func:`live_model`). The features follow the authors' MATLAB code, the one that trained
    this model. Checked against an independent MATLAB-faithful port (github.com/VMAFx/vmafx,
    ``docs/research/1101-brisque-nr-metric.md``) on scikit-image's images: ``camera()``
    -13.70840 there and here, ``coins()`` about -5.1 (-5.08 here), ``moon()`` about 1.4
    (1.35); its ``astronaut()`` of about 2.9 is what scikit-image's grey weights give without
    rounding (2.94), 2.74 here with MATLAB's weights and rounding. The numpy regression equals
    libsvm's ``svm_predict`` on the same model to 1e-10. The ``brisque`` package's own features
    differ (an AGGD instead of the GGD for the MSCN coefficients, unwrapped neighbours,
    OpenCV's non-antialiased bicubic halving, scikit-image's grey weights): on the same images
    it scores 0.1 to 17 points apart (astronaut 10.8, coffee 3.05, camera -7.9, moon 18.8).

    Raises:
        ValueError: see :func:`brisque_features`.
    """
    return live_model().predict(brisque_features(img))
