"""GR's operators (model v3, ``operator="curves"`` and ``"affine"``): identity at
initialisation, bounded (the curves also monotone) by construction, tiles sliced as the whole
image, trainable, run by the engine at full resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from mrvae.apps.cli import app
from mrvae.nn.bilateral import affine_operator, grey_ramp, slice_bilateral
from mrvae.nn.losses import LossConfig, mrvae_loss, order_reversal
from mrvae.nn.model import MRVAE, PRESETS, create_model, from_pretrained
from mrvae.nn.operator import monotone_knots, piecewise_linear, position_grid, slice_grid


@pytest.fixture
def curves() -> MRVAE:
    torch.manual_seed(0)
    return create_model("tiny", operator="curves", grid_size=4, curve_knots=8,
                        global_colour=True).eval()


@pytest.fixture
def affine() -> MRVAE:
    torch.manual_seed(0)
    return create_model("tiny", operator="affine", grid_size=4, curve_knots=8, grid_depth=3,
                        global_colour=True).eval()


@pytest.fixture(params=["curves", "affine"])
def operator_model(request: pytest.FixtureRequest) -> MRVAE:
    """Each kind of operator model in turn."""
    return request.getfixturevalue(request.param)


def randomise(model: MRVAE, scale: float = 3.0) -> MRVAE:
    """Large random weights in the operator's zero-initialised layers and the guide."""
    gr = model.global_reconstruction
    with torch.no_grad():
        for parameter in (gr.head.local[-1].weight, gr.head.local[-1].bias,
                          gr.head.scene[-1].weight, *gr.guide.parameters()):
            parameter.normal_(0.0, scale)
    return model


def random_operator(model: MRVAE, batch: int = 2) -> torch.Tensor:
    """A random operator of the model's kind and grid."""
    config = model.config
    if config.operator == "affine":
        logits = 0.5 * torch.randn(batch, 12 * config.grid_depth, config.grid_size,
                                   config.grid_size)
        return affine_operator(logits, config.grid_depth)
    return monotone_knots(3 * torch.randn(batch, 3, config.curve_knots, config.grid_size,
                                          config.grid_size), dim=2)


def test_knots_are_monotone_from_zero_to_one() -> None:
    knots = monotone_knots(10 * torch.randn(5, 3, 7), dim=2)
    assert knots.shape == (5, 3, 8)
    assert (knots[..., 0] == 0).all() and torch.allclose(knots[..., -1], torch.ones(5, 3))
    assert (knots.diff(dim=2) >= 0).all()
    identity = monotone_knots(torch.zeros(1, 1, 4), dim=2)
    torch.testing.assert_close(identity, torch.linspace(0, 1, 5).view(1, 1, 5))


def test_piecewise_linear_interpolates_the_knots() -> None:
    knots = torch.tensor([0.0, 0.5, 0.6, 1.0]).view(1, 1, 4, 1, 1)
    t = torch.tensor([0.0, 1 / 6, 1 / 3, 0.5, 2 / 3, 1.0, -1.0, 2.0]).view(1, 1, 1, 8)
    expected = torch.tensor([0.0, 0.25, 0.5, 0.55, 0.6, 1.0, 0.0, 1.0]).view(1, 1, 1, 8)
    torch.testing.assert_close(piecewise_linear(knots, t), expected)


@pytest.mark.parametrize("global_scale", [1.0, 0.5])
def test_untrained_operator_is_the_identity(operator_model: MRVAE, global_scale: float) -> None:
    low = torch.rand(2, 3, 23, 37)
    with torch.no_grad():
        out = operator_model(low, global_scale=global_scale)
        operator = operator_model.global_operator(low)[0]
    torch.testing.assert_close(out.global_image, low, atol=1e-6, rtol=0)
    expected = (2, 3, 9, 4, 4) if operator_model.config.operator == "curves" else (2, 12, 3, 4, 4)
    assert operator.shape == expected


def test_output_is_bounded(operator_model: MRVAE) -> None:
    randomise(operator_model)
    extreme = torch.cat([10 * torch.randn(2, 3, 20, 24), torch.zeros(1, 3, 20, 24),
                         torch.ones(1, 3, 20, 24)])
    with torch.no_grad():
        global_image = operator_model(extreme).global_image
    assert global_image.min() >= 0 and global_image.max() <= 1
    assert global_image.std() > 0.05  # not the trivial bound of a constant output


def test_curves_keep_black_and_white(curves: MRVAE) -> None:
    randomise(curves)
    extreme = torch.cat([torch.zeros(1, 3, 20, 24), torch.ones(1, 3, 20, 24)])
    with torch.no_grad():
        global_image = curves(extreme).global_image
    assert (global_image[0] == 0).all()
    torch.testing.assert_close(global_image[1], torch.ones(3, 20, 24))


