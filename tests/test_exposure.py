"""The exposure control: the curve's properties, the Enhancer applying it to GR's output (which
DR follows), and ``mrvae enhance --exposure``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb
from typer.testing import CliRunner

from mrvae.apps.cli import app
from mrvae.engine.backends import TorchBackend
from mrvae.engine.decision import GlobalPass
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.exposure import KNEE, MAX_EV, apply_exposure, check_exposure
from mrvae.engine.refine import Refinement, luma
from mrvae.evaluation.metrics import clipped_fraction
from mrvae.io.decode import read_rgb
from mrvae.io.encode import write_image
from mrvae.nn.model import load

values = st.floats(1e-3, 1.0 - 1e-3)
stops = st.floats(-MAX_EV, MAX_EV)


def pixels(*levels: float) -> torch.Tensor:
    """A ``(1, 3, 1, N)`` float64 image of grey levels."""
    return torch.tensor(levels, dtype=torch.float64).view(1, 1, 1, -1).expand(1, 3, 1, -1)


@pytest.fixture(scope="module")
def dark(astronaut: np.ndarray) -> np.ndarray:
    return ((astronaut / 255.0) ** 2.5 * 0.6).astype(np.float32)


@pytest.fixture(scope="module")
def bright(astronaut: np.ndarray) -> np.ndarray:
    """A well-exposed photo with bright areas (the white suit; about 1 % already clipped)."""
    return (astronaut / 255.0).astype(np.float32)


@settings(max_examples=200, deadline=None)
@given(value=values, ev=stops, step=st.floats(1e-3, 2 * MAX_EV))
def test_exposure_rises_strictly_with_ev(value: float, ev: float, step: float) -> None:
    higher = min(MAX_EV, ev + step)
    if higher <= ev + 1e-6:  # capped at MAX_EV: no step left that a float can show
        return
    image = pixels(value)
    assert apply_exposure(image, ev)[0, 0, 0, 0] < apply_exposure(image, higher)[0, 0, 0, 0]


@settings(max_examples=100, deadline=None)
@given(low=values, high=values, ev=stops)
def test_exposure_keeps_the_order_of_values(low: float, high: float, ev: float) -> None:
    if high - low < 1e-3:
        return
    out = apply_exposure(pixels(low, high), ev)[0, 0, 0]
    assert out[0] < out[1]
    assert out[0] >= 0 and out[1] <= 1


def test_zero_is_the_identity_and_the_ends_stay() -> None:
    image = torch.rand(2, 3, 8, 8)
    assert apply_exposure(image, 0.0) is image
    ends = pixels(0.0, 1.0)
    torch.testing.assert_close(apply_exposure(ends, 2.0), ends)  # white stays white
    assert apply_exposure(ends, -1.0)[0, 0, 0, 0] == 0
    assert apply_exposure(ends, -1.0)[0, 0, 0, 1] < 1


def test_shadows_get_exactly_two_to_the_ev_in_linear_light() -> None:
    shadows = pixels(0.02, 0.1, 0.2)
    for ev in (1.0, -1.5, 2.0):
        linear = rgb_to_linear_rgb(shadows)
        assert float(linear.max()) * 2**ev < KNEE
        torch.testing.assert_close(rgb_to_linear_rgb(apply_exposure(shadows, ev)),
                                   linear * 2**ev)


def test_brightening_rolls_highlights_off_instead_of_clipping(bright: np.ndarray) -> None:
    image = torch.from_numpy(bright).permute(2, 0, 1)[None].double()
    rolled = apply_exposure(image, 1.0)[0].permute(1, 2, 0).numpy()
    plain = linear_rgb_to_rgb((rgb_to_linear_rgb(image) * 2).clamp(0, 1))  # a plain gain
    plain = plain[0].permute(1, 2, 0).numpy()
    assert rolled.mean() > bright.mean() + 0.05
    assert clipped_fraction(rolled) <= clipped_fraction(bright) + 0.02
    assert clipped_fraction(plain) > clipped_fraction(bright) + 0.15


@pytest.mark.parametrize("ev", [float("nan"), float("inf"), 3.5, -4])
def test_bad_exposures_are_refused(ev: float, tiny_weights: Path) -> None:
    with pytest.raises(ValueError, match="EV is outside"):
        check_exposure(ev)
    with pytest.raises(ValueError, match="EV is outside"):
        Enhancer(tiny_weights, "cpu", exposure=ev)
    with pytest.raises(ValueError, match="EV is outside"):
        Enhancer(tiny_weights, "cpu").with_exposure(ev)


def test_shipped_model_follows_the_exposure(dark: np.ndarray) -> None:
    for refine in ("default", None):
        options = {} if refine == "default" else {"refine": None}
        base = Enhancer("lite", "cpu", **options)
        means = [float(base.with_exposure(ev).enhance_array(dark).mean()) for ev in (-1, 0, 1)]
        assert means[0] + 0.02 < means[1] < means[2] - 0.02, (refine, means)


def test_shipped_network_adds_little_clipping_at_plus_one(bright: np.ndarray) -> None:
    raw = Enhancer("lite", "cpu", refine=None, exposure=1.0)
    out = raw.enhance_array(bright)
    assert out.mean() > bright.mean()
    assert clipped_fraction(out) <= clipped_fraction(bright) + 0.03


class GlobalThrough:
    """A tiny model's real global pass, and a DR that returns GR's image as it is: an ideal DR
    that follows GR, so the output shows exactly what the engine handed to DR."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.inner = TorchBackend(model, "cpu")
        self.device = self.inner.device

    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        return self.inner.global_image(x_small)

    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        return gr_tile.clone()


