"""Training throughput through the real DataLoader, shared by the U-Net benchmarks."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from saliency.augment import AugmentedPairs, StepBatchSampler


def loader_samples_per_s(pairs, augment, batch: int, steps: int, workers: int, step: Callable, sync: Callable,
                         pin_memory: bool, prefetch: int = 4) -> float:
    """Samples/s of ``step(images, masks)`` fed by the training loader (augmentation on).

    Untimed first: two steps, the workers' start, and the batches the workers built
    meanwhile (timing those would flatter a slow loader), so the timed steps see its
    steady state."""
    prefetch = (prefetch or 2) if workers > 0 else None  # 2: DataLoader's default
    warm_steps = 2 + workers * (prefetch or 0)
    sampler = StepBatchSampler(np.arange(len(pairs)), batch, warm_steps + steps, seed=1)
    loader = torch.utils.data.DataLoader(AugmentedPairs(pairs, augment), batch_sampler=sampler, num_workers=workers,
                                         pin_memory=pin_memory, prefetch_factor=prefetch)
    batches = iter(loader)
    for _ in range(warm_steps):
        step(*next(batches))
    sync()
    start = time.perf_counter()
    for images, masks in batches:
        step(images, masks)
    sync()
    return steps * batch / (time.perf_counter() - start)
