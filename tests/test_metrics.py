"""Metrics on known cases: identities, analytic values, scikit-image agreement, NIQE sanity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data
from skimage.color import rgb2lab
from skimage.metrics import structural_similarity

from mrvae.evaluation import metrics
from mrvae.evaluation.metrics import METRICS, NIQEModel, fit_niqe, get_metric, niqe


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A full-size natural photo, float32 (512, 512, 3)."""
    return data.astronaut().astype(np.float32) / 255.0


def noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0.0, sigma, img.shape), 0, 1).astype(np.float32)


def test_identical_images(photo: np.ndarray) -> None:
    assert metrics.psnr(photo, photo) == float("inf")
    assert metrics.ssim(photo, photo) == pytest.approx(1.0)
    assert metrics.ssim_y(photo, photo) == pytest.approx(1.0)
    assert metrics.ciede2000(photo, photo) == pytest.approx(0.0, abs=1e-6)
    assert metrics.lightness_order_error(photo, photo) == 0.0


def test_psnr_of_known_error() -> None:
    rng = np.random.default_rng(0)
    target = rng.uniform(0.2, 0.8, (256, 256, 3))
    # a constant error of 0.1 gives MSE 0.01 -> exactly 20 dB
    assert metrics.psnr(target + 0.1, target) == pytest.approx(20.0)
    # Gaussian noise of sigma 0.05 (no clipping in [0.2, 0.8]) -> about 26.02 dB
    assert metrics.psnr(target + rng.normal(0, 0.05, target.shape), target) == \
        pytest.approx(-20 * np.log10(0.05), abs=0.1)


def test_psnr_y_uses_luma_only() -> None:
    target = np.full((16, 16, 3), 0.5)
    shifted = target.copy()
    shifted[..., 0] += 0.1  # a red shift changes Y by 0.1 * 65.481 / 255
    assert metrics.psnr_y(shifted, target) == pytest.approx(-20 * np.log10(0.1 * 65.481 / 255))


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_ssim_matches_scikit_image(photo: np.ndarray, sigma: float) -> None:
    degraded = noisy(photo[:200, :300], sigma)
    reference = structural_similarity(degraded.astype(np.float64), photo[:200, :300].astype(
        np.float64), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=1.0, channel_axis=2)
    assert metrics.ssim(degraded, photo[:200, :300]) == pytest.approx(reference, abs=1e-6)


def test_ssim_y_matches_scikit_image_on_luma(photo: np.ndarray) -> None:
    degraded = noisy(photo, 0.05)
    y_pred, y_true = metrics.luma_bt601(degraded), metrics.luma_bt601(photo)
    reference = structural_similarity(y_pred, y_true, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0)
    assert metrics.ssim_y(degraded, photo) == pytest.approx(reference, abs=1e-6)


def test_full_reference_metrics_get_worse_with_noise(photo: np.ndarray) -> None:
    mild, strong = noisy(photo, 0.02), noisy(photo, 0.1)
    for name in ("psnr", "psnr_y", "ssim", "ssim_y", "ciede2000"):
        metric = get_metric(name)
        better, worse = metric(mild, photo), metric(strong, photo)
        assert (better > worse) if metric.higher_is_better else (better < worse), name


def test_ciede2000_of_a_known_colour_pair() -> None:
    # Sharma, Wu, Dalal (2005) test data, pair 7: Lab (50, 0, 0) vs (50, -1, 2) -> 2.3669
    from skimage.color import lab2rgb

    grey = lab2rgb(np.array([[[50.0, 0.0, 0.0]]])).repeat(4, 0).repeat(4, 1)
    tinted = lab2rgb(np.array([[[50.0, -1.0, 2.0]]])).repeat(4, 0).repeat(4, 1)
    assert metrics.ciede2000(grey, tinted) == pytest.approx(2.3669, abs=0.01)


def test_gt_mean_psnr_forgives_exposure_only(photo: np.ndarray) -> None:
    darker = photo * 0.5
    assert metrics.psnr(darker, photo) < 15
    assert metrics.psnr_gtmean(darker, photo) > 40  # only the exposure was off
    noisy_dark = noisy(photo, 0.05) * 0.5
    assert metrics.psnr_gtmean(noisy_dark, photo) < 30  # the noise still counts
    # scaled by the ratio of mean greys, then clipped: a brighter image is clipped back down
    assert metrics.psnr_gtmean(np.clip(photo * 1.6, 0, 1), photo) < metrics.psnr_gtmean(
        darker, photo)
    black = np.zeros_like(photo)
    assert metrics.psnr_gtmean(black, photo) == pytest.approx(metrics.psnr(black, photo))


