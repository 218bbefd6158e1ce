"""U-Net training throughput from the real shards against the same model on tensors in memory.

    ratio = samples/s reading shards through the DataLoader (augmentation on, the profile's
            workers) / samples/s of the same steps on one batch already in memory

Target >= 0.9: the input pipeline keeps the model busy.

    python benchmarks/train_unet_speed.py --data SYN_DIR [--profile embedded] [--steps 40] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.train_unet import PROFILES
from saliency.core.device import resolve_device
from saliency.core.runtime import autocast, cpu_name, resolve_precision, tune_cpu_allocator
from saliency.shards import SyntheticPairs
from saliency.training import tempered_loss, to_model_input
from saliency.unet import build_unet

from loader_timing import loader_samples_per_s  # benchmarks/, beside this script


def main() -> None:
    tune_cpu_allocator()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--profile", default="embedded", choices=sorted(PROFILES))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="auto", help="As train-unet's --precision (auto: its default here).")
    args = parser.parse_args()

    profile = PROFILES[args.profile]
    settings = profile.settings
    batch = args.batch or settings.batch_size
    workers = settings.workers if args.workers is None else args.workers
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device, cpu_bf16=True)
    pairs = SyntheticPairs(args.data)
    model = build_unet(profile.architecture).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)

    def train_step(images, masks):
        with autocast(device, precision):
            logits = model(to_model_input(images, device))
        loss = tempered_loss(logits, masks.to(device, non_blocking=True), settings.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def from_shards() -> float:
        return loader_samples_per_s(pairs, settings.augment, batch, args.steps, workers, train_step, sync,
                                    pin_memory=device.type == "cuda")

    def in_memory() -> float:
        images = torch.from_numpy(np.stack([pairs[i][0] for i in range(batch)]))
        masks = torch.from_numpy(np.stack([pairs[i][1] for i in range(batch)]))
        train_step(images, masks)
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(images, masks)
        sync()
        return args.steps * batch / (time.perf_counter() - start)

    rounds = []
    for _ in range(args.rounds):
        memory = in_memory()
        shards = from_shards()
        rounds.append({"shards_samples_per_s": round(shards, 1), "memory_samples_per_s": round(memory, 1),
                       "ratio": round(shards / memory, 3)})
    ratios = sorted(r["ratio"] for r in rounds)
    result = {"data": str(args.data), "profile": args.profile, "encoder": profile.architecture.encoder,
              "batch": batch, "workers": workers, "precision": precision, "resolution": [pairs.height, pairs.width], "device": str(device),
              "threads": torch.get_num_threads(), "cpu": cpu_name(),
              "rounds": rounds, "median_ratio": ratios[len(ratios) // 2]}
    print(json.dumps(result, indent=2))
    print(f"shards / in-memory = {result['median_ratio']:.3f} (median of {len(rounds)} rounds; target >= 0.9)")


if __name__ == "__main__":
    main()
