"""Runs under ``torchrun``: one process per device, on torch.distributed (gloo on CPU, NCCL on GPU).

Nothing to configure: when torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) is present
the process group is set up once, on first use; otherwise everything here is a single-process
no-op, so the same code path serves ``saliency ...`` and ``torchrun ... -m pipelines.cli ...``.
Only rank 0 writes logs, pictures and summaries.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_context: Context | None = None


def context() -> Context:
    """This process's place in the run (initialising the process group under torchrun)."""
    global _context
    if _context is not None:
        return _context
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _context = Context()
        return _context
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = torch.cuda.is_available() and os.environ.get("SALIENCY_DIST_BACKEND", "") != "gloo"
    if use_nccl:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_nccl else "gloo", timeout=datetime.timedelta(minutes=30))
    _context = Context(rank=rank, world=world, local_rank=local_rank)
    return _context


def launch_ranks() -> tuple[int, int, int]:
    """(rank, world, local rank) as torchrun set them, without joining a process group: for
    work that is split by index and never communicates (``saliency sweep``'s cells)."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Inside this block every stage runs as if alone, even under torchrun (no process group,
    no gradient averaging, no barriers): one process, one whole job."""
    global _context
    saved = _context
    _context = Context()
    try:
        yield
    finally:
        _context = saved


def device_for(spec: str, ctx: Context) -> str:
    """Under torchrun, ``auto``/``cuda`` means this process's own GPU."""
    if ctx.distributed and torch.cuda.is_available() and spec in ("auto", "cuda"):
        return f"cuda:{ctx.local_rank}"
    return spec


def barrier() -> None:
    if context().distributed:
        dist.barrier()


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Average tensors (gradients) across processes, in place."""
    ctx = context()
    if not ctx.distributed:
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(ctx.world)


def batch_norm_is_synchronised(device: torch.device, ctx: Context) -> bool:
    """Whether batch norm can normalise over the whole global batch here: under torchrun on
    GPUs (NCCL or gloo). torch's SyncBatchNorm refuses CPU tensors, so on CPU each process's
    batch norm sees only its own slice of the batch (global batch / world samples)."""
    return ctx.distributed and torch.device(device).type == "cuda"


def batch_norm_report(device: torch.device, ctx: Context, global_batch: int) -> str:
    """One line for the run's summary: what a batch-norm layer normalises over."""
    if batch_norm_is_synchronised(device, ctx):
        return f"synchronised over {ctx.world} processes ({global_batch} samples)"
    if ctx.distributed:
        return f"per process ({global_batch // ctx.world} samples each; SyncBatchNorm needs GPUs)"
    return f"one process ({global_batch} samples)"


@contextlib.contextmanager
def synchronised_batch_norm(module: torch.nn.Module, enabled: bool) -> Iterator[torch.nn.Module]:
    """Inside the block, every batch-norm layer below ``module`` (not ``module`` itself) is a
    ``SyncBatchNorm`` sharing its parameters and statistics tensors, so a batch split over
    processes is normalised as in one process; on leaving, the original layers are put back
    (same tensors, now trained). Put back because work after training runs on rank 0 alone,
    where a synchronised layer in training mode would wait forever for the other ranks."""
    if not enabled:
        yield module
        return
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(child, torch.nn.SyncBatchNorm):
                synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(child)
                synced.train(child.training)
                setattr(parent, name, synced)
                swapped.append((parent, name, child))
    try:
        yield module
    finally:
        for parent, name, child in reversed(swapped):
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
