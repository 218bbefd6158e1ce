"""Small, fast inputs that several test modules build: saliency folders, run folders, models."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_dataset(root: Path, stems=("a", "b", "c", "d"), size=(12, 10)) -> Path:
    """ROOT/ECSSD with RGB JPEGs and 0/255 PNG masks (a filled left half)."""
    images, masks = root / "ECSSD" / "images", root / "ECSSD" / "ground_truth_mask"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(images / f"{stem}.jpg")
        mask = np.zeros((size[1], size[0]), dtype=np.uint8)
        mask[:, : size[0] // 2] = 255
        Image.fromarray(mask).save(masks / f"{stem}.png")
    return root


def fixture_dataset(root: Path) -> Path:
    """ROOT/ECSSD with four images (one grayscale JPEG, one RGBA PNG) and known masks."""
    images, masks = root / "ECSSD" / "images", root / "ECSSD" / "ground_truth_mask"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(40, 60), (48, 48), (36, 50), (50, 40)]):
        stem = f"{k + 1:04d}"
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        if k == 1:
            Image.fromarray(pixels[..., 0]).save(images / f"{stem}.jpg")  # grayscale
        elif k == 2:
            Image.fromarray(np.dstack([pixels, np.full((h, w), 128, np.uint8)])).save(images / f"{stem}.png")  # RGBA
        else:
            Image.fromarray(pixels).save(images / f"{stem}.jpg")
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[h // 4: h // 4 + h // 2, : w // (k + 2)] = 255
        Image.fromarray(mask).save(masks / f"{stem}.png")
    return root


def known_direction_run(folder: Path, resolution: int = 32) -> Path:
    """A run folder whose h_bg is the scenes generator's true whiteness direction."""
    from directions.generators.scenes import ScenesGenerator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run

    generator = ScenesGenerator(resolution=resolution)
    return write_known_direction_run(folder, "scenes", whiteness_direction(generator), magnitude=6.0,
                                     generator_options={"resolution": resolution})


def synthesize_pairs(run: Path, out: Path, count: int, **options) -> dict:
    """``count`` pairs from ``run`` into ``out`` (classes 0-2, small shards); the manifest."""
    from pipelines.synthesize import SynthesizeConfig, run_synthesize

    settings = dict(classes=[0, 1, 2], batch_size=64, shard_size=128, device="cpu", progress=False)
    settings.update(options)
    return run_synthesize(SynthesizeConfig(run=run, count=count, out=out, **settings))


def constant_model(folder: Path, probability: float, resolution: int = 32, classes=(0, 1)) -> Path:
    """A U-Net whose output is the same foreground probability everywhere."""
    from saliency.unet import UNetArchitecture, build_unet, save_model

    arch = UNetArchitecture(encoder="resnet18", decoder_channels=(16, 8, 8, 8, 8))
    model = build_unet(arch)
    head = model.segmentation_head[0]
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.0, math.log(probability / (1 - probability))]))
    save_model(folder, model, arch, {"data": {"resolution": [resolution, resolution], "classes": list(classes)}})
    return folder


def flip_bit(path: Path, position: int, bit: int = 4) -> Path:
    """Flip one bit of the file in place (a negative position counts from the end)."""
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def random_model(folder: Path, seed: int = 0, encoder: str = "resnet18") -> Path:
    """An untrained U-Net (seeded): its maps vary from pixel to pixel and image to image, which
    is what tests of the plumbing around a model need."""
    from saliency.unet import UNetArchitecture, build_unet, save_model

    torch.manual_seed(seed)
    arch = UNetArchitecture(encoder=encoder, decoder_channels=(16, 8, 8, 8, 8))
    model = build_unet(arch).eval()
    with torch.no_grad():
        model.segmentation_head[0].weight.mul_(20)  # spread the probabilities over [0, 1]
    save_model(folder, model, arch, {"data": {"resolution": [64, 64], "classes": [0, 1]},
                                     "card": {"summary": "a random U-Net for tests", "evaluations": {}}})
    return folder


def real_ecssd_root(root: Path, count: int) -> Path:
    """ROOT/ECSSD with the first ``count`` real ECSSD images and masks, as links to the real
    benchmark (never copies); skips the test where there is none (conftest.ECSSD)."""
    import pytest

    from conftest import ECSSD as shared, NEEDS_ECSSD

    if not shared.is_dir():
        pytest.skip(NEEDS_ECSSD)
    images, masks = root / "ECSSD" / "images", root / "ECSSD" / "ground_truth_mask"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for path in sorted((shared / "images").glob("*.jpg"))[:count]:
        (images / path.name).symlink_to(path)
        (masks / f"{path.stem}.png").symlink_to(shared / "ground_truth_mask" / f"{path.stem}.png")
    return root


def zip_folder(folder: Path, path: Path) -> None:
    """``path``: a stored (uncompressed) zip of ``folder``, its members under ``folder.name/``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"{folder.name}/{file.name}")


def effects_by_hand(run: Path, samples: int = 32, shift: float = 6.0, seed: int = 777) -> dict:
    """A second computation of a run's recorded ``effects`` (directions/effects.py), in float64
    numpy with explicit loops, from the directions the run saved: what a finished run must
    report, so a summary that records the wrong directions or a wrong formula cannot pass."""
    import json

    from safetensors.torch import load_file

    from directions.generators import build_generator

    summary = json.loads((run / "directions.json").read_text())
    generator = build_generator(summary["generator"], device="cpu", **summary.get("generator_options", {}))
    directions = load_file(str(run / "directions.safetensors"))["directions"].double()
    rng = torch.Generator().manual_seed(seed)
    z = generator.sample_latents(samples, rng)
    classes = generator.sample_classes(samples, rng)

    def small(images):
        images = images.float()
        if max(images.shape[-2:]) > 32:
            images = torch.nn.functional.adaptive_avg_pool2d(images, 32)
        return images.flatten(1).double().numpy()

    def spread(x):  # mean distance over ordered pairs
        n = len(x)
        return sum(np.linalg.norm(x[i] - x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))

    with torch.no_grad():
        base = small(generator(z, classes))
        effects, diversity = [], []
        for k in range(directions.shape[1]):
            unit = (directions[:, k] / directions[:, k].norm()).to(z.dtype)
            shifted = small(generator(z + shift * unit, classes))
            effects.append((shifted - base).ravel())
            diversity.append(spread(shifted) / spread(base))
    cosines = [abs(effects[i] @ effects[j]) / (np.linalg.norm(effects[i]) * np.linalg.norm(effects[j]))
               for i in range(len(effects)) for j in range(len(effects)) if i != j]
    return {"mean_abs_cos": float(np.mean(cosines)), "diversity": float(np.mean(diversity))}
