"""``proggan-celebahq``: Progressive GAN (Karras et al., 2018) on CelebA-HQ, 1024 px, 512-d latent.

The generator in the layout of the checkpoint the paper's reference code loads (its
``ProgGAN/model.py``, a PyTorch port of the official Theano network; file
``100_celeb_hq_network-snapshot-010403.pth``): a 4x4 conv from the 512x1x1 latent, then pairs
of 3x3 convs with 2x nearest upsampling in front of each pair, every conv preceded by pixel
norm and followed by a learned scale, bias and LeakyReLU 0.2; a 1x1 conv to RGB. State dict
keys ``features.N.conv.weight``, ``features.N.wscale.scale``, ``features.N.wscale.b``,
``output.conv.weight``, ``output.wscale.*``. The widths are read from the file, so smaller
networks of the same layout load too. The paper's K for it: 200, with unit-norm A.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from directions.generators.base import Generator
from directions.generators.registry import register_generator
from saliency.core.weights import load_state_dict_strict, load_torch_weights
from saliency.core.errors import ConfigError, UserError

PAPER_WIDTHS = (512, 512, 512, 512, 512, 256, 128, 64, 32, 16)  # 4, 8, ..., 1024 px


class ScaledConv(nn.Module):
    """Pixel norm, optional 2x nearest upsampling, a bias-free conv, the learned scale and bias,
    then LeakyReLU 0.2 (none on the RGB layer)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int, upsample: bool = False,
                 activation: bool = True) -> None:
        super().__init__()
        self.upsample, self.activation, self.padding = upsample, activation, padding
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False)
        self.wscale = nn.Module()
        self.wscale.scale = nn.Parameter(torch.ones(1))
        self.wscale.b = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: Tensor) -> Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv(x) * self.wscale.scale + self.wscale.b.view(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2) if self.activation else x


class ProgGANGenerator(Generator):
    def __init__(self, widths: tuple[int, ...] = PAPER_WIDTHS, latent_dim: int = 512) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.widths = tuple(int(w) for w in widths)
        self.resolution = 4 * 2 ** (len(self.widths) - 1)
        layers = [ScaledConv(self.latent_dim, self.widths[0], 4, 3), ScaledConv(self.widths[0], self.widths[0], 3, 1)]
        for c_in, c_out in zip(self.widths[:-1], self.widths[1:]):
            layers += [ScaledConv(c_in, c_out, 3, 1, upsample=True), ScaledConv(c_out, c_out, 3, 1)]
        self.features = nn.Sequential(*layers)
        self.output = ScaledConv(self.widths[-1], 3, 1, 0, activation=False)

    def synthesize(self, z: Tensor, classes: Tensor | None) -> Tensor:
        raw = self.output(self.features(z.reshape(z.shape[0], self.latent_dim, 1, 1)))
        return ((raw + 1) * 0.5).clamp(0, 1)


def widths_from_state_dict(state: dict) -> tuple[tuple[int, ...], int]:
    """(widths, latent size) read from the shapes of a checkpoint in this layout."""
    indices = sorted({int(m.group(1)) for m in (re.match(r"^features\.(\d+)\.conv\.weight$", k) for k in state) if m})
    if not indices or indices != list(range(len(indices))) or len(indices) % 2:
        raise ValueError("expected features.0 ... features.N (pairs of convs)")
    first = state["features.0.conv.weight"]
    widths = tuple(int(state[f"features.{i}.conv.weight"].shape[0]) for i in range(0, len(indices), 2))
    return widths, int(first.shape[1])


def load_proggan(weights: str | os.PathLike | None) -> ProgGANGenerator:
    what = "proggan-celebahq"
    if weights is None:
        raise ConfigError(f"{what} needs `weights` FILE: the ProgGAN CelebA-HQ checkpoint the paper's code loads "
                        "(100_celeb_hq_network-snapshot-010403.pth)")
    path = Path(weights)
    state = load_torch_weights(path, what)
    try:
        widths, latent_dim = widths_from_state_dict(state)
    except (ValueError, KeyError, AttributeError, IndexError) as exc:
        raise UserError(f"{what}: {path} is not a ProgGAN generator in the expected layout ({exc})") from exc
    generator = ProgGANGenerator(widths, latent_dim)
    load_state_dict_strict(generator, state, path, what)
    return generator


@register_generator("proggan-celebahq")
def build_proggan(weights: str | None = None) -> ProgGANGenerator:
    """ProgGAN on CelebA-HQ, 1024 px (the paper's): --weights FILE (needed)."""
    return load_proggan(weights)
