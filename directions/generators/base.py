"""The generator protocol every stage uses: latents (and classes) in, images in [0, 1] out."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _rng_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


class Generator(nn.Module):
    """A frozen, differentiable map ``(z, classes) -> images``.

    Subclasses set ``latent_dim``, ``num_classes`` (0 when unconditional) and ``resolution``,
    and implement :meth:`synthesize`. This base class owns the device and dtype: inputs are
    moved to the generator's device and dtype here, once, so stages never have to.

    Latents and classes are drawn on the device of the optional ``torch.Generator`` (the CPU
    by default, so a seed gives the same samples on every device) and then moved; a training
    loop on a GPU passes a generator on that GPU, so nothing crosses devices in the loop.
    """

    latent_dim: int
    num_classes: int = 0
    resolution: int
    channels: int = 3  # image channels: 3 (RGB) or 1 (gray, e.g. MNIST)

    def __init__(self) -> None:
        super().__init__()
        # Follows .to(device / dtype) like any buffer: the single source of both.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` latents from the generator's prior, shape ``(n, latent_dim)``."""
        return torch.randn(n, self.latent_dim, generator=generator, device=_rng_device(generator)).to(
            self.device, self.dtype)

    def sample_classes(
        self,
        n: int,
        generator: torch.Generator | None = None,
        choices: list[int] | Tensor | None = None,
    ) -> Tensor | None:
        """``n`` class indices, uniform over ``choices`` (all classes by default); None if
        the generator is unconditional."""
        if not self.conditional:
            return None
        if choices is None:
            idx = torch.randint(self.num_classes, (n,), generator=generator, device=_rng_device(generator))
        else:
            pool = torch.as_tensor(choices, dtype=torch.long, device=_rng_device(generator)).flatten()
            if pool.numel() == 0:
                raise ValueError("choices is empty")
            idx = pool[torch.randint(pool.numel(), (n,), generator=generator, device=pool.device)]
        return idx.to(self.device)

    def check_classes(self, classes: Tensor | list[int] | None, n: int) -> Tensor | None:
        """Validate and move class indices; None for unconditional generators."""
        if not self.conditional:
            return None
        if classes is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass classes")
        classes = torch.as_tensor(classes, dtype=torch.long, device=self.device).flatten()
        if classes.numel() == 1 and n > 1:
            classes = classes.expand(n)
        if classes.numel() != n:
            raise ValueError(f"got {classes.numel()} classes for {n} latents")
        if n and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise ValueError(f"class indices must lie in [0, {self.num_classes})")
        return classes

    def forward(self, z: Tensor, classes: Tensor | list[int] | None = None) -> Tensor:
        """Images ``(n, channels, resolution, resolution)`` in [0, 1], differentiable in ``z``."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents of shape (n, {self.latent_dim}), got {tuple(z.shape)}")
        z = z.to(device=self.device, dtype=self.dtype)
        return self.synthesize(z, self.check_classes(classes, z.shape[0]))

    def synthesize(self, z: Tensor, classes: Tensor | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError
