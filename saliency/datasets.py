"""Saliency benchmarks on disk: images and masks in two folders, paired by file stem.

The field's datasets share one layout (an image folder and a mask folder, masks 0/255); each
is registered here by name with its folder names, so ``ROOT/NAME`` is all a user needs.
Masks are binarised at > 128, the rule of the field's evaluation code (PySODMetrics).

ECSSD has no official split. Ours: sort the stems, even positions (0001, 0003, ..., 0999)
are ``train`` (used only to vote for generator classes), odd positions (0002, ..., 1000)
are ``test``. It depends on the file names alone, so it is the same on every machine.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from saliency.core.errors import ConfigError, UserError
from saliency.core.limits import MAX_IMAGE_PIXELS  # the decompression-bomb line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MASK_EXTENSIONS = (".png", ".bmp", ".jpg")
SPLITS = ("train", "test", "all")
# Above this, a reader that needs only a small copy (the model's input) decodes one: JPEG at 1/2
# to 1/8 scale in the decoder, other formats reduced right after. Benchmark images, far smaller,
# are always decoded whole, so their pixels do not change.
FULL_DECODE_PIXELS = 40_000_000
REDUCED_MARGIN = 4  # a reduced copy keeps a shorter side of at least 4x the model's, for its resize
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow's own bomb warning at the same line
DATA_ROOT_ENV = "SALIENCY_DATA"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named dataset keeps its images and masks, below ``ROOT/folder``."""

    name: str
    folder: str
    image_dir: str
    mask_dir: str
    images: int | None = None  # the published count, for a friendly check
    note: str = ""


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


register_dataset(DatasetSpec("ecssd", "ECSSD", "images", "ground_truth_mask", images=1000,
                             note="Shi et al., TPAMI 2016; 1000 images"))
register_dataset(DatasetSpec("duts-te", "DUTS-TE", "DUTS-TE-Image", "DUTS-TE-Mask", images=5019,
                             note="DUTS test part, as distributed"))
register_dataset(DatasetSpec("dut-omron", "DUT-OMRON", "DUT-OMRON-image", "pixelwiseGT-new-PNG", images=5168,
                             note="as distributed"))
register_dataset(DatasetSpec("pascal-s", "PASCAL-S", "images", "masks", images=850,
                             note="images/ and masks/ after conversion"))


def available_datasets() -> list[str]:
    return sorted(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    key = name.lower()
    if key not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(available_datasets())}")
    return DATASETS[key]


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """``--data-root``, else ``$SALIENCY_DATA``, else ``./data``."""
    if data_root is not None and str(data_root) != "":
        return Path(data_root)
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env)
    return Path("data")


