"""Batch norm folded into the convolution before it, for frozen networks in eval mode.

Each eval-mode BatchNorm2d that directly follows a conv is an affine map per channel: it goes
into that conv's weights and bias, and one pass over every activation disappears (equal up to
float rounding). Discovery folds the frozen generator (directions/prepared_models.py); inference folds
the U-Net (saliency/detector.py).
"""

from __future__ import annotations

import torch
from torch import nn

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _fold(conv: nn.Module, norm: nn.BatchNorm2d) -> None:
    """conv then norm (eval) becomes one conv: scale its output channels, shift its bias."""
    with torch.no_grad():
        scale = norm.running_var.add(norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        if isinstance(conv, nn.ConvTranspose2d):  # weight (in, out / groups, kh, kw)
            groups = conv.groups
            weight = conv.weight.view(groups, conv.in_channels // groups, conv.out_channels // groups, *conv.kernel_size)
            weight = weight * scale.view(groups, 1, -1, 1, 1)
            conv.weight.copy_(weight.view_as(conv.weight))
        else:  # weight (out, in / groups, kh, kw)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a conv inside an ``nn.Sequential``
    into that conv, in place (the norm becomes ``nn.Identity``). Returns how many were folded."""
    folded = 0
    for sequential in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequential._modules)
        for first, second in zip(names[:-1], names[1:]):
            conv, norm = sequential._modules[first], sequential._modules[second]
            if (isinstance(conv, _CONVS) and type(norm) is nn.BatchNorm2d and not norm.training
                    and norm.track_running_stats and norm.running_var is not None
                    and norm.num_features == conv.out_channels):
                _fold(conv, norm)
                sequential._modules[second] = nn.Identity()
                folded += 1
    return folded
