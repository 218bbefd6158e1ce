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


def class_names(classifier_name: str, num_classes: int) -> list[str] | None:
    """Human names of the classifier's classes, where known (ImageNet's, from torchvision)."""
    if classifier_name.endswith("-imagenet") and num_classes == 1000:
        from torchvision.models import ResNet18_Weights

        return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    return None


def run_vote(classifier, dataset, top_k: int = 5, fraction: float = 0.25, device: torch.device | str = "cpu",
             batch_size: int = 32, progress: bool = True) -> dict:
    """The paper's vote of ``classifier`` over ``dataset`` (a :class:`SaliencyFolder`): the
    record that ``classes.json`` holds, with class names and the time it took."""
    import time

    from saliency.core.progress import progress_bar

    started = time.perf_counter()
    model = classifier.model.to(device)

    def batches():
        with progress_bar(len(dataset), f"vote ({dataset.spec.name} {dataset.split}, {classifier.name})",
                          enabled=progress) as bar:
            for start in range(0, len(dataset), batch_size):
                stop = min(start + batch_size, len(dataset))
                chunk = [classifier.preprocess(dataset.image(i)) for i in range(start, stop)]
                bar.update(len(chunk))
                yield torch.stack(chunk)

    counts, images = count_votes(model, batches(), classifier.num_classes, top_k, device)
    chosen = choose_classes(counts, fraction)
    names = class_names(classifier.name, classifier.num_classes)
    # the dataset by name, not by where it lies on this disk (a run folder names no machine)
    record = {"classifier": classifier.name, "images": images, "dataset": dataset.spec.name,
              "counts": {str(c): int(v) for c, v in enumerate(counts.tolist()) if v},
              "classes": chosen, "seconds": round(time.perf_counter() - started, 1)}
    if names is not None:
        record["class_names"] = {str(c): names[c] for c in chosen}
    return record