def test_colour_shift_measures_a_cast_not_detail(photo: np.ndarray) -> None:
    assert metrics.colour_shift(photo, photo) == pytest.approx(0.0, abs=1e-6)
    assert metrics.colour_shift(noisy(photo, 0.05), photo) < 1.0
    warm = np.clip(photo * np.array([1.15, 1.0, 0.85], np.float32), 0, 1)
    cool = np.clip(photo * np.array([0.9, 1.0, 1.1], np.float32), 0, 1)
    assert metrics.colour_shift(warm, photo) > 5 and metrics.colour_shift(cool, photo) > 3
    assert metrics.colour_shift(warm, photo) > metrics.colour_shift(noisy(photo, 0.05), photo)
    # flat images: the distance of their (a*, b*)
    grey = np.full((8, 8, 3), 0.5, np.float32)
    tinted = grey * np.array([1.0, 1.0, 1.2], np.float32)
    expected = np.hypot(*(rgb2lab(tinted)[0, 0, 1:] - rgb2lab(grey)[0, 0, 1:]))
    assert metrics.colour_shift(tinted, grey) == pytest.approx(expected, rel=1e-4)


def test_clip_increase_counts_pixels_pushed_to_white() -> None:
    low = np.zeros((10, 10, 3), np.float32)
    low[:2] = 1.0  # 20 % clipped already
    out = low.copy()
    out[2:5, :, 0] = 251 / 255  # 30 % more, in one channel
    out[5:6] = 249 / 255  # below the level: not clipped
    assert metrics.clipped_fraction(low) == pytest.approx(0.2)
    assert metrics.clip_increase(out, low) == pytest.approx(0.3)
    assert metrics.clip_increase(low, out) == pytest.approx(-0.3)  # recovered highlights
    assert get_metric("clip_increase")(out, low=low) == pytest.approx(0.3)


def test_night_scene_lamps_fall_off_monotonically() -> None:
    scene, centres = metrics.night_scene(size=160, lamps=3, seed=4)
    assert scene.shape == (160, 160, 3) and len(centres) == 3
    assert scene.mean() < 0.1 and scene.max() == 1.0  # dark, with clipped lamps
    for centre in centres:
        profile = metrics.radial_profile(scene, centre, 9)
        assert profile[0] == pytest.approx(1.0, abs=1e-3)
        assert np.all(np.diff(profile) <= 1e-3)
    again, _ = metrics.night_scene(size=160, lamps=3, seed=4)
    np.testing.assert_array_equal(scene, again)


def _ring(shape: tuple[int, ...], centre: tuple[float, float], distance: float) -> np.ndarray:
    yy, xx = np.indices(shape[:2])
    d = np.hypot(yy - centre[0], xx - centre[1])
    return np.exp(-((d - distance) ** 2) / 8.0)[..., None]


@pytest.mark.parametrize("seed", [0, 1])
def test_halo_rise_finds_artificial_halos_only(seed: int) -> None:
    low, centres = metrics.night_scene(seed=seed)
    smooth = low ** 0.45  # a global, order-preserving brightening: no halo
    bright_ring, dark_ring = smooth.copy(), smooth.copy()
    for centre in centres:
        bright_ring += 0.3 * _ring(low.shape, centre, 12)  # a glowing ring away from the lamp
        dark_ring *= 1 - 0.5 * _ring(low.shape, centre, 11)  # a gain that dips around it
    bright_ring, dark_ring = np.clip(bright_ring, 0, 1), np.clip(dark_ring, 0, 1)
    args = (centres, 16, 4)
    assert metrics.halo_rise(low, low, *args) == 0
    assert metrics.halo_rise(smooth, low, *args) < 0.02
    assert metrics.halo_rise(bright_ring, low, *args) > 0.25
    assert metrics.halo_rise(dark_ring, low, *args) > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    # A known regression, kept visible: strict, so the day it passes again this mark must go.
    pytest.param("mrvae-raw:lite", marks=pytest.mark.xfail(
        strict=True, reason="0.4.2's network alone (--no-refine) rises 0.119 on one scene "
                            "(0.4.1: 0.044); as shipped 0.061 (docs/RESULTS.md)")),
    "mrvae:lite", "mrvae-raw:bilateral", "mrvae:bilateral"])
def test_shipped_model_puts_no_halo_around_lamps(name: str) -> None:
    from mrvae.evaluation.baselines import get_method

    method = get_method(name)

    def brightened(low: np.ndarray) -> np.ndarray:
        out = method(low)
        assert out.mean() > low.mean()
        return out

    rises = metrics.night_scene_halos(brightened)
    print(f"{name}: halo_rise {np.round(rises, 4).tolist()}")
    assert max(rises) < 0.1  # adaptive gamma, a global curve, scores up to 0.075 here


