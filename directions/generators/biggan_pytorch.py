"""``biggan-128``: the BigGAN the paper actually used, Brock et al.'s own PyTorch release.

Not BigGAN-deep: the 128 px BigGAN of ``BigGAN-PyTorch`` (``G_ema.pth`` of its 138k-iteration
ImageNet model, which the reference code's ``pretrained_biggan`` download holds), with the
settings of the reference code's ``generator_config.json``: G_ch 96, 120-d hierarchical latent
(six chunks of 20: one into the first linear layer, one into each of five residual blocks'
class-conditional batch norms, beside a 128-d shared class embedding), self-attention at
64 px, spectral norm on every conv and linear layer (its ``u0``/``sv0`` buffers kept, one
power iteration from the stored ``u0`` in eval mode, as the original does). Widths, chunk
size, attention and class count are read from the file.

Latents: N(0, I), or with ``--truncation T`` a normal truncated to [-T, T].
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

SN_EPS = 1e-6  # generator_config.json: SN_eps
BN_EPS = 1e-5


class SpectralNormed(nn.Module):
    """Mixin: ``weight`` divided by its top singular value, estimated from the ``u0`` buffer."""

    def init_sn(self, outputs: int) -> None:
        self.register_buffer("u0", torch.randn(1, outputs))
        self.register_buffer("sv0", torch.ones(1))

    def normalized_weight(self) -> Tensor:
        matrix = self.weight.reshape(self.weight.shape[0], -1)
        with torch.no_grad():
            v = F.normalize(self.u0.to(matrix.dtype) @ matrix, eps=SN_EPS)
            u = F.normalize(v @ matrix.t(), eps=SN_EPS)
        sigma = ((v @ matrix.t()) @ u.t()).squeeze()
        return self.weight / sigma


class SNConv2d(nn.Conv2d, SpectralNormed):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, bias: bool = True) -> None:
        nn.Conv2d.__init__(self, c_in, c_out, kernel, padding=kernel // 2, bias=bias)
        self.init_sn(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)


class SNLinear(nn.Linear, SpectralNormed):
    def __init__(self, c_in: int, c_out: int, bias: bool = True) -> None:
        nn.Linear.__init__(self, c_in, c_out, bias=bias)
        self.init_sn(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class ConditionalBatchNorm(nn.Module):
    """Batch norm (stored statistics) with a gain 1 + g(y) and bias b(y) from the condition y."""

    def __init__(self, channels: int, condition_size: int) -> None:
        super().__init__()
        self.gain = SNLinear(condition_size, channels, bias=False)
        self.bias = SNLinear(condition_size, channels, bias=False)
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None, False, 0.0, BN_EPS)
        return out * (1 + self.gain(y)).view(y.shape[0], -1, 1, 1) + self.bias(y).view(y.shape[0], -1, 1, 1)


class PlainBatchNorm(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias, False, 0.0, BN_EPS)


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, condition_size: int) -> None:
        super().__init__()
        self.conv1 = SNConv2d(c_in, c_out)
        self.conv2 = SNConv2d(c_out, c_out)
        self.conv_sc = SNConv2d(c_in, c_out, kernel=1)
        self.bn1 = ConditionalBatchNorm(c_in, condition_size)
        self.bn2 = ConditionalBatchNorm(c_out, condition_size)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.conv_sc(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Attention(nn.Module):
    """SA-GAN's non-local block as BigGAN-PyTorch implements it (pooled keys and values)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.theta = SNConv2d(channels, channels // 8, kernel=1, bias=False)
        self.phi = SNConv2d(channels, channels // 8, kernel=1, bias=False)
        self.g = SNConv2d(channels, channels // 2, kernel=1, bias=False)
        self.o = SNConv2d(channels // 2, channels, kernel=1, bias=False)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).reshape(n, c // 8, h * w)
        phi = F.max_pool2d(self.phi(x), 2).reshape(n, c // 8, h * w // 4)
        g = F.max_pool2d(self.g(x), 2).reshape(n, c // 2, h * w // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)
        return self.gamma * self.o(torch.bmm(g, beta.transpose(1, 2)).reshape(n, c // 2, h, w)) + x


class BigGAN128(Generator):
    """``widths``: channels entering each block, then leaving the last; ``attention_at``: block
    indices followed by self-attention."""

    def __init__(self, widths: tuple[int, ...] = (1536, 1536, 768, 384, 192, 96), z_chunk: int = 20,
                 shared_dim: int = 128, num_classes: int = 1000, attention_at: tuple[int, ...] = (3,),
                 truncation: float | None = None) -> None:
        super().__init__()
        if truncation is not None and not truncation > 0:
            raise ValueError(f"truncation must be positive, got {truncation}")
        blocks = len(widths) - 1
        self.widths, self.z_chunk, self.truncation = tuple(widths), int(z_chunk), truncation
        self.num_classes = int(num_classes)
        self.latent_dim = self.z_chunk * (blocks + 1)
        self.resolution = 4 * 2 ** blocks
        self.shared = nn.Embedding(self.num_classes, shared_dim)
        self.linear = SNLinear(self.z_chunk, self.widths[0] * 16)
        self.blocks = nn.ModuleList()
        for index in range(blocks):
            stage = [GBlock(self.widths[index], self.widths[index + 1], shared_dim + self.z_chunk)]
            if index in attention_at:
                stage.append(Attention(self.widths[index + 1]))
            self.blocks.append(nn.ModuleList(stage))
        self.output_layer = nn.Sequential(PlainBatchNorm(self.widths[-1]), nn.ReLU(),
                                          SNConv2d(self.widths[-1], 3))

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if self.truncation is None:
            return super().sample_latents(n, generator)
        device = generator.device if generator is not None else torch.device("cpu")
        lo = 0.5 * (1 + math.erf(-self.truncation / math.sqrt(2)))  # normal CDF at -T
        u = lo + (1 - 2 * lo) * torch.rand(n, self.latent_dim, generator=generator, dtype=torch.float64, device=device)
        return torch.special.ndtri(u).to(self.device, self.dtype)

    def synthesize(self, z: Tensor, classes: Tensor) -> Tensor:
        chunks = torch.split(z, self.z_chunk, dim=1)
        y = self.shared(classes).to(z.dtype)
        h = self.linear(chunks[0]).view(z.shape[0], self.widths[0], 4, 4)
        for stage, chunk in zip(self.blocks, chunks[1:]):
            condition = torch.cat([y, chunk], dim=1)
            for layer in stage:
                h = layer(h, condition)
        return (torch.tanh(self.output_layer(h)) + 1) * 0.5


def architecture_from_state_dict(state: dict) -> dict:
    blocks = sorted({int(m.group(1)) for m in (re.match(r"^blocks\.(\d+)\.0\.conv1\.weight$", k) for k in state) if m})
    if not blocks or blocks != list(range(len(blocks))):
        raise ValueError("no blocks.N.0.conv1")
    widths = [int(state["blocks.0.0.conv1.weight"].shape[1])]
    widths += [int(state[f"blocks.{b}.0.conv1.weight"].shape[0]) for b in blocks]
    shared = state["shared.weight"]
    z_chunk = int(state["linear.weight"].shape[1])
    condition = int(state["blocks.0.0.bn1.gain.weight"].shape[1])
    if condition != shared.shape[1] + z_chunk:
        raise ValueError(f"batch-norm condition of {condition} is not the shared embedding + a latent chunk "
                         "(only the hierarchical latent of the paper's model is supported)")
    attention = tuple(b for b in blocks if f"blocks.{b}.1.gamma" in state)
    return {"widths": tuple(widths), "z_chunk": z_chunk, "shared_dim": int(shared.shape[1]),
            "num_classes": int(shared.shape[0]), "attention_at": attention}


def load_biggan128(weights: str | os.PathLike | None, truncation: float | None = None) -> BigGAN128:
    what = "biggan-128"
    if weights is None:
        raise ConfigError(f"{what} needs `weights` FILE: G_ema.pth of BigGAN-PyTorch's 128 px ImageNet model "
                        "(the reference code's pretrained_biggan download, 138k iterations)")
    if truncation is not None and not truncation > 0:
        raise ConfigError(f"{what}: `truncation` must be positive, got {truncation}")
    path = Path(weights)
    state = load_torch_weights(path, what)
    try:
        generator = BigGAN128(**architecture_from_state_dict(state), truncation=truncation)
    except (ValueError, KeyError, AttributeError, IndexError) as exc:
        raise UserError(f"{what}: {path} is not a BigGAN generator in BigGAN-PyTorch's layout ({exc})") from exc
    load_state_dict_strict(generator, state, path, what)
    return generator


@register_generator("biggan-128")
def build_biggan128(weights: str | None = None, truncation: float | None = None) -> BigGAN128:
    """BigGAN 128 px, BigGAN-PyTorch's G_ema.pth (the paper's generator): --weights FILE (needed)."""
    return load_biggan128(weights, truncation)
