"""Evaluation harness: test sets, the report files, the `mrvae eval` command and ablations."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mrvae.apps.cli import app
from mrvae.data.datasets import split_of, write_synthetic_pairs
from mrvae.data.degrade import PRESETS
from mrvae.evaluation import report, sets
from mrvae.io.decode import read_rgb
from mrvae.io.encode import write_image
from mrvae.training import ablation

runner = CliRunner()


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 small photos (crops of scikit-image photos); a few fall in the 10% validation split."""
    from skimage import data

    root = tmp_path_factory.mktemp("clean")
    sources = [data.astronaut(), data.chelsea(), data.coffee()]
    for index in range(24):
        img = sources[index % 3]
        top, left = 16 * (index // 3), 24 * (index // 3)
        crop = cv2.resize(img[top:top + 256, left:left + 256], (128, 128),
                          interpolation=cv2.INTER_AREA)
        write_image(root / f"photo{index:02d}.png", crop / 255.0)
    return root


@pytest.fixture(scope="module")
def paired_dir(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mrvae synth` output: low/ + high/ for 4 photos at 2 levels."""
    out = tmp_path_factory.mktemp("pairs")
    write_synthetic_pairs(photos, out, PRESETS["paper"], levels=[0, 3], max_side=128)
    return out


@pytest.fixture(scope="module")
def dark_dir(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three dark photos and one corrupt file."""
    root = tmp_path_factory.mktemp("dark")
    for path in sorted(photos.iterdir())[:3]:
        write_image(root / f"{path.stem}.png", (read_rgb(path) / 255.0) ** 2.5 * 0.5)
    (root / "broken.png").write_bytes(b"\x89PNG broken")
    return root


def no_constants(name: str) -> None:
    raise AssertionError(f"non-standard JSON constant {name}")


def test_paired_folder_samples(paired_dir: Path) -> None:
    test_set = sets.folder_samples(paired_dir)
    assert test_set.paired and len(test_set.samples) == 8
    sample = test_set.samples[0]
    assert sample.high is not None and sample.low.shape == sample.high.shape
    assert sample.low.mean() < sample.high.mean()  # low is the dark one
    assert len(sets.folder_samples(paired_dir, max_side=32, limit=3).samples) == 3
    assert max(sets.folder_samples(paired_dir, max_side=32).samples[0].low.shape) == 32


def test_lol_layout_is_read_as_pairs(paired_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(paired_dir / "low", tmp_path / "input")
    shutil.copytree(paired_dir / "high", tmp_path / "target")
    test_set = sets.folder_samples(tmp_path)
    assert test_set.paired and len(test_set.samples) == 8


def test_numbered_pairs_split_by_block(tmp_path: Path) -> None:
    # LOL's fixed split: N is validation when (N // 20) % 6 == 0
    rng = np.random.default_rng(0)
    (tmp_path / "high").mkdir()
    (tmp_path / "low").mkdir()
    for number in (5, 25, 125, 130, 141):
        high = rng.random((24, 32, 3))
        write_image(tmp_path / "high" / f"{number}.png", high)
        write_image(tmp_path / "low" / f"{number}.png", high * 0.2)
    names = {split: [s.name for s in sets.folder_samples(tmp_path, split=split).samples]
             for split in ("val", "train", "all")}
    assert names == {"val": ["125", "130", "5"], "train": ["141", "25"],
                     "all": ["125", "130", "141", "25", "5"]}
    assert sets.folder_samples(tmp_path, split="val").settings["split"] == "val"
    out = tmp_path / "report"
    result = runner.invoke(app, ["eval", "--data", str(tmp_path), "--split", "train",
                                 "--methods", "input,gamma", "--out", str(out), "--no-progress",
                                 "--grid", "0"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["data"]["split"] == "train" and saved["data"]["images"] == 2
    assert list(saved["metrics"]) == ["psnr", "psnr_gtmean", "ssim", "ssim_y", "ciede2000",
                                      "colour_shift", "clip_increase"]
    gamma = saved["methods"]["gamma"]["metrics"]
    # the input is an exact fifth of the truth: GT-mean PSNR sees no error beyond exposure
    assert saved["methods"]["input"]["metrics"]["psnr_gtmean"]["mean"] > 35
    assert gamma["psnr"]["mean"] > saved["methods"]["input"]["metrics"]["psnr"]["mean"]


def test_well_exposed_set_is_the_held_out_photos_as_their_own_truth(clean_dir: Path,
                                                                    tmp_path: Path) -> None:
    val_names = sorted(p.stem for p in clean_dir.iterdir() if split_of(p.name, 0.1) == "val")
    test_set = sets.well_exposed_samples(clean_dir, max_side=64)
    assert [s.name for s in test_set.samples] == val_names
    for sample in test_set.samples:
        assert sample.low is sample.high and max(sample.low.shape) == 64
    assert test_set.settings["split"] == "val" and test_set.settings["max_side"] == 64
    out = tmp_path / "report"
    result = runner.invoke(app, ["eval", "--well-exposed-from", str(clean_dir), "--methods",
                                 "input,he", "--metrics", "psnr,clip_increase", "--out", str(out),
                                 "--no-progress", "--grid", "0"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["data"]["split"] == "val" and saved["data"]["images"] == len(val_names)
    tuning = runner.invoke(app, ["eval", "--well-exposed-from", str(clean_dir), "--split", "train",
                                 "--methods", "input", "--metrics", "clip_increase", "--out",
                                 str(tmp_path / "tuning"), "--no-progress", "--grid", "0"])
    assert tuning.exit_code == 0, tuning.output
    tuned = json.loads((tmp_path / "tuning" / "results.json").read_text())
    assert tuned["data"]["split"] == "train" and tuned["data"]["images"] == 24 - len(val_names)
    assert saved["data"]["ground_truth"].startswith("the input itself")
    assert saved["methods"]["input"]["metrics"]["psnr"]["n"] == 0  # identical: inf -> null
    assert saved["methods"]["input"]["metrics"]["clip_increase"]["mean"] == 0
    assert saved["methods"]["he"]["metrics"]["psnr"]["mean"] < 40  # HE changes good photos
    with pytest.raises(FileNotFoundError, match="no such directory"):
        sets.well_exposed_samples(tmp_path / "absent")


def test_exposure_and_backend_in_method_names(tiny_weights: Path) -> None:
    assert report.describe("mrvae:lite@ev=+1").endswith("exposure +1 EV")
    assert "exposure" not in report.describe("mrvae:lite")
    assert report._label(f"mrvae-raw:{tiny_weights}@ev=-0.5") == "mrvae-raw:tiny@ev=-0.5"
    assert report.describe("mrvae:lite@backend=torch-float32").endswith(
        "backend torch-float32")
    assert "backend" not in report.describe("mrvae:lite@backend=torch")
    assert report._label(f"mrvae:{tiny_weights}@backend=torch-float32") == \
        "mrvae:tiny@backend=torch-float32"


def test_grid_labels_are_short() -> None:
    assert report._label("mrvae:/runs/lite/best.safetensors") == "mrvae:best"
    assert report._label("mrvae:lite") == "mrvae:lite" and report._label("clahe") == "clahe"
    assert report._label("mrvae-raw:/runs/lite/best.safetensors") == "mrvae-raw:best"


def test_unpaired_folder_skips_bad_files(dark_dir: Path) -> None:
    test_set = sets.folder_samples(dark_dir)
    assert not test_set.paired and len(test_set.samples) == 3
    assert len(test_set.skipped) == 1 and "broken.png" in test_set.skipped[0]
    with pytest.raises(FileNotFoundError, match="no such"):
        sets.folder_samples(dark_dir / "absent")
    empty = dark_dir.parent / "empty_eval_dir"
    empty.mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match="no readable images"):
        sets.folder_samples(empty)


def test_synthetic_samples_are_held_out_and_reproducible(clean_dir: Path) -> None:
    val_names = sorted(p.stem for p in clean_dir.iterdir() if split_of(p.name, 0.1) == "val")
    assert val_names, "fixture must hold validation photos"
    first = sets.synthetic_samples(clean_dir, "paper", max_side=64)
    again = sets.synthetic_samples(clean_dir, "paper", max_side=64)
    assert [s.name for s in first.samples] == [f"{n}_L{i % 4}" for i, n in enumerate(val_names)]
    for a, b in zip(first.samples, again.samples, strict=True):
        np.testing.assert_array_equal(a.low, b.low)
    assert max(first.samples[0].high.shape) == 64
    other_seed = sets.synthetic_samples(clean_dir, "paper", max_side=64, seed=1)
    assert not np.array_equal(first.samples[0].low, other_seed.samples[0].low)
    train_names = sorted(p.stem for p in clean_dir.iterdir() if split_of(p.name, 0.1) == "train")
    tuning = sets.synthetic_samples(clean_dir, "paper", max_side=64, split="train")
    assert [s.name.rsplit("_L", 1)[0] for s in tuning.samples] == train_names
    assert tuning.settings["split"] == "train"
    well = sets.well_exposed_samples(clean_dir, max_side=64, split="train")
    assert [s.name for s in well.samples] == train_names
    realistic = sets.synthetic_samples(clean_dir, "realistic", max_side=64, limit=1)
    assert len(realistic.samples) == 1 and realistic.settings["recipe"] == "realistic"
    with pytest.raises(ValueError, match="unknown recipe"):
        sets.synthetic_samples(clean_dir, "moonlight")


def test_evaluate_writes_a_consistent_report(paired_dir: Path, tmp_path: Path) -> None:
    test_set = sets.folder_samples(paired_dir)
    methods, unavailable = report.resolve_methods(["input", "he", "gamma"])
    calls = []

    def flaky(img: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return img

    methods["flaky"] = flaky
    unavailable["zerodce"] = "weights not found"
    out = tmp_path / "report"
    results = report.evaluate(test_set, methods, out, unavailable=unavailable, grid=["rocket_L3"])
    saved = json.loads((out / "results.json").read_text(), parse_constant=no_constants)
    assert saved["methods"].keys() == {"input", "he", "gamma", "flaky"}
    assert len(saved["per_image"]) == 4 * 8
    he_psnr = [r["metrics"]["psnr"] for r in saved["per_image"] if r["method"] == "he"]
    assert saved["methods"]["he"]["metrics"]["psnr"]["mean"] == pytest.approx(np.mean(he_psnr))
    assert saved["methods"]["he"]["metrics"]["psnr"]["std"] == pytest.approx(np.std(he_psnr))
    assert saved["methods"]["flaky"]["failures"] == 1 and saved["methods"]["flaky"]["images"] == 7
    assert saved["methods"]["he"]["seconds_per_megapixel"] > 0
    assert saved["unavailable"] == {"zerodce": "weights not found"}
    # brightening brings the dark input closer to the truth in error and colour
    gamma, dark = results["methods"]["gamma"]["metrics"], results["methods"]["input"]["metrics"]
    assert gamma["psnr"]["mean"] > dark["psnr"]["mean"]
    assert gamma["ciede2000"]["mean"] < dark["ciede2000"]["mean"]
    markdown = (out / "results.md").read_text()
    assert "| `he` |" in markdown and "`zerodce`: weights not found" in markdown
    assert "**" in markdown and "| `input` | **" not in markdown  # input is never best
    assert "![grid_rocket_L3.png](grid_rocket_L3.png)" in markdown
    grid = read_rgb(out / "grid_rocket_L3.png")
    # input | he | gamma | flaky | ground truth: 5 tiles of height 240 in one row
    assert grid.shape[0] == 240 and grid.shape[1] > 4 * 240
    assert grid[:12, :40].mean() < 200  # a dark label banner with text


def test_best_is_bold_in_each_metric_direction() -> None:
    def row(psnr: float, ciede: float) -> dict:
        return {"description": "", "images": 1, "failures": 0, "seconds_per_megapixel": 1.0,
                "metrics": {"psnr": {"mean": psnr, "std": 0.0, "n": 1},
                            "ciede2000": {"mean": ciede, "std": 0.0, "n": 1}}}

    results = {"title": "t", "created": "now", "unavailable": {}, "grids": [],
               "data": {"source": "s", "paired": True, "images": 1, "megapixels": 1.0,
                        "skipped": []},
               "metrics": {"psnr": {"higher_is_better": True, "description": ""},
                           "ciede2000": {"higher_is_better": False, "description": ""}},
               "methods": {"input": row(99.0, 0.1), "a": row(20.0, 5.0), "b": row(18.0, 3.0)}}
    lines = {line.split("|")[1].strip(): line for line in
             report.render_markdown(results).splitlines() if line.startswith("| `")}
    assert "**20.00 ± 0.000**" in lines["`a`"] and "**3.000 ± 0.000**" in lines["`b`"]
    assert "**" not in lines["`input`"]


def test_head_to_head_counts_images_in_each_metric_direction() -> None:
    """Against a reference method, image by image: a method that is better on average but
    worse on most images shows it (a mean hides it)."""
    def records(psnr: list[float], ciede: list[float], failed: str | None = None) -> list[dict]:
        return [{"image": str(i), "error": "boom"} if str(i) == failed else
                {"image": str(i), "metrics": {"psnr": p, "ciede2000": c, "brightness": c}}
                for i, (p, c) in enumerate(zip(psnr, ciede, strict=True))]

    table = report.head_to_head({
        "ref": records([20, 20, 20, 20], [5, 5, 5, 5]),
        "a": records([21, 21, 21, 10], [4, 6, 6, 6]),
        "b": records([19, 25, 20, 20], [5, 5, 5, 5], failed="1"),
    }, "ref", ["psnr", "ciede2000", "brightness"])
    assert table.keys() == {"a", "b"}
    assert table["a"]["psnr"] == {"better": 3, "worse": 1, "n": 4, "median_difference": 1.0}
    assert table["a"]["ciede2000"] == {"better": 1, "worse": 3, "n": 4,
                                       "median_difference": 1.0}  # lower is better
    assert table["a"]["brightness"]["better"] is None  # no direction: only the difference
    assert table["b"]["psnr"] == {"better": 0, "worse": 1, "n": 3, "median_difference": 0.0}


def test_cli_eval_versus_writes_the_image_by_image_table(dark_dir: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(app, ["eval", "--data", str(dark_dir), "--methods", "input,he,clahe",
                                 "--metrics", "brightness,entropy", "--versus", "input",
                                 "--out", str(out), "--no-progress", "--grid", "0"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["versus"]["method"] == "input"
    he = saved["versus"]["methods"]["he"]
    images = saved["methods"]["he"]["images"]
    assert he["entropy"]["better"] + he["entropy"]["worse"] <= he["entropy"]["n"] == images
    assert he["brightness"]["median_difference"] > 0  # HE brightens dark photos
    assert saved["methods"]["he"]["metrics"]["entropy"]["median"] is not None
    assert "Image by image against `input`" in (out / "results.md").read_text()
    assert f"of {images}, Δ" in result.output


def test_infinite_psnr_is_null_in_json(paired_dir: Path, tmp_path: Path) -> None:
    test_set = sets.folder_samples(paired_dir, limit=1)
    perfect = {"oracle": lambda img: test_set.samples[0].high}
    report.evaluate(test_set, perfect, tmp_path, ["psnr"], grid=0)
    saved = json.loads((tmp_path / "results.json").read_text(), parse_constant=no_constants)
    assert saved["per_image"][0]["metrics"]["psnr"] is None


def test_full_reference_metric_on_real_photos_is_an_error(dark_dir: Path,
                                                          tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs ground truth"):
        report.evaluate(sets.folder_samples(dark_dir), {"input": lambda x: x}, tmp_path, ["psnr"])


def test_cli_eval_on_real_photos(dark_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(app, ["eval", "--data", str(dark_dir), "--methods",
                                 "input,clahe,lime,mrvae:/absent/w.safetensors", "--out",
                                 str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["metrics"]) == ["niqe", "brisque", "loe", "entropy", "brightness",
                                     "contrast"]
    assert saved["data"]["skipped"] and "mrvae:/absent/w.safetensors" in saved["unavailable"]
    assert saved["methods"]["lime"]["metrics"]["brightness"]["mean"] > \
        saved["methods"]["input"]["metrics"]["brightness"]["mean"]
    assert len(saved["grids"]) == 1 and (out / saved["grids"][0]).is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "/absent/folder"], "no such file"),
    (["--methods", "input,retinexnet"], "unknown method 'retinexnet'"),
    (["--metrics", "lpips"], "unknown metric 'lpips'"),
    (["--metrics", "psnr"], "needs ground truth"),
    (["--grid", "nosuchimage"], "no sample named nosuchimage"),
    (["--methods", "mrvae:/absent.safetensors"], "no method can run"),
    (["--synthetic-from", "/absent"], "not --data and --synthetic-from"),
    (["--split", "val"], "needs a paired folder"),
    (["--split", "test"], "unknown --split 'test'"),
    (["--methods", "mrvae:lite@ev=9"], "mrvae:lite@ev=9: bad exposure"),
    (["--methods", "mrvae:lite@backend=tpu"], "unknown backend 'tpu'"),
    (["--methods", "input,clahe", "--versus", "he"], "versus he: not among the methods"),
    (["configs/x.yaml"], "config files go with --ablation"),
])
def test_cli_eval_bad_input_is_one_line(dark_dir: Path, tmp_path: Path, args: list[str],
                                        message: str) -> None:
    base = ["eval", "--out", str(tmp_path / "r"), "--no-progress"]
    if "--data" not in args:
        base += ["--data", str(dark_dir)]
    result = runner.invoke(app, base + args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r" / "results.md").exists()


def test_cli_needs_a_data_source(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "give --data DIR, --synthetic-from" in result.output
    result = runner.invoke(app, ["eval", "--split", "train", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "--split goes with --data, --synthetic-from" in result.output


def _config(path: Path, roots: Path, run_dir: Path, **model: object) -> Path:
    config = {"model": {"preset": "tiny", **model},
              "data": {"roots": [str(roots)], "crop": 32, "batch_size": 2, "workers": 0,
                       "val_fraction": 0.1, "val_samples": 2, "val_crop": 32,
                       "degrade": "paper"},
              "steps": 2, "log_interval": 1, "val_interval": 2, "checkpoint_interval": 2,
              "device": "cpu", "amp": False, "global_scales": [1.0], "val_images": 1,
              "run_dir": str(run_dir)}
    path.write_text(f"# Depth ablation: {path.stem[-1].upper()}\n" + yaml.safe_dump(config))
    return path


def test_ablation_loads_existing_weights(tiny_weights: Path, clean_dir: Path, paired_dir: Path,
                                         tmp_path: Path) -> None:
    from mrvae.nn.model import create_model, save_pretrained

    run_a, run_b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    save_pretrained(create_model("tiny"), run_a / "best.safetensors")
    save_pretrained(create_model("tiny", residual_blocks=2), run_b / "best.safetensors")
    configs = [_config(tmp_path / "depth_a.yaml", clean_dir, run_a),
               _config(tmp_path / "depth_b.yaml", clean_dir, run_b, residual_blocks=2),
               tmp_path / "bad.yaml"]
    configs[2].write_text("model: {preset: huge}\n")

    def no_training(*_: object, **__: object) -> Path:
        raise AssertionError("existing weights must be loaded, not trained")

    methods, unavailable, extra = ablation.ablation_methods(configs, tmp_path / "r",
                                                            train_fn=no_training)
    assert set(methods) == {"depth_a", "depth_b"} and "model.preset" in unavailable["bad"]
    assert extra["depth_b"]["params"] > extra["depth_a"]["params"]
    assert extra["depth_a"]["description"].startswith("Depth ablation: A")
    results = report.evaluate(sets.folder_samples(paired_dir, limit=2), methods,
                              tmp_path / "report", ablation.ABLATION_METRICS, unavailable, grid=0,
                              extra=extra)
    markdown = (tmp_path / "report" / "results.md").read_text()
    assert "| params |" in markdown
    assert f"{extra['depth_b']['params']:,}" in markdown
    assert results["methods"]["depth_a"]["metrics"]["psnr"]["n"] == 2


@pytest.mark.slow
def test_cli_ablation_trains_missing_variants(clean_dir: Path, tmp_path: Path) -> None:
    configs = [_config(tmp_path / "full.yaml", clean_dir, tmp_path / "runs" / "full"),
               _config(tmp_path / "l2.yaml", clean_dir, tmp_path / "runs" / "l2")]
    data = yaml.safe_load(configs[1].read_text())
    configs[1].write_text(yaml.safe_dump({**data, "loss": {"mode": "single_l2"}}))
    out = tmp_path / "report"
    result = runner.invoke(app, ["eval", "--ablation", *map(str, configs), "--steps", "1",
                                 "--out", str(out), "--no-progress", "--max-side", "96"])
    assert result.exit_code == 0, result.output
    assert (out / "runs" / "full" / "best.safetensors").is_file()  # not the config's run dir
    assert not (tmp_path / "runs").exists()
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["methods"]) == {"full", "l2"}
    assert list(saved["metrics"]) == list(ablation.ABLATION_METRICS)
    assert saved["data"]["source"] == f"synthetic from {clean_dir}"
