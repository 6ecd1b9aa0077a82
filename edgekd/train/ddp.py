"""Thin helpers over torch.distributed for running the trainer under torchrun.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; ``init_from_env`` joins the
group (gloo on CPU, nccl on GPU). Outside torchrun everything reports rank 0 of 1.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    """The process group this process belongs to (rank 0 of 1 when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())
    return DistInfo()


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op without WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return current()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks (a detached copy); identity on one process."""
    if not info.distributed:
        return value.detach()
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def state_checksum(module: nn.Module) -> str:
    """sha256 over every parameter and buffer, in state_dict order (bitwise identity check)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def gather_checksums(module: nn.Module, info: DistInfo) -> list[str]:
    """Every rank's weight checksum (rank order); one entry on a single process."""
    mine = state_checksum(module)
    if not info.distributed:
        return [mine]
    out: list[str | None] = [None] * info.world_size
    dist.all_gather_object(out, mine)
    return [str(c) for c in out]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
