"""Charts of what a direction does: G(z + s * h) for s from -8 to 8, over several z.

This is the picture the paper showed its human raters. One PNG per direction (rows: samples,
columns: shifts) and one overview (rows: directions, columns: shifts, one sample each).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from directions.generators import Generator
from saliency.core.progress import progress_bar
from saliency.core.visualize import save_grid

DEFAULT_SHIFTS = (-8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0)


@torch.no_grad()
def direction_strip(generator: Generator, direction: Tensor, z: Tensor, classes: Tensor | None,
                    shifts=DEFAULT_SHIFTS) -> Tensor:
    """Images ``(len(z) * len(shifts), 3, H, W)``, row-major: one row per latent."""
    direction = direction.to(z.device, z.dtype)
    steps = torch.tensor(shifts, device=z.device, dtype=z.dtype)
    latents = (z[:, None, :] + steps[None, :, None] * direction).reshape(-1, z.shape[1])
    repeated = None if classes is None else classes.repeat_interleave(len(shifts))
    return generator(latents, repeated).float().cpu()


def _fit(images: Tensor, size: int | None) -> Tensor:
    if size is None or images.shape[-1] <= size:
        return images
    return F.interpolate(images, size=(size, size), mode="area")


def save_direction_charts(generator: Generator, directions: Tensor, out_dir: Path, samples: int = 5,
                          shifts=DEFAULT_SHIFTS, seed: int = 7, classes: list[int] | None = None,
                          overview_size: int | None = 64, progress: bool = True) -> dict:
    """One chart per column of ``directions`` (d, K) plus ``overview.png``; returns the paths."""
    out_dir = Path(out_dir)
    rng = torch.Generator().manual_seed(seed)
    z = generator.sample_latents(samples, rng)
    c = generator.sample_classes(samples, rng, choices=classes)
    paths, overview_rows = [], []
    bar = progress_bar(directions.shape[1], "charts", enabled=progress, leave=False)
    for k in range(directions.shape[1]):
        bar.update(1)
        strip = direction_strip(generator, directions[:, k], z, c, shifts)
        paths.append(str(save_grid(strip, out_dir / f"direction_{k:03d}.png", nrow=len(shifts))))
        overview_rows.append(_fit(strip[: len(shifts)], overview_size))
    bar.close()
    overview = save_grid(torch.cat(overview_rows), out_dir / "overview.png", nrow=len(shifts), padding=1)
    return {"directions": paths, "overview": str(overview), "shifts": list(shifts)}
