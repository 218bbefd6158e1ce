"""Reconstructors R: from an image pair (G(z), G(z + eps * A[:, k])), tell k and eps.

The pair is concatenated on channels (6 input channels). Two heads: direction logits (K)
and the shift magnitude (a scalar regression).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from saliency.errors import UserError


class Reconstructor(nn.Module):
    """A feature extractor on the 6-channel pair, then the two heads."""

    def __init__(self, features: nn.Module, feature_dim: int, num_directions: int) -> None:
        super().__init__()
        self.features = features
        self.direction_head = nn.Linear(feature_dim, num_directions)
        self.shift_head = nn.Linear(feature_dim, 1)

    def forward(self, original: Tensor, shifted: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(torch.cat([original, shifted], dim=1))
        return self.direction_head(h), self.shift_head(h).squeeze(1)


def lenet(num_directions: int, width: int = 32) -> Reconstructor:
    """LeNet-style: three strided conv-ReLU stages, then a hidden layer. Any input >= 16 px.

    Strided convolutions instead of LeNet's pooling keep it cheap at 64 px on a CPU; batch
    norm after each makes it learn the game several times faster in the first minutes.
    """
    def stage(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    features = nn.Sequential(
        *stage(6, width, 5),
        *stage(width, 2 * width, 3),
        *stage(2 * width, 4 * width, 3),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(16 * 4 * width, 256), nn.ReLU(inplace=True),
    )
    return Reconstructor(features, 256, num_directions)


def resnet18(num_directions: int) -> Reconstructor:
    """torchvision's ResNet-18 (random init) with a 6-channel first convolution."""
    import torchvision  # imported here: a second at start-up for every command otherwise

    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(6, 64, kernel_size=7, stride=2, padding=3, bias=False)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return Reconstructor(net, feature_dim, num_directions)


RECONSTRUCTORS: dict[str, Callable[[int], Reconstructor]] = {"lenet": lenet, "resnet18": resnet18}


def build_reconstructor(name: str, num_directions: int) -> Reconstructor:
    if name not in RECONSTRUCTORS:
        raise UserError(f"unknown reconstructor {name!r}; known: {', '.join(RECONSTRUCTORS)}")
    return RECONSTRUCTORS[name](num_directions)