def test_the_engine_hands_the_adjusted_global_image_to_dr(tiny_weights: Path,
                                                         dark: np.ndarray) -> None:
    model = load(tiny_weights)
    base = Enhancer(model, "cpu", backend=GlobalThrough(model), refine=None, global_size=64,
                    tile=48)
    means = [float(base.with_exposure(ev).enhance_array(dark).mean()) for ev in (-1, 0, 1)]
    assert means[0] < means[1] < means[2]
    decision = base.global_pass(dark)
    expected = apply_exposure(decision.image, 1.0)
    plus_one = base.with_exposure(1.0)
    # the exposure is applied once, also to a global pass the caller supplies (a video's)
    np.testing.assert_array_equal(plus_one.enhance_array(dark, decision),
                                  plus_one.enhance_array(dark))
    np.testing.assert_array_equal(
        plus_one.enhance_array(dark, decision),
        base.enhance_array(dark, GlobalPass(decision.small, expected)))


def test_the_tiny_model_runs_at_every_exposure(tiny_weights: Path, dark: np.ndarray) -> None:
    # The untrained DR ignores GR, so only the contract is checked here (the shipped and the
    # ideal DR above check the brightness).
    for ev in (-MAX_EV, 0, MAX_EV):
        out = Enhancer(tiny_weights, "cpu", exposure=ev).enhance_array(dark)
        assert out.shape == dark.shape and out.min() >= 0 and out.max() <= 1


def test_cli_exposure(tiny_weights: Path, dark: np.ndarray, tmp_path: Path) -> None:
    source = tmp_path / "dark.png"
    write_image(source, dark)
    runner = CliRunner()
    means = []
    for ev in ("-1", "0", "+1"):
        out = tmp_path / f"ev{ev}.png"
        result = runner.invoke(app, ["enhance", str(source), "-o", str(out), "--model", "lite",
                                     "--device", "cpu", "--exposure", ev, "--no-progress"])
        assert result.exit_code == 0, result.output
        means.append(read_rgb(out).mean())
    assert means[0] < means[1] < means[2]
    result = runner.invoke(app, ["enhance", str(source), "-o", str(tmp_path / "x.png"),
                                 "--model", str(tiny_weights), "--exposure", "5"])
    assert result.exit_code == 1
    assert "exposure 5 EV is outside -3..+3" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.png").exists()


