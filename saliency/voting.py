"""Class voting (paper section 5): which of the generator's classes look like the benchmark.

A classifier reads the dataset's train images; each image votes for its top-5 classes; the
most frequent 25 % of classes are kept, so synthesis draws objects of the kinds the
benchmark shows.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn


@torch.inference_mode()
def count_votes(model: nn.Module, batches: Iterable[Tensor], num_classes: int, top_k: int = 5,
                device: torch.device | str = "cpu") -> tuple[Tensor, int]:
    """Each image's ``top_k`` classes get one vote. Returns (votes per class, images read)."""
    top_k = min(top_k, num_classes)
    counts = torch.zeros(num_classes, dtype=torch.long)
    images = 0
    for batch in batches:
        logits = model(batch.to(device))
        top = logits.topk(top_k, dim=1).indices.cpu()
        counts += torch.bincount(top.flatten(), minlength=num_classes)
        images += batch.shape[0]
    return counts, images


def choose_classes(counts: Tensor, fraction: float = 0.25) -> list[int]:
    """The ``fraction`` of all classes with the most votes (at least one; only classes that got
    a vote), most voted first, ties broken by the smaller index."""
    num_classes = counts.numel()
    keep = max(1, math.ceil(fraction * num_classes))
    order = sorted(range(num_classes), key=lambda c: (-int(counts[c]), c))
    return [c for c in order[:keep] if int(counts[c]) > 0]
