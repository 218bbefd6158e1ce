"""Training-time augmentation of (image, mask) pairs, through albumentations.

Geometric transforms move the mask with the image (albumentations applies the same
parameters to both); colour transforms touch the image only. Each sample is drawn with its
own seed, derived from (run seed, step, position in the batch), so a resumed run sees the
same augmented batches an uninterrupted one would, whatever the number of workers.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from saliency.core import limits
from saliency.core.fields import bounded
from saliency.shards import SyntheticPairs


@dataclass(frozen=True)
class AugmentSettings:
    hflip: float = bounded(limits.FRACTION, 0.5)  # probability
    # RandomResizedCrop keeps this fraction of the area at least (1.0: off)
    scale_min: float = bounded(limits.POSITIVE_FRACTION, 0.6)
    # probability of brightness/contrast/saturation/hue jitter (0: off)
    color_jitter: float = bounded(limits.FRACTION, 0.5)

    @property
    def enabled(self) -> bool:
        return self.hflip > 0 or self.scale_min < 1 or self.color_jitter > 0


def build_augmentation(settings: AugmentSettings, height: int, width: int):
    """An albumentations Compose (or None when every transform is off)."""
    if not settings.enabled:
        return None
    # albumentations asks PyPI for its latest version on import unless told not to: training
    # makes no network request of its own accord (found by the tests' network guard).
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # albumentations' version notes
        import albumentations as A

    transforms = []
    if settings.hflip > 0:
        transforms.append(A.HorizontalFlip(p=settings.hflip))
    if settings.scale_min < 1:
        transforms.append(A.RandomResizedCrop(size=(height, width), scale=(settings.scale_min, 1.0), p=1.0))
    if settings.color_jitter > 0:
        transforms.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=settings.color_jitter))
    return A.Compose(transforms, seed=0)


def sample_seed(seed: int, step: int, position: int) -> int:
    return (seed * 1_000_003 + step * 4_099 + position) % (2**31 - 1)


class AugmentedPairs(torch.utils.data.Dataset):
    """Indexed by ``(pair index, sample seed)``; returns uint8 image (H, W, 3) and mask (H, W)
    as tensors. The model side converts to float on its device (4x less to copy)."""

    def __init__(self, pairs: SyntheticPairs, settings: AugmentSettings | None) -> None:
        self.pairs = pairs
        self.settings = settings
        self.transform = build_augmentation(settings, pairs.height, pairs.width) if settings else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        image, mask = self.pairs[index]
        if self.transform is not None:
            self.transform.set_random_seed(seed)
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask))


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for steps ``start..steps-1``, the batch of step s: ``batch_size`` keys
    ``(index, sample seed)`` from a per-epoch permutation of ``indices`` seeded by (seed, epoch).

    A batch depends only on (seed, step), so resuming at step s continues the exact sequence.
    Under data parallelism each of ``world`` processes takes every world-th key of it.
    """

    def __init__(self, indices: np.ndarray, batch_size: int, steps: int, seed: int, start: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.indices = np.asarray(indices)
        self.batch_size, self.steps, self.seed, self.start = batch_size, steps, seed, start
        self.rank, self.world = rank, world
        self.per_epoch = max(1, len(self.indices) // batch_size)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def batch(self, step: int) -> list[tuple[int, int]]:
        epoch, slot = divmod(step, self.per_epoch)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.indices))
        if len(self.indices) < self.batch_size:  # tiny datasets: draw with repetition
            order = rng.choice(len(self.indices), self.batch_size)
            slot = 0
        chosen = self.indices[order[slot * self.batch_size:(slot + 1) * self.batch_size]]
        return [(int(i), sample_seed(self.seed, step, k)) for k, i in enumerate(chosen)]

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield self.batch(step)[self.rank::self.world]  # this process's slice of the global batch
