"""DDP under ``torchrun``: process-group set-up and cross-rank reductions.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything degrades to a
single process and the reductions are identities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "gather_objects", "setup_distributed", "wrap_ddp_model"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over ranks (a copy; identity on one process)."""
        value = value.detach().clone()
        if self.enabled:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world_size
        return value

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over ranks (a copy; identity on one process)."""
        value = value.detach().clone()
        if self.enabled:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Initialise the process group when launched by ``torchrun`` and pick the device.

    ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``.
    Backend: NCCL on CUDA, gloo on CPU.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is not valid; expected 'auto', 'cpu' or 'cuda'")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but CUDA is not available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistributedContext(rank, world_size, local_rank, target)


def gather_objects(ctx: DistributedContext, obj: object) -> list[object]:
    """``obj`` of every rank, in rank order (``[obj]`` on one process)."""
    if not ctx.enabled:
        return [obj]
    gathered: list[object] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def wrap_ddp_model(model: torch.nn.Module, ctx: DistributedContext) -> torch.nn.Module:
    """``model`` under ``DistributedDataParallel`` when ``ctx`` has several ranks (on its
    GPU under CUDA), else ``model`` itself."""
    if not ctx.enabled:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
