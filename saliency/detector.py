"""A trained saliency model as a Python object: load it once, apply it to any image.

    from saliency import SaliencyDetector
    detector = SaliencyDetector.load("checkpoints/pipeline/unet", device="auto")
    saliency_map = detector.predict("photo.jpg")   # float32 (H, W) in [0, 1]
    maps = detector.predict_batch(images)
    cutout = detector.cutout("photo.jpg")          # RGBA PIL image

There is one preprocessing for every caller (this API, ``saliency predict`` and ``saliency
eval``), :func:`prepare_image`: the shorter side resized to ``size`` (128, the paper's
protocol), edge-padded to the U-Net's stride; the soft foreground map is cropped and resized
back to the image's own size. Images of different sizes are batched by padded shape.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from saliency.core.errors import ConfigError, UserError

DEFAULT_SIZE = 128  # shorter side at inference (paper, section 5.1)
MAX_ELONGATION = 16  # longer side over shorter side; panoramas pass, strips of pixels do not
DEFAULT_BATCH = 8  # measured 1.45x the images/s of one at a time (mobilenet_v2 U-Net, 128x192, CPU)

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
Key = TypeVar("Key")


@dataclass
class PreparedImage:
    """An image made ready for the model, and what it takes to map the output back."""

    pixels: np.ndarray  # uint8 (H', W', 3): resized, then edge-padded to a multiple of the stride
    height: int  # the image's own size, which the map is resized back to
    width: int
    resized_height: int  # before padding
    resized_width: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array -> uint8 (H, W, 3). Gray and RGBA are converted (alpha dropped)."""
    if isinstance(image, (str, os.PathLike)):
        from saliency.datasets import load_image

        return np.asarray(load_image(image))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UserError(f"an image array must be uint8 (H, W, 3), got {image.dtype}")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] in (3, 4):
            return np.ascontiguousarray(image[:, :, :3])
        raise UserError(f"an image array must be (H, W, 3), (H, W, 4) or (H, W), got {image.shape}")
    raise UserError(f"cannot read an image from a {type(image).__name__}: give a path, a PIL image or a uint8 array")


