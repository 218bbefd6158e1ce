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


class PlantedBackground(Generator):
    """A disc on a coloured background; one planted latent direction fades the background to
    white, another (a 'washout') brightens the whole image, object included."""

    latent_dim = 8
    num_classes = 0
    resolution = 32

    def __init__(self) -> None:
        super().__init__()
        rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(3)))
        self.register_buffer("basis", rotation.T.contiguous())  # rows: orthonormal directions
        coords = (torch.arange(32) + 0.5) / 32 * 2 - 1
        self.register_buffer("radius2", coords.view(1, -1) ** 2 + coords.view(-1, 1) ** 2)

    @property
    def white_direction(self):
        return self.basis[0]

    @property
    def washout_direction(self):
        return self.basis[1]

    def synthesize(self, z, classes):
        p = z @ self.basis.T
        whiteness = torch.sigmoid(3 * p[:, 0] - 5).view(-1, 1, 1, 1)
        washout = torch.sigmoid(2 * p[:, 1] - 4).view(-1, 1, 1, 1)
        radius = 0.45 + 0.1 * torch.tanh(p[:, 2]).view(-1, 1, 1)
        disc = torch.sigmoid((radius**2 - self.radius2) * 60).unsqueeze(1)
        obj = torch.stack([0.2 + 0.3 * torch.sigmoid(p[:, 3]), 0.3 * torch.sigmoid(p[:, 4]),
                           torch.full_like(p[:, 0], 0.5)], 1).view(-1, 3, 1, 1)
        bg = 0.2 + 0.5 * torch.sigmoid(p[:, 5:8]).view(-1, 3, 1, 1)
        bg = bg + whiteness * (1 - bg)
        image = disc * obj + (1 - disc) * bg
        return image + washout * (1 - image)
