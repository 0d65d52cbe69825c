"""The enhancement engine: tiling, the global pass, the Python API and file enhancement."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms
from torch import nn

import mrvae
from mrvae.engine.backends import MaxPReLU, TorchBackend
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.refine import Refinement
from mrvae.engine.tiling import (
    global_size_for,
    receptive_radius,
    region_window,
    tiles,
    upsample_region,
    upsample_rows,
)
from mrvae.io.decode import read_image
from mrvae.io.encode import write_image
from mrvae.io.pixels import ImageReadError
from mrvae.nn.model import MRVAE, WeightsError, create_model, from_pretrained


@pytest.fixture(scope="module")
def tiny(tiny_weights: Path) -> MRVAE:
    return from_pretrained(tiny_weights)


# Tiling tests compare tiles with the whole image to 1e-5: in float32, whose convolutions round
# alike for any tile (bfloat16's differ by up to 1e-4 between tile shapes).
EXACT = {"backend": "torch-float32"}


@pytest.fixture(scope="module")
def enhancer(tiny: MRVAE) -> Enhancer:
    return Enhancer(tiny, device="cpu", tile=64, global_size=48)


@pytest.fixture(scope="module")
def photo(astronaut: np.ndarray) -> np.ndarray:
    """A dark, non-square float photo larger than the test tile."""
    return np.ascontiguousarray(astronaut[:100, :] / 255.0 * 0.3, dtype=np.float32)


class SpyBackend(TorchBackend):
    """Records the sizes the engine asks for."""

    def __init__(self, model: MRVAE) -> None:
        super().__init__(model, "cpu")
        self.global_sizes: list[tuple[int, int]] = []
        self.tile_sizes: list[tuple[int, int]] = []

    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        self.global_sizes.append(tuple(x_small.shape[-2:]))
        return super().global_image(x_small)

    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        assert x_tile.shape == gr_tile.shape
        self.tile_sizes.append(tuple(x_tile.shape[-2:]))
        return super().detail(x_tile, gr_tile)


# --- the engine -----------------------------------------------------------------------------


@pytest.mark.parametrize("refine", [Refinement(), Refinement(detail=1.0),
                                    Refinement(detail=1.0, tone=False, keep=False), None],
                         ids=["refined", "with-detail", "detail-only", "raw"])
def test_tiled_matches_untiled(tiny: MRVAE, photo: np.ndarray, refine: Refinement | None
                               ) -> None:
    untiled = Enhancer(tiny, "cpu", tile=1000, global_size=48, **EXACT, refine=refine)
    tiled = Enhancer(tiny, "cpu", tile=40, global_size=48, **EXACT, refine=refine)
    np.testing.assert_allclose(tiled.enhance_array(photo), untiled.enhance_array(photo),
                               atol=1e-5)


@pytest.mark.parametrize("tile", [40, 23, 17])
def test_tiled_matches_untiled_with_the_half_resolution_branch(
        tiny_halfres: MRVAE, photo: np.ndarray, tile: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiles start at even offsets, so the branch's 2x2 blocks fall where they fall on the whole
    image; from odd offsets they would not."""
    untiled = Enhancer(tiny_halfres, "cpu", tile=1000, global_size=48, **EXACT).enhance_array(photo)
    tiled = Enhancer(tiny_halfres, "cpu", tile=tile, global_size=48, **EXACT).enhance_array(photo)
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)
    engine = importlib.import_module("mrvae.engine.enhancer")
    monkeypatch.setattr(engine, "tile_alignment", lambda model: 1)
    unaligned = Enhancer(tiny_halfres, "cpu", tile=tile, global_size=48, **EXACT
                         ).enhance_array(photo)
    assert np.abs(unaligned - untiled).max() > 1e-4


@pytest.mark.parametrize("tile", [40, 23])
def test_tiled_matches_untiled_with_noise_conditioning(tiny_noise: MRVAE, photo: np.ndarray,
                                                       tile: int) -> None:
    untiled = Enhancer(tiny_noise, "cpu", tile=1000, global_size=48, **EXACT).enhance_array(photo)
    tiled = Enhancer(tiny_noise, "cpu", tile=tile, global_size=48, **EXACT).enhance_array(photo)
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)


