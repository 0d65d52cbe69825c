"""The MR-VAE network: shapes, gradients, the shared encoder, determinism, save/load."""

from __future__ import annotations

import pytest
import torch

from mrvae.nn import model as model_module
from mrvae.nn.losses import LossConfig, mrvae_loss
from mrvae.nn.model import (
    PRESETS,
    create_model,
    from_pretrained,
    load_matching,
    mixed_precision,
    save_pretrained,
)


@pytest.fixture
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("tiny")


@pytest.mark.parametrize(("height", "width"), [(17, 23), (1, 1), (5, 64), (33, 9)])
@pytest.mark.parametrize("global_scale", [1.0, 0.5, 0.25])
def test_outputs_match_odd_input_sizes(tiny, height, width, global_scale):
    low = torch.rand(2, 3, height, width)
    out = tiny.eval()(low, target=torch.rand(2, 3, height, width), global_scale=global_scale)
    assert out.detail.shape == out.global_image.shape == low.shape
    assert out.target_mean.shape == out.mean.shape == out.logvar.shape == out.latent.shape
    assert out.mean.shape[:2] == (2, PRESETS["tiny"].latent_dim)
    for image in (out.detail, out.global_image):
        assert torch.isfinite(image).all()
        assert image.min() >= 0 and image.max() <= 1


def test_gradient_reaches_every_parameter(tiny):
    low, high = torch.rand(2, 3, 20, 28), torch.rand(2, 3, 20, 28)
    loss, _ = mrvae_loss(tiny.train()(low, target=high), high, LossConfig())
    loss.backward()
    missing = [name for name, p in tiny.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_target_latent_comes_from_the_same_encoder(tiny):
    """The content loss's target latent is the encoder's mean of the ground truth: changing the
    encoder's weights changes it, and its gradient flows into the shared encoder weights."""
    tiny.eval()
    high = torch.rand(1, 3, 16, 16)
    out = tiny(torch.rand(1, 3, 16, 16), target=high)
    expected = tiny.encode(high)[0]
    torch.testing.assert_close(out.target_mean, expected)

    # gradient of the target branch alone lands in the encoder (mean head + stages), nowhere else
    tiny.zero_grad()
    out.target_mean.sum().backward()
    touched = {name.split(".")[0] for name, p in tiny.named_parameters()
               if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == {"encoder"}
    assert tiny.encoder.mean_head[0].weight.grad.abs().sum() > 0
    assert tiny.encoder.stages[0][0].weight.grad.abs().sum() > 0


def test_eval_is_deterministic_and_training_samples(tiny):
    low = torch.rand(1, 3, 16, 16)
    first, second = tiny.eval()(low), tiny(low)
    torch.testing.assert_close(first.detail, second.detail)
    torch.testing.assert_close(first.latent, first.mean)  # eval uses the latent mean
    tiny.train()
    sampled = tiny(low, sample=True)
    assert not torch.allclose(sampled.latent, sampled.mean)


def test_global_scale_runs_gr_on_a_smaller_image(tiny):
    low = torch.rand(1, 3, 64, 64)
    full, quarter = tiny.eval()(low), tiny(low, global_scale=0.25)
    multiple = tiny.multiple
    assert full.mean.shape[-1] == 64 // multiple
    assert quarter.mean.shape[-1] == 16 // multiple
    assert quarter.detail.shape == low.shape


def test_save_and_load_round_trip(tiny, tmp_path):
    path = save_pretrained(tiny.eval(), tmp_path / "m.safetensors", {"preset": "tiny"})
    loaded = from_pretrained(path)
    low = torch.rand(1, 3, 24, 24)
    torch.testing.assert_close(loaded(low).detail, tiny(low).detail)
    assert loaded.card["preset"] == "tiny"


def test_overrides_change_the_architecture():
    model = create_model("tiny", residual_blocks=3, widths=[4, 8, 16])
    assert model.config.depth == 3 and len(model.detail_reconstruction.blocks) == 3
    with pytest.raises(ValueError, match="unknown model preset"):
        create_model("huge")
    with pytest.raises(ValueError, match="unknown model config keys"):
        create_model("tiny", depth=3)


def test_colour_head_starts_as_no_correction_and_grows_from_old_weights(tiny):
    grown = create_model("tiny", global_colour=True)
    fresh = load_matching(grown, tiny.state_dict())
    assert fresh and all(name.startswith("global_reconstruction.colour.") for name in fresh)
    low = torch.rand(2, 3, 24, 40)
    torch.testing.assert_close(grown.eval()(low).detail, tiny.eval()(low).detail)
    with pytest.raises(RuntimeError, match="unexpected"):
        load_matching(tiny, grown.state_dict())


def test_half_resolution_branch_grows_a_model_without_changing_it(tiny):
    grown = create_model("tiny", half_width=8)
    fresh = load_matching(grown, tiny.state_dict())
    assert fresh and all(n.startswith("detail_reconstruction.half_resolution.") for n in fresh)
    low = torch.rand(2, 3, 17, 23)  # odd sizes: the branch pads and crops
    torch.testing.assert_close(grown.eval()(low).detail, tiny.eval()(low).detail)


def test_half_resolution_branch_learns_and_works_on_odd_sizes(tiny_halfres):
    """Once its last convolution is no longer zero, the branch changes DR's output and every
    one of its weights gets a gradient, at any size."""
    branch = tiny_halfres.detail_reconstruction.half_resolution
    for height, width in [(17, 23), (1, 1), (2, 9)]:
        low, high = torch.rand(2, 3, height, width), torch.rand(2, 3, height, width)
        tiny_halfres.zero_grad()
        loss, _ = mrvae_loss(tiny_halfres.train()(low, target=high), high, LossConfig())
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.parameters())
    features = torch.rand(1, 8, 17, 23)
    assert branch(features).shape == features.shape
    assert branch(features).abs().mean() > 1e-3


def test_noise_conditioning_grows_a_model_without_changing_it(tiny):
    grown = create_model("tiny", noise_radius=3)
    fresh = load_matching(grown, tiny.state_dict())
    assert fresh and all(n.startswith("detail_reconstruction.noise.") for n in fresh)
    low = torch.rand(2, 3, 17, 23)
    torch.testing.assert_close(grown.eval()(low).detail, tiny.eval()(low).detail)


@pytest.mark.parametrize("sigma", [0.005, 0.02, 0.08])
def test_noise_conditioning_measures_noise_and_brightness(sigma):
    """On a flat grey photo with white noise, the local levels are the noise's standard
    deviation and the grey's luma, everywhere (the borders too)."""
    torch.manual_seed(0)
    noise = create_model("tiny", noise_radius=7).detail_reconstruction.noise
    photo = (0.3 + sigma * torch.randn(1, 1, 96, 96)).expand(1, 3, 96, 96)
    levels = 2 ** noise.levels(photo)
    assert levels.shape == (1, 2, 96, 96)
    torch.testing.assert_close(levels[0, 0].median(), torch.tensor(sigma), rtol=0.1, atol=0)
    assert (levels[0, 0] / sigma).clamp(0.5, 2.0).eq(levels[0, 0] / sigma).all()
    torch.testing.assert_close(levels[0, 1], torch.full((96, 96), 0.3), rtol=0.15, atol=0)


def test_noise_conditioning_learns_and_tells_noise_levels_apart(tiny_noise):
    """Trained, it changes DR's features by the noise level; every weight gets a gradient."""
    noise = tiny_noise.detail_reconstruction.noise
    low, high = torch.rand(2, 3, 17, 23), torch.rand(2, 3, 17, 23)
    loss, _ = mrvae_loss(tiny_noise.train()(low, target=high), high, LossConfig())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in noise.parameters())
    features = torch.ones(1, 8, 16, 16)
    flat = torch.full((1, 3, 16, 16), 0.3)
    noisy = flat + 0.05 * torch.randn(1, 3, 16, 16)
    assert (noise(flat, features) - noise(noisy, features)).abs().mean() > 1e-2
    with pytest.raises(ValueError, match="pass image"):
        tiny_noise.detail_reconstruction(flat, torch.rand(1, 8, 16, 16))