def test_each_channel_is_monotone_in_its_own_intensity_only(curves: MRVAE) -> None:
    """At every pixel, raising one channel never lowers that output channel and leaves the
    other two alone (the operator and the pixel's position fixed)."""
    randomise(curves)
    torch.manual_seed(1)
    base = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        operator = curves.global_operator(base)[0]
        for channel in range(3):
            ramp = base.repeat(33, 1, 1, 1)
            ramp[:, channel] = torch.linspace(0, 1, 33).view(33, 1, 1)
            out = curves.apply_operator(operator.expand(33, -1, -1, -1, -1), ramp)
            assert (out[:, channel].diff(dim=0) >= -1e-6).all()
            others = [c for c in range(3) if c != channel]
            assert (out[:, others] == out[:1, others]).all()


@pytest.mark.parametrize(("top", "left", "height", "width"),
                         [(0, 0, 37, 53), (5, 11, 16, 20), (21, 0, 16, 53), (36, 52, 1, 1)])
def test_a_tile_sliced_with_its_box_equals_the_whole_image(operator_model: MRVAE, top: int,
                                                           left: int, height: int,
                                                           width: int) -> None:
    randomise(operator_model)
    image = torch.rand(2, 3, 37, 53)
    operator = random_operator(operator_model)
    with torch.no_grad():
        whole = operator_model.apply_operator(operator, image)
        tile = operator_model.apply_operator(operator,
                                             image[..., top:top + height, left:left + width],
                                             box=(top, left), full_size=(37, 53))
    torch.testing.assert_close(tile, whole[..., top:top + height, left:left + width],
                               atol=1e-6, rtol=0)


def test_slicing_reads_each_cell_at_its_centre() -> None:
    """A 2 x 2 grid on a 4 x 4 image: pixels 0 and 3 lie beyond the centres (clamped), 1 and 2
    between them (the cells' mean)."""
    operator = torch.arange(4.0).view(1, 1, 1, 2, 2)
    sliced = slice_grid(operator, (4, 4))[0, 0, 0]
    assert sliced[0, 0] == 0 and sliced[0, 3] == 1 and sliced[3, 0] == 2 and sliced[3, 3] == 3
    torch.testing.assert_close(sliced[1:3, 1:3], torch.full((2, 2), 1.5) + torch.tensor(
        [[-0.75, -0.25], [0.25, 0.75]]))


def test_bilateral_slicing_reads_each_depth_cell_at_its_centre() -> None:
    """One spatial cell (2 x 2, all equal) and 4 depth cells holding 0, 1, 2, 3: a guide at
    cell k's centre (k + 0.5) / 4 reads k, between two centres their mean, beyond the first
    and last centres the border cell."""
    operator = torch.arange(4.0).view(1, 1, 4, 1, 1).expand(1, 12, 4, 2, 2)
    guide = torch.tensor([0.125, 0.375, 0.625, 0.875, 0.25, 0.5, 0.0, 1.0]).view(1, 1, 1, 8)
    sliced = slice_bilateral(operator, guide)[0, 0, 0]
    torch.testing.assert_close(sliced, torch.tensor([0.0, 1.0, 2.0, 3.0, 0.5, 1.5, 0.0, 3.0]))


@pytest.mark.parametrize(("depth", "cells", "box"),
                         [(1, 2, (0, 0)), (2, 3, (4, 7)), (5, 4, (0, 9)), (8, 16, (30, 2))])
def test_bilateral_slicing_is_trilinear_interpolation(depth: int, cells: int,
                                                      box: tuple[int, int]) -> None:
    """The 2D atlas read gives the values and gradients of a trilinear read of the grid
    (PyTorch's 3D ``grid_sample``), guides beyond the first and last depth centres included."""
    torch.manual_seed(depth)
    operator = torch.randn(2, 12, depth, cells, cells, requires_grad=True)
    guide = torch.rand(2, 1, 19, 23).mul(1.2).sub(0.1).clamp(0.0, 1.0).requires_grad_()
    full_size = (box[0] + 19 + 5, box[1] + 23)
    sliced = slice_bilateral(operator, guide, box, full_size)

    plane = position_grid((19, 23), box, full_size, cells, 2, operator)
    z = (guide[:, 0] * depth - 0.5) * (2.0 / max(depth - 1, 1)) - 1.0
    grid = torch.cat([plane, z.unsqueeze(-1)], dim=-1).unsqueeze(1)
    expected = torch.nn.functional.grid_sample(operator, grid, mode="bilinear",
                                               padding_mode="border", align_corners=True)[:, :, 0]
    torch.testing.assert_close(sliced, expected, atol=2e-5, rtol=0)
    weights = torch.randn_like(expected)
    got = torch.autograd.grad((sliced * weights).sum(), (operator, guide))
    want = torch.autograd.grad((expected * weights).sum(), (operator, guide))
    for mine, reference in zip(got, want, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-3, rtol=1e-4)


