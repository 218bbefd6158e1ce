"""Discovery step time against the sum of its necessary parts, timed alone in the same run.

    ratio = wall time of a full step / (G forward of the base batch
                                        + G forward+backward of the shifted batch
                                        + R forward+backward)

Target <= 1.2: the loop adds little beyond what the game must compute (sampling, the
deformator, the optimizers and bookkeeping are the rest).

    python benchmarks/discover_step.py [--generator scenes] [--device cpu] [--steps 30]

Defaults: the generator's discovery profile (scenes: K 32, LeNet, batch 256, 32 px).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from directions.deformators import build_deformator
from directions.discovery import _optimizers, play_step, sample_game
from directions.generators import build_generator
from directions.reconstructors import build_reconstructor
from directions.speed import prepare_frozen_generator, prepare_reconstructor
from pipelines.discover import DiscoverConfig, _resolved
from saliency.runtime import autocast, configure_device, cpu_name, resolve_precision, tune_cpu_allocator


def timed(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    tune_cpu_allocator()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="scenes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30, help="Repeats per measurement.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", default=None, help="Generator weights (biggan-deep-128: a folder).")
    parser.add_argument("--precision", default="auto", help="As discover's (auto: bf16 autocast on a GPU).")
    args = parser.parse_args()

    options = {"weights": args.weights} if args.weights else {}
    config = DiscoverConfig(generator=args.generator, device=args.device, generator_options=options)
    generator = build_generator(args.generator, device=args.device, **options)
    profile, settings = _resolved(config, generator)
    if profile.train_options:
        generator = build_generator(args.generator, device=args.device, **options, **dict(profile.train_options))
    generator.eval()
    configure_device(generator.device)
    settings = replace(settings, precision=resolve_precision(args.precision, generator.device))
    precision = settings.precision
    rng = torch.Generator().manual_seed(0)
    deformator = build_deformator(profile.deformator, generator.latent_dim, profile.num_directions, rng).to(generator.device)
    reconstructor = build_reconstructor(profile.reconstructor, profile.num_directions, generator.channels)
    reconstructor = reconstructor.to(generator.device)
    generator = prepare_frozen_generator(generator)  # as discover does
    prepare_reconstructor(reconstructor)
    optimizers = _optimizers(deformator, reconstructor, settings)
    sync = (lambda: torch.cuda.synchronize()) if generator.device.type == "cuda" else (lambda: None)

    z, classes, index, eps = sample_game(generator, profile.num_directions, settings.batch_size, rng, settings)
    shift = deformator(index, eps).detach()
    with torch.no_grad():
        base_images = generator(z, classes)
        shifted_images = generator(z + shift, classes)

    def full_step():
        play_step(generator, deformator, reconstructor, optimizers, rng, settings.batch_size, settings)

    def g_forward_base():
        with torch.no_grad(), autocast(generator.device, precision):
            generator(z, classes)

    def g_forward_backward_shifted():
        shifted_z = (z + shift).requires_grad_(True)
        with autocast(generator.device, precision):
            image = generator(shifted_z, classes)
        image.float().sum().backward()

    def r_forward_backward():
        shifted = shifted_images.clone().requires_grad_(True)
        with autocast(generator.device, precision):
            logits, eps_pred = reconstructor(base_images, shifted)
        (torch.nn.functional.cross_entropy(logits.float(), index) + (eps_pred.float() - eps).abs().mean()).backward()

    rounds = []
    for _ in range(args.rounds):
        parts = {
            "g_forward_base": timed(g_forward_base, args.steps, sync),
            "g_forward_backward_shifted": timed(g_forward_backward_shifted, args.steps, sync),
            "r_forward_backward": timed(r_forward_backward, args.steps, sync),
        }
        step = timed(full_step, args.steps, sync)
        rounds.append({"step_ms": round(step * 1000, 2), **{k: round(v * 1000, 2) for k, v in parts.items()},
                       "ratio": round(step / sum(parts.values()), 3)})
    ratios = sorted(r["ratio"] for r in rounds)
    result = {"generator": args.generator, "device": str(generator.device), "batch": settings.batch_size,
              "directions": profile.num_directions, "reconstructor": profile.reconstructor,
              "resolution": generator.resolution, "threads": torch.get_num_threads(), "precision": precision,
              "cpu": cpu_name(), "rounds_ms": rounds, "median_ratio": ratios[len(ratios) // 2]}
    print(json.dumps(result, indent=2))
    print(f"step / sum of necessary parts = {result['median_ratio']:.3f} (median of {len(rounds)} rounds; target <= 1.2)")


if __name__ == "__main__":
    main()
