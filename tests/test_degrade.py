"""Properties of the low-light synthesis."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrvae.data.datasets import make_pair, to_tensor
from mrvae.data.degrade import (
    PRESETS,
    DegradeConfig,
    add_lamps,
    darken_gamma,
    gaussian_blur,
    noise_sigma_for_level,
    synthesize,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def photo(astronaut: np.ndarray) -> torch.Tensor:
    return to_tensor(astronaut).unsqueeze(0)


@pytest.mark.parametrize("recipe", sorted(set(PRESETS) - {"well_exposed"}))
def test_darker_level_has_lower_mean(photo: torch.Tensor, recipe: str) -> None:
    config = replace(PRESETS[recipe], noise_scale=0.0, uneven_light=0.0, color_cast=0.0)
    means = [synthesize(photo, level, config, _gen())[0].mean().item()
             for level in range(config.num_levels)]
    assert all(a > b for a, b in itertools.pairwise(means)), means
    assert means[0] < photo.mean().item()


def test_well_exposed_recipe_keeps_the_photo(photo: torch.Tensor) -> None:
    low, info = synthesize(photo, 0, PRESETS["well_exposed"], _gen())
    assert PRESETS["well_exposed"].num_levels == 1 and info["stops"] == 0.0
    assert (low - photo).abs().mean() < 2 / 255  # a little sensor noise, no darkening


def test_backlit_recipe_cuts_shadows_and_keeps_highlights() -> None:
    ramp = torch.linspace(0, 1, 256).repeat(3, 16, 1).unsqueeze(0)  # dark to white, left to right
    config = replace(PRESETS["backlit"], noise_scale=0.0, uneven_light=0.0, color_cast=0.0,
                     blur_sigma=0.0)
    low = synthesize(ramp, 3, config, _gen())[0][0, 0, 8]
    shadows, highlights = slice(40, 90), slice(-40, None)
    assert (low[shadows] < 0.45 * ramp[0, 0, 8, shadows]).all()  # 5 stops down in sRGB
    assert ((low[highlights] - ramp[0, 0, 8, highlights]).abs() <= 1.5 / 255).all()
    assert (torch.diff(low) >= -1e-6).all(), "the tone map must stay monotone"


def test_lamps_add_light_with_clipped_white_cores() -> None:
    night = torch.full((2, 3, 96, 128), 0.1)
    lit = add_lamps(night, 3, _gen())
    assert (lit >= night - 1e-6).all(), "a lamp only adds light"
    white = (lit >= 0.999).all(dim=1)  # (B, H, W)
    assert all(white[i].sum() >= 7 for i in range(2)), "each photo gets clipped lamp cores"
    assert (white.float().mean(dim=(1, 2)) < 0.5).all(), "and keeps most of its dark"
    assert not torch.equal(lit[0], lit[1]), "lamps are drawn per photo"


def test_night_lamps_pairs_keep_the_lamps_white_in_both_images(photo: torch.Tensor) -> None:
    rng = np.random.default_rng(0)
    low, high, info = make_pair(photo[0], 3, PRESETS["night_lamps"], rng)
    assert 1 <= info["lamps"] <= PRESETS["night_lamps"].lamps
    cores = (high >= 0.999).all(dim=0)
    assert cores.sum() > 0 and not torch.equal(high, photo[0]), "the target has the lamps"
    assert low[:, cores].mean() > 0.95, "the lamps stay white in the dark photo"
    dark = high.mean(dim=0) < 0.3
    assert low[:, dark].mean() < 0.5 * high[:, dark].mean(), "the rest is cut"


def test_pairs_without_lamps_keep_the_photo_as_target(photo: torch.Tensor) -> None:
    low, high, info = make_pair(photo[0], 1, PRESETS["realistic"], np.random.default_rng(0))
    assert torch.equal(high, photo[0]) and "lamps" not in info and low.shape == high.shape


def test_default_recipe_darkens_and_orders_levels(photo: torch.Tensor) -> None:
    means = [synthesize(photo, level, generator=_gen())[0].mean().item() for level in range(4)]
    assert means[0] < photo.mean().item() * 0.7
    assert means[0] > means[-1]


def test_noise_grows_with_level() -> None:
    flat = torch.full((1, 3, 64, 64), 0.9)
    config = DegradeConfig(blur_sigma=0.0)
    stds = []
    for level in range(config.num_levels):
        low, info = synthesize(flat, level, config, _gen())
        clean = darken_gamma(flat, config.gammas[level])
        stds.append((low - clean).std().item())
        assert info["noise_sigma"] == pytest.approx(10 * config.gammas[level] / 255)
    assert all(a < b for a, b in itertools.pairwise(stds)), stds


def test_noise_mapping_is_named_and_monotone() -> None:
    for mapping in ("linear", "exponential"):
        sigmas = [noise_sigma_for_level(g, 10.0, mapping) for g in (2, 3, 4, 5)]
        assert sigmas == sorted(sigmas) and len(set(sigmas)) == 4
    assert noise_sigma_for_level(3.0) == pytest.approx(30 / 255)
    with pytest.raises(ValueError):
        noise_sigma_for_level(2.0, mapping="cubic")  # type: ignore[arg-type]


def test_poisson_gaussian_noise_depends_on_signal() -> None:
    config = DegradeConfig(noise_model="poisson_gaussian", blur_sigma=0.0, gammas=(1.0,))
    ramp = torch.cat([torch.full((1, 3, 64, 64), 0.05), torch.full((1, 3, 64, 64), 0.8)], dim=3)
    low, _ = synthesize(ramp, 0, config, _gen())
    residual = low - ramp
    dark_std, bright_std = residual[..., :64].std().item(), residual[..., 64:].std().item()
    assert bright_std > 1.5 * dark_std


def test_seed_reproduces_and_differs(photo: torch.Tensor) -> None:
    for recipe in PRESETS.values():
        level = min(2, recipe.num_levels - 1)
        a, _ = synthesize(photo, level, recipe, _gen(7))
        b, _ = synthesize(photo, level, recipe, _gen(7))
        c, _ = synthesize(photo, level, recipe, _gen(8))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_order_darken_blur_noise() -> None:
    """Paper order: gamma, then blur, then noise (noise is not blurred)."""
    img = torch.rand(1, 3, 48, 48, generator=_gen(1))
    config = DegradeConfig(gammas=(2.0,), blur_sigma=1.5)
    low, info = synthesize(img, 0, config, _gen(3))
    expected_clean = gaussian_blur(darken_gamma(img, 2.0), 1.5)
    noise = torch.randn(img.shape, generator=_gen(3)) * info["noise_sigma"]
    torch.testing.assert_close(low, (expected_clean + noise).clamp(0, 1))


def test_blur_reduces_high_frequencies() -> None:
    img = torch.rand(1, 3, 32, 32, generator=_gen(2))
    blurred = gaussian_blur(img, 1.0)
    assert blurred.diff(dim=-1).abs().mean() < 0.5 * img.diff(dim=-1).abs().mean()
    assert torch.equal(gaussian_blur(img, 0.0), img)


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), batched=st.booleans(),
       level=st.integers(0, 3), recipe=st.sampled_from(sorted(PRESETS)),
       seed=st.integers(0, 2**31 - 1))
def test_shapes_dtypes_ranges_kept(height: int, width: int, batched: bool, level: int,
                                   recipe: str, seed: int) -> None:
    shape = (2, 3, height, width) if batched else (3, height, width)
    img = torch.rand(shape, generator=_gen(seed))
    level = min(level, PRESETS[recipe].num_levels - 1)
    low, info = synthesize(img, level, PRESETS[recipe], _gen(seed))
    assert low.shape == img.shape and low.dtype == img.dtype
    assert low.min() >= 0.0 and low.max() <= 1.0
    assert info["level"] == level


def test_grayscale_converted_to_rgb(astronaut: np.ndarray) -> None:
    gray = astronaut.mean(axis=2, keepdims=True).repeat(3, axis=2).astype(np.uint8)
    low, _ = synthesize(to_tensor(gray), 1, generator=_gen())
    assert low.shape == (3, 128, 128)
    assert low.mean() < to_tensor(gray).mean()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="level"):
        synthesize(torch.rand(3, 8, 8), 4)
    with pytest.raises(ValueError, match="expected"):
        synthesize(torch.rand(8, 8), 0)
    with pytest.raises(ValueError):
        darken_gamma(torch.rand(3, 4, 4), 0.0)


def test_cli_help_names_every_recipe() -> None:
    from mrvae.apps.cli import RECIPE_HELP

    assert all(name in RECIPE_HELP for name in PRESETS)
