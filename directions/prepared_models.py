"""The frozen generator and the reconstructor prepared for the game: cheaper, computing the same.

Each measured with benchmarks/discover_speed.py (which prints the numbers for the machine it
runs on); the figures are in docs/benchmarks.md:

- **Batch norm folded into the convolution before it.** The generator is frozen and in eval
  mode, so each BatchNorm that directly follows a conv in an ``nn.Sequential`` is an affine
  map per channel: it goes into that conv's weights and bias, and one pass over every
  activation disappears. Equal up to float rounding.
- **Channels-last** weights and activations for the generator and the reconstructor: the
  layout oneDNN (CPU) and cuDNN (GPU) convolutions prefer.
- ``torch.compile`` of the generator and the reconstructor, on request (``--compile``): it
  fuses what is left, but costs tens of seconds of compilation per process.

Rendering the base and shifted batches in one generator call measured no faster (same
benchmark), so discover keeps two calls.
"""

from __future__ import annotations

import torch
from torch import nn

from saliency.core.fold import fold_batch_norms


def _probe(generator, seed: int = 0):
    z = generator.sample_latents(2, torch.Generator().manual_seed(seed))
    classes = generator.sample_classes(2, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return z, classes, generator(z, classes).float()


def prepare_frozen_generator(generator: nn.Module, tolerance: float = 1e-3) -> nn.Module:
    """A faster equivalent of a frozen, eval-mode generator (as ``build_generator`` returns it):
    batch norms folded, channels-last. The change is made on a copy and kept only if the copy
    renders two probe latents like the original (max abs difference <= ``tolerance``): code that
    needs NCHW (``.view`` on a conv output, say) or uses a norm in some other way keeps running
    as it was. Returns the copy, or the generator itself."""
    import copy

    if generator.training:
        raise ValueError("fold batch norms only into a generator in eval mode")
    z, classes, expected = _probe(generator)
    for layout in (torch.channels_last, torch.contiguous_format):
        try:
            candidate = copy.deepcopy(generator)
            fold_batch_norms(candidate)
            candidate = candidate.to(memory_format=layout)  # refused by 5-d weights (StyleGAN2's)
            with torch.no_grad():
                got = candidate(z, classes).float()
        except Exception:  # a generator that cannot be copied or changed runs as it is
            continue
        if got.shape == expected.shape and float((got - expected).abs().max()) <= tolerance:
            return candidate
    return generator


def prepare_reconstructor(reconstructor: nn.Module) -> nn.Module:
    """In place: channels-last weights (its inputs follow the generator's layout)."""
    return reconstructor.to(memory_format=torch.channels_last)
