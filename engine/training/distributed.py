"""The process group of a training run: one process, or one per GPU under `torchrun`.

`torchrun --nproc_per_node N` sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT); they are read
once, here. Backend: NCCL when training on CUDA, gloo otherwise (`SVL_DIST_BACKEND` overrides: gloo lets ranks
share one GPU, as a check on a one-GPU machine). Rank 0 (`is_main`) alone logs progress,
writes checkpoints and runs the post-training steps.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessGroup:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: a single process, no torch.distributed group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def training_device(device: str, local_rank: int) -> torch.device:
    """`auto` = this process's GPU (cuda:LOCAL_RANK) when CUDA is available, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # one GPU per rank; more ranks than GPUs share them (gloo only: NCCL refuses a shared GPU)
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device(device)


def init_process_group(device: str = "auto") -> ProcessGroup:
    """Join the group `torchrun` started (environment RANK/WORLD_SIZE/LOCAL_RANK), or run alone without them."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = training_device(device, local_rank)
    if world == 1:
        return ProcessGroup(0, 1, 0, dev, None)
    backend = os.environ.get("SVL_DIST_BACKEND") or ("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    log.debug("rank %d of %d on %s (%s)", rank, world, dev, backend)
    return ProcessGroup(rank, world, local_rank, dev, backend)


def teardown(group: ProcessGroup) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(group: ProcessGroup) -> None:
    if group.distributed:
        dist.barrier()


def mean_over_ranks(values: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """The element-wise mean of `values` over every rank (itself when alone)."""
    if not group.distributed:
        return values
    out = values.detach().clone().to(group.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / group.world_size).cpu()
