"""What directions do in image space, measured without labels (for the paper's Table 5 claims).

For each direction a_k and fixed samples z_1..z_n, the effect of a shift is
``d_k(z) = G(z + s a_k) - G(z)``. Two numbers summarise a set of directions:

- ``mean_abs_cos``: the mean |cos| between the flattened effects of two different directions
  (all n samples concatenated). Distinct directions change different pixels: low. Directions
  that all do the same thing (the paper's "all perform zoom" at a high shift-loss weight): high.
- ``diversity``: per direction, the spread of the shifted images across samples over the spread
  of the unshifted ones (mean pairwise L2 distance). A direction that sends every sample to one
  fixed image (the paper's "collapse", its Figure 4) drives it towards 0;
  ``collapsed_fraction`` is the share of directions below 0.5.
- ``change``: per direction, how far a shift moves an image (mean L2 distance between G(z) and
  G(z + s a_k)) over the spread of the unshifted samples: 1 moves an image as far as the
  distance to another sample. A direction the game no longer moves along (it can be told
  apart by a faint change alone when nothing penalises the shift, lambda = 0) drives it
  towards 0; ``still_fraction`` is the share of directions below 0.2.

Images are area-averaged to at most 32x32 first, so the memory stays about K x 100k floats
for any generator (a 1024 px ProgGAN with K = 200 included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from directions.generators import Generator

MAX_SIDE = 32


def _small(images: Tensor) -> Tensor:
    """(n, C, H, W) -> flattened (n, C * h * w) with h, w <= MAX_SIDE (area average)."""
    images = images.float()
    if max(images.shape[-2:]) > MAX_SIDE:
        images = F.adaptive_avg_pool2d(images, MAX_SIDE)
    return images.flatten(1).cpu()


def _mean_pairwise_distance(images: Tensor) -> Tensor:
    """(n, D) -> mean L2 distance over the n(n-1) ordered pairs."""
    distances = torch.cdist(images, images)
    n = images.shape[0]
    return distances.sum() / max(n * (n - 1), 1)


@torch.no_grad()
def direction_effects(generator: Generator, directions: Tensor, samples: int = 32, shift: float = 6.0,
                      seed: int = 777, collapse_below: float = 0.5, still_below: float = 0.2, progress=None) -> dict:
    """The numbers in the module docstring for the columns of ``directions`` (d, K).
    ``progress``: a bar, advanced by one per direction."""
    rng = torch.Generator().manual_seed(seed)
    z = generator.sample_latents(samples, rng)
    classes = generator.sample_classes(samples, rng)
    base = _small(generator(z, classes))  # (n, D)
    base_spread = _mean_pairwise_distance(base).clamp_min(1e-12)
    unit = directions / directions.norm(dim=0, keepdim=True).clamp_min(1e-12)
    unit = unit.to(z.device, z.dtype)
    effects, diversity, change = [], [], []
    for k in range(unit.shape[1]):
        shifted = _small(generator(z + shift * unit[:, k], classes))
        effects.append((shifted - base).flatten())
        diversity.append(float(_mean_pairwise_distance(shifted) / base_spread))
        change.append(float((shifted - base).norm(dim=1).mean() / base_spread))
        if progress is not None:
            progress.update(1)
    effect = torch.stack(effects)  # (K, n * D)
    effect = effect / effect.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (effect @ effect.T).abs()
    k = cos.shape[0]
    off_diagonal = (cos.sum() - cos.diagonal().sum()) / max(k * (k - 1), 1)
    diversity_t, change_t = torch.tensor(diversity), torch.tensor(change)
    return {
        "mean_abs_cos": round(float(off_diagonal), 4),
        "diversity": round(float(diversity_t.mean()), 4),
        "diversity_min": round(float(diversity_t.min()), 4),
        "collapsed_fraction": round(float((diversity_t < collapse_below).float().mean()), 4),
        "change": round(float(change_t.mean()), 4),
        "change_min": round(float(change_t.min()), 4),
        "still_fraction": round(float((change_t < still_below).float().mean()), 4),
        "samples": samples, "shift": shift,
        # each direction's own numbers, for the report's cards (what this one changes, how much)
        "per_direction": {"change": [round(v, 4) for v in change], "diversity": [round(v, 4) for v in diversity]},
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m directions.effects RUN [RUN ...]``: measure finished discovery runs again
    (for runs written before a measure existed), one JSON line per run."""
    import argparse
    import json
    import sys

    from safetensors.torch import load_file

    from directions.generators import build_generator
    from directions.generators.registry import generator_named_in_file
    from directions.run_folder import TENSORS_NAME, load_run
    from saliency.core.errors import UserError
    from saliency.core.recorded_paths import resolved_options

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--shift", type=float, default=6.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--generator", default=None,
                        help="Only for runs of your own package.module:factory: the same spec, to trust it.")
    args = parser.parse_args(argv)
    try:
        for run in args.runs:
            summary = load_run(run)
            name = generator_named_in_file(summary.get("generator"), f"{run}/directions.json", args.generator)
            options = summary.get("generator_options") or {}
            if not isinstance(options, dict):
                raise UserError(f"{run}/directions.json: generator_options is not an object")
            generator = build_generator(name, device=args.device, **resolved_options(options, run))
            directions = load_file(f"{run}/{TENSORS_NAME}")["directions"]
            print(json.dumps({"run": run, **direction_effects(generator, directions, shift=args.shift)}))
    except UserError as exc:
        print(f"effects: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
