"""Checkpoints: ``last.pt`` written atomically, the RNG states it carries, reading it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mrvae.io.files import atomic_file
from mrvae.training.config import ConfigError

CHECKPOINT_FORMAT = 1


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename: the old file survives a kill."""
    with atomic_file(path, fsync=True) as handle:
        torch.save(obj, handle)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read ``last.pt``. Raises ConfigError on a corrupt or foreign file."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise ConfigError(f"{path}: cannot read checkpoint ({exc})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not an mrvae training checkpoint")
    return checkpoint
