"""A user's own generator in one file, loaded as ``--generator toy_generators:build_toy``."""

import torch

from directions.generators import Generator


class ToyGenerator(Generator):
    latent_dim = 4
    num_classes = 0
    resolution = 8

    def synthesize(self, z, classes):
        ramp = torch.linspace(0, 1, self.resolution, device=z.device, dtype=z.dtype)
        level = torch.sigmoid(z[:, :3])[:, :, None, None]
        return level * ramp.view(1, 1, 1, -1).expand(-1, 3, self.resolution, -1)


def build_toy(resolution: int = 8) -> ToyGenerator:
    gen = ToyGenerator()
    gen.resolution = resolution
    return gen


def not_a_generator():
    return object()
