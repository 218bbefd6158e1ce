"""``saliency sample``: render a grid of samples, the quickest look at a generator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from saliency.core import limits
from saliency.core.errors import ConfigError
from saliency.core.fields import bounded, check_ranges


@dataclass
class SampleConfig:
    generator: str = "scenes"
    count: int = bounded(limits.GRID_IMAGES, 16)
    out: Path = Path("checkpoints/sample.png")
    classes: list[int] | None = None
    seed: int = bounded(limits.SEED, 0)
    device: str = "auto"
    nrow: int | None = bounded(limits.GRID_IMAGES)
    generator_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        check_ranges(self)
        if Path(self.out).suffix.lower() != ".png":
            raise ConfigError(f"`out` must be a .png file, got {self.out}")
        limits.RESOLUTION.check("resolution", self.generator_options.get("resolution"))


def run_sample(config: SampleConfig) -> Path:
    """Build the generator, draw ``count`` seeded samples, save them as a PNG grid."""
    from directions.generators import build_generator
    from saliency.core.artifacts import refuse_output_in_inputs
    from saliency.core.visualize import save_grid

    config.validate()
    refuse_output_in_inputs(config.out, {"--weights": config.generator_options.get("weights")})
    generator = build_generator(config.generator, device=config.device, **config.generator_options)
    rng = torch.Generator().manual_seed(config.seed)
    z = generator.sample_latents(config.count, rng)
    classes = None
    if generator.conditional:
        if config.classes is None:
            classes = generator.sample_classes(config.count, rng)
        else:
            bad = [c for c in config.classes if not 0 <= c < generator.num_classes]
            if bad:
                raise ConfigError(f"`classes` {bad} out of range: {config.generator} has classes 0..{generator.num_classes - 1}")
            repeats = -(-config.count // len(config.classes))
            classes = torch.tensor((config.classes * repeats)[: config.count])
    elif config.classes is not None:
        raise ConfigError(f"{config.generator} is unconditional: `classes` does not apply")
    images = []
    with torch.inference_mode():
        for start in range(0, config.count, 64):
            stop = min(start + 64, config.count)
            batch_classes = None if classes is None else classes[start:stop]
            images.append(generator(z[start:stop], batch_classes).float().cpu())
    return save_grid(torch.cat(images), config.out, nrow=config.nrow)
