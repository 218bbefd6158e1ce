"""Stage 4: predict saliency maps for a benchmark and score them.

Protocol (design facts, paper section 5.1): resize the image's shorter side to ``size``
(128), pad to the U-Net's stride, predict, crop, and resize the soft foreground map back to
the ground truth's size (:mod:`saliency.detector`, shared with ``saliency predict``); then
score with :mod:`saliency.metrics`. ``paper_protocol`` adds
the reference code's variant: image and ground truth at ``size`` x ``size``, the argmax
mask as the map.

Test sets are iterables of ``EvalSample`` (stem, RGB uint8 image, bool mask), so a benchmark
folder and the rendered ``scenes`` set go through the same code: ``score_samples`` is the
scoring loop; ``pipelines/evaluate.py`` chooses the data and writes the outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from saliency.datasets import SaliencyFolder
from saliency.core.errors import UserError
from saliency.training import to_model_input
from saliency.core.runtime import autocast
from saliency.detector import prepare_image
from saliency.metrics import REFERENCES, SaliencyMetrics, to_uint8_map


@dataclass
class EvalSample:
    stem: str
    image: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # bool (H, W)


def folder_samples(dataset: SaliencyFolder) -> Iterator[EvalSample]:
    for i, sample in enumerate(dataset.samples):
        image = np.asarray(dataset.image(i))
        mask = dataset.mask(i)
        if image.shape[:2] != mask.shape:
            raise UserError(f"{sample.image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
                            f"{sample.mask_path} is {mask.shape[1]}x{mask.shape[0]}")
        yield EvalSample(sample.stem, image, mask)


def scenes_samples(count: int, seed: int, resolution: int, classes: list[int] | None,
                   batch: int = 128) -> Iterator[EvalSample]:
    """Rendered scenes with their exact masks: the same images for the same arguments."""
    from directions.generators.scenes import ScenesGenerator

    generator = ScenesGenerator(resolution=resolution).eval()
    rng = torch.Generator().manual_seed(seed)
    done = 0
    while done < count:
        n = min(batch, count - done)
        z = generator.sample_latents(n, rng)
        c = generator.sample_classes(n, rng, choices=classes)
        with torch.inference_mode():
            images, masks = generator.forward_with_masks(z, c)
        images = (images.permute(0, 2, 3, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        for k in range(n):
            yield EvalSample(f"scene-{done + k:05d}", images[k], masks[k].numpy())
        done += n


@torch.inference_mode()
def predict_paper_protocol(model, image: np.ndarray, mask: np.ndarray, size: int, device: torch.device,
                           precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """The reference code's variant: argmax mask of the size x size image, ground truth resized
    (nearest) to size x size. Returns (uint8 0/255 map, bool mask), both size x size."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    truth = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 128
    x = to_model_input(torch.from_numpy(np.array(resized))[None], device)
    with autocast(device, precision):
        logits = model(x)
    predicted = logits.argmax(dim=1)[0].cpu().numpy().astype(np.uint8) * 255
    return predicted, truth


@dataclass
class SampleScores:
    """Metrics per split (and per reference map, and for the paper's protocol if asked), with
    the seconds the loop took in all and inside the model."""

    scores: dict[str, SaliencyMetrics]
    references: dict[str, dict[str, SaliencyMetrics]]
    paper: dict[str, SaliencyMetrics] | None
    seconds: float
    predict_seconds: float


def score_samples(detector, samples: Iterable[EvalSample], size: int, splits_of: Callable[[str], tuple[str, ...]],
                  splits: list[str], references: bool = True, paper_protocol: bool = False,
                  on_map: Callable[[EvalSample, np.ndarray, tuple[str, ...]], None] | None = None,
                  tick: Callable[[], None] | None = None) -> SampleScores:
    """Predict every sample at ``size`` and score its uint8 map in the splits ``splits_of(stem)``
    names (each one of ``splits``); the reference maps (REFERENCES) and the paper's protocol
    are scored beside it when asked. ``on_map(sample, map, splits)`` sees each map (to save
    it); ``tick()`` is called once an image."""
    scores = {name: SaliencyMetrics() for name in splits}
    refs = {ref: {name: SaliencyMetrics() for name in splits} for ref in REFERENCES} if references else {}
    paper = {name: SaliencyMetrics() for name in splits} if paper_protocol else None
    stride = detector.stride
    reading = [0.0]  # seconds spent decoding files, which the model's images/s leaves out

    def prepared():
        iterator = iter(samples)
        while True:
            started = time.perf_counter()
            try:
                sample = next(iterator)
            except StopIteration:
                return
            reading[0] += time.perf_counter() - started
            yield sample, prepare_image(sample.image, size, stride)

    started = time.perf_counter()
    predict_seconds = 0.0
    stream = detector.maps(prepared())
    while True:
        waited = time.perf_counter()
        try:
            sample, probability = next(stream)
        except StopIteration:
            break
        predict_seconds += time.perf_counter() - waited
        prediction = to_uint8_map(probability)
        names = splits_of(sample.stem)
        for name in names:
            scores[name].update(prediction, sample.mask)
            for ref, maker in REFERENCES.items():
                if refs:
                    refs[ref][name].update(maker(*sample.mask.shape), sample.mask)
        if paper is not None:
            binary, truth = predict_paper_protocol(detector.model, sample.image, sample.mask, size, detector.device,
                                                   detector.precision)
            for name in names:
                paper[name].update(binary, truth)
        if on_map is not None:
            on_map(sample, prediction, names)
        if tick is not None:
            tick()
    return SampleScores(scores, refs, paper, time.perf_counter() - started, predict_seconds - reading[0])
