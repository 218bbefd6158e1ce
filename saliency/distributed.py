"""Runs under ``torchrun``: one process per device, on torch.distributed (gloo on CPU, NCCL on GPU).

Nothing to configure: when torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) is present
the process group is set up once, on first use; otherwise everything here is a single-process
no-op, so the same code path serves ``saliency ...`` and ``torchrun ... -m saliency.cli ...``.
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


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
