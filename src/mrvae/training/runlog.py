"""The run's log: ``log.jsonl`` and TensorBoard events, cut back to the step a run resumes at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


class RunLog:
    """``log.jsonl`` + TensorBoard, written by the main process only."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.writer = None
        if not enabled:
            return
        if self.path.exists():  # drop what a killed run logged after its last checkpoint
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and _step_of(line) <= start_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir), purge_step=start_step)

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in values.items():
            if isinstance(value, (int, float)) and self.writer is not None:
                group = "val" if name.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{name}", value, step)

    def images(self, step: int, rows: list[torch.Tensor]) -> None:
        """Each row ``(4, 3, H, W)`` shown side by side: low | GR | DR | ground truth."""
        if self.writer is not None and rows:
            strips = torch.stack([torch.cat(list(row), dim=-1) for row in rows])
            self.writer.add_images("val/low_gr_dr_truth", strips.clamp(0, 1), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62