def prepare_image(image: np.ndarray, size: int, stride: int, original: tuple[int, int] | None = None) -> PreparedImage:
    """Shorter side to ``size`` (bilinear), then edge-padded at the bottom and right to the stride.
    Padding before the normalisation equals padding after it: it is per pixel. ``original``: the
    (height, width) of the file when ``image`` is a reduced decoding of it (the map comes back
    at the file's size)."""
    h, w = original if original is not None else image.shape[:2]
    if h < 1 or w < 1:
        raise UserError(f"an image of {w}x{h} pixels has nothing to predict on")
    scale = size / min(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if max(new) > MAX_ELONGATION * size:  # a 1 x 40,000 strip would become 128 x 5 million pixels
        raise UserError(f"an image of {w}x{h} pixels is too elongated: at shorter side {size} it would be "
                        f"{new[0]}x{new[1]} (at most {MAX_ELONGATION}:1)")
    resized = image if new == (image.shape[1], image.shape[0]) else resize_bilinear(image, new)
    rh, rw = resized.shape[:2]
    pad_h, pad_w = -rh % stride, -rw % stride
    padded = np.empty((rh + pad_h, rw + pad_w, 3), dtype=np.uint8)  # edge padding, as np.pad's "edge"
    padded[:rh, :rw] = resized
    padded[rh:, :rw] = resized[rh - 1:rh]
    padded[:, rw:] = padded[:, rw - 1:rw]
    return PreparedImage(padded, h, w, rh, rw)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> (height, width) of ``size = (width, height)``, bilinear with Pillow's
    antialiasing (a triangle filter widened by the scale when shrinking). torch's uint8 kernel
    for it, on the channels-last view, is 2.5x Pillow's speed on a 2-core AMD EPYC (0.43 against
    1.08 ms for a 400x300 photograph) and equals Pillow's output but for 0.3 % of the values,
    which differ by one level."""
    with warnings.catch_warnings():  # a read-only array (np.asarray of a PIL image) is only read
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(np.ascontiguousarray(image))  # a flipped view has negative strides
    nchw = tensor.permute(2, 0, 1)[None]  # a view: channels-last memory
    out = F.interpolate(nchw, size=(size[1], size[0]), mode="bilinear", antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")


def resolve_model(model: str | os.PathLike) -> Path:
    """A model folder, or a Hugging Face Hub repository id ``owner/name[@revision]`` fetched into
    huggingface_hub's cache (offline afterwards with ``HF_HUB_OFFLINE=1``). A folder on disk wins
    over a repository id of the same spelling."""
    path = Path(model)
    if path.exists() or not HUB_ID.fullmatch(str(model)):
        return path  # a missing folder: read_model_meta names it
    from saliency.hub import download_model

    repo, _, revision = str(model).partition("@")
    return download_model(repo, revision or None)


def prepare_for_inference(model: torch.nn.Module, stride: int, device: torch.device,
                          tolerance: float = 1e-4) -> torch.nn.Module:
    """A faster equivalent of the trained U-Net for inference: every batch norm folded into the
    convolution before it, channels-last weights (measured on a 2-core AMD EPYC, mobilenet_v2
    U-Net, batch 8 at 128x192: 47.5 -> 84.4 images/s). Made on a copy and kept only if that
    copy's probabilities match the original's on a probe input (max abs difference <= tolerance)."""
    import copy

    from saliency.core.fold import fold_batch_norms
    from saliency.unet import foreground_probability

    probe = torch.rand(2, 3, 2 * stride, 3 * stride, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        candidate = copy.deepcopy(model)
        fold_batch_norms(candidate)
        candidate = candidate.to(memory_format=torch.channels_last).eval()
        with torch.inference_mode():
            expected = foreground_probability(model(probe))
            got = foreground_probability(candidate(probe.contiguous(memory_format=torch.channels_last)))
    except Exception:  # noqa: BLE001 - a model that cannot be changed runs as it is
        return model
    return candidate if float((got - expected).abs().max()) <= tolerance else model


class SaliencyDetector:
    """A trained U-Net with its preprocessing; maps are float32 (H, W) in [0, 1] at the image's size."""

    def __init__(self, model: torch.nn.Module, meta: dict, device: torch.device, precision: str = "fp32",
                 size: int | None = None, batch_size: int = DEFAULT_BATCH, source: str = "",
                 folder: Path | None = None) -> None:
        self.model, self.meta, self.device, self.precision = model, meta, device, precision
        self.folder = folder  # where model.json is (a Hub model: its snapshot in the cache)
        self.stride = meta["architecture"].stride
        self.size = size or DEFAULT_SIZE
        self.batch_size = batch_size
        self.source = source
        if self.size < 16:
            raise ConfigError(f"`size` must be at least 16, got {self.size}")
        if batch_size < 1:
            raise UserError(f"the batch size must be positive, got {batch_size}")

    @classmethod
    def load(cls, model: str | os.PathLike, device: str | torch.device = "auto", precision: str = "auto",
             size: int | None = None, batch_size: int = DEFAULT_BATCH) -> "SaliencyDetector":
        """From a model folder written by ``saliency train-unet`` or a Hub id ``owner/name[@revision]``."""
        from saliency.core.device import resolve_device
        from saliency.core.runtime import configure_device, resolve_precision
        from saliency.unet import load_model

        folder = resolve_model(model)
        torch_device = device if isinstance(device, torch.device) else resolve_device(device)
        configure_device(torch_device)
        net, meta = load_model(folder, torch_device)
        net = prepare_for_inference(net, meta["architecture"].stride, torch_device)
        return cls(net, meta, torch_device, resolve_precision(precision, torch_device), size, batch_size, str(model),
                   folder)

    # ------------------------------------------------------------------------------ maps
    def prepare(self, image: ImageLike) -> PreparedImage:
        if isinstance(image, (str, os.PathLike)):  # a large photo is decoded at the size the model needs
            from saliency.datasets import load_image_for_model

            pixels, original = load_image_for_model(image, self.size)
            return prepare_image(pixels, self.size, self.stride, original)
        return prepare_image(as_rgb_array(image), self.size, self.stride)

    def model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> the normalised, channels-last float batch the model takes."""
        from saliency.training import to_model_input

        return to_model_input(pixels, self.device).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def predict_prepared(self, batch: Sequence[PreparedImage]) -> list[np.ndarray]:
        """Maps for prepared images of one padded shape, in one forward pass."""
        from saliency.core.runtime import autocast
        from saliency.unet import foreground_probability

        if len({item.shape for item in batch}) != 1:
            raise ValueError("predict_prepared takes images of one padded shape; use maps() to mix sizes")
        x = self.model_input(torch.from_numpy(np.stack([item.pixels for item in batch])))
        with autocast(self.device, self.precision):
            logits = self.model(x)
        prob = foreground_probability(logits)
        maps = []
        for k, item in enumerate(batch):
            crop = prob[k:k + 1, None, :item.resized_height, :item.resized_width]
            full = F.interpolate(crop, size=(item.height, item.width), mode="bilinear", align_corners=False)[0, 0]
            maps.append(full.clamp_(0, 1).cpu().numpy())
        return maps

    def maps(self, items: Iterable[tuple[Key, PreparedImage]]) -> Iterator[tuple[Key, np.ndarray]]:
        """(key, map) for a stream of (key, prepared image) of any sizes: batches of one padded
        shape, each sent when full (the rest at the end), so memory stays bounded. Keys come back
        in the order their batches ran, not the order they went in."""
        waiting: dict[tuple[int, int], list[tuple[Any, PreparedImage]]] = {}
        held = 0
        for key, item in items:
            group = waiting.setdefault(item.shape, [])
            group.append((key, item))
            held += 1
            if len(group) == self.batch_size:
                yield from self._run(waiting.pop(item.shape))
                held -= self.batch_size
            elif held > 4 * self.batch_size:  # many shapes at once: send the largest group
                largest = max(waiting, key=lambda shape: len(waiting[shape]))
                group = waiting.pop(largest)
                held -= len(group)
                yield from self._run(group)
        for shape in list(waiting):
            yield from self._run(waiting.pop(shape))

    def _run(self, group: list[tuple[Any, PreparedImage]]) -> Iterator[tuple[Any, np.ndarray]]:
        maps = self.predict_prepared([item for _, item in group])
        yield from ((key, prediction) for (key, _), prediction in zip(group, maps))

    def predict(self, image: ImageLike) -> np.ndarray:
        """The saliency map of one image: float32 (H, W) in [0, 1]."""
        return self.predict_prepared([self.prepare(image)])[0]

    def predict_batch(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """Maps of several images (any sizes), in their order."""
        results: list[np.ndarray | None] = [None] * len(images)
        for index, prediction in self.maps((i, self.prepare(image)) for i, image in enumerate(images)):
            results[index] = prediction
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------- what people look at
    def mask(self, image: ImageLike, threshold: float = 0.5) -> np.ndarray:
        """bool (H, W): the map at ``threshold``."""
        return self.predict(image) >= threshold

    def cutout(self, image: ImageLike, threshold: float | None = None) -> Image.Image:
        """The image with its background transparent (RGBA): the soft map as alpha, or the
        binary mask at ``threshold`` when given."""
        pixels = as_rgb_array(image)
        return cutout_image(pixels, self.predict(pixels), threshold)


# What a map is turned into for people and programs (``predict --save``, ``serve``'s ``kind``).
OUTPUT_KINDS = ("map", "mask", "cutout", "overlay")
# The kinds drawn on the image itself, at its own size: they need the whole decoded image.
KINDS_ON_THE_IMAGE = frozenset({"cutout", "overlay"})


def render_output(kind: str, saliency_map: np.ndarray, pixels: np.ndarray | None, threshold: float = 0.5) -> np.ndarray:
    """uint8 pixels of one output kind: the 8-bit map, the binary mask at ``threshold``, the
    cutout (RGBA, the soft map as alpha) or the overlay; ``pixels`` (the image at the map's
    size) only for the last two."""
    if kind == "map":
        return map_to_uint8(saliency_map)
    if kind == "mask":
        return (saliency_map >= threshold).astype(np.uint8) * 255
    if kind not in KINDS_ON_THE_IMAGE:
        raise ValueError(f"unknown output kind {kind!r}; one of {', '.join(OUTPUT_KINDS)}")
    if pixels is None:
        raise ValueError(f"a {kind} is drawn on the image: pass its pixels")
    return cutout_pixels(pixels, saliency_map) if kind == "cutout" else np.asarray(overlay_image(pixels, saliency_map))


def map_to_uint8(saliency_map: np.ndarray) -> np.ndarray:
    """float map in [0, 1] -> uint8 0-255, rounded (as ``saliency eval`` scores and saves it)."""
    from saliency.metrics import to_uint8_map

    return to_uint8_map(saliency_map)


def cutout_pixels(pixels: np.ndarray, saliency_map: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """uint8 (H, W, 4): the image with the soft map (or the mask at ``threshold``) as alpha."""
    alpha = map_to_uint8(saliency_map) if threshold is None else (saliency_map >= threshold).astype(np.uint8) * 255
    return np.dstack([pixels, alpha])


def cutout_image(pixels: np.ndarray, saliency_map: np.ndarray, threshold: float | None = None) -> Image.Image:
    return Image.fromarray(cutout_pixels(pixels, saliency_map, threshold), mode="RGBA")


def overlay_image(pixels: np.ndarray, saliency_map: np.ndarray, strength: float = 0.6) -> Image.Image:
    """The map over the image, for people to look at: salient pixels tinted red, the rest dimmed."""
    image = pixels.astype(np.float32)
    weight = saliency_map[:, :, None].astype(np.float32)
    red = np.array([255.0, 40.0, 40.0], dtype=np.float32)
    tinted = image * (1 - strength * weight) + red * strength * weight
    dimmed = tinted * (0.45 + 0.55 * weight)
    return Image.fromarray(np.clip(dimmed + 0.5, 0, 255).astype(np.uint8), mode="RGB")
