"""Datasets, splits, cache, and the synth command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrvae.apps.cli import app
from mrvae.data.datasets import (
    ImageCache,
    MixedPairs,
    PairedFolder,
    SyntheticPairs,
    level_from_name,
    pair_split_of,
    split_of,
    write_synthetic_pairs,
)
from mrvae.data.degrade import PRESETS
from mrvae.io.decode import read_image


@pytest.fixture()
def photos_with_junk(photos: Path, tmp_path: Path) -> Path:
    root = tmp_path / "clean"
    shutil.copytree(photos, root)
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("not an image")
    return root


def test_split_is_deterministic_and_by_name() -> None:
    names = [f"img_{i}.png" for i in range(2000)]
    splits = [split_of(n, 0.1) for n in names]
    assert splits == [split_of(n, 0.1) for n in names]
    assert 0.07 < splits.count("val") / len(names) < 0.13
    assert split_of("/a/b/x.png", 0.3) == split_of("/c/x.png", 0.3)
    assert split_of("x.png", 0.0) == "train" and split_of("x.png", 1.0) == "val"


def test_synthetic_pairs_items(photos: Path) -> None:
    ds = SyntheticPairs(photos, crop=32, split="all", degrade=["paper", "realistic"], seed=3)
    assert len(ds) == 4
    item = ds[1]
    assert item["low"].shape == item["high"].shape == (3, 32, 32)
    assert item["low"].dtype == torch.float32
    assert 0 <= item["level"] < 4
    assert item["low"].mean() < item["high"].mean()
    again = SyntheticPairs(photos, crop=32, split="all", degrade=["paper", "realistic"], seed=3)
    assert torch.equal(again[1]["low"], item["low"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["high"], item["high"])


def test_train_and_val_splits_are_disjoint(photos: Path) -> None:
    train = SyntheticPairs(photos, split="train", val_fraction=0.5)
    val = SyntheticPairs(photos, split="val", val_fraction=0.5)
    assert set(train.paths).isdisjoint(val.paths)
    assert len(train.paths) + len(val.paths) == 4
    if len(val):
        val.set_epoch(5)
        assert torch.equal(val[0]["low"], val[0]["low"])


def test_bad_files_are_skipped_with_warning(photos_with_junk: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    ds = SyntheticPairs(photos_with_junk, crop=16, split="all")
    assert len(ds) == 4
    assert {p.name for p in ds.paths} == {"astronaut.png", "chelsea.png", "coffee.jpg",
                                          "rocket.png"}
    assert "empty.png" in caplog.text and "notes.jpg" in caplog.text
    for i in range(len(ds)):
        assert ds[i]["low"].shape == (3, 16, 16)


def test_small_images_are_upscaled_for_crop(tmp_path: Path) -> None:
    import cv2

    cv2.imwrite(str(tmp_path / "small.png"), np.full((10, 20, 3), 128, np.uint8))
    ds = SyntheticPairs(tmp_path, crop=32, split="all")
    assert ds[0]["high"].shape == (3, 32, 32)


def test_scene_crops_hold_most_of_the_photo(tmp_path: Path) -> None:
    """A horizontal ramp 0..1 over 300 px: a 64 px crop spans about 1/5 of it; a scene crop of
    the same size (the photo shrunk to a 64 px short side first) about 2/3 (64 of 96 px)."""
    import cv2

    ramp = np.tile(np.linspace(0, 255, 300), (200, 1)).round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / "ramp.png"), np.dstack([ramp] * 3))
    spans = {}
    for scene in (False, True):
        ds = SyntheticPairs(tmp_path, crop=64, split="all", degrade="well_exposed",
                            augment=False, scene=scene)
        high = ds[0]["high"]
        assert high.shape == (3, 64, 64)
        spans[scene] = float(high[0, 32].max() - high[0, 32].min())
    assert spans[False] == pytest.approx(63 / 299, abs=0.02)
    assert spans[True] == pytest.approx(63 / 95, abs=0.03)


def test_cache_decodes_once(photos: Path, tmp_path: Path) -> None:
    cache = ImageCache(max_side=64, cache_dir=tmp_path / "c")
    path = photos / "astronaut.png"
    first = cache.get(path)
    assert max(first.shape[:2]) == 64 and first.dtype == np.uint8
    assert len(list((tmp_path / "c").glob("*.npy"))) == 1
    fresh = ImageCache(max_side=64, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(fresh.get(path), first)


def test_worker_processes_give_same_items(photos: Path) -> None:
    ds = SyntheticPairs(photos, crop=16, split="all", seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    direct = torch.stack([ds[i]["low"] for i in range(4)])
    torch.testing.assert_close(torch.cat([b["low"] for b in batches]), direct)


def test_write_pairs_and_read_back(photos_with_junk: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    manifest = write_synthetic_pairs(photos_with_junk, out, PRESETS["paper"], levels=[0, 3],
                                     seed=5, crop=24)
    assert len(manifest["pairs"]) == 8 and len(manifest["skipped"]) == 2
    names = sorted(p.name for p in (out / "low").iterdir())
    assert names == sorted(p.name for p in (out / "high").iterdir())
    assert "astronaut_L3.png" in names
    on_disk = json.loads((out / "manifest.json").read_text())
    entry = next(p for p in on_disk["pairs"] if p["name"] == "astronaut_L3.png")
    assert entry["gamma"] == 5.0 and entry["level"] == 3
    assert entry["noise_sigma"] == pytest.approx(50 / 255)
    assert on_disk["seed"] == 5
    ds = PairedFolder(out)
    assert len(ds) == 8
    item = ds[0]
    assert item["low"].shape == item["high"].shape == (3, 24, 24)
    assert item["low"].mean() < item["high"].mean()
    assert item["level"] in (0, 3)
    again = write_synthetic_pairs(photos_with_junk, tmp_path / "again", PRESETS["paper"],
                                  levels=[0, 3], seed=5, crop=24)
    assert [p["name"] for p in again["pairs"]] == [p["name"] for p in manifest["pairs"]]
    np.testing.assert_array_equal(read_image(out / "low" / "rocket_L3.png").pixels,
                                  read_image(tmp_path / "again" / "low" / "rocket_L3.png").pixels)


def test_written_night_lamps_pairs_have_the_lamps_in_their_target(photos_with_junk: Path,
                                                                  tmp_path: Path) -> None:
    for recipe in ("backlit", "night_lamps"):  # the same crops, with and without lamps
        manifest = write_synthetic_pairs(photos_with_junk, tmp_path / recipe, PRESETS[recipe],
                                         levels=[2], seed=1, crop=48)
    entry = next(p for p in manifest["pairs"] if p["name"] == "astronaut_L2.png")
    assert entry["lamps"] >= 1
    photo, high, low = (read_image(tmp_path / recipe / kind / "astronaut_L2.png").rgb
                        for recipe, kind in (("backlit", "high"), ("night_lamps", "high"),
                                             ("night_lamps", "low")))
    assert (high >= photo - 1 / 255).all(), "lamps only add light"
    cores = (high >= 254 / 255).all(axis=2) & ~(photo >= 254 / 255).all(axis=2)
    assert cores.any() and low[cores].mean() > 0.95, "new white cores, white in both images"


def test_paired_folder_lol_layout_and_crop(tmp_path: Path) -> None:
    import cv2

    for sub in ("low", "high"):
        (tmp_path / sub).mkdir()
    cv2.imwrite(str(tmp_path / "low" / "1.png"), np.full((40, 50, 3), 20, np.uint8))
    cv2.imwrite(str(tmp_path / "high" / "1.png"), np.full((40, 50, 3), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "low" / "2.png"), np.full((40, 50, 3), 20, np.uint8))
    ds = PairedFolder(tmp_path, crop=16)
    assert len(ds) == 1
    item = ds[0]
    assert item["low"].shape == (3, 16, 16) and item["level"] == -1
    assert item["high"].mean() == pytest.approx(200 / 255)
    with pytest.raises(FileNotFoundError):
        PairedFolder(tmp_path / "low")


def test_paired_scene_crops_keep_low_and_high_aligned(tmp_path: Path) -> None:
    import cv2

    for sub in ("low", "high"):
        (tmp_path / sub).mkdir()
    high = np.random.default_rng(0).integers(0, 256, (120, 180, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "high" / "1.png"), high)
    cv2.imwrite(str(tmp_path / "low" / "1.png"), high // 4)
    ds = PairedFolder(tmp_path, crop=40, augment=True, scene=True)
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[0]
        assert item["low"].shape == item["high"].shape == (3, 40, 40)
        # shrunk 3x by area averaging: the low crop is the high crop / 4, to rounding
        torch.testing.assert_close(item["low"], item["high"] / 4, atol=1.5 / 255, rtol=0)


def test_pair_split_holds_out_blocks_of_numbers() -> None:
    # LOL: (N // 20) % 6 == 0 is validation, so re-shot scenes (neighbouring numbers) stay together
    assert [pair_split_of(f"{n}.png") for n in (0, 19, 20, 119, 120, 139, 140)] == [
        "val", "val", "train", "train", "val", "val", "train"]
    share = sum(pair_split_of(f"{n}.webp") == "val" for n in range(1, 486)) / 485
    assert 0.15 < share < 0.18
    assert pair_split_of("photo_L2.png", 0.5) == split_of("photo_L2.png", 0.5)  # names: hash


class _Constant(torch.utils.data.Dataset):
    def __init__(self, value: float, size: int) -> None:
        self.value, self.size, self.epochs = value, size, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {"low": torch.full((3, 2, 2), self.value), "index": index}


def test_mixture_draws_sources_by_weight_and_reproducibly() -> None:
    sources = [_Constant(0.0, 5), _Constant(1.0, 3), _Constant(2.0, 4)]
    mix = MixedPairs(sources, [3.0, 1.0, 0.0], length=2000, seed=1)
    values = [float(mix[i]["low"][0, 0, 0]) for i in range(len(mix))]
    assert 2.0 not in values  # weight 0: never drawn
    assert 0.70 < values.count(0.0) / len(values) < 0.80
    assert [mix[i]["index"] for i in range(50)] == [mix[i]["index"] for i in range(50)]
    first = [mix[i]["index"] for i in range(50)]
    mix.set_epoch(1)
    assert all(s.epochs == [1] for s in sources)
    assert [mix[i]["index"] for i in range(50)] != first
    for weights, message in (([1.0], "one weight per source"), ([0.0, 0.0, 0.0], "positive sum"),
                             ([1.0, -1.0, 1.0], ">= 0")):
        with pytest.raises(ValueError, match=message):
            MixedPairs(sources, weights, length=10)
    with pytest.raises(ValueError, match="no pairs"):
        MixedPairs([_Constant(0.0, 0)], [1.0], length=10)


def test_level_from_name() -> None:
    assert level_from_name("photo_L2.png") == 2
    assert level_from_name("a_b_L10.jpg") == 10
    assert level_from_name("photo.png") == -1
    assert level_from_name("_L3.png") == -1


runner = CliRunner()


def test_cli_synth_writes_pairs(photos: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", str(photos), str(tmp_path / "out"), "--levels", "1,2",
                                 "--crop", "32", "--seed", "4", "--recipe", "realistic"])
    assert result.exit_code == 0, result.output
    assert "wrote 8 pairs" in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {p["level"] for p in manifest["pairs"]} == {1, 2}
    assert manifest["degrade"]["recipe"] == "realistic"
    # the recipe's JPEG step is applied and recorded, as in training
    assert all(70 <= p["jpeg_quality"] <= 98 for p in manifest["pairs"])
    assert len(list((tmp_path / "out" / "low").glob("*.png"))) == 8


@pytest.mark.parametrize(("args", "message"), [
    (["synth", "/no/such/dir", "OUT"], "no such file"),
    (["synth", "PHOTOS", "OUT", "--levels", "7"], "bad --levels"),
    (["synth", "PHOTOS", "OUT", "--levels", "x"], "bad --levels"),
    (["synth", "PHOTOS", "OUT", "--recipe", "nope"], "unknown recipe"),
    (["synth", "EMPTY", "OUT"], "no images found"),
])
def test_cli_synth_bad_input(args: list[str], message: str, photos: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    mapping = {"PHOTOS": str(photos), "OUT": str(tmp_path / "out"),
               "EMPTY": str(tmp_path / "empty")}
    result = runner.invoke(app, [mapping.get(a, a) for a in args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_version_and_help() -> None:
    from mrvae import __version__

    assert runner.invoke(app, ["--version"]).output.strip() == f"mrvae {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "synth" in result.output