def test_without_context_tiles_would_show_seams(tiny: MRVAE, photo: np.ndarray) -> None:
    untiled = Enhancer(tiny, "cpu", tile=1000, global_size=48, refine=None).enhance_array(photo)
    no_context = Enhancer(tiny, "cpu", tile=40, overlap=0, global_size=48, refine=None)
    assert np.abs(no_context.enhance_array(photo) - untiled).max() > 1e-3


def test_refinement_changes_the_network_output(tiny: MRVAE, photo: np.ndarray) -> None:
    raw = Enhancer(tiny, "cpu", global_size=48, refine=None).enhance_array(photo)
    # the keep step alone, with thresholds around the ~2.5x this network brightens the photo by
    keep_only = Refinement(tone=False, dark_keep_low=2.0, dark_keep_high=4.0)
    for refine in (Refinement(), Refinement(detail=1.0, tone=False, keep=False),
                   Refinement(keep=False), keep_only):
        refined = Enhancer(tiny, "cpu", global_size=48, refine=refine).enhance_array(photo)
        assert np.abs(refined - raw).mean() > 1e-5  # each step is wired in
        assert refined.min() >= 0 and refined.max() <= 1


def test_untiled_equals_the_models_forward(tiny: MRVAE, photo: np.ndarray) -> None:
    out = Enhancer(tiny, "cpu", tile=1000, global_size=64, refine=None,
                   backend="torch-float32").enhance_array(photo)
    x = torch.from_numpy(photo).permute(2, 0, 1).unsqueeze(0)
    with torch.inference_mode():
        expected = tiny(x, global_scale=64 / 128).detail[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_global_pass_runs_once_on_a_downscaled_copy(tiny: MRVAE, photo: np.ndarray) -> None:
    spy = SpyBackend(tiny)
    Enhancer(tiny, tile=32, global_size=48, backend=spy).enhance_array(photo)
    assert spy.global_sizes == [(38, 48)]
    assert len(spy.tile_sizes) == 4 * 4
    limit = 32 + 2 * (receptive_radius(tiny) + Refinement(detail=1.0).detail_radius)
    assert max(max(size) for size in spy.tile_sizes) <= limit


def test_tile_memory_does_not_grow_with_the_image(tiny: MRVAE) -> None:
    limit = (32 + 2 * (receptive_radius(tiny) + Refinement(detail=1.0).detail_radius)) ** 2
    for side in (70, 150):
        spy = SpyBackend(tiny)
        Enhancer(tiny, tile=32, global_size=48, backend=spy).enhance_array(
            np.full((side, side, 3), 0.2, np.float32))
        assert max(h * w for h, w in spy.tile_sizes) <= limit
        assert max(spy.global_sizes[0]) == 48


def test_parallel_tiles_give_the_same_result(tiny: MRVAE, photo: np.ndarray) -> None:
    callers = torch.get_num_threads()
    try:
        # one thread, as each parallel worker uses (an earlier train() may have left another
        # count, and convolutions round differently with another thread count)
        torch.set_num_threads(1)
        serial = Enhancer(tiny, "cpu", tile=40, global_size=48, workers=1).enhance_array(photo)
        parallel = Enhancer(tiny, "cpu", tile=40, global_size=48, workers=3)
        assert parallel.workers == 3
        torch.set_num_threads(2)  # a count the workers (one thread each) would change
        np.testing.assert_array_equal(parallel.enhance_array(photo), serial)
        assert torch.get_num_threads() == 2  # the caller's thread count is left alone
    finally:
        torch.set_num_threads(callers)


def test_dr_in_bfloat16_stays_close_to_float32(tiny: MRVAE, photo: np.ndarray) -> None:
    """DR in bfloat16 (the default on CPUs that compute it natively) but for its stem and its
    last convolution, which reads float32, and GR's decoder but not its head: the output moves
    by a fraction of an 8-bit level."""
    exact = Enhancer(tiny, "cpu", tile=40, global_size=48, backend="torch-float32")
    assert not exact.backend.bfloat16
    low = Enhancer(tiny, "cpu", tile=40, global_size=48,
                   backend=TorchBackend(tiny, "cpu", bfloat16=True))
    detail = low.backend.model.detail_reconstruction
    assert detail.blocks[0].body[0].weight.dtype == torch.bfloat16
    assert detail.head[0].weight.dtype == torch.bfloat16
    assert detail.head[-1].weight.dtype == torch.float32
    stem = low.backend.detail_stem  # DR's copy: the global pass keeps the float32 encoder
    assert stem[0].weight.dtype == torch.float32 and stem[-2].weight.dtype == torch.bfloat16
    assert all(conv.weight.dtype == torch.float32
               for conv in low.backend.model.encoder.stages[0] if isinstance(conv, nn.Conv2d))
    decoder = low.backend.model.global_reconstruction
    assert decoder.ups[0][0].weight.dtype == torch.bfloat16
    assert decoder.to_rgb.weight.dtype == torch.float32
    tiled = low.enhance_array(photo)
    difference = np.abs(tiled - exact.enhance_array(photo)) * 255
    assert 0 < difference.mean() < 0.05 and difference.max() < 0.5
    untiled = Enhancer(tiny, "cpu", tile=1000, global_size=48, backend=low.backend)
    assert np.abs(untiled.enhance_array(photo) - tiled).max() * 255 < 0.1  # no seams


def test_the_callers_model_is_not_modified(photo: np.ndarray) -> None:
    torch.manual_seed(0)
    model = create_model("tiny").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Enhancer(model, "cpu", tile=40).enhance_array(photo)
    assert model.training
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_small_images_are_never_upscaled_for_the_global_pass() -> None:
    assert global_size_for(3, 5, 512) == (3, 5)
    assert global_size_for(4000, 3000, 512) == (512, 384)
    assert global_size_for(10000, 1, 512) == (512, 1)


@pytest.mark.parametrize("height, width, tile, overlap, align", [
    (101, 67, 30, 5, 1), (10, 10, 30, 5, 1), (100, 100, 100, 6, 1), (7, 500, 3, 8, 1),
    (3000, 4000, 512, 8, 1), (101, 67, 30, 5, 2), (7, 501, 3, 8, 2), (3001, 4000, 512, 21, 2),
    (99, 99, 10, 3, 4)])
def test_tiles_cover_the_image_once_with_enough_context(height: int, width: int, tile: int,
                                                        overlap: int, align: int) -> None:
    covered = np.zeros((height, width), np.uint8)
    shapes = set()
    for one in tiles(height, width, tile, overlap, align):
        y0, y1, x0, x1 = one.core
        cy0, cy1, cx0, cx1 = one.context
        assert cy0 % align == 0 and cx0 % align == 0
        covered[y0:y1, x0:x1] += 1
        assert y1 - y0 <= tile and x1 - x0 <= tile
        assert 0 <= cy0 <= max(0, y0 - overlap) and min(height, y1 + overlap) <= cy1 <= height
        assert 0 <= cx0 <= max(0, x0 - overlap) and min(width, x1 + overlap) <= cx1 <= width
        shapes.add((cy1 - cy0, cx1 - cx0))
    assert (covered == 1).all()
    assert len(shapes) == 1  # one tile shape: no allocator fragmentation, cached kernels


def test_upsample_region_matches_interpolating_the_whole_image() -> None:
    small = torch.rand(1, 3, 13, 17)
    full = F.interpolate(small, size=(100, 150), mode="bilinear", align_corners=False)
    for box in [(0, 100, 0, 150), (7, 61, 90, 150), (99, 100, 0, 1)]:
        y0, y1, x0, x1 = box
        torch.testing.assert_close(upsample_region(small, (100, 150), box),
                                   full[..., y0:y1, x0:x1], atol=1e-5, rtol=0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 300), st.integers(1, 300),
       st.data())
