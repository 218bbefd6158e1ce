"""Stage 4: predict saliency maps for a benchmark and score them.

Protocol (design facts, paper section 5.1): resize the image's shorter side to ``size``
(128), pad to the U-Net's stride, predict, crop, and resize the soft foreground map back to
the ground truth's size (:mod:`saliency.detector`, shared with ``saliency predict``); then
score with :mod:`saliency.metrics`. ``paper_protocol`` adds the reference code's own
evaluation, step for step (:func:`predict_paper_protocol`).

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


def _through_pil(values: torch.Tensor) -> np.ndarray:
    """torchvision's ``ToPILImage`` of a float tensor in [0, 1]: times 255, truncated to uint8."""
    return values.mul(255).to(torch.uint8).numpy()


@torch.inference_mode()
def predict_paper_protocol(model, image: np.ndarray, size: int, device: torch.device, precision: str = "fp32",
                           stride: int = 1) -> np.ndarray:
    """The reference code's evaluation (``SegmentationInference(model, resize_to=128)``), step for
    step: the image to [-1, 1] and back through ``ToPILImage`` (values truncated to uint8), its
    shorter side resized to ``size`` (PIL bilinear; the longer side ``size * long // short``,
    rounded down), the map ``sigmoid(logits)[:, 1]`` (a sigmoid of the foreground logit, not the
    softmax), and, where its size differs from the image's, through ``ToPILImage`` again (truncated
    to uint8) and resized back bilinearly. Returns that float map at the image's size. The one
    departure: the model sees the image in its own input normalisation, edge-padded to its stride
    (the reference's U-Net pads inside its up-sampling blocks instead)."""
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).float().div(255) * 2 - 1  # ToTensor, then 2x - 1
    pixels = _through_pil((x + 1) / 2)
    th, tw = (size * h // w, size) if h > w else (size, size * w // h)
    resized = np.asarray(Image.fromarray(pixels).resize((tw, th), Image.BILINEAR))
    padded = np.pad(resized, ((0, -th % stride), (0, -tw % stride), (0, 0)), mode="edge")
    with autocast(device, precision):
        logits = model(to_model_input(torch.from_numpy(padded)[None], device))
    logits = logits.float()[:, :, :th, :tw]
    foreground = torch.sigmoid(logits[0, 1 if logits.shape[1] > 1 else 0]).cpu()
    if (th, tw) == (h, w):
        return foreground.numpy()
    back = Image.fromarray(_through_pil(foreground)).resize((w, h), Image.BILINEAR)
    return np.asarray(back, dtype=np.float32) / 255


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
            scores[name].update(prediction, sample.mask, probability)
            for ref, maker in REFERENCES.items():
                if refs:
                    refs[ref][name].update(maker(*sample.mask.shape), sample.mask)
        if paper is not None:
            reference_map = predict_paper_protocol(detector.model, sample.image, size, detector.device,
                                                   detector.precision, stride)
            for name in names:
                paper[name].update(to_uint8_map(reference_map), sample.mask, reference_map)
        if on_map is not None:
            on_map(sample, prediction, names)
        if tick is not None:
            tick()
    return SampleScores(scores, refs, paper, time.perf_counter() - started, predict_seconds - reading[0])
