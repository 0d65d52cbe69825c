"""ONNX export: ONNX Runtime matches PyTorch on several sizes; the CLI writes a usable file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrvae.apps.cli import app
from mrvae.nn.export import export_onnx
from mrvae.nn.model import MRVAE, from_pretrained

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SIZES = [(37, 53), (64, 64), (16, 90), (101, 40)]  # odd, multiple, minimum side, tall


@pytest.fixture(params=["tiny", "tiny_halfres", "tiny_noise"])
def model(request: pytest.FixtureRequest, tiny_weights: Path) -> MRVAE:
    """The tiny network, and the same with DR's half-resolution branch (pixel unshuffle and
    shuffle, padding odd sizes) or with its noise conditioning (windowed means)."""
    if request.param != "tiny":
        return request.getfixturevalue(request.param)
    return from_pretrained(tiny_weights)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_full_graph_matches_torch_on_several_sizes(model: MRVAE, tmp_path: Path) -> None:
    onnx_session = session(export_onnx(model, tmp_path / "full.onnx"))
    torch.manual_seed(1)
    for height, width in SIZES:
        image = torch.rand(2, 3, height, width)
        with torch.no_grad():
            expected = model(image).detail.numpy()
        (actual,) = onnx_session.run(None, {"image": image.numpy()})
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() < 1e-3, (height, width)


def test_export_leaves_the_model_in_eval_mode(model: MRVAE, tmp_path: Path) -> None:
    export_onnx(model, tmp_path / "full.onnx")
    assert not model.training
    assert not any(m.training for m in model.modules())


def test_global_and_detail_graphs_match_torch(model: MRVAE, tmp_path: Path) -> None:
    global_session = session(export_onnx(model, tmp_path / "g.onnx", graph="global"))
    detail_session = session(export_onnx(model, tmp_path / "d.onnx", graph="detail"))
    image = torch.rand(1, 3, 45, 70)
    with torch.no_grad():
        global_image = model.reconstruct_global(image)[0]
        detail = model.reconstruct_detail(image, global_image)
    (onnx_global,) = global_session.run(None, {"image": image.numpy()})
    (onnx_detail,) = detail_session.run(None, {"image": image.numpy(),
                                               "global_image": global_image.numpy()})
    assert np.abs(onnx_global - global_image.numpy()).max() < 1e-3
    assert np.abs(onnx_detail - detail.numpy()).max() < 1e-3


def test_static_export_fixes_the_input_shape(model: MRVAE, tmp_path: Path) -> None:
    path = export_onnx(model, tmp_path / "static.onnx", dynamic=False, size=(48, 32))
    assert session(path).get_inputs()[0].shape == [1, 3, 48, 32]
    dynamic = session(export_onnx(model, tmp_path / "dynamic.onnx")).get_inputs()[0].shape
    assert dynamic == ["batch", 3, "height", "width"]


def test_unknown_graph_is_refused(model: MRVAE, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown graph"):
        export_onnx(model, tmp_path / "x.onnx", graph="encoder")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_cli_export_writes_a_runnable_model(tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", "--format", "onnx", "--model", str(tiny_weights),
                                      "--dynamic", "-o", str(out)])
    assert result.exit_code == 0, result.output
    (enhanced,) = session(out).run(None, {"image": np.random.rand(1, 3, 30, 41)
                                          .astype(np.float32)})
    assert enhanced.shape == (1, 3, 30, 41)
    assert enhanced.min() >= 0.0 and enhanced.max() <= 1.0


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "tflite"], "unsupported export format"),
    (["--model", "missing.safetensors"], "no such weights file"),
    (["--graph", "encoder"], "unknown graph"),
])
def test_cli_export_bad_options_fail_with_one_line(tiny_weights: Path, tmp_path: Path,
                                                   args: list[str], message: str) -> None:
    out = tmp_path / "model.onnx"
    defaults = ["--model", str(tiny_weights)] if "--model" not in args else []
    result = CliRunner().invoke(app, ["export", "-o", str(out), *defaults, *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_onnx_backend_matches_torch_backend_through_the_engine(model: MRVAE) -> None:
    from mrvae.engine.backends import OnnxBackend
    from mrvae.engine.enhancer import Enhancer

    rgb = np.random.default_rng(0).random((70, 90, 3), dtype=np.float32)
    settings = {"tile": 32, "global_size": 48}  # several tiles and a downscaled global pass
    expected = Enhancer(model, device="cpu", **settings).enhance_array(rgb)
    onnx_engine = Enhancer(model, backend="onnx", **settings)
    assert isinstance(onnx_engine.backend, OnnxBackend)
    assert np.abs(onnx_engine.enhance_array(rgb) - expected).max() < 1e-3
    tiny = rgb[:3, :5]  # smaller than the encoder's multiple: padded before the graph
    assert np.abs(onnx_engine.enhance_array(tiny) - Enhancer(model, device="cpu")
                  .enhance_array(tiny)).max() < 1e-3


def test_onnx_backend_refuses_a_gpu(model: MRVAE) -> None:
    from mrvae.engine.backends import OnnxBackend

    with pytest.raises(ValueError, match="CPU only"):
        OnnxBackend(model, device="cuda")
