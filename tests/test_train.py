"""Training: config loading, schedules, the sampler, a full tiny run, kill + resume, DDP, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from mrvae.apps.cli import app
from mrvae.nn.model import from_pretrained
from mrvae.training.config import ConfigError, TrainConfig
from mrvae.training.loaders import EpochBatches
from mrvae.training.loop import build_model, global_scale_at, lr_factor, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve small natural photos (scikit-image samples and their flips)."""
    import cv2
    from skimage import data

    root = tmp_path_factory.mktemp("train_photos")
    for name in ("astronaut", "chelsea", "coffee"):
        img = cv2.resize(getattr(data, name)(), (96, 72), interpolation=cv2.INTER_AREA)
        for index, variant in enumerate((img, img[:, ::-1], img[::-1], img[::-1, ::-1])):
            cv2.imwrite(str(root / f"{name}{index}.png"), variant[:, :, ::-1])
    return root


def tiny_config(photo_dir: Path, run_dir: Path, **top: object) -> dict:
    """A few-second run of the tiny network on 32x32 crops."""
    return {
        "model": {"preset": "tiny"},
        "data": {"roots": [str(photo_dir)], "crop": 32, "batch_size": 2, "workers": 0,
                 "val_fraction": 0.25, "val_samples": 2, "val_crop": 32},
        "steps": 8, "log_interval": 1, "val_interval": 4, "checkpoint_interval": 2,
        "threads": 1, "device": "cpu", "run_dir": str(run_dir), **top,
    }


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def train_losses(run_dir: Path) -> list[dict]:
    """The log without the timing column, which differs run to run."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    config = TrainConfig.from_yaml(path)
    assert config.model_config().depth >= 2
    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


def test_ablation_variants_share_data_seed_and_schedule():
    base = TrainConfig.from_yaml(CONFIGS / "ablation" / "base.yaml")
    variants = sorted((CONFIGS / "ablation").glob("*.yaml"))
    assert len(variants) >= 8
    models, losses = set(), set()
    for path in variants:
        config = TrainConfig.from_yaml(path)
        assert (config.data, config.optim, config.seed, config.steps, config.global_scales) == \
            (base.data, base.optim, base.seed, base.steps, base.global_scales), path.name
        models.add(config.model_config())
        losses.add(config.loss)
    assert len(models) >= 5  # depth 2/3/4, residual blocks 0/2/5
    assert any(loss.mode == "single_l2" for loss in losses)
    for switched_off in ("global_weight", "detail_weight", "content_weight"):
        assert any(getattr(loss, switched_off) == 0 for loss in losses), switched_off


def test_overrides_parse_as_yaml_values(tmp_path):
    config = TrainConfig.from_yaml(CONFIGS / "lite.yaml", [
        "optim.lr=5e-4", "data.degrade=[paper]", "model.residual_blocks=3", "steps=7",
        "loss.mode=single_l2", "model.init_weights=null"])
    assert config.optim.lr == 5e-4 and config.steps == 7
    assert config.recipes == ["paper"] and config.loss.mode == "single_l2"
    assert config.model_config().residual_blocks == 3


def test_every_model_field_can_be_set_in_the_config():
    preset = TrainConfig.from_yaml(CONFIGS / "lite.yaml").model_config()
    changed = {"widths": [8, 16], "latent_dim": 32, "detail_width": 8, "residual_blocks": 1,
               "global_colour": not preset.global_colour, "half_width": 8, "half_blocks": 1,
               "noise_radius": 3, "operator": "curves", "grid_size": 8, "curve_knots": 4,
               "grid_depth": 4}
    assert set(changed) == {f.name for f in dataclasses.fields(preset)}
    config = TrainConfig.from_yaml(CONFIGS / "lite.yaml", [
        f"model.{name}={json.dumps(value)}" for name, value in changed.items()])
    assert config.model_config() == dataclasses.replace(preset, **changed)


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lrr=1", "unknown key"),
    ("steps=many", "steps must be an integer"),
    ("optim.schedule=linear", "must be one of"),
    ("data.degrade=[paper, moonlight]", "unknown recipe"),
    ("model.preset=huge", "model.preset"),
    ("model.widths=[0]", "model"),
    ("global_scales=[2.0]", "global_scales"),
    ("data.batch_size=0", "batch_size"),
    ("steps", "KEY=VALUE"),
    ("amp=3", "true or false"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_yaml(CONFIGS / "lite.yaml", [override])


@pytest.mark.parametrize(("override", "message"), [
    ("data.sources=[{name: a, kind: paired}]", "needs a root"),
    ("data.sources=[{name: a}, {name: a}]", "names must differ"),
    ("data.sources=[{name: a, weight: 0}]", "sum to 0"),
    ("data.sources=[{name: a, degrade: [moonlight]}]", "unknown recipe"),
    ("best_metric=val_lol_psnr", "is not scored"),
    ("scene.sources=[lol]", "not among data.sources"),
    ("scene.weight=-1", "scene.weight"),
    ("scene.side=4", "scene.side"),
])
def test_bad_mixtures_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message) as error:
        TrainConfig.from_yaml(CONFIGS / "lite.yaml", [override])
    assert str(error.value).startswith(f"{CONFIGS / 'lite.yaml'}: ")  # the file, not a source


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        TrainConfig.from_yaml(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_yaml(bad)


# ----------------------------------------------------------------------------- schedule, sampler


def test_learning_rate_schedules():
    config = TrainConfig.from_yaml(None, ["optim.schedule=exp", "optim.decay_steps=10",
                                          "optim.decay_rate=0.5", "optim.min_lr=1e-4",
                                          "optim.lr=1e-3"])
    assert [lr_factor(s, config) for s in (0, 9, 10, 25, 1000)] == [1, 1, 0.5, 0.25, 0.1]
    cosine = TrainConfig.from_yaml(None, ["optim.schedule=cosine", "steps=100",
                                          "optim.warmup_steps=10", "optim.min_lr=0"])
    assert lr_factor(0, cosine) == pytest.approx(0.1)
    assert lr_factor(10, cosine) == pytest.approx(1.0)
    assert lr_factor(55, cosine) == pytest.approx(0.5)
    assert lr_factor(100, cosine) == pytest.approx(0.0)
    constant = TrainConfig.from_yaml(None, ["optim.schedule=constant"])
    assert lr_factor(12345, constant) == 1.0


def test_global_scale_is_drawn_per_step_from_the_list():
    config = TrainConfig.from_yaml(None)
    scales = [global_scale_at(step, config) for step in range(200)]
    assert set(scales) == set(config.global_scales)
    assert scales == [global_scale_at(step, config) for step in range(200)]


def test_batches_are_sharded_and_resume_mid_epoch():
    ranks = [EpochBatches(20, batch_size=3, seed=1, rank=r, world=2) for r in range(2)]
    for sampler in ranks:
        sampler.start(epoch=0, batch=0)
    shards = [[i for batch in sampler for _, i in batch] for sampler in ranks]
    assert not set(shards[0]) & set(shards[1])
    assert len(ranks[0]) == 3 and all(len(s) == 9 for s in shards)
    full = list(ranks[0])
    ranks[0].start(epoch=0, batch=2)
    assert list(ranks[0]) == full[2:]
    ranks[0].start(epoch=1, batch=0)
    assert [i for _, i in full[0]] != [i for _, i in next(iter(ranks[0]))]


# ----------------------------------------------------------------------------- training runs


def test_a_tiny_run_logs_validates_and_saves_the_best_model(photo_dir, tmp_path):
    config = TrainConfig.from_dict(tiny_config(photo_dir, tmp_path / "run"))
    run_dir = train(config, progress=False)
    assert run_dir == tmp_path / "run"
    records = train_losses(run_dir)
    steps = [r for r in records if "total" in r]
    vals = [r for r in records if "val_psnr" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert {"content", "kl", "global", "detail", "lr", "epoch"} <= set(steps[0])
    assert [r["step"] for r in vals] == [4, 8]
    assert all(0 < r["val_ssim"] <= 1 and r["val_psnr"] > 0 for r in vals)
    model = from_pretrained(run_dir / "best.safetensors")
    best = max(vals, key=lambda r: r["val_psnr"])
    assert model.card["step"] == best["step"] and model.card["preset"] == "tiny"
    assert model.card["data"]["degrade"] == ["paper", "realistic"]
    assert TrainConfig.from_yaml(run_dir / "config.yaml").run_dir == str(run_dir)
    assert list(run_dir.glob("events.out.tfevents.*"))
    checkpoint = torch.load(run_dir / "last.pt", weights_only=False)
    assert checkpoint["step"] == 8 and len(checkpoint["rng"]) == 1
    # a finished run called again does nothing more
    assert train(config, progress=False) == run_dir
    assert train_losses(run_dir) == records


@pytest.fixture(scope="module")
def numbered_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LOL-like folder: pairs 0..39; 0..19 are the fixed validation split (pair 5 smaller)."""
    import cv2
    from skimage import data

    root = tmp_path_factory.mktemp("numbered_pairs")
    photo = cv2.resize(data.coffee(), (48, 40), interpolation=cv2.INTER_AREA)
    for sub in ("low", "high"):
        (root / sub).mkdir()
    for number in range(40):
        high = np.roll(photo, 3 * number, axis=1)
        if number == 5:  # a validation pair of another size: whole images need not match
            high = high[:32, :40]
        cv2.imwrite(str(root / "high" / f"{number}.png"), high[:, :, ::-1])
        cv2.imwrite(str(root / "low" / f"{number}.png"), (high // 6)[:, :, ::-1])
    return root


def test_a_mixture_of_real_and_synthetic_pairs_validates_each_and_keeps_its_best(
        photo_dir, numbered_pairs, tmp_path):
    data = tiny_config(photo_dir, tmp_path / "mix", steps=6, val_interval=3)
    data["data"].update(mix_length=8, batch_size=4, sources=[
        {"name": "lol", "kind": "paired", "root": str(numbered_pairs), "weight": 2.0},
        {"name": "synth", "degrade": ["well_exposed", "backlit"], "weight": 1.0}])
    data["best_metric"] = "val_lol_ssim"
    data["scene"] = {"weight": 2.0, "side": 32, "batch_size": 2, "sources": ["lol"]}
    run_dir = train(TrainConfig.from_dict(data), progress=False)
    steps = [r for r in train_losses(run_dir) if "total" in r]
    assert all(0 < r["scene"] < r["total"] for r in steps)  # the scene pass is in the loss
    vals = [r for r in train_losses(run_dir) if "val_lol_psnr" in r]
    assert [r["step"] for r in vals] == [3, 6]
    assert all({"val_psnr", "val_lol_ssim", "val_lol_psnr_gr"} <= set(r) for r in vals)
    model = from_pretrained(run_dir / "best.safetensors")
    assert model.card["step"] == max(vals, key=lambda r: r["val_lol_ssim"])["step"]
    assert [s["name"] for s in model.card["data"]["sources"]] == ["lol", "synth"]


def test_init_weights_may_lack_the_colour_head(photo_dir, tmp_path):
    from mrvae.nn.model import create_model, save_pretrained

    old = save_pretrained(create_model("tiny"), tmp_path / "old.safetensors")
    data = tiny_config(photo_dir, tmp_path / "grown", steps=1)
    data["model"].update(init_weights=str(old), global_colour=True)
    model = build_model(TrainConfig.from_dict(data))
    assert model.global_reconstruction.colour is not None
    torch.testing.assert_close(model.encoder.stages[0][0].weight,
                               from_pretrained(old).encoder.stages[0][0].weight)
    data["model"].update(residual_blocks=3)
    with pytest.raises(ConfigError, match="has config"):
        build_model(TrainConfig.from_dict(data))


def test_init_weights_of_an_image_model_start_an_operator_model(photo_dir, tmp_path):
    """Another GR head (``operator``): the encoder, GR's decoder and DR carry over, the new
    head starts as initialised (the identity operator), the old head is dropped."""
    from mrvae.nn.model import create_model, save_pretrained

    torch.manual_seed(0)
    old = save_pretrained(create_model("tiny", global_colour=True), tmp_path / "old.safetensors")
    data = tiny_config(photo_dir, tmp_path / "affine", steps=1)
    data["model"].update(init_weights=str(old), global_colour=True, operator="affine",
                         grid_size=4, grid_depth=2)
    model = build_model(TrainConfig.from_dict(data))
    before = from_pretrained(old).state_dict()
    state = model.state_dict()
    carried = [name for name in before if name in state]
    assert not any(name.startswith("global_reconstruction.to_rgb") for name in state)
    assert any(name.startswith("detail_reconstruction.") for name in carried)
    assert any(name.startswith("global_reconstruction.blocks.") for name in carried)
    for name in carried:
        torch.testing.assert_close(state[name], before[name])
    low = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(low).global_image, low, atol=1e-6, rtol=0)


def test_train_only_grows_and_trains_the_named_part(photo_dir, tmp_path):
    """Weights without the half-resolution branch start a model with it; with
    ``optim.train_only`` only DR moves, so the global pass stays exactly the init's; with GR
    alone, everything else stays the init's, DR's batch-norm statistics included."""
    from mrvae.nn.model import create_model, save_pretrained

    torch.manual_seed(0)
    old = save_pretrained(create_model("tiny"), tmp_path / "old.safetensors")
    data = tiny_config(photo_dir, tmp_path / "dr_only", steps=2, val_interval=100)
    data["model"].update(init_weights=str(old), half_width=8, half_blocks=1)
    data["optim"] = {"lr": 1e-2, "train_only": ["detail_reconstruction"]}
    trained = from_pretrained(train(TrainConfig.from_dict(data), progress=False)
                             / "best.safetensors").state_dict()
    before = from_pretrained(old).state_dict()
    assert any(name.startswith("detail_reconstruction.half_resolution.") for name in trained)
    for name, value in before.items():
        assert torch.equal(trained[name], value) != name.startswith("detail_reconstruction."), name
    # GR alone: DR's batch norms keep their running statistics too (eval mode while frozen)
    data["optim"]["train_only"] = ["global_reconstruction"]
    data["run_dir"] = str(tmp_path / "gr_only")
    data["val_interval"] = 1  # validation returns modules to train mode between the steps
    trained = from_pretrained(train(TrainConfig.from_dict(data), progress=False)
                              / "best.safetensors").state_dict()
    moved = {name for name, value in before.items() if not torch.equal(trained[name], value)}
    assert moved and all(name.startswith("global_reconstruction.") for name in moved), moved
    data["optim"]["train_only"] = ["detail_reconstruction", "decoder"]
    data["run_dir"] = str(tmp_path / "unknown_part")
    with pytest.raises(ConfigError, match=r"train_only: \['decoder'\]"):
        train(TrainConfig.from_dict(data), progress=False)


@pytest.mark.slow
def test_persistent_workers_see_each_epoch_and_match_in_process_loading(photo_dir, tmp_path):
    """Items depend on (seed, epoch, index) only: a worker process gives the same batches as the
    main process, across epoch boundaries (8 steps of 4 per epoch)."""
    runs = []
    for workers in (0, 1):
        data = tiny_config(photo_dir, tmp_path / f"w{workers}", val_interval=100)
        data["data"]["workers"] = workers
        runs.append(train_losses(train(TrainConfig.from_dict(data), progress=False)))
    assert runs[0] == runs[1]
    assert {r["epoch"] for r in runs[1] if "epoch" in r} == {0, 1}


def test_init_weights_must_match_the_model(photo_dir, tmp_path, tiny_weights):
    config = tiny_config(photo_dir, tmp_path / "run", steps=1)
    config["model"]["init_weights"] = str(tiny_weights)
    train(TrainConfig.from_dict(config), progress=False)  # same architecture: loads
    config["model"]["residual_blocks"] = 2
    config["run_dir"] = str(tmp_path / "other")
    with pytest.raises(ConfigError, match="init_weights"):
        train(TrainConfig.from_dict(config), progress=False)


@pytest.mark.slow
def test_sigkill_then_resume_continues_exactly(photo_dir, tmp_path):
    """Kill a training process mid-run; the resumed run logs what the uninterrupted one did
    (the scene pass's batches included, over several of its epochs)."""
    data = tiny_config(photo_dir, tmp_path / "whole", steps=40, val_interval=5,
                       checkpoint_interval=3,
                       scene={"weight": 1.0, "side": 32, "batch_size": 2})
    whole = train(TrainConfig.from_dict(data), progress=False)

    killed = tmp_path / "killed"
    path = write_config(tmp_path / "killed.yaml", {**data, "run_dir": str(killed)})
    process = subprocess.Popen([sys.executable, "-m", "mrvae", "train", "--config", str(path),
                                "--no-progress"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.monotonic() + 120
    while not (killed / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step = torch.load(killed / "last.pt", weights_only=False)["step"]
    assert 3 <= step < 40, "the kill should land mid-run"

    result = CliRunner().invoke(app, ["train", "--resume", str(killed), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert train_losses(killed) == train_losses(whole)
    assert not list(killed.glob(".*.tmp"))


@pytest.mark.slow
def test_two_process_ddp_on_cpu(photo_dir, tmp_path):
    run_dir = tmp_path / "ddp"
    path = write_config(tmp_path / "ddp.yaml", tiny_config(
        photo_dir, run_dir, steps=4, val_interval=4,
        scene={"weight": 1.0, "side": 32, "batch_size": 1}))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "mrvae", "train", "--config", str(path), "--no-progress"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    records = train_losses(run_dir)
    assert [r["step"] for r in records if "total" in r] == [1, 2, 3, 4]  # rank 0 logs alone
    assert all(r["scene"] > 0 for r in records if "total" in r)
    checkpoint = torch.load(run_dir / "last.pt", weights_only=False)
    assert len(checkpoint["rng"]) == 2  # one RNG state per process, for an exact resume
    assert not torch.equal(checkpoint["rng"][0]["torch"], checkpoint["rng"][1]["torch"])
    assert from_pretrained(run_dir / "best.safetensors").card["step"] == 4


# ----------------------------------------------------------------------------- CLI


def test_cli_errors_are_one_line(photo_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "nope.yaml" in result.output
    assert "Traceback" not in result.output

    config = tiny_config(tmp_path / "no_photos_here", tmp_path / "run")
    path = write_config(tmp_path / "c.yaml", config)
    result = runner.invoke(app, ["train", "--config", str(path), "--no-progress"])
    assert result.exit_code == 1 and "no_photos_here: no such folder" in result.output

    result = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 1 and "no checkpoint" in result.output

    result = runner.invoke(app, ["train", "--config", str(path), "--set", "optim.lr=fast"])
    assert result.exit_code == 1 and "optim.lr" in result.output
