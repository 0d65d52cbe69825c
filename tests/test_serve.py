"""The web app's API: good and bad uploads, limits, queue, timeout, temp files, a small load."""

from __future__ import annotations

import io
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient

from mrvae.apps import serve
from mrvae.apps.cli import app as cli_app
from mrvae.apps.serve import ServeConfig, create_app


def encode(pixels: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format=fmt, **options)
    return stream.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def photo_png(astronaut: np.ndarray) -> bytes:
    return encode(astronaut[:96, :80])


@pytest.fixture(scope="module")
def client(tiny_weights: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_weights)) as test_client:
        yield test_client


def post(client: TestClient, data: bytes, name: str = "photo.png", **fields: str):
    return client.post("/api/enhance", files={"file": (name, data, "application/octet-stream")},
                       data=fields)


def test_page_is_served_with_local_assets_only(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="file"' in page.text and 'id="strength"' in page.text and 'id="model"' in page.text
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "/static/app.js" in assets and "/static/style.css" in assets
    for asset in assets:
        assert not asset.startswith(("http:", "https:", "//")), asset
        if asset.startswith("/static/"):
            assert client.get(asset).status_code == 200, asset
    for path in serve.WEB_DIR.iterdir():  # no CDN anywhere in the page's files
        assert not re.search(r"https?://", path.read_text()), path.name


def test_health_models_and_openapi(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok"
    assert health["limits"]["max_upload_mb"] == ServeConfig().max_upload_mb
    models = client.get("/api/models").json()
    assert models["default"] == "tiny.safetensors"
    assert models["models"][0]["name"] == "tiny.safetensors"
    assert "/" not in str(models)  # no server paths are shown to clients
    schema = client.get("/openapi.json").json()
    assert {"/api/enhance", "/api/health", "/api/models"} <= set(schema["paths"])


def test_models_lists_presets_with_shipped_weights(tiny_weights: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_weights.with_suffix(suffix), tmp_path / f"mrvae_lite{suffix}")
    monkeypatch.setattr(serve, "shipped_weights", lambda name: tmp_path / f"mrvae_{name}"
                                                                          ".safetensors")
    with TestClient(create_app(tiny_weights)) as test_client:
        names = [m["name"] for m in test_client.get("/api/models").json()["models"]]
        assert names == ["tiny.safetensors", "lite"]
        assert post(test_client, encode(np.zeros((20, 20, 3), np.uint8)),
                    model="lite").status_code == 200


def test_enhance_png_returns_a_png_of_the_same_size(client: TestClient, photo_png: bytes) -> None:
    response = post(client, photo_png, name='dark "night".png')
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == \
        'attachment; filename="dark_night_enhanced.png"'
    image = decode(response.content)
    assert image.size == (80, 96) and image.mode == "RGB"
    original = np.asarray(decode(photo_png)).astype(int)
    assert np.abs(np.asarray(image).astype(int) - original).max() > 10  # it did change


def test_strength_blends_output_with_input(client: TestClient, photo_png: bytes) -> None:
    original = np.asarray(decode(photo_png)).astype(float)
    full = np.asarray(decode(post(client, photo_png, strength="1").content)).astype(float)
    none = np.asarray(decode(post(client, photo_png, strength="0").content)).astype(float)
    half = np.asarray(decode(post(client, photo_png, strength="0.5").content)).astype(float)
    assert np.abs(none - original).max() <= 1
    assert np.abs(half - (original + full) / 2).max() <= 1.5


def test_exposure_brightens_in_order(client: TestClient, astronaut: np.ndarray) -> None:
    dark = encode((255 * (astronaut / 255.0) ** 2.5 * 0.6).astype(np.uint8))
    means = [np.asarray(decode(post(client, dark, model="lite", exposure=ev).content)).mean()
             for ev in ("-1", "0", "1")]
    assert means[0] + 3 < means[1] < means[2] - 3


@pytest.mark.parametrize(("fmt", "mode", "media"), [
    ("JPEG", "RGB", "image/jpeg"), ("PNG", "L", "image/png"), ("PNG", "RGBA", "image/png"),
    ("WEBP", "RGB", "image/webp"), ("BMP", "RGB", "image/png"), ("TIFF", "RGB", "image/png"),
])
def test_formats_and_modes_are_kept(client: TestClient, astronaut: np.ndarray, fmt: str,
                                    mode: str, media: str) -> None:
    source = Image.fromarray(astronaut[:40, :56]).convert(mode)
    stream = io.BytesIO()
    source.save(stream, format=fmt)
    response = post(client, stream.getvalue(), name=f"x.{fmt.lower()}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media
    result = decode(response.content)
    assert result.size == (56, 40)
    assert result.mode == mode
    if mode == "RGBA":
        assert np.array_equal(np.asarray(result)[..., 3], np.asarray(source)[..., 3])


def test_sixteen_bit_png_stays_sixteen_bit(client: TestClient) -> None:
    gray16 = (np.linspace(0, 20000, 32 * 24).reshape(24, 32)).astype(np.uint16)
    response = post(client, encode(gray16))
    assert response.status_code == 200, response.text
    assert decode(response.content).mode.startswith("I")


@pytest.mark.parametrize(("data", "name", "message"), [
    (b"", "empty.png", "empty.png: empty"),
    (b"this is not an image", "notes.jpg", "notes.jpg: not"),
    (None, "cut.png", "cut.png"),  # a truncated PNG
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "header.png", "header.png"),
])
def test_bad_uploads_get_422_with_a_message(client: TestClient, photo_png: bytes,
                                            data: bytes | None, name: str, message: str) -> None:
    response = post(client, photo_png[: len(photo_png) // 2] if data is None else data, name)
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert client.get("/api/health").json()["status"] == "ok"


@pytest.mark.parametrize(("fields", "message"), [
    ({"strength": "1.5"}, "less than or equal to 1"),
    ({"strength": "bright"}, "valid number"),
    ({"exposure": "3.5"}, "less than or equal to 3"),
    ({"exposure": "-4"}, "greater than or equal to -3"),
    ({"exposure": "nan"}, "finite number"),
    ({"exposure": "+1 EV"}, "valid number"),
    ({"model": "nope"}, "unknown model 'nope'"),
])
def test_bad_options_get_422(client: TestClient, photo_png: bytes, fields: dict[str, str],
                             message: str) -> None:
    response = post(client, photo_png, **fields)
    assert response.status_code == 422
    assert message in str(response.json()["detail"])


def test_missing_file_gets_422(client: TestClient) -> None:
    response = client.post("/api/enhance", data={"strength": "1"})
    assert response.status_code == 422
    assert "file" in str(response.json()["detail"])


def test_uploads_over_the_byte_limit_get_413(tiny_weights: Path) -> None:
    config = ServeConfig(max_upload_mb=0.01)  # 10 KiB
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    with TestClient(create_app(tiny_weights, config)) as test_client:
        medium = encode(noise[:70, :70])  # over the limit, under the multipart slack
        assert config.max_upload_bytes < len(medium) < config.max_upload_bytes + 64 * 1024
        huge = encode(noise) * 4  # refused from Content-Length before the body is read
        for data in (medium, huge):
            response = post(test_client, data)
            assert response.status_code == 413
            assert "at most 0.01 MB" in response.json()["detail"]


def test_chunked_uploads_without_length_get_411(client: TestClient) -> None:
    response = client.post("/api/enhance", content=iter([b"--x\r\n", b"data"]),
                           headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 411
    assert "Content-Length" in response.json()["detail"]


def test_images_over_the_pixel_limit_get_413(tiny_weights: Path) -> None:
    with TestClient(create_app(tiny_weights, ServeConfig(max_megapixels=0.001))) as test_client:
        response = post(test_client, encode(np.zeros((40, 30, 3), np.uint8)), "big.png")
        assert response.status_code == 413
        assert response.json()["detail"] == ("big.png: 30x40 = 0.0012 megapixels; this server "
                                             "accepts at most 0.001 megapixels")


@pytest.fixture
def slow_engine(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make every enhancement wait until the returned event is set (or 5 s pass)."""
    release = threading.Event()
    real = serve.enhance_upload

    def slow(*args: object, **kwargs: object) -> tuple[bytes, str]:
        release.wait(5)
        return real(*args, **kwargs)

    monkeypatch.setattr(serve, "enhance_upload", slow)
    return release


def wait_until(condition: object, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_full_queue_gets_503_and_frees_up(tiny_weights: Path, photo_png: bytes,
                                          slow_engine: threading.Event) -> None:
    app = create_app(tiny_weights, ServeConfig(concurrency=1, queue_size=1))
    with TestClient(app) as test_client, ThreadPoolExecutor(2) as pool:
        first = [pool.submit(post, test_client, photo_png) for _ in range(2)]
        wait_until(lambda: app.state.jobs.active == 2)
        refused = post(test_client, photo_png)
        assert refused.status_code == 503
        assert "busy" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "5"
        slow_engine.set()
        assert [f.result().status_code for f in first] == [200, 200]
        wait_until(lambda: app.state.jobs.active == 0)
        assert post(test_client, photo_png).status_code == 200


def test_slow_requests_get_504_and_keep_their_slot(tiny_weights: Path, photo_png: bytes,
                                                   slow_engine: threading.Event) -> None:
    app = create_app(tiny_weights, ServeConfig(timeout_s=0.3, queue_size=0))
    with TestClient(app) as test_client:
        response = post(test_client, photo_png)
        assert response.status_code == 504
        assert "not finished within 0.3 s" in response.json()["detail"]
        assert app.state.jobs.active == 1  # the job still runs: no extra work is admitted
        assert post(test_client, photo_png).status_code == 503
        slow_engine.set()
        wait_until(lambda: app.state.jobs.active == 0)


def test_engine_errors_get_500_and_the_server_keeps_going(
        client: TestClient, photo_png: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> tuple[bytes, str]:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(serve, "enhance_upload", broken)
    response = post(client, photo_png)
    assert response.status_code == 500
    assert "out of memory" in response.json()["detail"]
    monkeypatch.undo()
    assert post(client, photo_png).status_code == 200


def test_no_file_is_left_behind(tiny_weights: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    noise = np.random.default_rng(1).integers(0, 256, (700, 600, 3), dtype=np.uint8)
    big = encode(noise)
    assert len(big) > 1024 * 1024  # Starlette spools uploads this large out of memory
    with TestClient(create_app(tiny_weights)) as test_client:
        for data in (big, b"garbage", big[:5000]):
            post(test_client, data)
    assert not list(temp.iterdir())
    assert not list(workdir.iterdir())


def test_onnx_backend_serves_the_same_pixels(client: TestClient, tiny_weights: Path,
                                             photo_png: bytes) -> None:
    pytest.importorskip("onnxruntime")
    with TestClient(create_app(tiny_weights, ServeConfig(backend="onnx"))) as onnx_client:
        assert onnx_client.get("/api/health").json()["backend"] == "onnx"
        response = post(onnx_client, photo_png)
    assert response.status_code == 200
    expected = np.asarray(decode(post(client, photo_png).content)).astype(int)
    assert np.abs(np.asarray(decode(response.content)).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("settings", [{"concurrency": 0}, {"queue_size": -1},
                                      {"timeout_s": 0}, {"max_upload_mb": -1}])
def test_bad_serve_config_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ServeConfig(**settings)  # type: ignore[arg-type]


def test_cli_serve_reports_bad_settings(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["serve", "--model", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 1
    assert "no such weights file" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "tensorrt"], "unknown backend 'tensorrt'"),
    (["--concurrency", "0"], "concurrency >= 1"),
])
def test_cli_serve_reports_bad_options(tiny_weights: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--model", str(tiny_weights), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_cli_serve_reports_a_taken_port(tiny_weights: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli_app, ["serve", "--model", str(tiny_weights),
                                              "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def rss_bytes() -> int:
    """Resident memory of this process (Linux)."""
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * 4096


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for memory")
def test_bounded_load_has_no_errors_and_no_memory_growth(tiny_weights: Path,
                                                          photo_png: bytes) -> None:
    import httpx
    import uvicorn

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(tiny_weights), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            wait_until(lambda: server.started, 20)

            def one(_: int) -> int:
                return http.post("/api/enhance", files={"file": ("p.png", photo_png)}).status_code

            with ThreadPoolExecutor(4) as pool:
                assert set(pool.map(one, range(10))) == {200}  # warm-up
                before = rss_bytes()
                statuses = list(pool.map(one, range(50)))
                growth = rss_bytes() - before
            assert statuses == [200] * 50
            assert growth < 30 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MB"
            assert http.get("/api/health").json()["jobs"]["active"] == 0
    finally:
        server.should_exit = True
        thread.join(10)
