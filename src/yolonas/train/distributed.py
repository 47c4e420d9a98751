"""Data-parallel training under `torchrun`: process group set-up, model wrapping, rank-0 helpers.

`torchrun --nproc_per_node G [--nnodes N --node_rank R --rdzv_endpoint HOST:PORT] -m yolonas.cli train ...`
sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; `init_distributed` reads them (env://).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; a single process is rank 0 of a world of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    """The rank and world size that torchrun (or any env:// launcher) put in the environment."""
    return DistInfo(rank=int(os.environ.get("RANK", 0)), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                    world_size=int(os.environ.get("WORLD_SIZE", 1)))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched with WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    info = dist_info_from_env()
    if not info.enabled:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size)
    return info


def device_for_rank(requested: str, info: DistInfo) -> torch.device:
    """`auto` means CUDA when available; under DDP each process takes the GPU of its LOCAL_RANK."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            from yolonas.errors import InputError  # noqa: PLC0415 - only needed on this error path

            raise InputError(f"device {requested!r} requested but CUDA is not available; use --device cpu")
        if info.enabled:
            device = torch.device("cuda", info.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """Wrap in DistributedDataParallel when distributed (with SyncBatchNorm on request, CUDA only)."""
    if not info.enabled:
        return model
    if sync_bn:
        if device.type != "cuda":
            log.warning("SyncBatchNorm needs CUDA; training on CPU with per-process BatchNorm")
        else:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over the processes of the job (a copy); `value` itself outside DDP."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
