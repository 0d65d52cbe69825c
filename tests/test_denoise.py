"""DR's denoising strength for operator models (mrvae.engine.denoise): 1 is the network's output,
0 the operator's image, the default follows the noise the brightening shows, tiles agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrvae.engine.denoise import Denoise, amplified_noise, parse_denoise
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.refine import noise_ramp
from mrvae.engine.tiling import tiles, upsample_region
from mrvae.nn.model import MRVAE, create_model


def operator_model(kind: str = "affine") -> MRVAE:
    """A tiny operator model that brightens (the identity operator plus a fixed gain) and whose
    DR changes its input (random weights)."""
    torch.manual_seed(0)
    model = create_model("tiny", operator=kind, grid_size=4, curve_knots=8, grid_depth=2)
    head = model.global_reconstruction.head
    with torch.no_grad():
        head.local[-1].bias.zero_()
        if kind == "affine":  # diagonal gains of 3 at every guide level
            for row in range(3):
                head.local[-1].bias[(5 * row) * 2:(5 * row) * 2 + 2] = 2.0
    return model.eval()


def engine_outputs(model: MRVAE, photo: np.ndarray, denoise: Denoise,
                   **settings) -> np.ndarray:
    """The engine's output in float32 (compared with the network's own to 1e-5)."""
    return Enhancer(model, "cpu", refine=None, denoise=denoise, backend="torch-float32",
                    **settings).enhance_array(photo)


@pytest.fixture
def dark_photo(astronaut: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(astronaut[:96, :128] / 255.0 * 0.2, dtype=np.float32)


def network_and_operator(model: MRVAE, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(photo).permute(2, 0, 1)[None]
    with torch.inference_mode():
        global_image = model.reconstruct_global(x)[0]
        detail = model.reconstruct_detail(x, global_image)
    return (detail[0].permute(1, 2, 0).numpy(), global_image[0].clamp(0, 1).permute(1, 2, 0)
            .numpy())


@pytest.mark.parametrize("kind", ["affine", "curves"])
def test_constant_strengths_blend_the_network_and_the_operator(kind: str,
                                                               dark_photo: np.ndarray) -> None:
    model = operator_model(kind)
    network, operator = network_and_operator(model, dark_photo)
    assert np.abs(network - operator).mean() > 0.01  # DR does something here
    settings = {"global_size": 1000, "tile": 1000}
    np.testing.assert_allclose(engine_outputs(model, dark_photo, Denoise(1.0), **settings),
                               network, atol=1e-5)
    np.testing.assert_allclose(engine_outputs(model, dark_photo, Denoise(0.0), **settings),
                               operator, atol=1e-5)
    np.testing.assert_allclose(engine_outputs(model, dark_photo, Denoise(0.25), **settings),
                               operator + 0.25 * (network - operator), atol=1e-5)


def test_the_default_denoises_noisy_shadows_and_keeps_clean_grain(dark_photo: np.ndarray
                                                                   ) -> None:
    """Auto: a clean photo gets the operator's image (its own texture), the same photo with
    strong noise gets nearly all of DR's output."""
    model = operator_model()
    settings = {"global_size": 1000, "tile": 1000}
    smooth = np.ascontiguousarray(np.repeat(np.repeat(dark_photo[::8, ::8], 8, 0), 8, 1))
    network, operator = network_and_operator(model, smooth)
    auto = engine_outputs(model, smooth, Denoise(), **settings)
    np.testing.assert_allclose(auto, operator, atol=1e-5)
    noisy = np.clip(smooth + np.random.default_rng(0).normal(0, 0.08, smooth.shape), 0, 1)
    noisy = noisy.astype(np.float32)
    network, operator = network_and_operator(model, noisy)
    auto = engine_outputs(model, noisy, Denoise(), **settings)
    assert np.abs(auto - network).mean() < 0.1 * np.abs(network - operator).mean()