def test_colour_head_learns_and_shifts_each_channel():
    torch.manual_seed(0)
    model = create_model("tiny", global_colour=True)
    low, high = torch.rand(2, 3, 20, 28), torch.rand(2, 3, 20, 28)
    loss, _ = mrvae_loss(model.train()(low, target=high), high, LossConfig())
    loss.backward()
    head = model.global_reconstruction.colour
    assert head[-1].bias.grad.abs().sum() > 0  # learns from the first step
    before = model.eval()(low).global_image
    with torch.no_grad():
        head[-1].bias.copy_(torch.tensor([2.0, 0.0, -2.0]))
    after = model(low).global_image
    shift = (after - before).mean(dim=(0, 2, 3))
    assert shift[0] > 0.1 and shift[2] < -0.1 and abs(shift[1]) < 1e-6


def test_training_precision_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """float16 on a GPU; bfloat16 on a CPU only where it computes bfloat16 natively (emulated,
    it is slower than float32); float32 (None) when mixed precision is off."""
    assert mixed_precision(torch.device("cuda")) == torch.float16
    assert mixed_precision(torch.device("cuda"), enabled=False) is None
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(model_module, "native_bfloat16", lambda device, n=native: n)
        assert mixed_precision(torch.device("cpu")) == expected
        assert mixed_precision(torch.device("cpu"), enabled=False) is None
