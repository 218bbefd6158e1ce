"""Stage 4: predict saliency maps for a benchmark and score them.

Protocol (design facts, paper section 5.1): resize the image's shorter side to ``size``
(128), pad to the U-Net's stride, predict, crop, and resize the soft foreground map back to
the ground truth's size (:mod:`saliency.detector`, shared with ``saliency predict``); then
score with :mod:`saliency.metrics`. ``paper_protocol`` adds
the reference code's variant: image and ground truth at ``size`` x ``size``, the argmax
mask as the map.

Test sets are iterables of ``EvalSample`` (stem, RGB uint8 image, bool mask), so a benchmark
folder and the rendered ``scenes`` set go through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from saliency.datasets import SaliencyFolder
from saliency.errors import UserError
from saliency.training import to_model_input
from saliency.runtime import autocast
from saliency.unet import foreground_probability


@dataclass
class EvalSample:
    stem: str
    image: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # bool (H, W)


def folder_samples(dataset: SaliencyFolder) -> Iterator[EvalSample]:
    for i, sample in enumerate(dataset.samples):
        image = np.asarray(dataset.image(i))
        mask = dataset.mask(i)
        if image.shape[:2] != mask.shape:
            raise UserError(f"{sample.image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
                            f"{sample.mask_path} is {mask.shape[1]}x{mask.shape[0]}")
        yield EvalSample(sample.stem, image, mask)


def scenes_samples(count: int, seed: int, resolution: int, classes: list[int] | None,
                   batch: int = 128) -> Iterator[EvalSample]:
    """Rendered scenes with their exact masks: the same images for the same arguments."""
    from directions.generators.scenes import ScenesGenerator

    generator = ScenesGenerator(resolution=resolution).eval()
    rng = torch.Generator().manual_seed(seed)
    done = 0
    while done < count:
        n = min(batch, count - done)
        z = generator.sample_latents(n, rng)
        c = generator.sample_classes(n, rng, choices=classes)
        with torch.inference_mode():
            images, masks = generator.forward_with_masks(z, c)
        images = (images.permute(0, 2, 3, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        for k in range(n):
            yield EvalSample(f"scene-{done + k:05d}", images[k], masks[k].numpy())
        done += n


@torch.inference_mode()
def predict_paper_protocol(model, image: np.ndarray, mask: np.ndarray, size: int, device: torch.device,
                           precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """The reference code's variant: argmax mask of the size x size image, ground truth resized
    (nearest) to size x size. Returns (uint8 0/255 map, bool mask), both size x size."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    truth = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 128
    x = to_model_input(torch.from_numpy(np.array(resized))[None], device)
    with autocast(device, precision):
        logits = model(x)
    predicted = logits.argmax(dim=1)[0].cpu().numpy().astype(np.uint8) * 255
    return predicted, truth
