"""The refinement after the network: noise estimate, detail restore, order-preserving tone."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kornia.filters import guided_blur

from mrvae.engine.refine import (
    Refinement,
    darkness,
    detail_weight,
    exposure_trim,
    guided_filter,
    keep_thresholds,
    keep_weight,
    model_refinement,
    noise_sigma,
    order_preserving_gain,
    restore_detail,
)
from mrvae.evaluation.metrics import lightness_order_error, psnr


@pytest.fixture(scope="module")
def texture(astronaut: np.ndarray) -> np.ndarray:
    """A clean, textured photo at normal exposure, float32 in [0, 1]."""
    return np.ascontiguousarray(astronaut[:160, :200] / 255.0, dtype=np.float32)


def _apply(enhanced: np.ndarray, gain: np.ndarray) -> np.ndarray:
    full = cv2.resize(gain, enhanced.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return np.clip(enhanced * full[..., None], 0, 1)


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.08])
def test_noise_sigma_measures_white_noise(sigma: float) -> None:
    rng = np.random.default_rng(0)
    noisy = 0.5 + rng.normal(0, sigma, (300, 400, 1)).astype(np.float32).repeat(3, axis=2)
    assert noise_sigma(noisy) == pytest.approx(sigma, rel=0.05)


def test_noise_sigma_ignores_smooth_light_and_strips(texture: np.ndarray) -> None:
    ramp = np.linspace(0, 1, 300, dtype=np.float32)[None, :, None].repeat(200, 0).repeat(3, 2)
    assert noise_sigma(ramp) < 1e-4
    assert noise_sigma(texture, rows=7) == pytest.approx(noise_sigma(texture), rel=1e-5)
    assert noise_sigma(np.zeros((2, 50, 3), np.float32)) == 0.0


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 7), st.floats(1e-4, 1e-1),
       st.integers(0, 2**32 - 1))
def test_guided_filter_is_kornias(height: int, width: int, radius: int, eps: float,
                                  seed: int) -> None:
    """The same filter as kornia's guided_blur (mirrored borders), by OpenCV's box sums."""
    kernel = min(2 * radius + 1, height, width) // 2 * 2 + 1  # odd and fits, as fit_to_edges
    rng = np.random.default_rng(seed)
    guide, plane = rng.random((2, height, width), dtype=np.float32)
    expected = guided_blur(torch.from_numpy(guide)[None, None],
                           torch.from_numpy(plane)[None, None], kernel, eps)[0, 0].numpy()
    np.testing.assert_allclose(guided_filter(guide, plane, kernel, eps), expected, atol=2e-5)


def test_noise_sigma_is_immerkaers_estimate() -> None:
    """The mean absolute response of the Laplacian difference over the valid pixels, scaled."""
    rgb = np.random.default_rng(1).random((37, 29, 3), dtype=np.float32)
    light = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    vertical = light[:-2] - 2 * light[1:-1] + light[2:]
    response = vertical[:, :-2] - 2 * vertical[:, 1:-1] + vertical[:, 2:]
    expected = math.sqrt(math.pi / 2) * np.abs(response).mean() / 6
    assert noise_sigma(rgb, rows=5) == pytest.approx(expected, rel=1e-5)


def test_detail_weight_falls_with_amplified_noise() -> None:
    settings = Refinement(detail=1.0, noise_low=0.01, noise_high=0.05)
    assert detail_weight(0.002, 4.0, settings) == 1.0  # 0.008 amplified: clean
    assert detail_weight(0.02, 4.0, settings) == 0.0  # 0.08 amplified: keep DR's denoising
    assert detail_weight(0.0075, 4.0, settings) == pytest.approx(0.5)
    assert detail_weight(0.002, 4.0, Refinement(detail=0.3, noise_low=0.01,
                                                noise_high=0.05)) == pytest.approx(0.3)


@given(st.floats(0, 0.2), st.floats(0, 0.2), st.floats(1, 8))
def test_detail_weight_is_monotone(a: float, b: float, gain: float) -> None:
    settings = Refinement(detail=1.0)
    low, high = sorted((a, b))
    assert 0 <= detail_weight(high, gain, settings) <= detail_weight(low, gain, settings) <= 1


def test_restore_detail_brings_back_texture_a_network_blurred(texture: np.ndarray) -> None:
    low = texture * 0.25
    gain = np.full((*low.shape[:2], 1), 4.0, np.float32)
    blurred = cv2.GaussianBlur(texture, (0, 0), 2.0)  # a denoiser that also took the texture
    restored = restore_detail(low, blurred, gain, 1.0, sigma=4.0)
    assert psnr(np.clip(restored, 0, 1), texture) > psnr(blurred, texture) + 5
    assert restore_detail(low, blurred, gain, 0.0, sigma=4.0) is blurred


def test_tone_restores_the_input_lightness_order() -> None:
    rng = np.random.default_rng(1)
    light = cv2.GaussianBlur(rng.random((120, 160)).astype(np.float32), (0, 0), 8)
    light = (light - light.min()) / np.ptp(light)
    low = (0.02 + 0.2 * light)[..., None].repeat(3, 2)
    # an output with the right brightness range but its regions reordered
    enhanced = np.ascontiguousarray((0.2 + 0.6 * np.roll(light, 40, axis=1))[..., None]
                                    .repeat(3, 2))
    settings = Refinement(tone_side=40)
    toned = _apply(enhanced, order_preserving_gain(low, enhanced, low, settings))
    before = lightness_order_error(enhanced, low)
    assert lightness_order_error(toned, low) < before / 5
    # the exposure stays the network's: same mean and range of lightness
    assert toned.mean() == pytest.approx(enhanced.mean(), abs=0.03)


def test_tone_gain_follows_edges_without_halos() -> None:
    low = np.full((64, 96, 3), 0.05, np.float32)
    low[:, 48:] = 0.2  # a dark wall beside a lit one
    enhanced = np.full_like(low, 0.6)
    enhanced[:, 48:] = 0.3  # the network swapped their order
    toned = _apply(enhanced, order_preserving_gain(low, enhanced, low, Refinement(tone_side=32)))
    left, right = toned[:, :48].max(axis=2), toned[:, 48:].max(axis=2)
    assert left.max() < right.min()  # the order is the input's again
    # each side stays nearly flat up to the edge: no wide glow or dark band beside it
    jump = right.mean() - left.mean()
    assert np.ptp(left) < 0.25 * jump and np.ptp(right) < 0.25 * jump


def test_keep_thresholds_move_down_for_a_photo_brightened_as_a_whole() -> None:
    settings = Refinement()
    normal = (settings.keep_low, settings.keep_high)
    darker = (settings.dark_keep_low, settings.dark_keep_high)
    for median, expected in ((1.0, normal), (settings.dark_photo_low, normal),
                             (settings.dark_photo_high, darker), (8.0, darker)):
        gain = np.full((8, 8), median)
        gain[:3] = 0.5  # the median decides, not the mean
        np.testing.assert_allclose(keep_thresholds(gain, settings), expected, rtol=1e-9)
    between = keep_thresholds(np.full((8, 8), 1.5), settings)
    assert darker[0] < between[0] < normal[0] and darker[1] < between[1] < normal[1]


def test_keep_weight_follows_the_brightening_and_the_edges() -> None:
    settings = Refinement()
    flat = np.full((40, 60, 3), 0.5, np.float32)
    # whole photos brightened evenly: kept while the network barely brightens them (a
    # well-exposed photo); the network's from one stop under (brightening ~1.7) on
    for gain, expected in ((0.8, 0.0), (1.25, 0.0), (settings.dark_photo_high, 1.0),
                           (5.0, 1.0)):
        weight = keep_weight(np.full((16, 24), gain), flat, 0.0, settings)
        assert weight.shape == (40, 60)
        np.testing.assert_allclose(weight, expected, atol=1e-5)
    middle = keep_weight(np.full((16, 24), 1.5), flat, 0.0, settings)
    assert 0.2 < middle.mean() < 0.8
    # a photo one stop under with uneven light (brightening 1.4-2.2 across it): the network's
    uneven = np.exp(np.linspace(math.log(1.4), math.log(2.2), 24)) * np.ones((16, 1))
    assert keep_weight(uneven, flat, 0.0, settings).min() > 0.95
    # a bright sky (kept) over a dark building (lifted): the weight steps at the photo's edge
    scene = np.full((64, 64, 3), 0.05, np.float32)
    scene[:32] = 0.9
    gain = np.where(np.arange(16)[:, None] < 8, 1.0, 6.0) * np.ones((16, 16))
    weight = keep_weight(gain, scene, 0.0, settings)
    assert weight[:32].max() < 0.15 and weight[32:].min() > 0.85  # a step, not a ramp
    # a noisy input is never kept: DR's denoising stays
    np.testing.assert_allclose(keep_weight(gain, scene, settings.noise_high, settings), 1.0)
    halfway = keep_weight(gain, scene, (settings.noise_low + settings.noise_high) / 2, settings)
    np.testing.assert_allclose(halfway, 0.5 + 0.5 * weight, atol=1e-6)


def test_exposure_trim_evens_out_how_dark_a_dark_photo_was() -> None:
    settings = Refinement()
    dark = np.full((8, 8), 4.0)  # a photo the network lifts 4x: dark
    assert darkness(dark, settings) == 1.0

    def trim(median_luma: float, gain: np.ndarray = dark, refine: Refinement = settings) -> float:
        return exposure_trim(np.full((20, 30, 3), median_luma, np.float32), gain, refine)

    assert trim(settings.trim_pivot) == pytest.approx(0.0, abs=1e-6)
    # each stop darker than the pivot adds trim_per_stop, each stop brighter takes it away
    for stops in (-2, -1, 1, 2):
        assert trim(settings.trim_pivot * 2.0**stops) == pytest.approx(
            -stops * settings.trim_per_stop, abs=1e-5)
    # clamped; a black photo counts as one at 1/255
    steep = Refinement(trim_per_stop=1.0)
    assert trim(0.0, refine=steep) == settings.trim_max
    assert trim(1.0, refine=steep) == -settings.trim_max
    assert trim(0.0) == pytest.approx(trim(1 / 255)) and 0 < trim(0.0) < settings.trim_max
    # a photo the network barely brightens is not dark: no trim; in between, part of it
    assert trim(0.02, np.full((8, 8), 1.1)) == 0.0
    between = np.full((8, 8), 1.5)
    assert 0 < darkness(between, settings) < 1
    assert trim(0.02, between) == pytest.approx(darkness(between, settings) * trim(0.02))
    assert trim(0.02, refine=Refinement(trim=False)) == 0.0


@pytest.mark.parametrize("bad", [dict(detail=1.5), dict(detail_sigma=0), dict(tone_side=1),
                                 dict(noise_low=0.1, noise_high=0.05), dict(max_gain=0.5),
                                 dict(keep_low=2.0, keep_high=1.5), dict(keep_low=0),
                                 dict(dark_keep_low=1.3), dict(dark_photo_high=1.2),
                                 dict(trim_pivot=0), dict(trim_pivot=1.5),
                                 dict(trim_per_stop=-0.1), dict(trim_max=4.0)])
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="bad refinement settings"):
        Refinement(**bad)


def test_a_model_card_changes_the_refinement_defaults() -> None:
    """A card without an entry gets the defaults; its ``refinement`` entry changes them, and
    the caller's changes come last; a setting Refinement lacks is refused."""
    assert model_refinement(None) == Refinement() == model_refinement({"preset": "lite"})
    card = {"refinement": {"trim": False}}
    assert model_refinement(card) == Refinement(trim=False)
    assert model_refinement(card, {"detail": 0.5}) == Refinement(trim=False, detail=0.5)
    assert model_refinement(card, {"trim": True}) == Refinement()
    with pytest.raises(ValueError, match=r"unknown refinement setting.*brightness"):
        model_refinement({"refinement": {"brightness": 2}})
    with pytest.raises(ValueError, match="bad refinement"):
        model_refinement(card, {"trim_max": -1.0})
