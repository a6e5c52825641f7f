"""torch.distributed, the way torchrun starts it: rank and world size from the environment,
gloo for CPU tensors and, on GPUs, NCCL for CUDA ones. Single-process runs need none of it."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .device import resolve_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def process_group_backend(use_cuda: bool) -> str:
    """gloo for CPU tensors on every run (the epoch's loss, RNG states, held-out splits), and NCCL
    for CUDA tensors (DDP's gradients) on GPUs: an NCCL-only group cannot reduce a CPU tensor."""
    return "cpu:gloo,cuda:nccl" if use_cuda else "gloo"


def setup(device: str = "auto") -> tuple[Dist, torch.device]:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); each rank takes
    the GPU of its local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1 and device in ("auto", "cuda"):
        dev = resolve_device(f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        use_cuda = dev.type == "cuda"
        dist.init_process_group(backend=process_group_backend(use_cuda), device_id=dev if use_cuda else None)
        # A process that exits with the group alive can abort in gloo's/NCCL's destructors
        # ("terminate called without an active exception") while its peers still run.
        atexit.register(_destroy)
    return Dist(rank, world, local), dev


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's object, in rank order (on every rank)."""
    if not d.active:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def mean(value: float, d: Dist) -> float:
    if not d.active:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def teardown(d: Dist) -> None:
    if d.active:
        _destroy()
