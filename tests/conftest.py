"""Shared fixtures. Tests make their own small inputs; none needs ../shared."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"

# Test tensors are tiny: threads gain nothing, and OpenMP spinning on a busy machine costs 10x.
torch.set_num_threads(1)


def stop_process(process: subprocess.Popen) -> None:
    """Stop a server started in a session of its own: terminate, then kill its group after a
    minute."""
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the decoded-image cache of every test out of the user's home."""
    monkeypatch.setenv("MRVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A natural photo shipped with scikit-image, uint8 (128, 128, 3)."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of a few small natural photos (from scikit-image) as PNG and JPEG."""
    import cv2
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = getattr(data, name)()
        img = cv2.resize(img, (img.shape[1] // 4, img.shape[0] // 4), interpolation=cv2.INTER_AREA)
        ext = ".jpg" if name == "coffee" else ".png"
        cv2.imwrite(str(root / f"{name}{ext}"), img[:, :, ::-1])
    return root


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights + card of an untrained ``tiny`` model, for load/enhance tests."""
    from mrvae.nn.model import create_model, save_pretrained

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    return save_pretrained(create_model("tiny").eval(), path, {"preset": "tiny", "version": "test"})


@pytest.fixture
def tiny_halfres() -> torch.nn.Module:
    """``tiny`` with DR's half-resolution branch, its weights random (a fresh branch is a
    no-op: its last convolution starts at zero)."""
    from mrvae.nn.model import create_model

    torch.manual_seed(0)
    model = create_model("tiny", half_width=8, half_blocks=1)
    for parameter in model.detail_reconstruction.half_resolution.parameters():
        torch.nn.init.normal_(parameter, 0.0, 0.2)
    return model.eval()


@pytest.fixture
def tiny_noise() -> torch.nn.Module:
    """``tiny`` with DR's noise conditioning, its weights random (fresh, it is a no-op)."""
    from mrvae.nn.model import create_model

    torch.manual_seed(0)
    model = create_model("tiny", noise_radius=4)
    for parameter in model.detail_reconstruction.noise.parameters():
        torch.nn.init.normal_(parameter, 0.0, 0.5)
    return model.eval()
