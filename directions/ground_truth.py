"""Measuring discovered directions against a generator's ground truth, where it has one.

The embedded ``scenes`` generator knows each factor's latent direction and the exact object
mask, so what the paper judged by eye becomes a number here: which factor a direction moves
(and how purely), how close h_bg is to the true whiteness direction (``bg_cos``), and how
well the masks h_bg makes match the true ones (``bg_mask_iou``; ``oracle_mask_iou`` for the
true direction itself, the ceiling of the method on this generator).
"""

from __future__ import annotations

import torch
from torch import Tensor

from directions.background import BackgroundCriterion, DEFAULT_MAGNITUDES, score_direction
from directions.generators import Generator


def has_ground_truth(generator: Generator) -> bool:
    if not all(hasattr(generator, name) for name in ("factor_directions", "object_mask", "factors")):
        return False
    return "whiteness" in [f.name for f in generator.factors]


def factor_table(generator: Generator, directions: Tensor) -> list[dict]:
    """For each column of ``directions`` (d, K): the factors it moves most, by |cos| with each
    factor's latent direction, and its purity (the top factor's share of cos^2)."""
    truth = generator.factor_directions().to(directions.device, directions.dtype)  # (F, d)
    unit = directions / directions.norm(dim=0, keepdim=True)
    cos = truth @ unit  # (F, K)
    share = cos**2 / (cos**2).sum(0, keepdim=True)
    names = [f.name for f in generator.factors]
    rows = []
    for k in range(unit.shape[1]):
        order = torch.argsort(cos[:, k].abs(), descending=True)[:3].tolist()
        rows.append({
            "direction": k,
            "factor": names[order[0]],
            "cos": round(float(cos[order[0], k]), 3),
            "purity": round(float(share[order[0], k]), 3),
            "runners_up": [[names[i], round(float(cos[i, k]), 3)] for i in order[1:]],
        })
    return rows


def whiteness_direction(generator: Generator) -> Tensor:
    names = [f.name for f in generator.factors]
    return generator.factor_directions()[names.index("whiteness")]


@torch.no_grad()
def mask_iou(generator: Generator, direction: Tensor, magnitude: float, z: Tensor, classes: Tensor | None,
             criterion: BackgroundCriterion, batch_size: int = 128) -> dict[str, float]:
    """Masks ``mean RGB of G(z + m h) < threshold`` against the true object masks of G(z):
    mean IoU over the samples a synthesis run would keep (area in bounds), and that fraction."""
    direction = direction.to(z.device, z.dtype)
    ious, kept = [], []
    for start in range(0, z.shape[0], batch_size):
        zz = z[start:start + batch_size]
        cc = None if classes is None else classes[start:start + batch_size]
        predicted = generator(zz + magnitude * direction, cc).mean(1) < criterion.threshold
        truth = generator.object_mask(zz, cc)[:, 0]
        intersection = (predicted & truth).sum((1, 2)).float()
        union = (predicted | truth).sum((1, 2)).float().clamp_min(1.0)
        ious.append(intersection / union)
        area = predicted.float().mean((1, 2))
        kept.append((area >= criterion.min_area) & (area <= criterion.max_area))
    ious, kept = torch.cat(ious), torch.cat(kept)
    mean_iou = float(ious[kept].mean()) if kept.any() else 0.0
    return {"mask_iou": mean_iou, "kept_fraction": float(kept.float().mean())}


def background_report(generator: Generator, h_bg: Tensor, magnitude: float, z: Tensor, classes: Tensor | None,
                      criterion: BackgroundCriterion) -> dict:
    """``bg_cos``, ``bg_mask_iou`` for the chosen h_bg (signed, unit) and the oracle's numbers
    (the true whiteness direction, its magnitude chosen by the same image criterion)."""
    white = whiteness_direction(generator).to(h_bg.device, h_bg.dtype)
    chosen = mask_iou(generator, h_bg, magnitude, z, classes, criterion)
    scored = score_direction(generator, white, DEFAULT_MAGNITUDES, z, classes, criterion)
    oracle_sign, oracle_magnitude, _ = max(scored, key=lambda item: item[2]["score"])
    oracle = mask_iou(generator, oracle_sign * white, oracle_magnitude, z, classes, criterion)
    return {
        "bg_cos": round(float(torch.dot(h_bg / h_bg.norm(), white)), 4),
        "bg_mask_iou": round(chosen["mask_iou"], 4),
        "bg_kept_fraction": round(chosen["kept_fraction"], 4),
        "oracle_mask_iou": round(oracle["mask_iou"], 4),
        "oracle_magnitude": oracle_magnitude,
        "oracle_kept_fraction": round(oracle["kept_fraction"], 4),
        "samples": int(z.shape[0]),
    }
