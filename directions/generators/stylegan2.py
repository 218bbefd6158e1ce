"""``stylegan2``: StyleGAN2 in the layout of the PyTorch port the paper's reference code uses.

That port (rosinality's ``stylegan2-pytorch``) saves the generator under ``g_ema``: a mapping
network ``style.1..8`` (equalised linear layers, LeakyReLU 0.2 x sqrt 2, learning-rate
multiplier 0.01), a learned 4x4 ``input``, modulated 3x3 convolutions (``conv1``,
``convs.N``) with per-layer noise and bias, and ``to_rgb1`` / ``to_rgbs.N`` skip outputs
upsampled with the [1, 3, 3, 1] filter; fixed noise maps ``noises.noise_N``. Everything here
is plain PyTorch (the port's compiled ops are re-expressed with conv2d), so it runs on any
device. Sizes and widths are read from the file.

Like the reference code, directions live in W by default (``--latent-space w``): a latent is
``w = mapping(z)`` for z ~ N(0, I), and G renders w. ``--latent-space z`` shifts z instead.
Noise is the file's fixed noise, so an image depends on its latent alone.
"""

from __future__ import annotations

import math
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

BLUR = (1.0, 3.0, 3.0, 1.0)
LR_MLP = 0.01  # the port's default learning-rate multiplier of the mapping network


def blur_kernel(scale: float = 1.0) -> Tensor:
    k = torch.tensor(BLUR)
    k = k[None, :] * k[:, None]
    return k / k.sum() * scale


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, then filter with ``kernel`` (per channel)."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c)


