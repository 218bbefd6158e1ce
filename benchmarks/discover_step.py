"""Discovery step time against the sum of its necessary parts, timed alone in the same run.

    ratio = wall time of a full step / (G forward of the base batch
                                        + G forward (+ backward, for a learned A) of the shifted batch
                                        + R forward+backward)

Target <= 1.2: the loop adds little beyond what the game must compute (sampling, the
deformator, the optimizers and bookkeeping are the rest). A frozen baseline A (random,
identity) has no gradient to take through G, so its necessary parts hold no G backward.

    python benchmarks/discover_step.py [--generator scenes] [--device cpu] [--steps 30]
    python benchmarks/discover_step.py --generator sngan-mnist --batch 128 --deformators unit,random,identity

Defaults: the generator's discovery profile (scenes: K 32, LeNet, batch 256, 32 px). With several
--deformators, each frozen one's step is also given as a fraction of the learned one's.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from directions.deformators import build_deformator
from directions.discovery import game_optimizers, play_step, sample_game
from directions.generators import build_generator
from directions.reconstructors import build_reconstructor
from directions.prepared_models import prepare_frozen_generator, prepare_reconstructor
from pipelines.discover import DiscoverConfig, resolved_settings
from saliency.core.runtime import autocast, configure_device, cpu_name, resolve_precision, tune_cpu_allocator


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
    parser.add_argument("--batch", type=int, default=None, help="Batch size (default: the profile's).")
    parser.add_argument("--deformators", default=None,
                        help="Comma-separated A kinds to time (default: the profile's), e.g. unit,random,identity.")
    args = parser.parse_args()
    if args.batch is not None and not 2 <= args.batch <= 4096:
        parser.error("--batch must lie in [2, 4096]")

    options = {"weights": args.weights} if args.weights else {}
    config = DiscoverConfig(generator=args.generator, device=args.device, generator_options=options)
    generator = build_generator(args.generator, device=args.device, **options)
    profile, settings = resolved_settings(config, generator)
    if profile.train_options:
        generator = build_generator(args.generator, device=args.device, **options, **dict(profile.train_options))
    generator.eval()
    configure_device(generator.device)
    settings = replace(settings, precision=resolve_precision(args.precision, generator.device))
    precision = settings.precision
    if args.batch is not None:
        settings = replace(settings, batch_size=args.batch)
    kinds = args.deformators.split(",") if args.deformators else [profile.deformator]
    sync = (lambda: torch.cuda.synchronize()) if generator.device.type == "cuda" else (lambda: None)
    generator = prepare_frozen_generator(generator)  # as discover does
    results = {kind: measure(kind, generator, profile, settings, precision, args, sync) for kind in kinds}
    learned = next((r for r in results.values() if r["trainable"]), None)
    result = {"generator": args.generator, "device": str(generator.device), "batch": settings.batch_size,
              "directions": profile.num_directions, "reconstructor": profile.reconstructor,
              "resolution": generator.resolution, "threads": torch.get_num_threads(), "precision": precision,
              "cpu": cpu_name(), "deformators": results}
    print(json.dumps(result, indent=2))
    for kind, r in results.items():
        line = f"{kind}: step {r['median_step_ms']:.1f} ms; step / sum of necessary parts = {r['median_ratio']:.3f}"
        if learned is not None and not r["trainable"]:
            line += f"; step / learned step = {r['median_step_ms'] / learned['median_step_ms']:.3f}"
        print(line + f" (median of {len(r['rounds_ms'])} rounds; target <= 1.2)")


def measure(kind: str, generator, profile, settings, precision: str, args, sync) -> dict:
    """Rounds of the full step and its necessary parts, for one kind of A."""
    rng = torch.Generator().manual_seed(0)
    deformator = build_deformator(kind, generator.latent_dim, profile.num_directions, rng).to(generator.device)
    torch.manual_seed(0)
    reconstructor = build_reconstructor(profile.reconstructor, profile.num_directions, generator.channels)
    reconstructor = reconstructor.to(generator.device)
    prepare_reconstructor(reconstructor)
    optimizers = game_optimizers(deformator, reconstructor, settings)

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

    def g_shifted():
        if not deformator.trainable:  # nothing to learn in A: no graph through G
            with torch.no_grad(), autocast(generator.device, precision):
                generator(z + shift, classes)
            return
        shifted_z = (z + shift).requires_grad_(True)
        with autocast(generator.device, precision):
            image = generator(shifted_z, classes)
        image.float().sum().backward()

    def r_forward_backward():
        shifted = shifted_images.clone().requires_grad_(deformator.trainable)
        with autocast(generator.device, precision):
            logits, eps_pred = reconstructor(base_images, shifted)
        (torch.nn.functional.cross_entropy(logits.float(), index) + (eps_pred.float() - eps).abs().mean()).backward()

    rounds = []
    for _ in range(args.rounds):
        parts = {
            "g_forward_base": timed(g_forward_base, args.steps, sync),
            "g_shifted": timed(g_shifted, args.steps, sync),
            "r_forward_backward": timed(r_forward_backward, args.steps, sync),
        }
        step = timed(full_step, args.steps, sync)
        rounds.append({"step_ms": round(step * 1000, 2), **{k: round(v * 1000, 2) for k, v in parts.items()},
                       "ratio": round(step / sum(parts.values()), 3)})
    median = lambda key: sorted(r[key] for r in rounds)[len(rounds) // 2]  # noqa: E731
    return {"trainable": deformator.trainable, "shifted_part": "forward+backward" if deformator.trainable else "forward",
            "rounds_ms": rounds, "median_step_ms": median("step_ms"), "median_ratio": median("ratio")}

if __name__ == "__main__":
    main()
