"""Forward speed of the embedded `scenes` generator (images/s), at 64 and 128 px.

Target (foundation issue): at least 500 images/s at 64 px on a 2-core CPU.

    python benchmarks/scenes_speed.py [--device cpu] [--batch 256] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from directions.generators import build_generator
from saliency.core.runtime import cpu_name, tune_cpu_allocator


def images_per_second(resolution: int, batch: int, seconds: float, device: str, grad: bool) -> float:
    gen = build_generator("scenes", device=device, resolution=resolution)
    rng = torch.Generator().manual_seed(0)
    z, classes = gen.sample_latents(batch, rng), gen.sample_classes(batch, rng)

    def step():
        if grad:
            zz = z.clone().requires_grad_(True)
            gen(zz, classes).mean().backward()
        else:
            with torch.inference_mode():
                gen(z, classes)
        if gen.device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += batch
    return count / (time.perf_counter() - start)


def main() -> None:
    tune_cpu_allocator()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'resolution':>10} {'forward img/s':>14} {'fwd+bwd img/s':>14}")
    for resolution in (64, 128):
        forward = images_per_second(resolution, args.batch, args.seconds, args.device, grad=False)
        backward = images_per_second(resolution, args.batch, args.seconds, args.device, grad=True)
        print(f"{resolution:>10} {forward:>14.0f} {backward:>14.0f}")
    print("target: forward >= 500 img/s at 64 px")


if __name__ == "__main__":
    main()