def test_affine_transforms_mix_the_channels() -> None:
    """A transform that swaps red and blue and adds 0.1 to green does exactly that."""
    logits = torch.zeros(1, 12, 1, 1)
    swap = torch.tensor([[0.0, 0, 1, 0], [0, 1, 0, 0.1], [1, 0, 0, 0]])
    logits[0, :, 0, 0] = swap.flatten() - torch.eye(3, 4).flatten()
    operator = affine_operator(logits, depth=1).expand(1, 12, 1, 2, 2)
    model = create_model("tiny", operator="affine", grid_size=2, grid_depth=1)
    image = torch.rand(1, 3, 5, 6) * 0.8
    with torch.no_grad():
        out = model.apply_operator(operator, image)
    expected = torch.stack([image[:, 2], image[:, 1] + 0.1, image[:, 0]], dim=1)
    torch.testing.assert_close(out, expected)


def test_the_grey_ramp_is_what_the_operator_makes_of_grey_pixels(affine: MRVAE) -> None:
    """With the same transforms in every cell every pixel reads them, so the ramp must equal
    the operator applied to an image of the same grey levels."""
    model = randomise(create_model("tiny", operator="affine", grid_size=2, curve_knots=8,
                                   grid_depth=4, global_colour=True))
    operator = random_operator(model)[..., :1, :1].expand(-1, -1, -1, 2, 2)
    levels = torch.linspace(0.0, 1.0, 17).view(1, 1, 1, 17).expand(2, 3, 1, 17)
    with torch.no_grad():
        applied = model.apply_operator(operator, levels)[:, :, 0]  # (B, 3, 17)
        ramp = grey_ramp(operator, model.global_reconstruction.guide, levels=17)
    torch.testing.assert_close(ramp[..., 1, 0], applied)
    identity = affine_operator(torch.zeros(1, 12 * 3, 4, 4), depth=3)
    ramp = grey_ramp(identity, affine.global_reconstruction.guide, levels=5)
    torch.testing.assert_close(ramp, torch.linspace(0, 1, 5).view(1, 1, 5, 1, 1).expand(
        1, 3, 5, 4, 4))


def test_order_loss_finds_a_reversal_and_training_removes_it() -> None:
    """The top depth cell dims its pixels: brighter greys come out darker than dimmer ones.
    A few steps on the order loss alone make the operator keep the order."""
    depth = 4
    logits = torch.zeros(1, 12, depth, 2, 2)
    logits[:, :, :3] = (2 * torch.eye(3, 4) - torch.eye(3, 4)).flatten().view(1, 12, 1, 1, 1)
    logits[:, :, 3] = (0.5 * torch.eye(3, 4) - torch.eye(3, 4)).flatten().view(1, 12, 1, 1)
    logits = logits.flatten(1, 2).requires_grad_()  # gain 2 below, 0.5 in the top cell
    guide = create_model("tiny", operator="affine", grid_size=2, grid_depth=depth
                         ).global_reconstruction.guide
    optimizer = torch.optim.Adam([logits], lr=0.05)
    falls = []
    for _ in range(60):
        loss = order_reversal(grey_ramp(affine_operator(logits, depth), guide))
        falls.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert falls[0] > 0.3 and falls[-1] < 0.02 * falls[0]
    assert order_reversal(torch.linspace(0, 1, 9).view(1, 1, 9)) == 0


def test_forward_gives_the_affine_operator_s_grey_ramp(affine: MRVAE, curves: MRVAE) -> None:
    x = torch.rand(1, 3, 32, 32)
    ramp = affine(x).grey_ramp
    assert ramp is not None and ramp.shape == (1, 3, 33, 4, 4)
    assert curves(x).grey_ramp is None  # monotone by construction
    with pytest.raises(ValueError, match="affine"):
        mrvae_loss(curves(x), x, LossConfig(content_weight=0.0, order_weight=1.0))
    _, terms = mrvae_loss(affine(x), x, LossConfig(content_weight=0.0, order_weight=1.0))
    assert terms["order"] == pytest.approx(0.0, abs=1e-6)  # untrained: the identity