def lrelu(x: Tensor, bias: Tensor) -> Tensor:
    """The port's fused bias + LeakyReLU 0.2, times sqrt(2)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), 0.2) * math.sqrt(2)


class EqualLinear(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0, activation: bool = False,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale, self.lr_mul, self.activation = lr_mul / math.sqrt(in_dim), lr_mul, activation

    def forward(self, x: Tensor) -> Tensor:
        if self.activation:
            return lrelu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], scale: float) -> None:
        super().__init__()
        self.pad = pad
        self.register_buffer("kernel", blur_kernel(scale))

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Weights scaled per sample by the style (and demodulated), applied as a grouped conv."""

    def __init__(self, c_in: int, c_out: int, kernel: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False) -> None:
        super().__init__()
        self.c_in, self.c_out, self.kernel, self.demodulate, self.upsample = c_in, c_out, kernel, demodulate, upsample
        self.weight = nn.Parameter(torch.randn(1, c_out, c_in, kernel, kernel))
        self.modulation = EqualLinear(style_dim, c_in, bias_init=1.0)
        self.scale = 1 / math.sqrt(c_in * kernel * kernel)
        if upsample:  # transposed conv (stride 2), then the blur that removes its checkerboard
            self.blur = Blur(pad=(1, 1), scale=4.0)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        n, _, h, w = x.shape
        weight = self.scale * self.weight * self.modulation(style).view(n, 1, self.c_in, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + 1e-8).view(n, self.c_out, 1, 1, 1)
        x = x.reshape(1, n * self.c_in, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(n * self.c_in, self.c_out, self.kernel, self.kernel)
            out = F.conv_transpose2d(x, weight, stride=2, groups=n)
            return self.blur(out.reshape(n, self.c_out, out.shape[2], out.shape[3]))
        weight = weight.reshape(n * self.c_out, self.c_in, self.kernel, self.kernel)
        out = F.conv2d(x, weight, padding=self.kernel // 2, groups=n)
        return out.reshape(n, self.c_out, h, w)


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class FusedBias(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class StyledConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(c_in, c_out, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedBias(c_out)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        return lrelu(self.conv(x, style) + self.noise.weight * noise, self.activate.bias)


class ToRGB(nn.Module):
    def __init__(self, c_in: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(c_in, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Blur(pad=(2, 1), scale=4.0)  # with zero insertion: see forward

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + upfirdn2d(skip, self.upsample.kernel, up=2, pad=self.upsample.pad)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))


class StyleGAN2Generator(Generator):
    """``widths[i]``: channels at resolution 4 * 2**i; the image is 4 * 2**(len(widths)-1) px."""

    def __init__(self, widths: tuple[int, ...], style_dim: int = 512, n_mlp: int = 8, latent_space: str = "w") -> None:
        super().__init__()
        if latent_space not in ("w", "z"):
            raise ValueError(f"latent_space must be w or z, got {latent_space!r}")
        self.widths, self.style_dim, self.latent_space = tuple(widths), style_dim, latent_space
        self.latent_dim = style_dim
        self.resolution = 4 * 2 ** (len(widths) - 1)
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, LR_MLP, activation=True)
                                                  for _ in range(n_mlp)])
        self.input = ConstantInput(widths[0])
        self.conv1 = StyledConv(widths[0], widths[0], style_dim)
        self.to_rgb1 = ToRGB(widths[0], style_dim, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            self.convs.append(StyledConv(c_in, c_out, style_dim, upsample=True))
            self.convs.append(StyledConv(c_out, c_out, style_dim))
            self.to_rgbs.append(ToRGB(c_out, style_dim))
        self.noises = nn.Module()
        for i in range(2 * len(widths) - 1):
            size = 4 * 2 ** ((i + 1) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, size, size))

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = super().sample_latents(n, generator)
        if self.latent_space == "z":
            return z
        with torch.no_grad():
            return self.style(z)

    def synthesis(self, w: Tensor) -> Tensor:
        """The image (n, 3, H, W), roughly in [-1, 1], from one w per sample used at every layer."""
        noise = [getattr(self.noises, f"noise_{i}") for i in range(2 * len(self.widths) - 1)]
        x = self.input.input.expand(w.shape[0], -1, -1, -1)
        x = self.conv1(x, w, noise[0])
        skip = self.to_rgb1(x, w)
        for i, to_rgb in enumerate(self.to_rgbs):
            x = self.convs[2 * i](x, w, noise[2 * i + 1])
            x = self.convs[2 * i + 1](x, w, noise[2 * i + 2])
            skip = to_rgb(x, w, skip)
        return skip

    def synthesize(self, z: Tensor, classes: Tensor | None) -> Tensor:
        w = z if self.latent_space == "w" else self.style(z)
        return ((self.synthesis(w) + 1) * 0.5).clamp(0, 1)


def architecture_from_state_dict(state: dict) -> dict:
    """Widths, style size and mapping depth from a ``g_ema`` state dict's shapes."""
    n_mlp = len({m.group(1) for m in (re.match(r"^style\.(\d+)\.weight$", k) for k in state) if m})
    rgbs = len({m.group(1) for m in (re.match(r"^to_rgbs\.(\d+)\.bias$", k) for k in state) if m})
    if n_mlp == 0 or "input.input" not in state:
        raise ValueError("no style.N / input.input keys")
    widths = [int(state["input.input"].shape[1])]
    widths += [int(state[f"convs.{2 * i}.conv.weight"].shape[1]) for i in range(rgbs)]
    return {"widths": tuple(widths), "style_dim": int(state["style.1.weight"].shape[0]), "n_mlp": n_mlp}


def load_stylegan2(weights: str | os.PathLike | None, latent_space: str = "w") -> StyleGAN2Generator:
    what = "stylegan2"
    if weights is None:
        raise ConfigError(f"{what} needs `weights` FILE: a checkpoint of rosinality's stylegan2-pytorch (holding g_ema), "
                        "e.g. the converted FFHQ or LSUN weights the paper's reference code loads")
    path = Path(weights)
    checkpoint = load_torch_weights(path, what)
    state = checkpoint.get("g_ema", checkpoint)
    if not isinstance(state, dict):
        raise UserError(f"{what}: {path} has no g_ema state dict")
    try:
        architecture = architecture_from_state_dict(state)
        generator = StyleGAN2Generator(**architecture, latent_space=latent_space)
    except (ValueError, KeyError, AttributeError, IndexError) as exc:
        raise UserError(f"{what}: {path} is not a StyleGAN2 generator in stylegan2-pytorch's layout ({exc})") from exc
    load_state_dict_strict(generator, state, path, what)
    return generator


@register_generator("stylegan2")
def build_stylegan2(weights: str | None = None, latent_space: str = "w") -> StyleGAN2Generator:
    """StyleGAN2 (rosinality's PyTorch layout, g_ema): --weights FILE (needed); directions in W by default."""
    return load_stylegan2(weights, latent_space)
