"""Mask synthesis (paper section 5): shift along h_bg, call the pixels that stay dark the object.

Mask = [mean over RGB of G(z + h_bg, c) < threshold]; a pair is kept when the mask covers
between ``min_area`` and ``max_area`` of the image. Two optional filters from the follow-up
work (Voynov et al., "Big GANs are watching you", 2021), both off by default:

- ``component_fraction``: drop connected components smaller than that fraction of the
  largest (the follow-up uses 0.2), before the area rule;
- ``bimodal``: reject a pair when the shifted image's gray-level histogram is not bimodal.
  Our test is Otsu's separability eta = (between-class variance at the best threshold) /
  (total variance), in [0, 1]; a white background with a dark object scores near 1, a
  washed-out image near 0. Bimodal means eta >= ``bimodal_min`` (0.8 by default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from directions.generators import Generator
from saliency.core import limits
from saliency.core.errors import ConfigError
from saliency.core.fields import bounded, check_ranges
from saliency.core.runtime import autocast

KEPT, AREA_BELOW, AREA_ABOVE, NOT_BIMODAL = 0, 1, 2, 3
REASONS = {AREA_BELOW: "area_below_min", AREA_ABOVE: "area_above_max", NOT_BIMODAL: "not_bimodal"}
HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class MaskRule:
    threshold: float = bounded(limits.POSITIVE_FRACTION, 0.95)
    min_area: float = bounded(limits.FRACTION, 0.05)
    max_area: float = bounded(limits.FRACTION, 0.5)
    component_fraction: float | None = bounded(limits.POSITIVE_FRACTION)
    bimodal: bool = False
    bimodal_min: float = bounded(limits.OPEN_FRACTION, 0.8)
    # The reference code keeps min < area < max; by default the bounds themselves are kept too.
    strict_area: bool = False

    def fingerprint(self) -> dict:
        """What a synthesis folder records of the rule: a folder made with another is refused."""
        return asdict(self)

    def validate(self) -> None:
        check_ranges(self)
        if not self.min_area < self.max_area:
            raise ConfigError(f"area bounds must satisfy 0 <= min < max <= 1, got [{self.min_area}, {self.max_area}]")


def masks_from_shifted(shifted: Tensor, threshold: float) -> Tensor:
    """``(n, 3, H, W)`` in [0, 1] -> bool ``(n, H, W)``: the pixels that did not turn white."""
    return shifted.mean(dim=1) < threshold


def keep_large_components(masks: np.ndarray, fraction: float) -> np.ndarray:
    """Drop 8-connected components smaller than ``fraction`` of each mask's largest one."""
    out = np.zeros_like(masks, dtype=bool)
    structure = np.ones((3, 3), dtype=bool)
    for i, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=structure)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= fraction * sizes.max()) + 1
        out[i] = np.isin(labels, keep)
    return out


def otsu_separability(shifted: Tensor, bins: int = 64) -> Tensor:
    """Otsu's eta in [0, 1] per image, on the mean-over-RGB gray levels."""
    gray = shifted.float().mean(dim=1).flatten(1).clamp(0, 1)
    n = gray.shape[0]
    idx = (gray * (bins - 1)).round().long()
    hist = torch.zeros(n, bins, device=gray.device).scatter_add_(1, idx, torch.ones_like(gray))
    p = hist / hist.sum(1, keepdim=True)
    levels = torch.linspace(0, 1, bins, device=gray.device)
    omega = p.cumsum(1)
    mu = (p * levels).cumsum(1)
    mu_total = mu[:, -1:]
    between = (mu_total * omega - mu) ** 2 / (omega * (1 - omega)).clamp_min(1e-12)
    total = (p * (levels - mu_total) ** 2).sum(1)
    eta = between.max(1).values / total.clamp_min(1e-12)
    return torch.where(total > 1e-12, eta.clamp(0, 1), torch.zeros_like(eta))


@dataclass
class Judged:
    """One batch's verdicts: every candidate's mask, area and reason (KEPT = 0)."""

    masks: Tensor  # bool (n, H, W)
    areas: Tensor  # float (n,)
    reasons: Tensor  # long (n,)


def judge(shifted: Tensor, rule: MaskRule) -> Judged:
    """Apply the mask rule (and the optional filters) to a batch of shifted images."""
    masks = masks_from_shifted(shifted, rule.threshold)
    if rule.component_fraction is not None:
        cleaned = keep_large_components(masks.cpu().numpy(), rule.component_fraction)
        masks = torch.from_numpy(cleaned).to(masks.device)
    areas = masks.flatten(1).sum(1).double() / masks[0].numel() if masks.shape[0] else masks.new_zeros(0, dtype=torch.float64)
    reasons = torch.full_like(areas, KEPT, dtype=torch.long)
    if rule.bimodal:
        reasons[otsu_separability(shifted) < rule.bimodal_min] = NOT_BIMODAL
    if rule.strict_area:
        reasons[areas >= rule.max_area] = AREA_ABOVE
        reasons[areas <= rule.min_area] = AREA_BELOW
    else:
        reasons[areas > rule.max_area] = AREA_ABOVE
        reasons[areas < rule.min_area] = AREA_BELOW
    return Judged(masks=masks, areas=areas, reasons=reasons)


@dataclass
class BatchPairs:
    images: Tensor  # float (n, 3, H, W), the unshifted images
    images_u8: Tensor  # uint8 (n, H, W, 3), the same rounded to bytes (what a shard stores)
    shifted: Tensor  # float (n, 3, H, W)
    judged: Judged
    truth: Tensor | None  # bool (n, H, W): the generator's exact masks, where it has them


@torch.inference_mode()
def synthesize_batch(generator: Generator, z: Tensor, classes: Tensor | None, shift: Tensor, rule: MaskRule,
                     with_truth: bool = False, precision: str = "fp32") -> BatchPairs:
    """Render G(z, c) and G(z + shift, c) in one batched call and judge the shifted half."""
    n = z.shape[0]
    z = z.to(generator.device, generator.dtype)
    both_z = torch.cat([z, z + shift.to(z)])
    both_c = None if classes is None else torch.cat([classes, classes])
    truth = None
    with autocast(generator.device, precision):
        if with_truth:
            both, true_masks = generator.forward_with_masks(both_z, both_c)
            truth = true_masks[:n]
        else:
            both = generator(both_z, both_c)
    both = both.float()
    if both.shape[1] == 1:  # a gray generator (sngan-mnist): pairs are stored as RGB like every other
        both = both.expand(-1, 3, -1, -1)
    images, shifted = both[:n], both[n:]
    images_u8 = torch.add(0.5, images.permute(0, 2, 3, 1), alpha=255).clamp_(0, 255).to(torch.uint8)  # rounded
    return BatchPairs(images=images, images_u8=images_u8, shifted=shifted, judged=judge(shifted, rule), truth=truth)


def mask_iou(predicted: Tensor, truth: Tensor) -> Tensor:
    """Per-pair IoU of bool masks ``(n, H, W)``; 1 where both are empty."""
    inter = (predicted & truth).flatten(1).sum(1).float()
    union = (predicted | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def area_histogram(areas: Tensor, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Counts of mask areas in ``bins`` equal bins over [0, 1]."""
    idx = (areas.float().cpu() * bins).long().clamp(0, bins - 1)
    return np.bincount(idx.numpy(), minlength=bins)