def test_shape_mismatch_is_an_error(photo: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.psnr(photo, photo[:10])


def test_entropy_brightness_contrast() -> None:
    flat = np.full((32, 32, 3), 0.5, np.float32)
    assert metrics.entropy(flat) == 0.0
    assert metrics.contrast(flat) == pytest.approx(0.0, abs=1e-9)
    assert metrics.brightness(flat) == pytest.approx(0.5, abs=1e-3)
    ramp = np.repeat(np.linspace(0, 1, 256)[None, :, None], 3, axis=2).repeat(4, axis=0)
    assert metrics.entropy(ramp) == pytest.approx(8.0, abs=0.01)  # every level once
    assert metrics.contrast(ramp) > 0.25


def test_loe_counts_order_flips() -> None:
    low = np.repeat(np.linspace(0.01, 0.2, 100)[None, :, None], 3, axis=2).repeat(100, axis=0)
    # a monotonic brightening keeps every order: LOE 0
    assert metrics.lightness_order_error(np.sqrt(low), low) == 0.0
    # reversing the ramp flips the order of every pair of distinct columns
    flipped = metrics.lightness_order_error(low[:, ::-1], low)
    assert flipped > 0.5 * 50 * 50  # most of the 50x50 downscaled pixel pairs disagree


def test_niqe_lower_on_clean_than_noisy(photo: np.ndarray) -> None:
    clean = niqe(photo)
    assert np.isfinite(clean)
    assert niqe(noisy(photo, 0.05)) > clean
    assert niqe(noisy(photo, 0.1)) > niqe(noisy(photo, 0.05))


def test_niqe_lower_on_clean_than_blurred(photo: np.ndarray) -> None:
    import cv2

    assert niqe(cv2.GaussianBlur(photo, (0, 0), 2.0)) > niqe(photo)


def test_niqe_features_shape_and_small_images(photo: np.ndarray) -> None:
    assert metrics.niqe_features(photo).shape == (25, 36)  # 5x5 patches of 96, 2 scales x 18
    with pytest.raises(ValueError, match="at least 96x96"):
        niqe(photo[:50, :50])


def test_fit_niqe_round_trip(tmp_path: Path, photo: np.ndarray) -> None:
    images = [photo, data.chelsea().astype(np.float32) / 255, data.coffee() / 255.0]
    model = fit_niqe(images, source="skimage")
    assert model.mean.shape == (36,) and model.cov.shape == (36, 36)
    assert model.num_images == 3 and model.num_patches >= 5
    path = model.save(tmp_path / "model.npz")
    loaded = NIQEModel.load(path)
    np.testing.assert_allclose(loaded.mean, model.mean)
    assert loaded.source == "skimage"
    assert niqe(photo, loaded) == pytest.approx(niqe(photo, model))


def test_shipped_niqe_model_is_small_and_valid() -> None:
    assert metrics.NIQE_MODEL_PATH.stat().st_size < 20_000
    model = NIQEModel.load()
    assert model.mean.shape == (36,) and np.all(np.isfinite(model.cov))
    assert np.all(np.linalg.eigvalsh(model.cov) > -1e-9)  # a covariance matrix
    assert model.num_patches >= 500


def test_registry() -> None:
    assert set(metrics.FULL_REFERENCE) | set(metrics.NO_REFERENCE) <= set(METRICS)
    assert METRICS["psnr"].higher_is_better and not METRICS["niqe"].higher_is_better
    assert METRICS["loe"].needs_input and METRICS["clip_increase"].needs_input
    assert set(metrics.PAIRED) >= {"psnr_gtmean", "ciede2000", "colour_shift", "clip_increase"}
    with pytest.raises(ValueError, match="needs a ground-truth"):
        METRICS["psnr"](np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="needs the low-light input"):
        METRICS["loe"](np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("lpips")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sigma=st.floats(0.01, 0.5))
def test_full_reference_metrics_are_symmetric_and_bounded(seed: int, sigma: float) -> None:
    rng = np.random.default_rng(seed)
    a = rng.random((24, 32, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, sigma, a.shape), 0, 1).astype(np.float32)
    assert metrics.psnr(a, b) == pytest.approx(metrics.psnr(b, a))
    assert metrics.ssim(a, b) == pytest.approx(metrics.ssim(b, a))
    assert -1.0 <= metrics.ssim(a, b) <= 1.0 and -1.0 <= metrics.ssim_y(a, b) <= 1.0
    assert metrics.ciede2000(a, b) >= 0 and metrics.psnr(a, b) > 0
    assert 0 <= metrics.lightness_order_error(b, a) <= a.shape[0] * a.shape[1]
