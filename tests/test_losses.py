"""The multi-term MR-VAE loss: each term, each switch, the single-L2 ablation, and learning."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mrvae.nn.losses import LossConfig, kl_divergence, mrvae_loss, tone_statistics
from mrvae.nn.model import MRVAEOutput, create_model


def fake_output(seed: int = 0, size: int = 16) -> tuple[MRVAEOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = lambda: torch.rand(2, 3, size, size, generator=g)  # noqa: E731
    latent = lambda: torch.randn(2, 4, 2, 2, generator=g)  # noqa: E731
    out = MRVAEOutput(detail=image(), global_image=image(), mean=latent(), logvar=latent(),
                      latent=latent(), target_mean=latent())
    return out, image()


def test_release_total_is_the_weighted_sum_of_the_terms():
    out, target = fake_output()
    total, terms = mrvae_loss(out, target, LossConfig())
    expected = (10 * F.mse_loss(out.global_image, target) + F.l1_loss(out.detail, target)
                + kl_divergence(out.mean, out.logvar) + F.mse_loss(out.latent, out.target_mean))
    torch.testing.assert_close(total, expected)
    assert set(terms) == {"content", "kl", "global", "detail", "total"}
    assert terms["total"] == pytest.approx(sum(terms[k] for k in ("content", "kl", "global",
                                                                     "detail")), rel=1e-5)


@pytest.mark.parametrize("switch", [{"content_weight": 0.0}, {"kl_weight": 0.0},
                                    {"global_weight": 0.0}, {"detail_weight": 0.0},
                                    {"ssim_weight": 1.0}, {"tone_weight": 1.0},
                                    {"global_distance": "l1"},
                                    {"detail_distance": "l2"}, {"mode": "single_l2"}])
def test_every_switch_changes_the_loss(switch):
    out, target = fake_output()
    base, _ = mrvae_loss(out, target, LossConfig())
    changed, terms = mrvae_loss(out, target, dataclasses.replace(LossConfig(), **switch))
    assert abs(changed.item() - base.item()) > 1e-4
    name, value = next(iter(switch.items()))
    if name.endswith("_weight"):
        term = name.removesuffix("_weight")
        assert (term in terms) == bool(value)


def test_tone_statistics_see_black_level_and_saturation_not_where_pixels_are():
    """0 for the same tones anywhere in the image (pixels shuffled), positive for lifted blacks
    or paler colour, which a pixel loss scores no differently from other errors."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 24, 24, generator=g)
    shuffled = target.flatten(2)[..., torch.randperm(24 * 24, generator=g)].view_as(target)
    assert tone_statistics(shuffled, target).item() == pytest.approx(0.0, abs=1e-6)
    lifted = 0.1 + 0.9 * target  # blacks lifted, highlights kept
    luma = (target * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    paler = luma + 0.5 * (target - luma)  # the same luma, half the chroma
    assert tone_statistics(lifted, target) > 0.01 and tone_statistics(paler, target) > 0.01
    x = target.clone().requires_grad_(True)
    tone_statistics(0.8 * x, target).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_single_l2_is_plain_l2_on_the_final_output():
    out, target = fake_output()
    total, terms = mrvae_loss(out, target, LossConfig(mode="single_l2"))
    torch.testing.assert_close(total, F.mse_loss(out.detail, target))
    assert set(terms) == {"single_l2", "total"}
    # it must not need the target latent
    mrvae_loss(dataclasses.replace(out, target_mean=None), target, LossConfig(mode="single_l2"))


def test_kl_is_zero_for_a_unit_gaussian_and_positive_otherwise():
    zeros = torch.zeros(1, 4, 2, 2)
    assert kl_divergence(zeros, zeros).item() == pytest.approx(0.0)
    assert kl_divergence(zeros + 1, zeros).item() == pytest.approx(0.5)
    assert kl_divergence(zeros, zeros + 1).item() > 0


def test_missing_target_latent_and_all_terms_off_are_errors():
    out, target = fake_output()
    with pytest.raises(ValueError, match="target"):
        mrvae_loss(dataclasses.replace(out, target_mean=None), target, LossConfig())
    off = LossConfig(content_weight=0, kl_weight=0, global_weight=0, detail_weight=0)
    with pytest.raises(ValueError, match="switched off"):
        mrvae_loss(out, target, off)


def test_content_loss_gradient_reaches_the_shared_encoder_through_both_branches():
    torch.manual_seed(0)
    model = create_model("tiny").train()
    low, high = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    only_content = LossConfig(kl_weight=0, global_weight=0, detail_weight=0)
    loss, _ = mrvae_loss(model(low, target=high), high, only_content)
    loss.backward()
    encoder_grad = model.encoder.stages[0][0].weight.grad
    assert encoder_grad is not None and encoder_grad.abs().sum() > 0
    assert all(p.grad is None for p in model.global_reconstruction.parameters())
    assert all(p.grad is None for p in model.detail_reconstruction.parameters())


@pytest.mark.parametrize("config", [LossConfig(), LossConfig(mode="single_l2")],
                         ids=["multi", "single_l2"])
def test_overfitting_one_tiny_pair_drives_the_loss_down(config):
    """A real learning test: 80 Adam steps on one 32x32 pair (about 2 s)."""
    from skimage import data

    torch.manual_seed(0)
    high = torch.from_numpy(data.astronaut()[100:228:4, 150:278:4].copy()).permute(2, 0, 1)
    high = high.float().div(255).unsqueeze(0)
    low = high.pow(3.0) * 0.8  # darker, with a gamma like the synthesis
    model = create_model("tiny").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, psnrs = [], []
    for _ in range(80):
        out = model(low, target=high)
        loss, _ = mrvae_loss(out, high, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        psnrs.append(-10 * torch.log10(F.mse_loss(out.detail.detach(), high)).item())
    start, end = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert end < 0.5 * start, f"loss only went from {start:.4f} to {end:.4f}"
    assert max(psnrs[-5:]) > psnrs[0] + 5, f"PSNR {psnrs[0]:.1f} -> {psnrs[-1]:.1f} dB"
