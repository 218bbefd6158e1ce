"""Stage 3 fed straight from the generator: a fresh batch of (image, mask) pairs for every step.

The reference code trains its U-Net this way: each step draws new latents and classes, renders
G(z) and G(z + r h_bg), makes the masks and keeps the pairs whose mask area passes the rule,
drawing again until the batch is full. 15,000 steps of 128 are 1.92 M distinct pairs, which no
disk holds at 128 px; streamed, none is stored. The batch of step s depends only on (seed, s),
so a resumed run trains on the very batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from directions.generators import Generator
from saliency.core.errors import UserError
from saliency.synthesis import KEPT, MaskRule, synthesize_batch

MAX_DRAWS = 100  # draws for one batch before giving up (the reference's max_retries)


def step_seed(seed: int, step: int) -> int:
    """A seed of its own for each step's batch."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class StreamedPairs:
    """Pairs drawn on demand with a synthesis folder's settings (generator, shift, rule, classes)."""

    generator: Generator
    shift: Tensor  # r * h_bg, on the generator's device
    rule: MaskRule
    classes: list[int] | None
    seed: int = 0
    precision: str = "fp32"

    def batch(self, step: int, size: int) -> tuple[Tensor, Tensor]:
        """Step ``step``'s ``size`` pairs: uint8 images (n, H, W, 3) and bool masks (n, H, W), on the CPU."""
        rng = torch.Generator().manual_seed(step_seed(self.seed, step))
        images, masks, held = [], [], 0
        for _ in range(MAX_DRAWS):
            z = self.generator.sample_latents(size, rng)
            classes = self.generator.sample_classes(size, rng, choices=self.classes)
            pairs = synthesize_batch(self.generator, z, classes, self.shift, self.rule, precision=self.precision)
            keep = (pairs.judged.reasons == KEPT).cpu()
            images.append(pairs.images_u8.cpu()[keep])
            masks.append(pairs.judged.masks.cpu()[keep])
            held += int(keep.sum())
            if held >= size:
                return torch.cat(images)[:size], torch.cat(masks)[:size]
        raise UserError(f"the generator kept {held} of {MAX_DRAWS * size} pairs drawn for step {step}: too few pass "
                        f"the mask rule to stream a batch of {size}; check h_bg and the area bounds")

    def batches(self, start: int, steps: int, size: int):
        """The batches of steps ``start`` + 1 to ``steps``."""
        for step in range(start, steps):
            yield self.batch(step, size)
