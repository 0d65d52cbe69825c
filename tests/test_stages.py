"""The engine's refinement stages, each alone on a made-up photo, and the pipeline that runs
them without knowing what they do."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from mrvae.engine.decision import GlobalPass, Photo, as_image
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.refine import Refinement, high_frequencies, luma, sharpen_weight
from mrvae.engine.stages import (
    STRIP_ROWS,
    Detail,
    ExposureTrim,
    Keep,
    Sharpen,
    Stage,
    Step,
    Tone,
    refinement_stages,
)
from mrvae.nn.model import MRVAE, create_model

SIZE = 96


def _photo(rgb: np.ndarray, gain: float | np.ndarray, exposure: float = 0.0) -> Photo:
    """A photo whose 'network' brightened it by ``gain`` (the global pass at full size)."""
    rgb = np.ascontiguousarray(rgb, np.float32)
    small = as_image(rgb).clone()
    image = (small * torch.as_tensor(gain, dtype=torch.float32)).clamp(0, 1)
    return Photo(rgb, GlobalPass(small, image), exposure)


@pytest.fixture(scope="module")
def dark(astronaut: np.ndarray) -> np.ndarray:
    """A photo four stops under, float32 ``(96, 96, 3)``."""
    return np.ascontiguousarray(astronaut[:SIZE, :SIZE] / 255.0 / 16, np.float32)


@pytest.fixture(scope="module")
def smooth() -> np.ndarray:
    """A noiseless, smoothly lit photo (float32 ``(96, 96, 3)``, 0.2 to 0.6)."""
    ramp = np.linspace(0.2, 0.6, SIZE, dtype=np.float32)
    return np.stack([ramp[None, :] * ramp[:, None] / 0.6] * 3, axis=2).astype(np.float32)


def test_stages_run_in_one_order_and_follow_their_switches() -> None:
    names = [stage.name for stage in refinement_stages(Refinement(detail=1.0, sharpen=1.0))]
    assert names == ["trim", "detail", "sharpen", "tone", "keep"]
    assert [s.name for s in refinement_stages(Refinement())] == ["trim", "tone", "keep"]
    assert [s.name for s in refinement_stages(Refinement(tone=False, trim=False))] == ["keep"]
    assert refinement_stages(None) == ()


def test_trim_lifts_a_dark_photo_and_leaves_a_well_exposed_one(dark: np.ndarray) -> None:
    trim = ExposureTrim(Refinement())
    assert 0.15 < trim.exposure(_photo(dark, 8.0)) <= Refinement().trim_max  # 1.5 stops under
    assert trim.exposure(_photo(dark * 10, 1.0)) == 0.0
    assert ExposureTrim(Refinement(trim=False)).enabled is False


def test_keep_keeps_the_input_where_the_network_does_not_brighten(smooth: np.ndarray) -> None:
    out = np.full_like(smooth, 0.3)
    Keep(Refinement()).plan(_photo(smooth, 1.0)).finish(_photo(smooth, 1.0), out)
    np.testing.assert_allclose(out, smooth, atol=1e-5)
    # brightened sixteen times everywhere: the network's output stays, no step at all
    assert Keep(Refinement()).plan(_photo(smooth / 16, 16.0)) is None


def test_keep_leaves_the_rows_it_does_not_keep_untouched(smooth: np.ndarray) -> None:
    """Lit at the top, brightened sixteen times below: the strips of rows where the weight is
    1 keep the network's output bit for bit, the lit rows get the input."""
    rows = 3 * STRIP_ROWS
    rgb = cv2.resize(smooth, (SIZE, rows), interpolation=cv2.INTER_LINEAR)
    gain = np.ones((rows, SIZE, 1), np.float32)
    gain[STRIP_ROWS // 2:] = 16.0
    rgb[STRIP_ROWS // 2:] /= 16
    photo = _photo(rgb, torch.from_numpy(gain).permute(2, 0, 1)[None])
    out = np.random.default_rng(0).random(rgb.shape, dtype=np.float32)
    network = out.copy()
    Keep(Refinement()).plan(photo).finish(photo, out)
    np.testing.assert_allclose(out[:STRIP_ROWS // 4], rgb[:STRIP_ROWS // 4], atol=1e-5)
    assert np.array_equal(out[2 * STRIP_ROWS:], network[2 * STRIP_ROWS:])


def test_keep_moves_the_kept_input_by_the_exposure(smooth: np.ndarray) -> None:
    photo = _photo(smooth / 2, 1.0, exposure=1.0)
    out = np.zeros_like(smooth)
    Keep(Refinement()).plan(photo).finish(photo, out)
    assert out.mean() > 1.3 * (smooth / 2).mean()  # +1 EV in linear light: about 1.37x in sRGB


def test_tone_puts_the_input_lightness_order_back() -> None:
    ramp = np.linspace(0.02, 0.2, SIZE, dtype=np.float32)[None, :, None].repeat(SIZE, 0)
    rgb = np.repeat(ramp, 3, axis=2)
    reversed_out = np.ascontiguousarray(rgb[:, ::-1] * 4)  # the network swapped dark and light
    photo = _photo(rgb, 4.0)
    out = reversed_out.copy()
    Tone(Refinement()).plan(photo).finish(photo, out)
    columns = out.mean(axis=(0, 2))
    assert columns[-8:].mean() > columns[:8].mean()  # light again where the input is light
    assert out.mean() == pytest.approx(reversed_out.mean(), rel=0.1)  # the exposure stays


def test_detail_restores_texture_of_a_clean_photo_only(astronaut: np.ndarray) -> None:
    clean = np.ascontiguousarray(astronaut[:SIZE, :SIZE] / 255.0 / 4, np.float32)
    photo = _photo(clean, 4.0)
    step = Detail(Refinement(detail=1.0)).plan(photo)
    assert isinstance(step, Step) and step.margin == Refinement(detail=1.0).detail_radius
    flat = np.full_like(clean, float(clean.mean() * 4))
    textured = step.tile(photo, (0, SIZE, 0, SIZE), flat.copy())
    high_pass = clean - cv2.GaussianBlur(clean, (0, 0), 4.0)
    assert np.corrcoef((textured - flat).ravel(), high_pass.ravel())[0, 1] > 0.9
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    assert Detail(Refinement(detail=1.0)).plan(_photo(noisy, 4.0)) is None


def test_sharpen_weight_falls_with_the_brightened_noise() -> None:
    settings = Refinement(sharpen=1.5)
    amplified = np.array([0.0, settings.noise_low, 0.01, 0.015, settings.sharpen_noise_high, 0.1])
    weight = sharpen_weight(amplified, settings)
    np.testing.assert_allclose(weight[:2], 1.5)  # clean: the full strength
    np.testing.assert_allclose(weight[-2:], 0.0)  # noisy: DR's leftover noise is not sharpened
    assert np.all(np.diff(weight) <= 0) and 0 < weight[3] < weight[2] < 1.5


def test_sharpen_raises_edges_and_keeps_flat_light_and_colour() -> None:
    edge = np.full((SIZE, SIZE, 3), 0.3, np.float32)
    edge[:, SIZE // 2:] = (0.6, 0.5, 0.4)
    out = edge + high_frequencies(luma(edge), 1.4)[..., None]  # the stage at weight 1
    row = out[SIZE // 2]
    assert row[SIZE // 2 - 1].max() < 0.3 - 0.01 and row[SIZE // 2].min() > 0.4 + 0.01  # crisper
    np.testing.assert_allclose(out[:, :SIZE // 4], edge[:, :SIZE // 4], atol=1e-6)  # flat: as is
    # luma only: every channel moves by the same amount, so no colour fringe
    change = out - edge
    np.testing.assert_allclose(change[..., 0], change[..., 2], atol=1e-6)


def test_sharpen_strip_by_strip_is_the_whole_image_sharpened(astronaut: np.ndarray) -> None:
    """The strips run in parallel and in place, each reading rows across its cuts: the same
    pixels as one unsharp mask of the whole image at the same weights."""
    rows = 2 * STRIP_ROWS + 37
    clean = cv2.resize(astronaut / 255.0, (SIZE, rows)).astype(np.float32)
    gain = np.full((1, 1, rows, SIZE), 2.0, np.float32)
    gain[..., rows // 2:, :] = 12.0  # brighter below: the weight falls there
    photo = _photo(clean / 2, torch.from_numpy(gain))
    settings = Refinement(sharpen=1.0)
    step = Sharpen(settings).plan(photo)
    assert step is not None
    out = np.ascontiguousarray(clean * 0.9)
    weight = cv2.resize(step.weight, (SIZE, rows), interpolation=cv2.INTER_LINEAR)
    light = out @ np.array([0.299, 0.587, 0.114], np.float32)
    radius = math.ceil(4 * settings.sharpen_sigma)
    blurred = cv2.GaussianBlur(light, (2 * radius + 1, 2 * radius + 1), settings.sharpen_sigma)
    expected = out + (weight * (light - blurred))[..., None]
    step.finish(photo, out)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert not np.allclose(out, clean * 0.9, atol=1e-3)
    # a photo noisy everywhere at its brightening gets no step
    rng = np.random.default_rng(0)
    noisy = (0.05 + rng.normal(0, 0.01, clean.shape)).astype(np.float32)
    assert Sharpen(settings).plan(_photo(noisy, 8.0)) is None


class _Grey(Stage):
    """A stage made up here: paints the whole image grey after the tiles."""

    name = "grey"

    def exposure(self, photo: Photo) -> float:
        return 0.25

    def plan(self, photo: Photo) -> Step:
        seen.append(photo.exposure)

        class Paint(Step):
            def finish(self, photo: Photo, out: np.ndarray) -> None:
                out[...] = 0.5

        return Paint()


seen: list[float] = []


def test_the_engine_runs_any_stage_through_the_one_interface() -> None:
    torch.manual_seed(0)
    model: MRVAE = create_model("tiny").eval()
    enhancer = Enhancer(model, "cpu", global_size=32, exposure=0.5)
    enhancer.stages = (*enhancer.stages, _Grey(Refinement()))  # adding a stage: one line
    out = enhancer.enhance_array(np.full((40, 48, 3), 0.1, np.float32))
    np.testing.assert_array_equal(out, 0.5)
    assert seen[-1] >= 0.75  # the user's 0.5 EV, the made-up 0.25 and the trim's
