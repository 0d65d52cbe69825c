"""Camera RAW: DNGs made here decode to linear light with the camera's white balance, get their
exposure in linear light, keep their EXIF, fail clearly when broken, and go through the CLI, the
evaluation and the server."""

from __future__ import annotations

import datetime as dt
import io
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from mrvae.apps.cli import app
from mrvae.apps.serve import create_app
from mrvae.evaluation.sets import folder_samples
from mrvae.io import raw
from mrvae.io.decode import read_image, read_image_bytes
from mrvae.io.files import list_images
from mrvae.io.pixels import ImageReadError

SHARED = Path(__file__).resolve().parents[2] / "shared"
NOISELESS = raw.Sensor(full_well=1e9, read_noise=0.0)  # shot noise ~3e-5: colours stay exact
DATE = dt.datetime(2026, 1, 2, 3, 4, 5)


def dng_of(linear: np.ndarray, sensor: raw.Sensor = NOISELESS, seed: int = 0) -> bytes:
    mosaic = raw.capture(linear, sensor, np.random.default_rng(seed))
    return raw.encode_dng(mosaic, sensor, make="TestCam", model="T1", exposure_time=1 / 30,
                          iso=3200, date=DATE)


@pytest.fixture()
def dark_dng(astronaut: np.ndarray) -> bytes:
    """The astronaut photographed 5 stops under, with sensor noise."""
    linear = raw.srgb_to_linear(astronaut[:64, :96] / 255.0) * 2.0**-5
    return dng_of(linear, raw.Sensor(), seed=1)


def test_flat_colours_decode_to_linear_light_with_the_camera_white_balance() -> None:
    linear = np.zeros((32, 48, 3), np.float32)
    linear[:, :24] = (0.20, 0.10, 0.05)
    linear[:, 24:] = (0.02, 0.04, 0.08)
    opened = raw.open_raw(dng_of(linear), "flat.dng", 10**6)
    decoded = raw.decode_linear(opened, "flat.dng").astype(np.float32) / 65535
    opened.close()
    # demosaicing blurs the edge between the halves: compare their insides
    np.testing.assert_allclose(decoded[8:24, 4:20].mean((0, 1)), (0.20, 0.10, 0.05), rtol=0.02)
    np.testing.assert_allclose(decoded[8:24, 28:44].mean((0, 1)), (0.02, 0.04, 0.08), rtol=0.02)


@pytest.mark.parametrize("stops", [-3.0, -1.0])
def test_exposure_is_set_in_linear_light_to_the_asked_key(dark_dng: bytes, stops: float) -> None:
    settings = raw.RawDevelop(stops=stops, max_push=math.inf)
    img = raw.read_raw(dark_dng, "dark.dng", settings=settings)
    assert img.bit_depth == 16 and img.format == "RAW" and img.pixels.dtype == np.float32
    key = raw.scene_key(raw.srgb_to_linear(img.pixels))
    assert key == pytest.approx(raw.NORMAL_KEY * 2**stops, rel=0.05)


def test_a_dark_shot_is_pushed_at_most_max_push_and_a_bright_one_left_as_shot(
        astronaut: np.ndarray) -> None:
    scene = raw.srgb_to_linear(astronaut[:64, :96] / 255.0)

    def key_of(ev: float, settings: raw.RawDevelop) -> float:
        pixels = raw.read_raw(dng_of(scene * 2.0**ev), "x.dng", settings=settings).pixels
        return raw.scene_key(raw.srgb_to_linear(pixels))

    as_shot = raw.RawDevelop(max_push=0.0)
    # 6 stops under is 3 below the target: brightened by exactly max_push (1 stop)
    assert key_of(-6, raw.RawDevelop()) == pytest.approx(2 * key_of(-6, as_shot), rel=0.03)
    # a normally exposed shot is above the target: never darkened
    assert key_of(0, raw.RawDevelop()) == pytest.approx(key_of(0, as_shot), rel=0.01)
    # the scene's brightness order survives: a shot 3 stops brighter stays brighter
    assert key_of(-3, raw.RawDevelop()) > 2 * key_of(-6, raw.RawDevelop())


def test_exif_carries_camera_exposure_and_date(dark_dng: bytes) -> None:
    exif = Image.Exif()
    exif.load(raw.read_raw(dark_dng, "x.dng").exif)
    taken = exif.get_ifd(0x8769)
    assert exif[0x010F] == "TestCam" and exif[0x0110] == "T1" and exif[0x0112] == 1
    assert taken[0x829A] == pytest.approx(1 / 30) and taken[0x8827] == 3200
    assert taken[0x9003] == "2026:01:02 03:04:05"


def test_raw_suffixes_are_listed_as_images(tmp_path: Path, dark_dng: bytes) -> None:
    for name in ("a.DNG", "b.nef", "c.cr3", "notes.txt"):
        (tmp_path / name).write_bytes(dark_dng)
    assert [p.name for p in list_images(tmp_path)] == ["a.DNG", "b.nef", "c.cr3"]