def test_dr_is_not_run_where_its_strength_is_zero(dark_photo: np.ndarray) -> None:
    """A tile whose strength is 0 everywhere takes the operator's image without running DR
    (a third of a tile's time): the same pixels, fewer DR calls."""
    model = operator_model()  # brightens 3x: the noise shows where it is not clipped at white
    photo = dark_photo.copy()
    photo[:, 64:] = 0.9  # the right half bright: its brightening (and amplified noise) is low
    rng = np.random.default_rng(1)
    noisy = np.clip(photo + rng.normal(0, 2 / 255, photo.shape), 0, 1).astype(np.float32)

    def count_detail_calls(denoise: Denoise) -> tuple[np.ndarray, int]:
        enhancer = Enhancer(model, "cpu", refine=None, denoise=denoise, tile=32, workers=1,
                            backend="torch-float32")
        run_detail, calls = enhancer.backend.detail, []
        enhancer.backend.detail = lambda *args: calls.append(1) or run_detail(*args)
        return enhancer.enhance_array(noisy), len(calls)

    tiles = (96 // 32) * (128 // 32)
    out, calls = count_detail_calls(Denoise())
    assert 0 < calls < tiles
    ramp = Denoise().plan(Enhancer(model, "cpu", refine=None).decide(noisy))
    assert ramp is not None and float(ramp((0, 96, 96, 128)).max()) == 0.0
    assert float(ramp((0, 96, 0, 32)).max()) > 0.0
    np.testing.assert_allclose(out, engine_outputs(model, noisy, Denoise()), atol=1e-6)
    np.testing.assert_allclose(out[:, 96:], engine_outputs(model, noisy, Denoise(0.0))[:, 96:],
                               atol=1e-6)
    assert count_detail_calls(Denoise(0.0))[1] == 0
    assert count_detail_calls(Denoise(1.0))[1] == tiles


def test_tiles_wholly_above_or_below_the_ramp_make_no_map(dark_photo: np.ndarray) -> None:
    """A tile whose amplified noise lies wholly above the ramp gets None (strength 1: DR's
    output as it is), wholly below a scalar 0; the others their map; each what the full map
    holds there."""
    model = operator_model()
    photo = dark_photo.copy()
    photo[:, 64:] = 0.9  # the right half barely brightened: its amplified noise is low
    noisy = np.clip(photo + np.random.default_rng(2).normal(0, 10 / 255, photo.shape), 0, 1)
    decided = Enhancer(model, "cpu", refine=None).decide(noisy.astype(np.float32))
    denoise = Denoise()
    ramp, noise = denoise.plan(decided), amplified_noise(decided)
    kinds = set()
    for tile in tiles(96, 128, 16, 4):
        share = ramp(tile.context)
        full = noise_ramp(upsample_region(noise, decided.size, tile.context),
                          denoise.noise_low, denoise.noise_high)
        kinds.add("none" if share is None else "map" if share.dim() else "zero")
        expected = torch.ones_like(full) if share is None else share.expand_as(full)
        torch.testing.assert_close(expected, full, atol=1e-6, rtol=0)
    assert kinds == {"none", "map"}  # the dark half wholly above, the edge and the bright half
    quiet = np.clip(photo + np.random.default_rng(2).normal(0, 2 / 255, photo.shape), 0, 1)
    quiet_ramp = denoise.plan(Enhancer(model, "cpu", refine=None).decide(
        quiet.astype(np.float32)))
    assert quiet_ramp((0, 32, 96, 128)).dim() == 0  # wholly below: a scalar 0


def test_the_ramp_follows_the_exposure(dark_photo: np.ndarray) -> None:
    """A brighter exposure amplifies the noise more: the brightening at the photo's exposure
    (``Photo.gain``, GR's image at that exposure over the input) rises, and DR's share with it."""
    model = operator_model()
    noisy = np.clip(dark_photo + np.random.default_rng(1).normal(0, 2 / 255, dark_photo.shape),
                    0, 1).astype(np.float32)
    auto = Enhancer(model, "cpu", refine=None).decide(noisy)
    brighter = auto.with_exposure(1.0)
    np.testing.assert_array_equal(auto.gain(64), auto.network_gain(64))
    assert (brighter.gain(64) > auto.gain(64)).mean() > 0.9
    box = (0, 96, 0, 128)
    assert float(Denoise().plan(brighter)(box).mean()) > float(Denoise().plan(auto)(box).mean())


@pytest.mark.parametrize("tile", [40, 23])
def test_the_ramp_is_tile_exact(dark_photo: np.ndarray, tile: int) -> None:
    model = operator_model()
    noisy = np.clip(dark_photo + np.random.default_rng(1).normal(0, 0.01, dark_photo.shape),
                    0, 1).astype(np.float32)
    whole = engine_outputs(model, noisy, Denoise(), global_size=64, tile=1000)
    tiled = engine_outputs(model, noisy, Denoise(), global_size=64, tile=tile)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_image_models_ignore_the_strength(dark_photo: np.ndarray) -> None:
    torch.manual_seed(0)
    model = create_model("tiny").eval()
    np.testing.assert_array_equal(engine_outputs(model, dark_photo, Denoise(0.0)),
                                  engine_outputs(model, dark_photo, Denoise(1.0)))


def test_settings_are_checked() -> None:
    assert parse_denoise("auto") == Denoise() and parse_denoise("0.3") == Denoise(0.3)
    for bad in ("1.5", "-0.1", "lots"):
        with pytest.raises(ValueError, match="denoise"):
            parse_denoise(bad)
    with pytest.raises(ValueError, match="ramp"):
        Denoise(noise_low=0.1, noise_high=0.05)


def test_the_command_line_refuses_a_bad_strength(tmp_path, astronaut: np.ndarray) -> None:
    import cv2

    from mrvae.apps.cli import app

    src = tmp_path / "dark.png"
    cv2.imwrite(str(src), (astronaut[:64, :64, ::-1] * 0.2).astype(np.uint8))
    result = CliRunner().invoke(app, ["enhance", str(src), "-o", str(tmp_path / "out"),
                                      "--denoise", "2"])
    assert result.exit_code != 0
    assert "--denoise" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