class GlobalGain(GlobalThrough):
    """GR = the input times a fixed gain (a network that lifts by ``gain``); DR follows it."""

    def __init__(self, model: torch.nn.Module, gain: float) -> None:
        super().__init__(model)
        self.gain = gain

    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        return (x_small * self.gain).clamp(0, 1)


def test_a_photo_the_network_leaves_alone_passes_through_and_still_takes_the_exposure(
        tiny_weights: Path, astronaut: np.ndarray) -> None:
    import cv2

    model = load(tiny_weights)
    # smoothed: its noise estimate is low (texture would count as noise, and noise is not kept)
    photo = cv2.GaussianBlur(np.ascontiguousarray(astronaut / 255.0, dtype=np.float32),
                             (0, 0), 2.0)
    keep = Enhancer(model, "cpu", backend=GlobalGain(model, 1.05), global_size=64)
    np.testing.assert_allclose(keep.enhance_array(photo), photo, atol=1e-6)
    means = [keep.with_exposure(ev).enhance_array(photo).mean() for ev in (-1, 0, 1)]
    assert means[0] < means[1] < means[2]
    plus_one = apply_exposure(torch.from_numpy(photo).permute(2, 0, 1)[None], 1.0)
    np.testing.assert_allclose(keep.with_exposure(1).enhance_array(photo),
                               plus_one[0].permute(1, 2, 0).numpy(), atol=1e-5)
    # a dark photo (no pure blacks) the network lifts 4x keeps the network's output
    dark = 0.03 + photo * 0.15
    lifted = Enhancer(model, "cpu", backend=GlobalGain(model, 4.0), global_size=64)
    no_keep = Enhancer(model, "cpu", backend=GlobalGain(model, 4.0), global_size=64,
                       refine=Refinement(keep=False))
    np.testing.assert_allclose(lifted.enhance_array(dark), no_keep.enhance_array(dark),
                               atol=1e-4)


def test_dark_photos_get_the_exposure_trim_on_top_of_the_asked_exposure(
        tiny_weights: Path, astronaut: np.ndarray) -> None:
    import cv2

    model = load(tiny_weights)
    # at the global size already, so the trim sees the median computed here
    photo = cv2.resize(np.ascontiguousarray(astronaut / 255.0, dtype=np.float32), (64, 64),
                       interpolation=cv2.INTER_AREA)
    defaults = Refinement()

    def outputs(rgb: np.ndarray, gain: float, ev: float, trim: float) -> list[np.ndarray]:
        """At exposure ``ev``: with the default refinement, and without the trim at ``ev`` +
        ``trim``."""
        return [Enhancer(model, "cpu", backend=GlobalGain(model, gain), global_size=64,
                         refine=refine, exposure=stops).enhance_array(rgb)
                for refine, stops in ((defaults, ev), (Refinement(trim=False), ev + trim))]

    median = float(np.median(luma(photo)))
    at_pivot = photo * (defaults.trim_pivot / median)
    np.testing.assert_allclose(*outputs(at_pivot, 4.0, 0.0, 0.0), atol=2e-3)
    # two stops darker, lifted the same 4x: as if asked for 2 * trim_per_stop more EV
    two_stops = 2 * defaults.trim_per_stop
    for ev in (-1.0, 0.5, 0.0):  # the last, 0, is compared below
        trimmed, expected = outputs(at_pivot / 4, 4.0, ev, two_stops)
        np.testing.assert_allclose(trimmed, expected, atol=2e-3)
    untrimmed = Enhancer(model, "cpu", backend=GlobalGain(model, 4.0), global_size=64,
                         refine=Refinement(trim=False)).enhance_array(at_pivot / 4)
    assert trimmed.mean() > untrimmed.mean() * 1.1
    # a photo the network barely brightens (a well-exposed one) is not trimmed, however dark
    np.testing.assert_array_equal(*outputs(at_pivot / 4, 1.05, 0.0, 0.0))