@pytest.mark.parametrize(("kind", "autocast"), [("curves", None), ("affine", None),
                                               ("curves", torch.bfloat16),
                                               ("affine", torch.bfloat16)])
def test_a_few_steps_reduce_the_loss(kind: str, autocast: torch.dtype | None) -> None:
    """In float32, and under the bfloat16 autocast that training uses on CPUs with AMX
    (:func:`mrvae.nn.model.mixed_precision`; emulated, so it runs on any CPU)."""
    torch.manual_seed(0)
    model = create_model("tiny", operator=kind, grid_size=4, curve_knots=8).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    high = torch.rand(4, 3, 32, 32)
    low = 0.15 * high ** 1.5  # dark, with a different tone curve
    losses = []
    for _ in range(30):
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            output = model(low, target=high)
        loss, _ = mrvae_loss(output, high, LossConfig())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_training_through_the_cli_resumes_exactly(tmp_path: Path) -> None:
    """``mrvae train`` trains the operator model (crops and the scene pass); a run stopped at
    step 2 and resumed to step 4 logs what the uninterrupted run logs."""
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for index in range(6):
        smooth = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (64, 48))
        cv2.imwrite(str(photos / f"photo{index}.png"), smooth)
    config = {"model": {"preset": "tiny", "operator": "curves", "grid_size": 4, "curve_knots": 4},
              "data": {"roots": [str(photos)], "crop": 32, "batch_size": 2, "workers": 0,
                       "val_fraction": 0.34, "val_samples": 2, "val_crop": 32},
              "scene": {"weight": 1.0, "side": 32, "batch_size": 1},
              "optim": {"schedule": "constant"}, "steps": 4, "log_interval": 1,
              "val_interval": 2, "checkpoint_interval": 2, "threads": 1, "device": "cpu"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()

    def logged(run_dir: Path) -> list[dict]:
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for args in (["--set", f"run_dir={whole}"], ["--set", f"run_dir={parts}", "--set", "steps=2"]):
        result = runner.invoke(app, ["train", "--config", str(path), "--no-progress", *args])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--resume", str(parts), "--set", "steps=4",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert logged(parts) == logged(whole)
    assert "scene" in logged(whole)[0]
    model = from_pretrained(whole / "best.safetensors")
    assert model.predicts_operator and model.config.grid_size == 4


def test_presets_keep_their_operator() -> None:
    assert PRESETS["grid"].operator == "curves"
    assert PRESETS["bilateral"].operator == "affine"
    assert all(PRESETS[name].operator == "image" for name in ("paper", "lite", "tiny"))
    with pytest.raises(ValueError, match="not an operator"):
        create_model("tiny").global_operator(torch.rand(1, 3, 8, 8))


def test_onnx_full_graph_matches_torch(curves: MRVAE, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mrvae.nn.export import export_onnx

    randomise(curves, scale=0.5)
    session = ort.InferenceSession(str(export_onnx(curves, tmp_path / "full.onnx")),
                                   providers=["CPUExecutionProvider"])
    for height, width in [(32, 48), (37, 53), (64, 21)]:
        image = torch.rand(1, 3, height, width)
        with torch.no_grad():
            expected = curves(image).detail.numpy()
        (actual,) = session.run(None, {"image": image.numpy()})
        assert np.abs(actual - expected).max() < 1e-4, (height, width)


# --- the engine runs the operator at full resolution ----------------------------------------


@pytest.fixture
def dark_photo(astronaut: np.ndarray) -> np.ndarray:
    """A dark 90 x 120 photo, float32."""
    return np.ascontiguousarray(astronaut[:90, :120] / 255.0 * 0.25, dtype=np.float32)


def test_the_engine_applies_the_operator_at_full_resolution(operator_model: MRVAE,
                                                            dark_photo: np.ndarray) -> None:
    """With the global pass on the whole photo, the engine gives the network's own output:
    GR's operator applied to every full-resolution pixel, then DR (not GR's small image
    upsampled)."""
    from mrvae.engine.denoise import Denoise
    from mrvae.engine.enhancer import Enhancer

    model = randomise(operator_model).eval()
    x = torch.from_numpy(dark_photo).permute(2, 0, 1)[None]
    with torch.inference_mode():
        expected = model.reconstruct_detail(x, model.reconstruct_global(x)[0])
    engine = Enhancer(model, "cpu", tile=1000, global_size=1000, refine=None,
                      denoise=Denoise(1.0), backend="torch-float32")
    out = engine.enhance_array(dark_photo)
    np.testing.assert_allclose(out, expected[0].permute(1, 2, 0).numpy(), atol=1e-5)
    # from a 40 px copy: the operator it predicts, applied to the full-resolution pixels
    from mrvae.nn.blocks import resize

    with torch.inference_mode():
        operator = model.global_operator(resize(x, (30, 40)))[0]
        expected = model.reconstruct_detail(x, model.apply_operator(operator, x, (0, 0),
                                                                    (90, 120)))
    engine = Enhancer(model, "cpu", tile=1000, global_size=40, refine=None,
                      denoise=Denoise(1.0), backend="torch-float32")
    np.testing.assert_allclose(engine.enhance_array(dark_photo),
                               expected[0].permute(1, 2, 0).numpy(), atol=1e-5)


@pytest.mark.parametrize("tile", [40, 23])
def test_the_operator_engine_is_tile_exact(operator_model: MRVAE, dark_photo: np.ndarray,
                                           tile: int) -> None:
    from mrvae.engine.enhancer import Enhancer

    model = randomise(operator_model).eval()
    settings = {"global_size": 48, "exposure": 0.5, "backend": "torch-float32"}  # 1e-5: float32
    untiled = Enhancer(model, "cpu", tile=1000, **settings).enhance_array(dark_photo)
    tiled = Enhancer(model, "cpu", tile=tile, **settings).enhance_array(dark_photo)
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)


def test_the_operator_s_decoder_in_bfloat16_stays_close_to_float32(operator_model: MRVAE,
                                                                   dark_photo: np.ndarray
                                                                   ) -> None:
    """An operator model's GR decoder runs in bfloat16 with DR; its head pools the
    stages over cells, so the operator moves by a fraction of an 8-bit level."""
    from mrvae.engine.backends import TorchBackend
    from mrvae.engine.enhancer import Enhancer

    model = randomise(operator_model).eval()
    low = TorchBackend(model, "cpu", bfloat16=True)
    decoder = low.model.global_reconstruction
    assert decoder.ups[0][0].weight.dtype == decoder.blocks[-1][0].weight.dtype == torch.bfloat16
    assert decoder.head.local[0].weight.dtype == torch.float32
    assert low.model.encoder.stages[-1][0].weight.dtype == torch.float32
    settings = {"tile": 48, "global_size": 64, "refine": None}
    exact = Enhancer(model, "cpu", backend="torch-float32", **settings).enhance_array(dark_photo)
    close = Enhancer(model, "cpu", backend=low, **settings).enhance_array(dark_photo)
    difference = np.abs(close - exact) * 255
    assert 0 < difference.mean() < 0.05 and difference.max() < 0.5


def test_the_onnx_backend_refuses_an_operator_model(operator_model: MRVAE) -> None:
    pytest.importorskip("onnxruntime")
    from mrvae.engine.backends import OnnxBackend

    with pytest.raises(ValueError, match="--backend torch"):
        OnnxBackend(operator_model)


def test_video_smoothing_scales_the_operator_output(operator_model: MRVAE,
                                                    dark_photo: np.ndarray) -> None:
    from mrvae.engine.backends import TorchBackend
    from mrvae.engine.decision import Photo, global_pass, global_region
    from mrvae.engine.video import smooth_global

    backend = TorchBackend(randomise(operator_model), "cpu")
    own = global_pass(backend, dark_photo, 48)
    assert own.operator is not None
    _, state = smooth_global(own, None, 0.5, scene_cut=10.0)
    brighter = global_pass(backend, np.clip(dark_photo * 1.5, 0, 1), 48)
    smoothed, _ = smooth_global(brighter, state, 0.5, scene_cut=10.0)
    assert smoothed.operator is brighter.operator and smoothed.scale is not None
    x = torch.from_numpy(np.clip(dark_photo * 1.5, 0, 1)).permute(2, 0, 1)[None]
    box = (0, 90, 0, 120)
    plain = global_region(backend, Photo(dark_photo, brighter), x, box)
    scaled = global_region(backend, Photo(dark_photo, smoothed), x, box)
    np.testing.assert_allclose(scaled, (plain * smoothed.scale).clamp(0, 1), atol=1e-6)


def test_read_curve_matches_piecewise_linear() -> None:
    from mrvae.nn.bilateral import read_curve

    knots = monotone_knots(torch.randn(1, 8), dim=1)[0].requires_grad_()
    t = torch.cat([torch.rand(1, 1, 5, 7) * 1.4 - 0.2, torch.linspace(0, 1, 9).view(1, 1, 1, 9)
                   .expand(1, 1, 5, 9)], dim=-1)
    expected = piecewise_linear(knots[None, None, :, None, None], t)
    torch.testing.assert_close(read_curve(knots, t), expected)
    read_curve(knots, t).sum().backward()
    assert knots.grad is not None and knots.grad.abs().sum() > 0
