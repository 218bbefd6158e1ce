"""Reconstructors R: from an image pair (G(z), G(z + eps * A[:, k])), tell k and eps.

The pair is concatenated on channels (6 input channels for RGB, 2 for gray). Two heads:
direction logits (K) and the shift magnitude (a scalar regression).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from saliency.core.errors import UserError


class Reconstructor(nn.Module):
    """A feature extractor on the channel-concatenated pair, then the two heads (linear, or
    with a hidden layer of ``head_hidden`` units each)."""

    def __init__(self, features: nn.Module, feature_dim: int, num_directions: int, head_hidden: int = 0) -> None:
        super().__init__()
        self.features = features

        def head(outputs: int) -> nn.Module:
            if not head_hidden:
                return nn.Linear(feature_dim, outputs)
            return nn.Sequential(nn.Linear(feature_dim, head_hidden), nn.BatchNorm1d(head_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(head_hidden, outputs))

        self.direction_head = head(num_directions)
        self.shift_head = head(1)

    def forward(self, original: Tensor, shifted: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(torch.cat([original, shifted], dim=1))
        return self.direction_head(h), self.shift_head(h).squeeze(1)


def lenet(num_directions: int, in_channels: int = 6, width: int = 32) -> Reconstructor:
    """LeNet-style: three strided conv-ReLU stages, then a hidden layer. Any input >= 16 px.

    Strided convolutions instead of LeNet's pooling keep it cheap at 64 px on a CPU; batch
    norm after each makes it learn the game several times faster in the first minutes.
    """
    def stage(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    features = nn.Sequential(
        *stage(in_channels, width, 5),
        *stage(width, 2 * width, 3),
        *stage(2 * width, 4 * width, 3),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(16 * 4 * width, 256), nn.ReLU(inplace=True),
    )
    return Reconstructor(features, 256, num_directions)


def lenet5(num_directions: int, in_channels: int = 6) -> Reconstructor:
    """LeNet-5's sizes, as the paper's reference code uses for MNIST: 5x5 convs of 6, 16 and 120
    channels (BN, ReLU, 2x2 max pooling after the first two), averaged over space, then each
    head through its own 84-unit hidden layer. Input 32 px (any size from 32 up)."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.BatchNorm2d(120), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return Reconstructor(features, 120, num_directions, head_hidden=84)


def resnet18(num_directions: int, in_channels: int = 6) -> Reconstructor:
    """torchvision's ResNet-18 (random init) with a first convolution for the pair."""
    import torchvision  # imported here: a second at start-up for every command otherwise

    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return Reconstructor(net, feature_dim, num_directions)


RECONSTRUCTORS: dict[str, Callable[..., Reconstructor]] = {"lenet": lenet, "lenet5": lenet5, "resnet18": resnet18}


def build_reconstructor(name: str, num_directions: int, image_channels: int = 3) -> Reconstructor:
    """R for pairs of ``image_channels``-channel images (the pair has twice as many)."""
    if name not in RECONSTRUCTORS:
        raise UserError(f"unknown reconstructor {name!r}; known: {', '.join(RECONSTRUCTORS)}")
    return RECONSTRUCTORS[name](num_directions, in_channels=2 * image_channels)