def test_bad_raw_files_get_one_clear_line(tmp_path: Path, dark_dng: bytes) -> None:
    mosaic = raw.capture(np.full((64, 64, 3), 0.1, np.float32), NOISELESS,
                         np.random.default_rng(0))
    no_colour = io.BytesIO()  # a CFA image without its colour filter pattern
    tifffile.imwrite(no_colour, mosaic, photometric=32803, subfiletype=0, metadata=None,
                     extratags=[(50706, "B", 4, (1, 4, 0, 0), True)])
    cases = {"cut.dng": (dark_dng[: len(dark_dng) // 2], "corrupt or truncated RAW"),
             "text.nef": (b"not a raw file at all\n" * 4, "not a RAW format LibRaw can read"),
             "mono.dng": (no_colour.getvalue(), "RAW without colour data")}
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageReadError, match=reason) as info:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image_bytes(dark_dng, "big.dng", max_pixels=100)


def test_capture_is_a_noisy_mosaic_between_black_and_white() -> None:
    sensor = raw.Sensor(bits=12, black_level=256, full_well=4000, read_noise=2.0)
    codes = raw.capture(np.full((64, 64, 3), 0.05, np.float32), sensor, np.random.default_rng(0))
    assert codes.dtype == np.uint16 and codes.shape == (64, 64)
    green = (codes[0::2, 1::2].astype(float) - 256) / (4095 - 256)
    red = (codes[0::2, 0::2].astype(float) - 256) / (4095 - 256)
    assert green.mean() == pytest.approx(0.05, rel=0.05)
    assert red.mean() == pytest.approx(0.05 * sensor.sensitivity[0], rel=0.05)
    # Poisson-Gaussian: variance = signal electrons + read noise squared
    assert (green * 4000).var() == pytest.approx(0.05 * 4000 + 4, rel=0.25)


def test_cli_enhances_a_dng_to_a_16bit_tiff_with_its_exif(tiny_weights: Path, tmp_path: Path,
                                                          dark_dng: bytes) -> None:
    src = tmp_path / "shot.dng"
    src.write_bytes(dark_dng)
    result = CliRunner().invoke(app, ["enhance", "--model", str(tiny_weights), "--device", "cpu",
                                      "--no-progress", str(src)])
    assert result.exit_code == 0, result.output
    out = read_image(tmp_path / "shot_enhanced.tif")
    assert out.bit_depth == 16 and out.pixels.shape == (64, 96, 3)
    exif = Image.Exif()
    exif.load(out.exif)
    assert exif[0x010F] == "TestCam" and exif[0x8827] == 3200


def test_cli_names_a_broken_raw_in_one_line(tiny_weights: Path, tmp_path: Path,
                                            dark_dng: bytes) -> None:
    src = tmp_path / "cut.nef"
    src.write_bytes(dark_dng[:200])
    result = CliRunner().invoke(app, ["enhance", "--model", str(tiny_weights), "--device", "cpu",
                                      "--no-progress", str(src)])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: {src}: corrupt or truncated RAW data (Input/output error)"]
    assert not list(tmp_path.glob("cut_enhanced*"))


def test_eval_reads_raw_photos_at_full_precision(tmp_path: Path, dark_dng: bytes) -> None:
    (tmp_path / "shot.dng").write_bytes(dark_dng)
    sample = folder_samples(tmp_path).samples[0]
    assert sample.low.shape == (64, 96, 3)
    assert len(np.unique(sample.low)) > 256  # not requantised to 8 bits


def test_server_enhances_raw_and_heic_uploads(tiny_weights: Path, dark_dng: bytes,
                                              astronaut: np.ndarray) -> None:
    heic = io.BytesIO()
    Image.fromarray(astronaut).save(heic, "HEIF")
    with TestClient(create_app(tiny_weights)) as client:
        for name, data in (("shot.dng", dark_dng), ("phone.heic", heic.getvalue())):
            response = client.post("/api/enhance", files={"file": (name, data)})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/png"
            assert Image.open(io.BytesIO(response.content)).size == (
                (96, 64) if name.endswith(".dng") else (128, 128))
        # strength 0: the photo as the server decodes it, the page's preview of a RAW
        preview = client.post("/api/enhance", files={"file": ("shot.dng", dark_dng)},
                              data={"strength": "0"})
        decoded = raw.read_raw(dark_dng, "shot.dng").pixels
        shown = read_image_bytes(preview.content, "preview.png")
        assert shown.bit_depth == 16
        np.testing.assert_allclose(shown.pixels, decoded, atol=1 / 65535)
        broken = client.post("/api/enhance", files={"file": ("cut.dng", dark_dng[:300])})
        assert broken.status_code == 422 and "corrupt or truncated RAW" in broken.json()["detail"]


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "data/raw/RAW_KODAK_DC50.KDC").exists(),
                    reason="needs ../shared/data/raw")
def test_real_kodak_raw_decodes() -> None:
    img = read_image(SHARED / "data/raw/RAW_KODAK_DC50.KDC")
    exif = Image.Exif()
    exif.load(img.exif)
    assert img.pixels.shape == (512, 768, 3) and img.bit_depth == 16
    assert 0.05 < img.pixels.mean() < 0.6 and exif[0x010F] == "Eastman Kodak Company"
