"""The multi-term MR-VAE loss and the single-L2 ablation.

All image arguments are ``(B, 3, H, W)`` in [0, 1]; every term is a mean over elements, so the
weights do not depend on image or latent size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale

from mrvae.nn.model import MRVAEOutput

Distance = Literal["l1", "l2"]


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms; a weight of 0 switches a term off.

    ``mode="single_l2"`` replaces everything with one L2 loss on the final (DR) output, the
    baseline of the paper's loss ablation. The release's total is
    ``10 * L2(GR) + L1(DR) + KL + content``. ``order_weight`` scores an affine operator's
    :func:`order_reversal` on a grey ramp (``MRVAEOutput.grey_ramp``); ``tone_weight`` the
    :func:`tone_statistics` of the global image and of DR's output against the target's (the
    operator is where a lifted black level comes from; DR's output is what users see).
    """

    mode: Literal["multi", "single_l2"] = "multi"
    content_weight: float = 1.0
    kl_weight: float = 1.0
    global_weight: float = 10.0
    global_distance: Distance = "l2"
    detail_weight: float = 1.0
    detail_distance: Distance = "l1"
    ssim_weight: float = 0.0
    order_weight: float = 0.0
    tone_weight: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def distance(a: torch.Tensor, b: torch.Tensor, kind: Distance) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(a, b)
    if kind == "l2":
        return F.mse_loss(a, b)
    raise ValueError(f"unknown distance {kind!r}")


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over elements."""
    return 0.5 * torch.mean(mean.pow(2) + logvar.exp() - 1.0 - logvar)


def content_loss(latent: torch.Tensor, target_mean: torch.Tensor) -> torch.Tensor:
    """Hidden-variable content loss: squared distance of the low-light latent to the target's."""
    return F.mse_loss(latent, target_mean)


def ssim_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - SSIM (11x11 Gaussian window), from kornia."""
    import kornia

    return kornia.losses.ssim_loss(a, b, window_size=11, reduction="mean") * 2.0


def order_reversal(ramp: torch.Tensor) -> torch.Tensor:
    """How far outputs fall where their inputs rise: ``ramp (B, C, L, ...)`` holds outputs for
    inputs rising along ``L``; the falls between neighbours summed along ``L``, averaged over
    the rest (0 for a map that keeps the order, 0.1 for one that ends 0.1 below a peak)."""
    return torch.relu(-ramp.diff(dim=2)).sum(dim=2).mean()


TONE_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def tone_statistics(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance between the images' tone and colour statistics, image by image: the
    quantiles :data:`TONE_QUANTILES` of their luma (black level, contrast, highlights) and their
    mean chroma (saturation: each channel's distance from the pixel's luma). A pixel loss
    under uncertainty pulls towards the mean (lifted blacks, paler colour); these do not."""

    def statistics(x: torch.Tensor) -> torch.Tensor:
        luma = rgb_to_grayscale(x)
        levels = torch.tensor(TONE_QUANTILES, dtype=x.dtype, device=x.device)
        quantiles = torch.quantile(luma.flatten(1), levels, dim=1).T  # (B, Q)
        chroma = (x - luma).abs().mean(dim=(1, 2, 3))[:, None]
        return torch.cat([quantiles, chroma], dim=1)

    return F.l1_loss(statistics(a), statistics(b))


def mrvae_loss(output: MRVAEOutput, target: torch.Tensor, config: LossConfig
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms (as floats, for logging).

    Raises:
        ValueError: a content loss is asked for but ``output.target_mean`` is missing (call the
            model with ``target=``), or an order loss but the model has no affine operator.
    """
    if config.mode == "single_l2":
        total = F.mse_loss(output.detail, target)
        return total, {"total": total.item(), "single_l2": total.item()}
    terms: dict[str, torch.Tensor] = {}
    if config.content_weight:
        if output.target_mean is None:
            raise ValueError("content loss needs the target latent: call model(low, target=high)")
        terms["content"] = config.content_weight * content_loss(output.latent, output.target_mean)
    if config.kl_weight:
        terms["kl"] = config.kl_weight * kl_divergence(output.mean, output.logvar)
    if config.global_weight:
        terms["global"] = config.global_weight * distance(output.global_image, target,
                                                          config.global_distance)
    if config.detail_weight:
        terms["detail"] = config.detail_weight * distance(output.detail, target,
                                                          config.detail_distance)
    if config.ssim_weight:
        terms["ssim"] = config.ssim_weight * ssim_loss(output.detail, target)
    if config.tone_weight:
        terms["tone"] = config.tone_weight * (tone_statistics(output.global_image, target)
                                              + tone_statistics(output.detail, target))
    if config.order_weight:
        if output.grey_ramp is None:
            raise ValueError("the order loss needs a model with an affine operator")
        terms["order"] = config.order_weight * order_reversal(output.grey_ramp)
    if not terms:
        raise ValueError("every loss term is switched off")
    total = torch.stack(list(terms.values())).sum()
    logged = {name: value.item() for name, value in terms.items()}
    logged["total"] = total.item()
    return total, logged