def _files_by_stem(folder: Path, extensions: tuple[str, ...], what: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in extensions:
            continue
        if path.stem in files:
            raise UserError(f"two {what} files share the stem {path.stem!r} in {folder}")
        files[path.stem] = path
    return files


def split_stems(stems: list[str], split: str) -> list[str]:
    """The deterministic split: sorted stems, even positions train, odd positions test."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    ordered = sorted(stems)
    if split == "all":
        return ordered
    start = 0 if split == "train" else 1
    return ordered[start::2]


@dataclass(frozen=True)
class Sample:
    stem: str
    image_path: Path
    mask_path: Path


class SaliencyFolder:
    """A saliency dataset on disk: ``samples`` holds (stem, image, mask) of one split.

    Checks the layout up front so a bad folder is one clear error, not a failure halfway.
    """

    def __init__(self, root: str | os.PathLike, spec: DatasetSpec, split: str = "all") -> None:
        self.spec = spec
        self.split = split
        self.folder = Path(root) / spec.folder
        if not self.folder.is_dir():
            raise ConfigError(f"dataset {spec.name}: folder {self.folder} not found "
                              f"(set `data_root` or ${DATA_ROOT_ENV}; `saliency fetch-data {spec.name}` downloads it)")
        image_dir, mask_dir = self.folder / spec.image_dir, self.folder / spec.mask_dir
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise UserError(f"dataset {spec.name}: expected folder {folder} (layout: "
                                f"{spec.folder}/{spec.image_dir}, {spec.folder}/{spec.mask_dir})")
        images = _files_by_stem(image_dir, IMAGE_EXTENSIONS, "image")
        masks = _files_by_stem(mask_dir, MASK_EXTENSIONS, "mask")
        if not images:
            raise UserError(f"dataset {spec.name}: no images in {image_dir}")
        if not masks:
            raise UserError(f"dataset {spec.name}: no masks in {mask_dir}")
        lonely_images = sorted(set(images) - set(masks))
        lonely_masks = sorted(set(masks) - set(images))
        if lonely_images:
            raise UserError(f"dataset {spec.name}: {len(lonely_images)} image(s) without a mask in {mask_dir}, "
                            f"first {images[lonely_images[0]].name}")
        if lonely_masks:
            raise UserError(f"dataset {spec.name}: {len(lonely_masks)} mask(s) without an image in {image_dir}, "
                            f"first {masks[lonely_masks[0]].name}")
        stems = split_stems(list(images), split)
        if not stems:
            raise UserError(f"dataset {spec.name}: the {split} split is empty")
        self.samples = [Sample(stem, images[stem], masks[stem]) for stem in stems]

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> Image.Image:
        return load_image(self.samples[index].image_path)

    def mask(self, index: int) -> np.ndarray:
        return load_mask(self.samples[index].mask_path)


def open_dataset(name: str, data_root: str | os.PathLike | None = None, split: str = "all") -> SaliencyFolder:
    return SaliencyFolder(resolve_data_root(data_root), get_spec(name), split)


class TooManyPixels(UserError):
    """An image whose header declares more pixels than allowed: refused before decoding."""


# What an image received from someone else (``saliency serve``) may be: the common raster
# formats, decoded by Pillow's own code. Not EPS or PDF, whose plugins hand the bytes to
# Ghostscript, nor the rarely used formats whose decoders see little use and little fuzzing.
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")


def _decode(source: Path | BinaryIO, name: str, reduce_to: int | None, max_pixels: int,
            formats: tuple[str, ...] | None) -> tuple[Image.Image, tuple[int, int]]:
    """Open, check the declared size, decode (reduced where asked); see _open_bounded."""
    handle = None
    try:
        with warnings.catch_warnings():
            # A damaged file's warnings (truncated TIFF reads, corrupt EXIF) would print lines of
            # their own: the file is either read or refused in one line below.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            handle = Image.open(source, formats=formats)
            width, height = handle.size
            if width * height > max_pixels:
                raise TooManyPixels(_too_many_pixels(name, f"{width}x{height} pixels", max_pixels))
            large = reduce_to is not None and width * height > FULL_DECODE_PIXELS
            if large:  # JPEG: the decoder itself works at 1/2, 1/4 or 1/8 scale
                scale = min(1.0, REDUCED_MARGIN * reduce_to / min(width, height))
                handle.draft(None, (max(1, round(width * scale)), max(1, round(height * scale))))
            handle.load()
            if large:
                factor = min(handle.size) // (REDUCED_MARGIN * reduce_to)
                if factor > 1:  # other formats, decoded whole: reduced before anything else holds them
                    handle = _closing(handle, handle.reduce(factor))
            # A multi-frame file (GIF, TIFF) keeps its file open after load (Pillow 13: in ``_fp``):
            # a copy of the decoded frame, and the file closed now, not whenever the GC runs.
            held = getattr(handle, "fp", None) is not None or getattr(handle, "_fp", None) is not None
            if held and isinstance(source, (str, os.PathLike)):  # (a stream in memory holds no file)
                handle = _closing(handle, handle.copy())
    except BaseException:
        if handle is not None:  # a refused or damaged file is closed now, not whenever the GC runs
            handle.close()
        raise
    return handle, (height, width)


def _closing(source: Image.Image, result: Image.Image) -> Image.Image:
    source.close()
    return result


def _open_bounded(path: Path | BinaryIO, reduce_to: int | None = None, name: str | None = None,
                  max_pixels: int = MAX_IMAGE_PIXELS,
                  formats: tuple[str, ...] | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """The one place an image file is opened: (the decoded image, the file's (height, width)).

    Refuses by name a missing file, a decompression bomb (by the pixel count its header
    declares, before anything is decoded) and a file the decoders cannot read: whatever a
    decoder raises on a damaged file is that file's problem, one UserError naming it. With
    ``reduce_to`` (a shorter side), an image above FULL_DECODE_PIXELS comes back reduced, to no
    less than REDUCED_MARGIN times that side. ``path`` may be an open binary stream, named in
    messages by ``name``; ``formats`` limits the decoders tried (Pillow's names)."""
    name = str(path) if name is None else name
    try:
        return _decode(path, name, reduce_to, max_pixels, formats)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check, inside Image.open, which some formats' headers reach before ours
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        raise TooManyPixels(_too_many_pixels(name, f"its header declares {count}", max_pixels)) from None
    except FileNotFoundError as exc:
        raise UserError(f"{name}: file not found") from exc
    except MemoryError as exc:
        raise UserError(f"{name}: unreadable image (too large to decode in this memory)") from exc
    except Exception as exc:  # noqa: BLE001 (a damaged file makes Pillow's decoders raise many kinds)
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        if isinstance(exc, Image.UnidentifiedImageError) and formats is not None:
            detail = f"not an image of a type accepted here: {', '.join(formats)}"
        raise UserError(f"{name}: unreadable image ({detail})") from exc


def _too_many_pixels(name: str, declared: str, max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    return (f"{name}: {declared}, more than the {max_pixels:,} allowed (a decompression bomb, or a "
            "larger image than any camera takes)")


def load_image(path: str | os.PathLike) -> Image.Image:
    """An RGB image; grayscale, palette and RGBA files are converted (alpha dropped)."""
    image, _ = _open_bounded(Path(path))
    return _rgb(image, path)


def _rgb(image: Image.Image, path) -> Image.Image:
    try:
        return image.convert("RGB") if image.mode != "RGB" else image
    except Exception as exc:  # noqa: BLE001 (a mode the converters refuse)
        raise UserError(f"{path}: unreadable image (mode {image.mode})") from exc


def load_image_for_model(path: str | os.PathLike, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(uint8 RGB pixels, the file's (height, width)) for a model whose input has shorter side
    ``side``: a photo of tens of megapixels is decoded at a reduced size; anything smaller, as is."""
    image, original = _open_bounded(Path(path), reduce_to=side)
    return np.asarray(_rgb(image, path)), original


def load_image_bytes(data: bytes, name: str, side: int | None, max_pixels: int = MAX_IMAGE_PIXELS,
                     formats: tuple[str, ...] | None = UPLOAD_FORMATS) -> tuple[np.ndarray, tuple[int, int]]:
    """An image received as bytes (an upload), through the same checks as a file: (uint8 RGB
    pixels, its (height, width)); with ``side``, decoded reduced as :func:`load_image_for_model`
    does, else whole. Raises TooManyPixels (refused from the header) or UserError."""
    image, original = _open_bounded(io.BytesIO(data), reduce_to=side, name=name, max_pixels=max_pixels,
                                    formats=formats)
    try:
        return np.asarray(_rgb(image, name)), original
    finally:
        image.close()


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A bool mask ``(H, W)``: the file's gray value above 128 (PySODMetrics' rule, so the scores
    equal those of the reference evaluation run on the files themselves)."""
    image, _ = _open_bounded(Path(path))
    try:
        return np.asarray(image.convert("L")) > 128
    except Exception as exc:  # noqa: BLE001 (a mode the converters refuse)
        raise UserError(f"{path}: unreadable mask (mode {image.mode})") from exc
