"""Pictures people look at instead of reading numbers: image grids, written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from saliency.core.artifacts import atomic_path


def grid_image(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> Image.Image:
    """``(n, C, H, W)`` in [0, 1] (C = 1 or 3) to one PIL image, about square by default."""
    images = images.detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if nrow is None:
        nrow = max(1, math.ceil(math.sqrt(images.shape[0])))
    from torchvision.utils import make_grid  # imported here: torchvision costs a second at start-up

    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(array)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, padding: int = 2) -> Path:
    """Save a grid of images as PNG, atomically."""
    path = Path(path)
    picture = grid_image(images, nrow=nrow, padding=padding)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path
