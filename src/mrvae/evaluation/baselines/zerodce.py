"""Zero-DCE (Guo et al., CVPR 2020) with its published weights, as a comparison baseline.

Our own definition of the network: seven 3x3 convolutions of 32 channels with symmetric skip
concatenations; the last gives 8 curve maps ``r_k`` (3 channels each, tanh) that refine the
image 8 times by ``x <- x + r_k (x^2 - x)``. The weights (``Epoch99.pth`` of the authors'
repository) are read with ``torch.load(weights_only=True)``: tensors only, no pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrvae.evaluation.baselines import MethodUnavailable

WEIGHTS_ENV = "MRVAE_ZERODCE_WEIGHTS"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[4].parent / "shared/peers/zerodce/Epoch99.pth"
HALO = 8  # receptive-field radius of seven 3x3 convolutions is 7 pixels


class ZeroDCENet(nn.Module):
    """The DCE-Net: predicts 8 light-enhancement curves per pixel and applies them."""

    def __init__(self, width: int = 32, iterations: int = 8) -> None:
        super().__init__()
        self.iterations = iterations
        self.e_conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.e_conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.e_conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.e_conv4 = nn.Conv2d(width, width, 3, padding=1)
        self.e_conv5 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.e_conv6 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.e_conv7 = nn.Conv2d(2 * width, 3 * iterations, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, 3, H, W)`` in [0, 1] -> enhanced image of the same shape."""
        x1 = F.relu(self.e_conv1(x))
        x2 = F.relu(self.e_conv2(x1))
        x3 = F.relu(self.e_conv3(x2))
        x4 = F.relu(self.e_conv4(x3))
        x5 = F.relu(self.e_conv5(torch.cat([x3, x4], 1)))
        x6 = F.relu(self.e_conv6(torch.cat([x2, x5], 1)))
        curves = torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))
        for r in torch.split(curves, 3, dim=1):
            x = x + r * (x * x - x)
        return x


def weights_path(path: str | Path | None = None) -> Path:
    """The weights file: ``path``, else ``$MRVAE_ZERODCE_WEIGHTS``, else ``../shared/peers``."""
    return Path(path or os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS)


def load_zerodce(path: str | Path | None = None) -> ZeroDCENet:
    """The network with the published weights.

    Raises:
        MethodUnavailable: the weights file is missing, unreadable or does not match.
    """
    path = weights_path(path)
    if not path.is_file():
        raise MethodUnavailable(f"zerodce: weights {path} not found (set ${WEIGHTS_ENV})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe pickles
        raise MethodUnavailable(f"zerodce: cannot read {path} ({type(exc).__name__})") from exc
    # The published weights hold thousands of denormal floats (dead weights near 1e-40) that
    # make CPU convolutions ~40x slower; zeroing them changes no output.
    tiny = torch.finfo(torch.float32).tiny
    state = {key.removeprefix("module."): torch.where(value.abs() < tiny, 0.0, value)
             for key, value in state.items()}
    net = ZeroDCENet()
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise MethodUnavailable(f"zerodce: {path} does not match the network") from exc
    return net.eval()


class ZeroDCE:
    """Zero-DCE as a method on float32 ``(H, W, 3)`` images, run in tiles to bound memory."""

    def __init__(self, path: str | Path | None = None, tile: int = 512) -> None:
        self.net = load_zerodce(path)
        self.tile = tile

    @torch.inference_mode()
    def __call__(self, img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), np.float32))[None]
        height, width = x.shape[-2:]
        out = torch.empty_like(x)
        for top in range(0, height, self.tile):
            for left in range(0, width, self.tile):
                y0, x0 = max(0, top - HALO), max(0, left - HALO)
                y1, x1 = min(height, top + self.tile + HALO), min(width, left + self.tile + HALO)
                enhanced = self.net(x[..., y0:y1, x0:x1])
                bottom, right = min(height, top + self.tile), min(width, left + self.tile)
                out[..., top:bottom, left:right] = enhanced[
                    ..., top - y0:bottom - y0, left - x0:right - x0]
        return out[0].clamp(0.0, 1.0).permute(1, 2, 0).numpy()
