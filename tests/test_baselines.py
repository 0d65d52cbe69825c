"""Baselines: the method contract, each method's defining property, Zero-DCE loading."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mrvae.evaluation.baselines import (
    BASELINES,
    METHODS,
    MethodUnavailable,
    MrvaeSpec,
    get_method,
    parse_mrvae,
)
from mrvae.evaluation.baselines import classical as C
from mrvae.evaluation.baselines.zerodce import ZeroDCE, ZeroDCENet, load_zerodce

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLASSICAL = ("he", "clahe", "gamma", "ssr", "msrcr", "lime")


@pytest.fixture(scope="module")
def dark(astronaut: np.ndarray) -> np.ndarray:
    """The astronaut darkened (0.4 * x ** 3): float32 (128, 128, 3), mean ~0.09."""
    return (0.4 * (astronaut.astype(np.float32) / 255.0) ** 3).astype(np.float32)


@pytest.fixture(scope="module")
def zerodce_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Zero-DCE state dict with random weights, saved as the published file is."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("zerodce") / "Epoch99.pth"
    torch.save(ZeroDCENet().state_dict(), path)
    return path


def test_registry_lists_every_baseline() -> None:
    assert set(CLASSICAL) | {"zerodce"} == set(BASELINES)
    assert all(info.description for info in METHODS.values())
    with pytest.raises(ValueError, match="unknown method"):
        get_method("retinexnet")


@pytest.mark.parametrize("name", CLASSICAL)
def test_classical_method_contract(name: str, dark: np.ndarray) -> None:
    method = get_method(name)
    for img in (dark, dark[:37, :53], dark[:9, :13]):  # odd and tiny sizes
        out = method(img)
        assert out.shape == img.shape and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert method(dark).mean() > 1.8 * dark.mean()  # every baseline brightens a dark photo
    np.testing.assert_array_equal(method(dark), method(dark))  # deterministic


@pytest.mark.parametrize("name", ["he", "clahe", "gamma"])
def test_value_methods_keep_hue(name: str, dark: np.ndarray) -> None:
    out = get_method(name)(dark)
    bright = out.max(axis=2) < 0.99  # unclipped pixels keep their RGB ratios
    ratio_in = dark / np.maximum(dark.max(axis=2, keepdims=True), 1e-6)
    ratio_out = out / np.maximum(out.max(axis=2, keepdims=True), 1e-6)
    significant = bright & (dark.max(axis=2) > 0.02)
    np.testing.assert_allclose(ratio_out[significant], ratio_in[significant], atol=0.02)


def test_histogram_equalization_flattens_the_histogram(dark: np.ndarray) -> None:
    value = C.histogram_equalization(dark).max(axis=2)
    assert value.mean() == pytest.approx(0.5, abs=0.05)
    hist = np.histogram(value, bins=4, range=(0, 1))[0] / value.size
    np.testing.assert_allclose(hist, 0.25, atol=0.06)


def test_adaptive_gamma_is_a_monotonic_tone_curve(dark: np.ndarray) -> None:
    value_in, value_out = dark.max(axis=2).ravel(), C.adaptive_gamma(dark).max(axis=2).ravel()
    order = np.argsort(value_in, kind="stable")
    assert np.all(np.diff(value_out[order]) >= -1e-6)  # never swaps the lightness order
    assert np.all(value_out >= value_in - 1e-6)  # gammas below 1 only brighten


def test_clahe_raises_local_contrast(dark: np.ndarray) -> None:
    def local_std(img: np.ndarray) -> float:
        grey = img.mean(axis=2)
        mean = cv2.blur(grey, (9, 9))
        return float(np.sqrt(np.maximum(cv2.blur(grey**2, (9, 9)) - mean**2, 0)).mean())

    assert local_std(C.clahe(dark)) > 1.5 * local_std(dark)


def test_retinex_output_is_stretched(dark: np.ndarray) -> None:
    for out in (C.single_scale_retinex(dark), C.msrcr(dark)):
        assert np.quantile(out, 0.005) < 0.02 and np.quantile(out, 0.995) > 0.98


def test_wide_blur_on_a_downscaled_copy_matches_direct_blur() -> None:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((200, 300)).astype(np.float32), (0, 0), 5)
    direct = cv2.GaussianBlur(img, (0, 0), 30, borderType=cv2.BORDER_REFLECT)
    fast = C.gaussian_smooth(img, 30)
    assert np.abs(fast - direct)[30:-30, 30:-30].max() < 0.01


def test_lime_refinement_approximates_the_exact_sparse_solution(dark: np.ndarray) -> None:
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    initial = cv2.resize(dark.max(axis=2), (48, 48), interpolation=cv2.INTER_AREA).astype(float)
    alpha, eps = 0.15, 1e-3
    grad_x, grad_y = np.diff(initial, axis=1), np.diff(initial, axis=0)
    smooth_x = cv2.GaussianBlur(grad_x, (0, 0), 2, borderType=cv2.BORDER_REFLECT)
    smooth_y = cv2.GaussianBlur(grad_y, (0, 0), 2, borderType=cv2.BORDER_REFLECT)
    w_x = alpha / ((np.abs(smooth_x) + eps) * (np.abs(grad_x) + eps))
    w_y = alpha / ((np.abs(smooth_y) + eps) * (np.abs(grad_y) + eps))
    height, width = initial.shape
    # the exact 2-D system (I + alpha * sum_d D_d^T W_d D_d) t = t0, built independently
    diagonal = np.ones((height, width))
    diagonal[:, :-1] += w_x
    diagonal[:, 1:] += w_x
    diagonal[:-1] += w_y
    diagonal[1:] += w_y
    right = np.zeros((height, width))
    right[:, :-1] = -w_x
    system = sp.diags([diagonal.ravel(), right.ravel()[:-1], right.ravel()[:-1], -w_y.ravel(),
                       -w_y.ravel()], [0, 1, -1, width, -width], format="csc")
    exact = np.clip(spsolve(system, initial.ravel()).reshape(height, width), 0, 1)
    fast = C.refine_illumination(initial, alpha)
    assert np.abs(fast - exact).mean() < 0.35 * np.abs(initial - exact).mean()


def test_lime_only_brightens(dark: np.ndarray) -> None:
    out = C.lime(dark)
    assert np.all(out >= dark - 1e-6)  # the illumination map is at most 1
    # a large image is solved on a downscaled copy and gives a similar result
    big = cv2.resize(dark, (512, 512), interpolation=cv2.INTER_CUBIC)
    reduced = cv2.resize(C.lime(big, max_side=128), (128, 128), interpolation=cv2.INTER_AREA)
    full = cv2.resize(C.lime(big, max_side=512), (128, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced - full).mean() < 0.05


def test_zerodce_tiles_match_a_whole_image_pass(zerodce_weights: Path, dark: np.ndarray) -> None:
    method = ZeroDCE(zerodce_weights, tile=24)  # 40 x 56 px -> 2 x 3 tiles with halos
    crop = np.ascontiguousarray(dark[:40, :56])
    with torch.inference_mode():
        whole = method.net(torch.from_numpy(crop).permute(2, 0, 1)[None])
    expected = whole[0].clamp(0, 1).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(method(crop), expected, atol=1e-5)
    assert method(dark[:37, :53]).shape == (37, 53, 3)


def test_zerodce_curves_follow_the_definition() -> None:
    net = ZeroDCENet()
    for conv in (net.e_conv1, net.e_conv2, net.e_conv3, net.e_conv4, net.e_conv5, net.e_conv6,
                 net.e_conv7):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    torch.nn.init.constant_(net.e_conv7.bias, 0.5)  # every curve r = tanh(0.5)
    x = torch.full((1, 3, 8, 8), 0.2)
    expected = x.clone()
    for _ in range(8):
        expected = expected + np.tanh(0.5) * (expected**2 - expected)
    torch.testing.assert_close(net(x), expected)


def test_zerodce_missing_or_corrupt_weights(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MethodUnavailable, match="not found"):
        load_zerodce(tmp_path / "absent.pth")
    monkeypatch.setenv("MRVAE_ZERODCE_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(MethodUnavailable, match=r"absent\.pth"):
        get_method("zerodce")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(MethodUnavailable, match="cannot read"):
        load_zerodce(corrupt)
    wrong = tmp_path / "wrong.pth"
    torch.save({"e_conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(MethodUnavailable, match="does not match"):
        load_zerodce(wrong)


def test_zerodce_published_weights_flush_denormals_and_brighten(dark: np.ndarray) -> None:
    path = SHARED / "peers/zerodce/Epoch99.pth"
    if not path.is_file():
        pytest.skip("needs ../shared/peers/zerodce")
    net = load_zerodce(path)
    tiny = torch.finfo(torch.float32).tiny
    assert all(((p.abs() >= tiny) | (p == 0)).all() for p in net.parameters())
    out = ZeroDCE(path)(dark)
    assert out.mean() > 1.8 * dark.mean()


def test_mrvae_method_from_weights(tiny_weights: Path, dark: np.ndarray) -> None:
    out = get_method(f"mrvae:{tiny_weights}")(dark)
    assert out.shape == dark.shape and out.dtype == np.float32
    with pytest.raises(MethodUnavailable, match="mrvae:"):
        get_method("mrvae:/nonexistent/weights.safetensors")


def test_mrvae_raw_is_the_network_alone(tiny_weights: Path, dark: np.ndarray) -> None:
    from mrvae.engine.enhancer import Enhancer

    raw = get_method(f"mrvae-raw:{tiny_weights}")(dark)
    np.testing.assert_array_equal(raw, Enhancer(tiny_weights, "cpu", refine=None)
                                  .enhance_array(dark))
    assert np.abs(raw - get_method(f"mrvae:{tiny_weights}")(dark)).max() > 1e-3
    with pytest.raises(MethodUnavailable, match="mrvae-raw:"):
        get_method("mrvae-raw:/nonexistent/weights.safetensors")


def test_mrvae_names_take_an_exposure(tiny_weights: Path, dark: np.ndarray) -> None:
    from mrvae.engine.enhancer import Enhancer

    assert parse_mrvae("mrvae:lite@ev=+1") == MrvaeSpec("lite", True, 1.0)
    assert parse_mrvae("mrvae-raw:/w/a@b.safetensors@ev=-0.5") == \
        MrvaeSpec("/w/a@b.safetensors", False, -0.5)
    assert parse_mrvae("mrvae:lite") == MrvaeSpec("lite", True, 0.0)
    assert parse_mrvae("clahe") is None
    assert MrvaeSpec("lite", False, 1.0).label() == "mrvae-raw:lite@ev=+1"
    out = get_method(f"mrvae-raw:{tiny_weights}@ev=+1.5")(dark)
    np.testing.assert_array_equal(out, Enhancer(tiny_weights, "cpu", refine=None,
                                                exposure=1.5).enhance_array(dark))
    for bad in ("mrvae:lite@ev=4", "mrvae:lite@ev=bright", "mrvae:lite@ev="):
        with pytest.raises(ValueError, match="bad exposure"):
            get_method(bad)


def test_mrvae_names_take_a_backend(tiny_weights: Path, dark: np.ndarray) -> None:
    """``@backend=`` picks the engine's backend (either order with ``@ev=``); labels name it
    only when it is not the default."""
    from mrvae.engine.enhancer import Enhancer

    assert parse_mrvae("mrvae:lite@backend=torch-float32") == \
        MrvaeSpec("lite", True, 0.0, "torch-float32")
    assert parse_mrvae("mrvae:/w/a@b@backend=onnx@ev=+1") == \
        MrvaeSpec("/w/a@b", True, 1.0, "onnx")
    assert parse_mrvae("mrvae-raw:lite@ev=-1@backend=torch-float32") == \
        MrvaeSpec("lite", False, -1.0, "torch-float32")
    assert MrvaeSpec("lite", True, 1.0, "torch-float32").label() == \
        "mrvae:lite@ev=+1@backend=torch-float32"
    assert MrvaeSpec("lite").label() == "mrvae:lite"
    exact = get_method(f"mrvae:{tiny_weights}@backend=torch-float32")(dark)
    np.testing.assert_array_equal(exact, Enhancer(tiny_weights, "cpu", refine={},
                                                  backend="torch-float32").enhance_array(dark))
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        get_method("mrvae:lite@backend=tensorrt")
