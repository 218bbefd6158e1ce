"""Choosing the background-removal direction h_bg automatically (the paper chose it by eye).

A good h_bg, shifted by the right magnitude, turns much of the image white (the background)
while the rest (the object) stays as it was, and the part left is a plausible object size.
Per image::

    white   = mean over RGB >= threshold           (before and after the shift)
    turned  = fraction of the image white after and not before
    kept    = fraction not white after; valid if in [min_area, max_area]
    change  = mean |after - before| over the kept part, its one-pixel rim left out
    score   = turned - change_penalty * change     (0 for an image whose kept area is invalid)

A naive whiteness score picks directions that wash the whole image out or move the object;
the area bounds and the change penalty are what rule those out. The search scores every
direction, both signs and a grid of magnitudes; an optional refinement then optimises a unit
direction on a smooth version of the same criterion, starting from the best candidate. No
labels and no ground truth are used: only images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from directions.generators import Generator
from saliency.core.errors import ConfigError

DEFAULT_MAGNITUDES = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 26.0)


def parse_bg_direction(text: str, signed: bool = False) -> tuple[int, float | None]:
    """The user's h_bg, ``INDEX[:MAGNITUDE]`` (option ``bg_direction``): (index, magnitude),
    the magnitude None where the text gives none. Unsigned (``discover``), the magnitude must be
    > 0 and ``INDEX:`` gives none; ``signed`` (``import-run``), a negative magnitude flips the
    direction, any finite non-zero one is taken, and ``INDEX:`` is refused."""
    index_text, colon, magnitude_text = text.partition(":")
    form = "INDEX[:MAGNITUDE]" if signed else "INDEX or INDEX:MAGNITUDE"
    given = colon if signed else magnitude_text  # signed: "3:" is a magnitude left out by mistake
    try:
        index = int(index_text)
        magnitude = float(magnitude_text) if given else None
    except ValueError as exc:
        raise ConfigError(f"`bg_direction` takes {form}, got {text!r}") from exc
    if signed:
        bad_magnitude = magnitude is not None and not (magnitude != 0 and math.isfinite(magnitude))
        wanted = "a non-zero magnitude"
    else:
        bad_magnitude = magnitude is not None and not (magnitude > 0 and math.isfinite(magnitude))
        wanted = "a magnitude > 0"
    if index < 0 or bad_magnitude:
        raise ConfigError(f"`bg_direction` needs an index >= 0 and {wanted}, got {text!r}")
    return index, magnitude


@dataclass
class BackgroundCriterion:
    threshold: float = 0.95
    min_area: float = 0.05
    max_area: float = 0.5
    change_penalty: float = 5.0


@dataclass
class Candidate:
    index: int | str  # a column of A, or "refined"
    sign: int
    magnitude: float
    score: float
    turned: float
    kept_area: float
    change: float
    valid_fraction: float
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _erode(mask: Tensor) -> Tensor:
    """3x3 erosion of a (n, H, W) float mask."""
    return -F.max_pool2d(-mask.unsqueeze(1), 3, 1, 1).squeeze(1)


def score_pairs(original: Tensor, shifted: Tensor, criterion: BackgroundCriterion) -> dict[str, Tensor]:
    """Per-image terms of the criterion for image pairs in [0, 1]."""
    white_before = original.mean(1) >= criterion.threshold
    white_after = shifted.mean(1) >= criterion.threshold
    turned = (white_after & ~white_before).float().mean((1, 2))
    kept = (~white_after).float()
    kept_area = kept.mean((1, 2))
    interior = _erode(kept)
    difference = (shifted - original).abs().mean(1)
    change = (difference * interior).sum((1, 2)) / interior.sum((1, 2)).clamp_min(1.0)
    valid = (kept_area >= criterion.min_area) & (kept_area <= criterion.max_area)
    score = torch.where(valid, turned - criterion.change_penalty * change, torch.zeros_like(turned))
    return {"score": score, "turned": turned, "kept_area": kept_area, "change": change, "valid": valid.float()}


def _summary(terms: dict[str, Tensor]) -> dict[str, float]:
    return {
        "score": float(terms["score"].mean()),
        "turned": float(terms["turned"].mean()),
        "kept_area": float(terms["kept_area"].mean()),
        "change": float(terms["change"].mean()),
        "valid_fraction": float(terms["valid"].mean()),
    }


def evaluation_batch(generator: Generator, n: int, seed: int, classes: list[int] | None = None):
    rng = torch.Generator().manual_seed(seed)
    z = generator.sample_latents(n, rng)
    c = generator.sample_classes(n, rng, choices=classes)
    return z, c


@torch.no_grad()
def _render(generator: Generator, z: Tensor, classes: Tensor | None, batch_size: int) -> Tensor:
    parts = []
    for start in range(0, z.shape[0], batch_size):
        c = None if classes is None else classes[start:start + batch_size]
        parts.append(generator(z[start:start + batch_size], c))
    return torch.cat(parts)


@torch.no_grad()
def score_direction(generator: Generator, direction: Tensor, magnitudes, z: Tensor, classes: Tensor | None,
                    criterion: BackgroundCriterion, original: Tensor | None = None,
                    batch_size: int = 128, progress=None) -> list[tuple[int, float, dict[str, float]]]:
    """Score ``direction`` (unit, (d,)) at both signs and every magnitude: [(sign, m, terms)].
    ``progress``: a bar, advanced by one per shift scored (``2 * len(magnitudes)``)."""
    if original is None:
        original = _render(generator, z, classes, batch_size)
    direction = direction.to(z.device, z.dtype)
    results = []
    for sign in (1, -1):
        for magnitude in magnitudes:
            shifted = _render(generator, z + sign * magnitude * direction, classes, batch_size)
            results.append((sign, float(magnitude), _summary(score_pairs(original, shifted, criterion))))
            if progress is not None:
                progress.update(1)
    return results


@torch.no_grad()
def rank_directions(generator: Generator, directions: Tensor, z: Tensor, classes: Tensor | None,
                    criterion: BackgroundCriterion, magnitudes=DEFAULT_MAGNITUDES,
                    batch_size: int = 128, progress=None) -> list[Candidate]:
    """Every column of ``directions`` (d, K): its best sign and magnitude, best first.
    ``progress``: a bar, advanced by one per shift scored (``K * 2 * len(magnitudes)`` in all)."""
    original = _render(generator, z, classes, batch_size)
    candidates = []
    for k in range(directions.shape[1]):
        scored = score_direction(generator, directions[:, k], magnitudes, z, classes, criterion, original, batch_size,
                                 progress=progress)
        sign, magnitude, terms = max(scored, key=lambda item: item[2]["score"])
        candidates.append(Candidate(index=k, sign=sign, magnitude=magnitude, **terms))
    return sorted(candidates, key=lambda c: c.score, reverse=True)


def refine_direction(generator: Generator, start: Tensor, magnitude: float, criterion: BackgroundCriterion,
                     steps: int = 300, batch_size: int = 32, lr: float = 0.02, seed: int = 1,
                     temperature: float = 0.01, classes: list[int] | None = None, progress=None) -> Tensor:
    """Optimise a unit direction on a smooth version of the criterion, from ``start``.

    Each step draws fresh samples; ``white`` becomes ``sigmoid((mean - threshold) / T)`` so
    the whitened fraction has a gradient. Returns the unit direction (d,).
    """
    rng = torch.Generator().manual_seed(seed)
    vector = start.detach().clone().to(generator.device, torch.float32).requires_grad_(True)
    optimizer = torch.optim.Adam([vector], lr=lr)
    for _ in range(steps):
        z = generator.sample_latents(batch_size, rng)
        c = generator.sample_classes(batch_size, rng, choices=classes)
        with torch.no_grad():
            original = generator(z, c)
            white_before = (original.mean(1) >= criterion.threshold).float()
        direction = vector / vector.norm()
        shifted = generator(z + magnitude * direction.to(z.dtype), c)
        white_after = torch.sigmoid((shifted.mean(1) - criterion.threshold) / temperature)
        turned = (white_after * (1 - white_before)).mean((1, 2))
        kept = 1 - white_after
        kept_area = kept.mean((1, 2))
        interior = _erode(kept)
        difference = (shifted - original).abs().mean(1)
        change = (difference * interior).sum((1, 2)) / interior.sum((1, 2)).clamp_min(1.0)
        area_violation = F.relu(criterion.min_area - kept_area) + F.relu(kept_area - criterion.max_area)
        loss = -(turned - criterion.change_penalty * change - 10.0 * area_violation).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress.update(1)
    return (vector / vector.norm()).detach()
