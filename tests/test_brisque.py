"""BRISQUE: sane on scikit-image's photos, the reference values, the model, edge cases."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from mrvae.evaluation.metrics import (
    METRICS,
    NO_REFERENCE,
    BRISQUEModel,
    brisque,
    brisque_features,
    get_metric,
    live_model,
)
from mrvae.evaluation.metrics.brisque import halve_like_matlab

PHOTOS = ("astronaut", "coffee", "chelsea")


def load(name: str) -> np.ndarray:
    return getattr(data, name)().astype(np.float64) / 255.0


def noisy(img: np.ndarray, sigma: float = 0.1, seed: int = 0) -> np.ndarray:
    return np.clip(img + np.random.default_rng(seed).normal(0.0, sigma, img.shape), 0, 1)


@pytest.fixture(scope="module")
def photo_features() -> np.ndarray:
    return brisque_features(load("astronaut"))


@pytest.mark.parametrize("name", PHOTOS)
def test_clean_photos_score_low_and_distortions_higher(name: str) -> None:
    img = load(name)
    clean = brisque(img)
    assert -5 < clean < 20  # 2.7, 2.9 and -0.5; sigma 0.05: 40, 33, 33; 0.1: 68, 66, 77
    assert brisque(noisy(img, 0.05)) > clean + 20
    assert brisque(noisy(img, 0.1)) > clean + 40
    assert brisque(cv2.GaussianBlur(img, (0, 0), 1.5)) > clean + 40  # 52, 67, 54
    assert brisque(cv2.GaussianBlur(img, (0, 0), 3.0)) > clean + 60  # 72, 74, 75


def test_reference_value_of_the_cameraman() -> None:
    # an independent MATLAB-faithful port with this model: -13.70840 (see brisque's docstring)
    assert brisque(load("camera")) == pytest.approx(-13.70840, abs=1e-4)


def test_regression_equals_libsvm(photo_features: np.ndarray) -> None:
    svmutil = pytest.importorskip("libsvm.svmutil")
    model = live_model()
    reference = svmutil.svm_load_model(
        str(metadata.distribution("brisque").locate_file("brisque/models/svm.txt")))
    scaled = -1 + 2 * (photo_features - model.feature_min) / (model.feature_max -
                                                               model.feature_min)
    nodes, _ = svmutil.gen_svm_nodearray(scaled.tolist())
    assert model.predict(photo_features) == pytest.approx(
        svmutil.libsvm.svm_predict(reference, nodes), abs=1e-8)


def test_features_and_model_shapes(photo_features: np.ndarray) -> None:
    model = live_model()
    assert photo_features.shape == (36,) and np.all(np.isfinite(photo_features))
    assert model.support_vectors.shape == (770, 36) and model.coefficients.shape == (770,)
    assert model.gamma == 0.05 and model.feature_min.shape == model.feature_max.shape == (36,)
    assert live_model() is model  # read once


def test_registered_as_no_reference_lower_is_better() -> None:
    metric = get_metric("brisque")
    assert metric is METRICS["brisque"] and "brisque" in NO_REFERENCE
    assert metric.kind == "no_reference" and metric.higher_is_better is False
    assert not metric.needs_input
    assert metric(load("chelsea")) == brisque(load("chelsea"))


def test_deterministic() -> None:
    img = noisy(load("coffee"), 0.05, seed=3)
    assert brisque(img) == brisque(img.copy())
    assert brisque(img.astype(np.float32)) == pytest.approx(brisque(img), abs=1e-6)


def test_grey_image_scores_its_luminance() -> None:
    grey = load("camera")
    assert brisque(grey) == brisque(np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("shape", [(31, 64, 3), (64, 20), (8, 8, 3)])
def test_tiny_image_is_an_error(shape: tuple[int, ...]) -> None:
    img = np.random.default_rng(0).random(shape)
    with pytest.raises(ValueError, match="at least 32x32"):
        brisque(img)
    assert np.isfinite(brisque(np.random.default_rng(0).random((32, 32, 3))))


def test_flat_image_is_an_error() -> None:
    with pytest.raises(ValueError, match="flat image"):
        brisque(np.full((64, 64, 3), 0.4))


def test_halving_like_matlab() -> None:
    rng = np.random.default_rng(1)
    ramp = np.add.outer(np.arange(20.0), 3 * np.arange(15.0))  # linear: kept linear, shifted
    halved = halve_like_matlab(ramp)
    assert halved.shape == (10, 8)
    # output pixel i sits between input pixels 2i and 2i + 1 (interior, away from the mirror)
    np.testing.assert_allclose(halved[2:-2, 2:-2], np.add.outer(
        np.arange(2, 8) * 2 + 0.5, 3 * (np.arange(2, 6) * 2 + 0.5)), atol=1e-12)
    flat = np.full((9, 7), 5.0)
    np.testing.assert_allclose(halve_like_matlab(flat), 5.0)  # weights sum to 1, odd sizes
    assert halve_like_matlab(rng.random((9, 7))).shape == (5, 4)


def test_model_loader_rejects_other_models(tmp_path: Path) -> None:
    svm = tmp_path / "svm.txt"
    svm.write_text("svm_type c_svc\nkernel_type rbf\nSV\n1 1:0.5\n")
    with pytest.raises(ValueError, match="epsilon-SVR"):
        BRISQUEModel.load(svm, tmp_path / "unused.pickle")
