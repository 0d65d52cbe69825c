"""Data parallel helpers: this process's place in the torchrun group, and what it shares.

A run started by torchrun (``WORLD_SIZE`` > 1) joins the group (nccl on GPU, gloo on CPU);
otherwise everything here works as a group of one without touching ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist


@dataclass
class Dist:
    """This process's place in a (possibly single-process) group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun group when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def broadcast_str(value: str, ddp: Dist) -> str:
    """The main process's ``value``, on every process."""
    if ddp.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, ddp: Dist) -> list[Any]:
    """Every process's ``obj``, by rank, on every process."""
    if ddp.world == 1:
        return [obj]
    out: list[Any] = [None] * ddp.world
    dist.all_gather_object(out, obj)
    return out
