"""torch.distributed plumbing for ``torchrun``: process group, device, and the few collectives
training and search need. A plain single-process run gets ``Dist(rank=0, world=1)`` and every
collective is a no-op, so callers never branch on it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from spos_hw.errors import RuntimeUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank, world size and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Only the main rank writes files and logs progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def broadcast_batch(self, batch: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        """Rank 0's int64 array (an ``ArchBatch`` row, say) on every rank."""
        if not self.active:
            assert batch is not None
            return batch
        t = torch.as_tensor(batch, dtype=torch.int64) if self.main else torch.empty(shape, dtype=torch.int64)
        t = t.to(self._comm_device)
        torch.distributed.broadcast(t, 0)
        return t.cpu().numpy()

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (returned on ``t``'s device)."""
        if not self.active:
            return t
        out = t.detach().to(self._comm_device, dtype=torch.float64).clone()
        torch.distributed.all_reduce(out)
        return out.to(t.device)

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (BN running statistics) over ranks, in place."""
        if not self.active:
            return
        for buf in module.buffers():
            if buf.is_floating_point():
                torch.distributed.all_reduce(buf)
                buf.div_(self.world)

    @property
    def _comm_device(self) -> torch.device:
        return self.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise RuntimeUnavailable(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise RuntimeUnavailable(f"device {name!r} asked for, but no CUDA device is available")
    return torch.device(name if ":" in name else f"cuda:{local_rank}")


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group ``torchrun`` set up (gloo on CPU, nccl on CUDA), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world <= 1:
        return Dist(0, 1, 0, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        torch.distributed.init_process_group(backend, **kwargs)
        log.debug("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
    return Dist(rank, world, local, dev)


def shutdown(dist: Dist) -> None:
    if dist.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def is_main_process() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` job (or runs alone): the one that prints."""
    return int(os.environ.get("RANK", "0")) == 0


__all__ = ["Dist", "init_distributed", "is_main_process", "resolve_device", "shutdown"]
