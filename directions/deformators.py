"""Deformators: the d x K matrix A whose columns are the latent directions being learned.

A shift of ``eps`` along direction ``k`` moves a latent ``z`` to ``z + eps * A[:, k]``.

- ``unit``: free columns divided by their norms (the paper's choice for MNIST and ProgGAN).
- ``ortho``: orthonormal columns, the first K columns of ``expm(S - S^T)`` for a learned
  square S (the paper's choice for BigGAN); needs K <= d.
- ``random``: a fixed random orthonormal A, not trained (the paper's random baseline).
- ``identity``: the first K coordinate axes, not trained (the coordinate baseline).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from saliency.core.errors import UserError


class Deformator(nn.Module):
    """Base class: ``directions()`` is the current ``(d, K)`` matrix; ``forward`` the shifts."""

    trainable: bool = True

    def __init__(self, latent_dim: int, num_directions: int) -> None:
        super().__init__()
        if latent_dim < 1 or num_directions < 1:
            raise UserError("latent size and number of directions must be positive")
        self.latent_dim = latent_dim
        self.num_directions = num_directions

    def directions(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, index: Tensor, magnitude: Tensor) -> Tensor:
        """Latent shifts ``(n, d)``: ``magnitude[i] * A[:, index[i]]``."""
        return magnitude.unsqueeze(1) * self.directions().T[index]


class UnitDeformator(Deformator):
    """Free columns used at unit length. They start as 0.1 * N(0, 1), as in the reference code:
    the directions do not depend on that scale, but Adam's steps are about ``lr`` per entry, so
    the scale sets how fast the directions turn (at 0.1, ten times faster than at 1)."""

    def __init__(self, latent_dim: int, num_directions: int, generator: torch.Generator | None = None,
                 init_scale: float = 0.1) -> None:
        super().__init__(latent_dim, num_directions)
        self.weight = nn.Parameter(init_scale * torch.randn(latent_dim, num_directions, generator=generator))

    def directions(self) -> Tensor:
        return self.weight / self.weight.norm(dim=0, keepdim=True).clamp_min(1e-12)


class OrthoDeformator(Deformator):
    def __init__(self, latent_dim: int, num_directions: int, generator: torch.Generator | None = None,
                 init_scale: float = 1e-3) -> None:
        if num_directions > latent_dim:
            raise UserError(
                f"an orthonormal deformator has at most d = {latent_dim} directions, asked for K = {num_directions}"
            )
        super().__init__(latent_dim, num_directions)
        # Small noise around zero: A starts near the first K coordinate axes, as in the reference.
        self.log_rotation = nn.Parameter(init_scale * torch.randn(latent_dim, latent_dim, generator=generator))

    def directions(self) -> Tensor:
        skew = self.log_rotation - self.log_rotation.T
        return torch.linalg.matrix_exp(skew)[:, : self.num_directions]


class FrozenDeformator(Deformator):
    trainable = False

    def __init__(self, matrix: Tensor) -> None:
        super().__init__(matrix.shape[0], matrix.shape[1])
        self.register_buffer("matrix", matrix.contiguous())

    def directions(self) -> Tensor:
        return self.matrix


def random_deformator(latent_dim: int, num_directions: int, generator: torch.Generator | None = None) -> FrozenDeformator:
    if num_directions > latent_dim:
        raise UserError(f"a random orthonormal deformator has at most d = {latent_dim} directions, asked for K = {num_directions}")
    q, r = torch.linalg.qr(torch.randn(latent_dim, latent_dim, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # a uniformly random rotation
    return FrozenDeformator(q[:, :num_directions].float())


def identity_deformator(latent_dim: int, num_directions: int, generator: torch.Generator | None = None) -> FrozenDeformator:
    if num_directions > latent_dim:
        raise UserError(f"the coordinate deformator has at most d = {latent_dim} directions, asked for K = {num_directions}")
    return FrozenDeformator(torch.eye(latent_dim)[:, :num_directions].contiguous())


DEFORMATORS: dict[str, Callable[..., Deformator]] = {
    "ortho": OrthoDeformator,
    "unit": UnitDeformator,
    "random": random_deformator,
    "identity": identity_deformator,
}


def build_deformator(name: str, latent_dim: int, num_directions: int, generator: torch.Generator | None = None) -> Deformator:
    if name not in DEFORMATORS:
        raise UserError(f"unknown deformator {name!r}; known: {', '.join(DEFORMATORS)}")
    return DEFORMATORS[name](latent_dim, num_directions, generator=generator)
