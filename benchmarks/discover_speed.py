"""The discovery step before and after directions/prepared_models.py, measured in one run.

    python benchmarks/discover_speed.py [--generator dcgan-faces] [--reconstructors lenet,resnet18]
                                        [--batch 32] [--directions 32] [--compile]

For each reconstructor, in alternating rounds on the same inputs:

- ``old``: the generator and R as built (what ``discover`` ran before): NCHW, batch norms in G.
- ``new``: what ``discover`` runs now: G with its batch norms folded into the convolutions
  before them, G and R channels-last.
- ``one_call`` (information): ``new``, but G renders the base and the shifted batch in one call
  of twice the batch (then the base half carries a graph too).
- ``compiled`` (with --compile): ``new`` plus torch.compile of G and R.

Prints each variant's median step time over the rounds and its ratio to ``old`` (target for
``new``: <= 0.8 on dcgan-faces at batch 32 with both R), and how far G's output moved (max abs
difference between the folded and the plain generator on one batch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from directions.deformators import build_deformator
from directions.discovery import TrainSettings, game_optimizers, play_step, sample_game
from directions.generators import build_generator
from directions.reconstructors import build_reconstructor
from directions.prepared_models import prepare_frozen_generator, prepare_reconstructor
from saliency.core.runtime import cpu_name, tune_cpu_allocator


def _one_call_step(generator, deformator, reconstructor, optimizers, rng, batch_size, settings):
    """play_step with G called once on [z; z + shift]."""
    z, classes, index, eps = sample_game(generator, deformator.num_directions, batch_size, rng, settings)
    both_classes = None if classes is None else torch.cat([classes, classes])
    images = generator(torch.cat([z, z + deformator(index, eps)]), both_classes)
    original, shifted = images[:batch_size].detach(), images[batch_size:]
    logits, eps_pred = reconstructor(original, shifted)
    loss = F.cross_entropy(logits, index) + settings.shift_loss_weight * (eps_pred - eps).abs().mean()
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers.values():
        optimizer.step()


def build(variant: str, generator_name: str, reconstructor_name: str, directions: int, device: str, settings):
    generator = build_generator(generator_name, device=device)
    torch.manual_seed(0)
    deformator = build_deformator("ortho", generator.latent_dim, directions, torch.Generator().manual_seed(0))
    reconstructor = build_reconstructor(reconstructor_name, directions, generator.channels)
    deformator.to(generator.device).train()
    reconstructor.to(generator.device).train()
    if variant != "old":
        generator = prepare_frozen_generator(generator)
        prepare_reconstructor(reconstructor)
    if variant == "compiled":
        generator.synthesize = torch.compile(generator.synthesize)
        reconstructor.forward = torch.compile(reconstructor.forward)
    optimizers = game_optimizers(deformator, reconstructor, settings)
    rng = torch.Generator().manual_seed(0)
    step_fn = _one_call_step if variant == "one_call" else play_step

    def step() -> None:
        step_fn(generator, deformator, reconstructor, optimizers, rng, settings.batch_size, settings)

    return generator, step


def main() -> None:
    tune_cpu_allocator()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="dcgan-faces")
    parser.add_argument("--reconstructors", default="lenet,resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--directions", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=8, help="Steps per round and variant.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="Also time torch.compile of G and R.")
    args = parser.parse_args()
    settings = TrainSettings(batch_size=args.batch, lr=1e-4)
    variants = ["old", "new", "one_call"] + (["compiled"] if args.compile else [])
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    report = {"generator": args.generator, "batch": args.batch, "directions": args.directions, "device": args.device,
              "threads": torch.get_num_threads(), "cpu": cpu_name(), "results": {}}

    plain = build_generator(args.generator, device=args.device)
    folded = prepare_frozen_generator(build_generator(args.generator, device=args.device))
    z = plain.sample_latents(args.batch, torch.Generator().manual_seed(1))
    classes = plain.sample_classes(args.batch, torch.Generator().manual_seed(2))
    with torch.no_grad():
        report["folded_max_abs_difference"] = float((plain(z, classes) - folded(z, classes)).abs().max())

    for name in args.reconstructors.split(","):
        steps, warm = {}, {}
        for variant in variants:
            _, step = build(variant, args.generator, name, args.directions, args.device, settings)
            started = time.perf_counter()
            step()
            step()  # warm-up (and compilation)
            sync()
            warm[variant] = round(time.perf_counter() - started, 1)
            steps[variant] = step
        times = {variant: [] for variant in variants}
        for _ in range(args.rounds):  # alternate, so drift in machine speed hits every variant alike
            for variant in variants:
                sync()
                started = time.perf_counter()
                for _ in range(args.steps):
                    steps[variant]()
                sync()
                times[variant].append((time.perf_counter() - started) / args.steps * 1000)
        medians = {v: statistics.median(t) for v, t in times.items()}
        report["results"][name] = {
            v: {"median_ms": round(medians[v], 1), "rounds_ms": [round(t) for t in times[v]],
                "ratio_to_old": round(medians[v] / medians["old"], 3), "warmup_s": warm[v]} for v in variants}
    print(json.dumps(report, indent=2))
    for name, result in report["results"].items():
        line = ", ".join(f"{v} {r['median_ms']:.0f} ms ({r['ratio_to_old']:.2f}x)" for v, r in result.items())
        print(f"{args.generator}, batch {args.batch}, {name}: {line}")


if __name__ == "__main__":
    main()
