"""The plain U-Net of the paper's saliency experiment, in the shape its reference code trains.

No pretrained encoder: five double-convolution levels (3x3 convolution, batch norm, ReLU,
twice) of 64, 128, 256, 512 and 512 channels, four 2x max-poolings down; four steps up, each a
bilinear 2x upsampling (corners aligned), zero-padded to the skip connection's size,
concatenated with it and passed through a double convolution (256, 128, 64, 64 channels); a
1x1 convolution to the two classes. Upsampling pads to the skip, so any input size works.

Written for this project from that description (Ronneberger et al.'s U-Net with the widths of
the reference's ``segmentation/unet_model.py``); ``saliency.unet`` builds it for the
architecture whose encoder is ``"plain"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_WIDTHS = (64, 128, 256, 512, 512)
DECODER_WIDTHS = (256, 128, 64, 64)


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UpStep(nn.Module):
    """Upsample 2x, pad to the skip's size, concatenate (skip first), double convolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = double_conv(c_in, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class PlainUNet(nn.Module):
    """``(n, 3, H, W)`` -> ``(n, classes, H, W)`` logits."""

    def __init__(self, classes: int = 2, encoder_widths: tuple[int, ...] = ENCODER_WIDTHS,
                 decoder_widths: tuple[int, ...] = DECODER_WIDTHS) -> None:
        super().__init__()
        if len(decoder_widths) != len(encoder_widths) - 1:
            raise ValueError("a plain U-Net has one decoder level fewer than encoder levels")
        self.down = nn.ModuleList([double_conv(3, encoder_widths[0])])
        self.down.extend(double_conv(a, b) for a, b in zip(encoder_widths, encoder_widths[1:]))
        skips = list(reversed(encoder_widths[:-1]))
        below = [encoder_widths[-1], *decoder_widths[:-1]]
        self.up = nn.ModuleList(UpStep(skip + c, out) for skip, c, out in zip(skips, below, decoder_widths))
        self.head = nn.Conv2d(decoder_widths[-1], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.down[0](x)]
        for level in self.down[1:]:
            features.append(level(F.max_pool2d(features[-1], 2)))
        x = features.pop()
        for step in self.up:
            x = step(x, features.pop())
        return self.head(x)
