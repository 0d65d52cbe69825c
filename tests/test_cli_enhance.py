"""`mrvae enhance`: outputs, layout, options, and one clear line for every kind of bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mrvae.apps.cli import app
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.refine import Refinement
from mrvae.io.decode import read_image
from mrvae.io.encode import write_image
from mrvae.nn.config import DEFAULT_MODEL
from mrvae.nn.model import create_model, save_pretrained, shipped_weights

runner = CliRunner()


@pytest.fixture()
def photo(astronaut: np.ndarray) -> np.ndarray:
    """A dark 48 x 64 photo, float32."""
    return np.ascontiguousarray(astronaut[:48, :64] / 255.0 * 0.3, dtype=np.float32)


@pytest.fixture()
def folder(tmp_path: Path, photo: np.ndarray) -> Path:
    """in/a.png, in/b.jpg, in/sub/c.png."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    write_image(root / "a.png", photo)
    write_image(root / "b.jpg", photo)
    write_image(root / "sub" / "c.png", photo)
    return root


def run(weights: Path, *args: str | Path) -> tuple[int, str]:
    """Run `mrvae enhance` with the test model; returns (exit code, all output)."""
    result = runner.invoke(app, ["enhance", "--model", str(weights), "--device", "cpu",
                                 "--no-progress", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# --- what it writes -------------------------------------------------------------------------


def test_single_file_beside_the_input(tiny_weights: Path, folder: Path, photo: np.ndarray
                                      ) -> None:
    code, output = run(tiny_weights, folder / "a.png")
    assert code == 0, output
    out = read_image(folder / "a_enhanced.png")
    assert out.pixels.shape == photo.shape
    assert "done 1, skipped 0, failed 0" in output and "s/MP" in output


def test_single_file_to_an_output_file_with_another_format(tiny_weights: Path, folder: Path,
                                                           tmp_path: Path) -> None:
    dst = tmp_path / "result.tif"
    code, output = run(tiny_weights, folder / "a.png", "-o", dst)
    assert code == 0, output
    with Image.open(dst) as saved:
        assert saved.format == "TIFF"


@pytest.mark.parametrize("options, refine", [
    ((), Refinement()),
    (("--no-refine",), None),
    (("--detail", "0.25"), Refinement(detail=0.25)),
    (("--sharpen", "2"), Refinement(sharpen=2.0)),
    (("--detail", "0.5", "--sharpen", "0"), Refinement(detail=0.5, sharpen=0.0)),
])
def test_refinement_options(tiny_weights: Path, folder: Path, tmp_path: Path,
                            options: tuple[str, ...], refine: Refinement | None) -> None:
    dst = tmp_path / "out.png"
    code, output = run(tiny_weights, folder / "a.png", "-o", dst, *options)
    assert code == 0, output
    src = read_image(folder / "a.png").pixels
    expected = Enhancer(tiny_weights, "cpu", refine=refine).enhance_array(src)
    np.testing.assert_allclose(read_image(dst).pixels, expected, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("option, value", [("--detail", "2"), ("--sharpen", "-1")])
def test_strength_out_of_range_is_refused(tiny_weights: Path, folder: Path, option: str,
                                          value: str) -> None:
    code, output = run(tiny_weights, folder / "a.png", option, value)
    assert code == 2 and option in output
    assert not (folder / "a_enhanced.png").exists()


def test_folder_keeps_its_layout(tiny_weights: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = run(tiny_weights, folder, "-r", "-o", out, "--format", "png", "--suffix", "")
    assert code == 0, output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png", "b.png", "sub/c.png"]
    assert "done 3, skipped 0, failed 0" in output


def test_folder_without_recursion_and_globs(tiny_weights: Path, folder: Path,
                                            tmp_path: Path) -> None:
    code, output = run(tiny_weights, folder, "-o", tmp_path / "flat")
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == [
        "a_enhanced.png", "b_enhanced.jpg"]
    code, output = run(tiny_weights, f"{folder}/**/*.png", "-o", tmp_path / "globbed")
    assert code == 0, output
    assert sorted(p.relative_to(tmp_path / "globbed").as_posix()
                  for p in (tmp_path / "globbed").rglob("*.*")) == [
        "a_enhanced.png", "sub/c_enhanced.png"]


def test_compare_jpeg_quality_and_parallel_jobs(tiny_weights: Path, folder: Path,
                                                tmp_path: Path) -> None:
    code, output = run(tiny_weights, folder, "-o", tmp_path / "q95", "--format", "jpg",
                       "--compare")
    assert code == 0, output
    side = read_image(tmp_path / "q95" / "a_enhanced_compare.jpg").pixels
    assert side.shape == (48, 128, 3)
    code, output = run(tiny_weights, folder, "-o", tmp_path / "q20", "--format", "jpg",
                       "--quality", "20", "--jobs", "2")
    assert code == 0, output
    for name in ("a_enhanced.jpg", "b_enhanced.jpg"):
        assert (tmp_path / "q20" / name).stat().st_size < (tmp_path / "q95" / name).stat().st_size


def test_jobs_give_the_same_pixels(tiny_weights: Path, folder: Path, tmp_path: Path) -> None:
    for jobs in ("1", "3"):
        code, output = run(tiny_weights, folder, "-r", "-o", tmp_path / jobs, "--jobs", jobs)
        assert code == 0, output
    for path in (tmp_path / "1").rglob("*.png"):
        twin = tmp_path / "3" / path.relative_to(tmp_path / "1")
        np.testing.assert_array_equal(read_image(path).pixels, read_image(twin).pixels)


def test_photographer_metadata_survives(tiny_weights: Path, tmp_path: Path,
                                        photo: np.ndarray) -> None:
    src = tmp_path / "deep alpha.png"
    alpha = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    write_image(src, photo, bit_depth=16, alpha=alpha)
    code, output = run(tiny_weights, src)
    assert code == 0, output
    out = read_image(tmp_path / "deep alpha_enhanced.png")
    assert out.bit_depth == 16 and out.alpha is not None
    np.testing.assert_array_equal(out.alpha, read_image(src).alpha)


def test_ten_bit_avif_stays_deep(tiny_weights: Path, tmp_path: Path, photo: np.ndarray) -> None:
    src, dst = tmp_path / "night.avif", tmp_path / "out.avif"
    src.write_bytes(imagecodecs.avif_encode(np.round(photo * 1023).astype(np.uint16),
                                            level=100, bitspersample=10))
    code, output = run(tiny_weights, src, "-o", dst)
    assert code == 0, output
    out = read_image(dst)
    assert out.bit_depth == 16 and out.pixels.shape == photo.shape
    assert imagecodecs.avif_decode(dst.read_bytes()).dtype == np.uint16  # more than 8 bits


# --- bad input ------------------------------------------------------------------------------


def test_no_shipped_weights_is_one_clear_line(folder: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mrvae.nn.model.WEIGHTS_DIR", tmp_path)  # an install without weights
    assert not shipped_weights().exists()
    result = runner.invoke(app, ["enhance", str(folder / "a.png")])
    assert result.exit_code != 0
    assert error_lines(result.output) == [
        line for line in result.output.splitlines() if line.strip()]
    assert f"no trained weights are shipped for preset '{DEFAULT_MODEL}'" in result.output
    assert not (folder / "a_enhanced.png").exists()


@pytest.mark.parametrize("case", ["missing", "empty folder", "zero bytes", "truncated jpeg",
                                  "truncated png", "text as jpg", "text as txt", "bomb"])
def test_bad_single_input_is_one_line_and_nonzero(tiny_weights: Path, tmp_path: Path,
                                                  photo: np.ndarray, case: str) -> None:
    from test_io import bomb_png

    path = tmp_path / {"missing": "nope.png", "empty folder": "empty", "zero bytes": "z.png",
                       "truncated jpeg": "t.jpg", "truncated png": "t.png",
                       "text as jpg": "notes.jpg", "text as txt": "notes.txt",
                       "bomb": "bomb.png"}[case]
    if case == "empty folder":
        path.mkdir()
    elif case == "zero bytes":
        path.touch()
    elif case.startswith("truncated"):
        data = write_image(path, photo).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case.startswith("text"):
        path.write_text("not a photo")
    elif case == "bomb":
        path.write_bytes(bomb_png())
    code, output = run(tiny_weights, path)
    assert code != 0
    errors = error_lines(output)
    assert len(errors) == 1 and str(path) in errors[0], output
    assert "Traceback" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ([path.name] if path.exists() else [])


def test_batch_keeps_going_and_lists_failures(tiny_weights: Path, folder: Path,
                                              tmp_path: Path) -> None:
    (folder / "broken.png").write_bytes(b"")
    (tmp_path / "no images").mkdir()
    code, output = run(tiny_weights, folder, tmp_path / "missing.jpg", tmp_path / "no images",
                       "-o", tmp_path / "out")
    assert code == 1
    assert "done 2, skipped 0, failed 3" in output
    failed = [line for line in output.splitlines() if line.strip().startswith("failed:")]
    assert len(failed) == 3
    assert any("broken.png" in line and "empty file" in line for line in failed)
    assert any("missing.jpg" in line and "no such file" in line for line in failed)
    assert any("no images" in line and "no images" in line for line in failed)
    assert (tmp_path / "out" / "a_enhanced.png").exists()


@pytest.mark.parametrize("mode", ["tiny", "cmyk", "palette", "rgba", "gray16", "huge"])
def test_awkward_but_valid_images(tiny_weights: Path, tmp_path: Path, astronaut: np.ndarray,
                                  mode: str) -> None:
    src = tmp_path / f"{mode}.{'jpg' if mode == 'cmyk' else 'png'}"
    image = Image.fromarray(astronaut)
    if mode == "tiny":
        image = image.resize((3, 3))
    elif mode == "cmyk":
        image = image.convert("CMYK")
    elif mode == "palette":
        image = image.convert("P")
    elif mode == "rgba":
        image = image.convert("RGBA")
    elif mode == "gray16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    image.save(src)
    # "huge": larger than the tile, so it is enhanced in tiles.
    code, output = run(tiny_weights, src, "--tile", "48" if mode == "huge" else "512")
    assert code == 0, output
    out = read_image(src.with_name(f"{mode}_enhanced{src.suffix}"))
    assert out.pixels.shape[:2] == (image.height, image.width)
    assert out.grayscale == (mode == "gray16")
    assert out.bit_depth == (16 if mode == "gray16" else 8)
    assert (out.alpha is not None) == (mode == "rgba")


def test_one_by_one_pixel(tiny_weights: Path, tmp_path: Path) -> None:
    src = tmp_path / "dot.png"
    cv2.imwrite(str(src), np.array([[[10, 20, 30]]], np.uint8))
    code, output = run(tiny_weights, src)
    assert code == 0, output
    assert read_image(tmp_path / "dot_enhanced.png").pixels.shape == (1, 1, 3)


def test_pixel_limit_is_configurable(tiny_weights: Path, folder: Path) -> None:
    code, output = run(tiny_weights, folder / "a.png", "--max-megapixels", "0.001")
    assert code == 1 and "exceeds the limit" in output


def test_existing_output_needs_overwrite(tiny_weights: Path, folder: Path) -> None:
    dst = folder / "a_enhanced.png"
    dst.write_bytes(b"mine")
    code, output = run(tiny_weights, folder / "a.png")
    assert code == 1 and "--overwrite" in output and dst.read_bytes() == b"mine"
    code, output = run(tiny_weights, folder / "a.png", folder / "b.jpg")
    assert code == 0 and "done 1, skipped 1, failed 0" in output
    code, output = run(tiny_weights, folder / "a.png", "--overwrite")
    assert code == 0 and read_image(dst).pixels.shape == (48, 64, 3)


def test_unwritable_output_folder(tiny_weights: Path, folder: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    for out in (blocker / "out", blocker):
        code, output = run(tiny_weights, folder / "a.png", "-o", out)
        assert code == 1 and "cannot write" in output and str(blocker) in output, output
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, output = run(tiny_weights, folder / "a.png", "-o", locked)
        assert code == 1 and "cannot write" in output


def test_unicode_and_spaces_in_paths(tiny_weights: Path, folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "nuit à Zürich 夜" / "mon photo é.jpg"
    src.parent.mkdir()
    shutil.copy(folder / "b.jpg", src)
    code, output = run(tiny_weights, src, "-o", tmp_path / "sortie été")
    assert code == 0, output
    assert (tmp_path / "sortie été" / "mon photo é_enhanced.jpg").exists()


def test_output_may_not_replace_its_input(tiny_weights: Path, folder: Path) -> None:
    before = (folder / "a.png").read_bytes()
    code, output = run(tiny_weights, folder / "a.png", "--suffix", "")
    assert code == 1 and "replace the input" in output
    assert (folder / "a.png").read_bytes() == before


@pytest.mark.parametrize("problem", ["corrupt", "wrong shape"])
def test_bad_weights_file(tmp_path: Path, folder: Path, problem: str) -> None:
    weights = save_pretrained(create_model("tiny"), tmp_path / "w.safetensors")
    if problem == "corrupt":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        lite_card = save_pretrained(create_model("lite"), tmp_path / "lite.safetensors")
        weights.with_suffix(".json").write_text(lite_card.with_suffix(".json").read_text())
    code, output = run(weights, folder / "a.png")
    assert code == 1
    assert len(error_lines(output)) == 1 and str(weights) in output
    assert not (folder / "a_enhanced.png").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--format", "gif", "unknown output format"),
    ("--backend", "tensorrt", "unknown backend"),
    ("--device", "tpu", "unknown device"),
])
def test_bad_options_are_one_line(tiny_weights: Path, folder: Path, option: str, value: str,
                                  message: str) -> None:
    code, output = run(tiny_weights, folder / "a.png", option, value)
    assert code == 1 and message in output
    assert len([line for line in output.splitlines() if line.strip()]) == 1
    assert not (folder / "a_enhanced.png").exists()


def test_cli_defaults_are_the_engines() -> None:
    # the CLI repeats the engine's defaults as literals (it does not import torch to start)
    import inspect

    from mrvae.apps.cli import enhance
    from mrvae.engine.enhancer import DEFAULT_GLOBAL_SIZE, DEFAULT_TILE

    options = inspect.signature(enhance).parameters
    assert options["tile"].default == DEFAULT_TILE
    assert options["global_size"].default == DEFAULT_GLOBAL_SIZE


def test_overlapped_io_gives_the_same_files_and_results(tiny_weights: Path, folder: Path,
                                                        tmp_path: Path) -> None:
    """Decoding and encoding beside the network change nothing: same bytes, same summary, a
    bad file in the middle fails alone and a finished output is skipped."""
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    outputs = {}
    for flag in ("--overlap-io", "--no-overlap-io"):
        out = tmp_path / flag
        out.mkdir()
        (out / "a_enhanced.png").write_bytes(b"done before")
        code, output = run(tiny_weights, folder, "-r", "-o", out, flag)
        assert code == 1 and "broken.png" in output
        assert "done 2, skipped 1, failed 1" in output
        outputs[flag] = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.*")}
    assert outputs["--overlap-io"] == outputs["--no-overlap-io"]
    assert len(outputs["--overlap-io"]) == 3


def test_png_level_changes_the_file_not_the_pixels(tiny_weights: Path, folder: Path,
                                                   tmp_path: Path) -> None:
    sizes, pixels = {}, {}
    for level in ("0", "1", "9"):
        out = tmp_path / level / "a.png"
        code, output = run(tiny_weights, folder / "a.png", "-o", out, "--png-level", level)
        assert code == 0, output
        sizes[level] = out.stat().st_size
        pixels[level] = read_image(out).pixels
    assert sizes["0"] > sizes["1"] and sizes["0"] > sizes["9"]  # 0 stores, the others deflate
    np.testing.assert_array_equal(pixels["0"], pixels["1"])
    np.testing.assert_array_equal(pixels["0"], pixels["9"])
    code, output = run(tiny_weights, folder / "a.png", "-o", tmp_path / "x.png",
                       "--png-level", "10")
    assert code != 0 and "png-level" in output