def test_upsample_rows_are_the_whole_map_interpolated(small_h: int, small_w: int, height: int,
                                                      width: int, data: st.DataObject) -> None:
    """Rows of a map upsampled (or shrunk) by separable steps: the values bilinear
    interpolation of the whole map has there (half-pixel centres, clamped edges)."""
    small = torch.rand(small_h, small_w, generator=torch.Generator().manual_seed(small_h))
    full = F.interpolate(small[None, None], size=(height, width), mode="bilinear",
                         align_corners=False)[0, 0]
    start = data.draw(st.integers(0, height - 1))
    stop = data.draw(st.integers(start + 1, height))
    rows = upsample_rows(small.numpy(), (height, width), start, stop)
    assert rows.shape == (stop - start, width, 1) and rows.dtype == np.float32
    np.testing.assert_allclose(rows[..., 0], full[start:stop].numpy(), atol=2e-5)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 3), st.integers(0, 40),
       st.data())
def test_region_window_bounds_what_upsample_region_reads(small_h: int, small_w: int,
                                                         grow: int, extra: int,
                                                         data: st.DataObject) -> None:
    """The window of the small map that a box's bilinear samples read: the upsampled values
    lie between its minimum and maximum (the denoising ramp skips tiles by it), and a box in
    one corner of a large image reads a small part of the map."""
    full = (small_h * 2 ** grow + extra, small_w * 2 ** grow + extra)
    y0 = data.draw(st.integers(0, full[0] - 1))
    x0 = data.draw(st.integers(0, full[1] - 1))
    box = (y0, data.draw(st.integers(y0 + 1, full[0])), x0, data.draw(st.integers(x0 + 1, full[1])))
    small = torch.rand(1, 1, small_h, small_w)
    rows, cols = region_window((small_h, small_w), full, box)
    window = small[..., rows, cols]
    values = upsample_region(small, full, box)
    assert window.numel() > 0
    assert window.min() - 1e-6 <= values.min() and values.max() <= window.max() + 1e-6
    corner_rows, corner_cols = region_window((64, 64), (4096, 4096), (0, 256, 0, 256))
    assert (corner_rows, corner_cols) == (slice(0, 5), slice(0, 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_max_prelu_is_prelu(dtype: torch.dtype) -> None:
    """max(x, a x) is PReLU for slopes up to 1, negative ones too; a slope above 1 takes
    PyTorch's PReLU in float32."""
    x = torch.randn(2, 4, 9, 7).to(dtype).contiguous(memory_format=torch.channels_last)
    for slopes in ([0.25, -0.5, 1.0, 0.0], [0.25, 1.5, 0.1, -2.0]):
        prelu = nn.PReLU(4)
        with torch.no_grad():
            prelu.weight.copy_(torch.tensor(slopes))
        expected = F.prelu(x.float(), prelu.weight.to(dtype).float()).to(dtype)
        torch.testing.assert_close(MaxPReLU(prelu.to(dtype))(x), expected, atol=0, rtol=0)
        torch.testing.assert_close(MaxPReLU(prelu.to(dtype), dtype=torch.float32)(x),
                                   expected.float() if dtype == torch.float32
                                   else F.prelu(x.float(), prelu.weight.float()),
                                   atol=0, rtol=0)


def test_receptive_radius_of_the_presets() -> None:
    # Stem: 2 convs; DR: 2 per residual block + fuse + head (3x3 each).
    assert receptive_radius(create_model("tiny")) == 2 + 2 + 2
    assert receptive_radius(create_model("lite")) == 2 + 4 + 2
    assert receptive_radius(create_model("paper")) == 2 + 10 + 2
    # the half-resolution branch: 6 convs of two-pixel steps, plus one for its 2x2 blocks
    assert receptive_radius(create_model("lite", half_width=32)) == 2 + 4 + 2 + 2 * 6 + 1
    # noise conditioning beside the stem: its 3x3 filter and a 7-pixel window
    assert receptive_radius(create_model("lite", noise_radius=7)) == 1 + 7 + 4 + 2
    assert receptive_radius(create_model("lite", noise_radius=1)) == 2 + 4 + 2


@pytest.mark.parametrize("grown", ["tiny_halfres", "tiny_noise"])
def test_receptive_radius_is_how_far_one_pixel_reaches(grown: str,
                                                       request: pytest.FixtureRequest) -> None:
    """A changed input pixel changes DR's output within the radius, and (from one of the two
    parities of the 2x2 blocks) out to it: the tiles' context is enough and not wasted."""
    model = request.getfixturevalue(grown)
    radius = receptive_radius(model)
    torch.manual_seed(0)
    low, global_image = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        base = model.reconstruct_detail(low, global_image)
        reaches = []
        for at in (31, 32):
            bumped = low.clone()
            bumped[..., at, at] += 0.5
            changed = (model.reconstruct_detail(bumped, global_image) - base
                       ).abs().amax(dim=1)[0] > 1e-7
            rows, cols = torch.nonzero(changed, as_tuple=True)
            reaches.append(int(max((rows - at).abs().max(), (cols - at).abs().max())))
    assert max(reaches) == radius


@pytest.mark.parametrize("side", [1, 3])
def test_tiny_images(enhancer: Enhancer, side: int) -> None:
    out = enhancer.enhance_array(np.full((side, side, 3), 0.1, np.float32))
    assert out.shape == (side, side, 3) and np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


def test_bad_settings_and_devices(tiny: MRVAE) -> None:
    with pytest.raises(ValueError, match="bad settings"):
        Enhancer(tiny, "cpu", tile=0)
    with pytest.raises(ValueError, match="unknown backend"):
        Enhancer(tiny, "cpu", backend="tensorrt")
    with pytest.raises(ValueError, match="unknown device"):
        Enhancer(tiny, "tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            Enhancer(tiny, "cuda")


def test_bad_weights_are_refused(tmp_path: Path, tiny_weights: Path) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    corrupt.with_suffix(".json").write_text(tiny_weights.with_suffix(".json").read_text())
    with pytest.raises(WeightsError, match="corrupt"):
        Enhancer(corrupt)
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(tiny_weights.read_bytes())
    wrong.with_suffix(".json").write_text('{"config": {"widths": [4, 8], "latent_dim": 8}}')
    with pytest.raises(WeightsError, match="do not match"):
        Enhancer(wrong)


def test_default_model_without_shipped_weights_says_so(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mrvae.nn.model.WEIGHTS_DIR", tmp_path)  # an install without weights
    with pytest.raises(WeightsError, match="no trained weights are shipped for preset 'bilateral'"):
        Enhancer()


# --- the Python API -------------------------------------------------------------------------


def test_uint8_uint16_and_float_arrays_keep_their_type(enhancer: Enhancer,
                                                       photo: np.ndarray) -> None:
    expected = enhancer.enhance_array(photo)
    for dtype, scale in ((np.uint8, 255), (np.uint16, 65535)):
        image = np.round(photo * scale).astype(dtype)
        out = enhancer(image)
        assert out.dtype == dtype and out.shape == image.shape
        # the same pixels as float give the same result, to the output's rounding
        same = enhancer.enhance_array((image / scale).astype(np.float32))
        assert np.abs(out / scale - same).max() <= 0.5 / scale + 1e-6
    out64 = enhancer(photo.astype(np.float64))
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, expected, atol=1e-6)


def test_gray_in_gray_out(enhancer: Enhancer, photo: np.ndarray) -> None:
    gray = photo.mean(axis=2)
    out = enhancer(gray)
    assert out.shape == gray.shape and out.dtype == gray.dtype
    pil = enhancer(Image.fromarray(np.round(gray * 255).astype(np.uint8)))
    assert pil.mode == "L" and pil.size == (gray.shape[1], gray.shape[0])


def test_alpha_passes_through_untouched(enhancer: Enhancer, photo: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    rgba = np.concatenate([np.round(photo * 255), rng.integers(0, 256, (*photo.shape[:2], 1))],
                          axis=2).astype(np.uint8)
    out = enhancer(rgba)
    np.testing.assert_array_equal(out[:, :, 3], rgba[:, :, 3])
    np.testing.assert_array_equal(out[:, :, :3], enhancer(rgba[:, :, :3]))
    pil = enhancer(Image.fromarray(rgba))
    assert pil.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(pil)[:, :, 3], rgba[:, :, 3])


def test_pil_palette_and_16bit(enhancer: Enhancer, photo: np.ndarray) -> None:
    rgb = Image.fromarray(np.round(photo * 255).astype(np.uint8))
    assert enhancer(rgb).mode == "RGB"
    assert enhancer(rgb.convert("P")).mode == "RGB"
    deep = Image.fromarray(np.round(photo[:, :, 0] * 65535).astype(np.uint16))
    assert enhancer(deep).mode.startswith("I;16")


def test_tensors_single_and_batched(enhancer: Enhancer, photo: np.ndarray) -> None:
    one = torch.from_numpy(photo).permute(2, 0, 1)
    out = enhancer(one)
    assert out.shape == one.shape and out.dtype == one.dtype
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), enhancer.enhance_array(photo),
                               atol=1e-6)
    batch = torch.stack([one, one.flip(-1)])
    out_batch = enhancer(batch)
    assert out_batch.shape == batch.shape
    torch.testing.assert_close(out_batch[0], out)
    assert enhancer(one.to(torch.bfloat16)).dtype == torch.bfloat16


def test_unsupported_inputs(enhancer: Enhancer) -> None:
    with pytest.raises(TypeError, match="cannot enhance a list"):
        enhancer([1, 2, 3])
    with pytest.raises(ValueError, match="shape"):
        enhancer(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="unsupported pixel type"):
        enhancer(np.zeros((4, 4, 3), np.int64))


def test_one_call_function_caches_the_enhancer(tiny_weights: Path, photo: np.ndarray) -> None:
    from mrvae.engine.enhancer import _cached_enhancer

    image = np.round(photo * 255).astype(np.uint8)
    first = mrvae.enhance(image, model=tiny_weights, device="cpu", tile=64)
    hits = _cached_enhancer.cache_info().hits
    second = mrvae.enhance(image, model=tiny_weights, device="cpu", tile=64)
    assert _cached_enhancer.cache_info().hits == hits + 1
    np.testing.assert_array_equal(first, second)
    assert isinstance(mrvae.Enhancer(tiny_weights, "cpu"), Enhancer)
    assert mrvae.Refinement is Refinement and mrvae.Enhancer(tiny_weights).refine == Refinement()
    # a change of the model's refinement, given as a mapping, is cached too
    detail = mrvae.enhance(image, model=tiny_weights, device="cpu", refine={"detail": 1.0})
    hits = _cached_enhancer.cache_info().hits
    again = mrvae.enhance(image, model=tiny_weights, device="cpu", refine={"detail": 1.0})
    assert _cached_enhancer.cache_info().hits == hits + 1
    np.testing.assert_array_equal(detail, again)


# --- files ----------------------------------------------------------------------------------


def test_enhance_file_keeps_depth_alpha_and_metadata(tmp_path: Path, enhancer: Enhancer,
                                                     photo: np.ndarray) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    alpha = np.linspace(0, 1, photo.shape[0] * photo.shape[1], dtype=np.float32).reshape(
        photo.shape[:2])
    src = write_image(tmp_path / "in.png", photo, 16, alpha, exif=exif.tobytes(), icc=icc)
    dst = tmp_path / "out.png"
    result = enhancer.enhance_file(src, dst)
    out = read_image(dst)
    assert out.bit_depth == 16 and out.icc_profile == icc and b"TestCam" in out.exif
    np.testing.assert_array_equal(out.alpha, read_image(src).alpha)
    np.testing.assert_allclose(out.pixels, result.pixels, atol=1 / 65535)
    np.testing.assert_allclose(out.pixels, enhancer.enhance_array(read_image(src).pixels),
                               atol=1 / 65535)


def test_enhance_file_gray_jpeg_and_orientation(tmp_path: Path, enhancer: Enhancer,
                                                photo: np.ndarray) -> None:
    src = tmp_path / "gray.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.round(photo.mean(axis=2) * 255).astype(np.uint8)).save(
        src, exif=exif.tobytes())
    dst = tmp_path / "gray_out.jpg"
    enhancer.enhance_file(src, dst, quality=80)
    out = read_image(dst)
    assert out.grayscale and out.pixels.shape == (photo.shape[1], photo.shape[0], 1)
    with Image.open(dst) as saved:
        assert saved.getexif().get(0x0112, 1) == 1


def test_enhance_file_refuses_to_overwrite(tmp_path: Path, enhancer: Enhancer,
                                           photo: np.ndarray) -> None:
    src = write_image(tmp_path / "in.png", photo)
    dst = tmp_path / "out.png"
    dst.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        enhancer.enhance_file(src, dst)
    assert dst.read_bytes() == b"keep me"
    enhancer.enhance_file(src, dst, overwrite=True)
    assert read_image(dst).pixels.shape == photo.shape


def test_enhance_file_compare_and_bad_source(tmp_path: Path, enhancer: Enhancer,
                                             photo: np.ndarray) -> None:
    src = write_image(tmp_path / "in.png", photo)
    compare = tmp_path / "cmp.png"
    enhancer.enhance_file(src, tmp_path / "out.png", compare=compare)
    side = read_image(compare).pixels
    assert side.shape == (photo.shape[0], 2 * photo.shape[1], 3)
    np.testing.assert_allclose(side[:, : photo.shape[1]], photo, atol=1 / 255)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        enhancer.enhance_file(bad, tmp_path / "bad_out.png")
    assert not (tmp_path / "bad_out.png").exists()
