"""Train the small shape classifier shipped in ``checkpoints/scenes-classifier/``.

It plays the role ResNet-18 plays for BigGAN: it names the ``scenes`` class (shape family)
of an image, so class voting on a real benchmark runs offline. Trained on freshly rendered
scenes (every batch new, so no overfitting), then scored on held-out renders.

    python -m tools.scenes_classifier --out checkpoints/scenes-classifier
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from directions.generators.scenes import ScenesGenerator
from saliency.core.artifacts import ensure_writable_dir, write_json, write_safetensors
from saliency.classifiers import ShapesNet
from saliency.core.progress import progress_bar


def rendered_batch(generator: ScenesGenerator, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    z = generator.sample_latents(n, rng)
    classes = generator.sample_classes(n, rng)
    with torch.no_grad():
        images = generator(z, classes)
    return images, classes


def train(out: Path, steps: int = 1500, batch_size: int = 128, lr: float = 2e-3, width: int = 32,
          resolution: int = 64, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    generator = ScenesGenerator(resolution=resolution).eval()
    model = ShapesNet(num_classes=generator.num_classes, width=width)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    rng = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    with progress_bar(steps, "scenes classifier") as bar:
        for _ in range(steps):
            images, classes = rendered_batch(generator, batch_size, rng)
            loss = F.cross_entropy(model(images), classes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    held = torch.Generator().manual_seed(seed + 1)
    correct = total = 0
    with torch.no_grad():
        for _ in range(8):
            images, classes = rendered_batch(generator, 256, held)
            correct += int((model(images).argmax(1) == classes).sum())
            total += classes.numel()
    meta = {"name": "scenes-shapes", "num_classes": generator.num_classes, "width": width, "input_size": resolution,
            "classes": list(generator.shapes), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
            "held_out_accuracy": round(correct / total, 4), "held_out_images": total,
            "train_seconds": round(time.perf_counter() - started, 1),
            "made_by": "python -m tools.scenes_classifier"}
    ensure_writable_dir(out)
    write_safetensors(out / "model.safetensors", model.state_dict())
    write_json(out / "model.json", meta)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("checkpoints/scenes-classifier"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    meta = train(args.out, steps=args.steps, batch_size=args.batch, seed=args.seed)
    print(f"held-out accuracy {meta['held_out_accuracy']:.3f} on {meta['held_out_images']} renders; "
          f"{meta['train_seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
