"""``saliency predict``: a trained model applied to folders of the user's own images.

    saliency predict --model checkpoints/pipeline/unet photos/ more/*.jpg --out maps/
    saliency predict --model owner/name photos/ --out cutouts/ --save map,mask,cutout,overlay

Each image ``photos/a/b.jpg`` gives ``OUT/photos/a/b.<kind>.png`` per requested kind (its path
relative to the current folder, or from the root for one outside it). Inputs are read as a
stream (DataLoader workers decode and resize while the model runs; batches of one padded
shape), so memory does not grow with the number of images. A file whose outputs all exist is
skipped unread (``--overwrite`` redoes it), so a killed run resumes where it stopped; every
output is written to a temporary name and renamed. A file that cannot be read is skipped with
one warning line and counted; the exit status is then 1.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from saliency.core.artifacts import (ensure_writable_dir, refuse_output_in_inputs, remove_stale_temporaries,
                                     write_bytes_atomic)
from saliency.detector import (DEFAULT_BATCH, KINDS_ON_THE_IMAGE, OUTPUT_KINDS, PreparedImage, SaliencyDetector,
                               as_rgb_array, prepare_image, render_output)
from saliency.datasets import load_image_for_model
from saliency.core import limits
from saliency.core.errors import ConfigError, UserError, one_line
from saliency.core.fields import bounded, check_ranges
from saliency.core.png import encode_png
from saliency.core.progress import progress_bar

KINDS = OUTPUT_KINDS
GLOB_CHARACTERS = set("*?[")


def image_extensions() -> frozenset[str]:
    """Suffixes of the image types Pillow can open (not those it can only write)."""
    Image.init()
    return frozenset(ext.lower() for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN)


@dataclass
class PredictConfig:
    model: str
    inputs: list[str]
    out: Path
    save: tuple[str, ...] = ("map",)
    threshold: float = bounded(limits.OPEN_FRACTION, 0.5)
    size: int | None = bounded(limits.INFERENCE_SIDE)
    batch_size: int = bounded(limits.PREDICT_BATCH, DEFAULT_BATCH)
    workers: int | None = bounded(limits.WORKERS)  # decoding processes; default: default_workers()
    overwrite: bool = False
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True
    warn: Callable[[str], None] = field(default=lambda line: print(one_line(line), file=sys.stderr))


# ---------------------------------------------------------------------------------- inputs
def _walk(folder: Path, extensions: frozenset[str], skip: Path | None,
          unreadable: Callable[[Path, OSError], None] | None) -> Iterator[Path]:
    """Image files under ``folder``, depth first, as the file system lists them (nothing sorted,
    so nothing held but the open directories and the folders seen). A folder met twice through
    links is walked once; ``skip`` (the output folder) is never entered; a folder that cannot
    be listed is reported to ``unreadable`` and passed over."""
    stack, seen = [folder], set()
    while stack:
        current = stack.pop()
        try:
            info = current.stat()
            if (info.st_dev, info.st_ino) in seen or (skip is not None and os.path.realpath(current) == str(skip)):
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=True):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=True) and os.path.splitext(entry.name)[1].lower() in extensions:
                        yield Path(entry.path)
        except OSError as exc:
            if unreadable is not None:
                unreadable(current, exc)


def iter_images(inputs: list[str], extensions: frozenset[str], skip: Path | None = None,
                unreadable: Callable[[Path, OSError], None] | None = None) -> Iterator[Path]:
    """Every image the arguments name: files as given, folders recursively, globs expanded;
    nothing under ``skip`` (the output folder, which a glob could otherwise reach)."""
    def outside(path: Path) -> bool:
        return skip is None or not (os.path.realpath(path) + os.sep).startswith(str(skip) + os.sep)

    for argument in inputs:
        path = Path(argument)
        if path.is_dir():
            yield from _walk(path, extensions, skip, unreadable)
        elif path.is_file():
            if outside(path):
                yield path
        elif GLOB_CHARACTERS & set(argument):
            recursive = "**" in argument  # then the glob lists every file itself: walking folders too would repeat them
            for match in glob.iglob(argument, recursive=True):
                found = Path(match)
                if found.is_dir() and not recursive:
                    yield from _walk(found, extensions, skip, unreadable)
                elif found.is_file() and found.suffix.lower() in extensions and outside(found):
                    yield found


def relative_output(image: Path) -> Path:
    """The input's path relative to the current folder, or from the root if outside it."""
    absolute = Path(os.path.abspath(image))
    try:
        return absolute.relative_to(Path.cwd())
    except ValueError:
        return absolute.relative_to(absolute.anchor)


def outputs_for(image: Path, out: Path, kinds: tuple[str, ...]) -> dict[str, Path]:
    relative = relative_output(image)
    return {kind: out / relative.parent / f"{relative.stem}.{kind}.png" for kind in kinds}


class OutputNames:
    """Which input claimed each output name, in a temporary SQLite table: any number of inputs
    in constant memory (SQLite's page cache), with an index for the look-up."""

    def __enter__(self) -> "OutputNames":
        self._folder = tempfile.TemporaryDirectory(prefix="saliency-predict-")
        self._db = sqlite3.connect(os.path.join(self._folder.name, "names.sqlite"))
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE names (output TEXT PRIMARY KEY, source TEXT NOT NULL) WITHOUT ROWID")
        return self

    def claim(self, output: str, source: str) -> str | None:
        """None if ``output`` is free or already ``source``'s; else the input that claimed it."""
        try:
            self._db.execute("INSERT INTO names VALUES (?, ?)", (output, source))
            return None
        except sqlite3.IntegrityError:
            (earlier,) = self._db.execute("SELECT source FROM names WHERE output = ?", (output,)).fetchone()
            return None if earlier == source else earlier

    def __exit__(self, *exc) -> None:
        self._db.close()
        self._folder.cleanup()


def check_inputs(config: PredictConfig, extensions: frozenset[str]) -> tuple[int, int]:
    """Every argument exists, OUT is not inside an input folder, no two inputs share an output,
    and there is at least one image. Returns (images, folders that could not be listed, each
    warned about): one pass over the names, cheap."""
    out = Path(os.path.realpath(config.out))
    for argument in config.inputs:
        path = Path(argument)
        if not path.exists() and not (GLOB_CHARACTERS & set(argument)):
            raise UserError(f"{argument}: no such file or folder")
        if path.is_dir():  # outputs inside an input folder would be read as inputs on the next run
            refuse_output_in_inputs(config.out, {"folder": argument})
    count, unlisted = 0, []

    def unreadable(folder: Path, exc: OSError) -> None:
        unlisted.append(folder)
        config.warn(f"saliency: warning: skipped the folder {folder}: cannot list it ({exc.strerror or type(exc).__name__})")

    with OutputNames() as names:  # on disk: the check holds no per-image structure in memory
        for image in iter_images(config.inputs, extensions, out, unreadable):
            count += 1
            key = relative_output(image)
            earlier = names.claim(str(key.parent / key.stem), os.path.abspath(image))
            if earlier is not None:
                raise UserError(f"{earlier} and {image} would both write {config.out / key.parent / key.stem}.*.png; "
                                "rename one or predict them in two runs")
    if count == 0:
        raise UserError(f"no images in {' '.join(config.inputs)} (looked for {', '.join(sorted(extensions)[:8])}, ...)")
    return count, len(unlisted)


def finished(path: Path) -> bool:
    """A PNG that was written to its end (its last chunk is IEND): a file cut short by a power
    cut is not taken for done."""
    try:
        with open(path, "rb") as handle:
            handle.seek(-12, os.SEEK_END)
            return handle.read(12)[4:8] == b"IEND"
    except OSError:
        return False


# ------------------------------------------------------------------------- reading, in workers
@dataclass
class Item:
    path: Path
    outputs: dict[str, Path]
    prepared: PreparedImage | None = None
    pixels: np.ndarray | None = None  # the full-size image, only when a cutout or overlay needs it
    done: bool = False  # every output already there
    error: str | None = None


class ImageStream(torch.utils.data.IterableDataset):
    """Reads, resizes and pads the inputs; worker w of W takes every W-th file. Holds only
    plain values, so it pickles for workers started by spawn (macOS, Python 3.14)."""

    def __init__(self, config: PredictConfig, size: int, stride: int, extensions: frozenset[str]) -> None:
        self.inputs, self.out, self.save = list(config.inputs), Path(config.out), tuple(config.save)
        self.overwrite, self.size, self.stride, self.extensions = config.overwrite, size, stride, extensions
        self.skip = Path(os.path.realpath(config.out))

    def __iter__(self) -> Iterator[Item]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        keep_pixels = bool(KINDS_ON_THE_IMAGE & set(self.save))
        for index, path in enumerate(iter_images(self.inputs, self.extensions, self.skip)):
            if index % workers != worker:
                continue
            outputs = outputs_for(path, self.out, self.save)
            if not self.overwrite and all(finished(target) for target in outputs.values()):
                yield Item(path, outputs, done=True)
                continue
            try:
                if keep_pixels:  # a cutout or overlay is drawn at the file's own size: decode it whole
                    pixels = as_rgb_array(path)
                    prepared = prepare_image(pixels, self.size, self.stride)
                else:  # a map needs only the model's input: a large photo is decoded reduced
                    pixels, original = load_image_for_model(path, self.size)
                    prepared = prepare_image(pixels, self.size, self.stride, original)
            except UserError as exc:
                message = str(exc)
                yield Item(path, outputs, error=message if message.startswith(str(path)) else f"{path}: {message}")
                continue
            except (OSError, ValueError, MemoryError) as exc:
                yield Item(path, outputs, error=f"{path}: unreadable image ({exc})")
                continue
            yield Item(path, outputs, prepared, pixels if keep_pixels else None)


def _as_is(item: Item) -> Item:
    return item


def _yield_to_the_model(*_ignored) -> None:
    """Run this thread or worker at a lower priority: the model's threads come first, and the
    reading and writing fill the gaps (on Linux a thread's niceness is its own)."""
    try:
        os.nice(5)
    except (AttributeError, OSError):
        pass


def default_workers() -> int:
    """One decoding process per 4 cores, at most 4; none on 2 cores, where the model's two
    threads leave no core free (measured there: 44 images/s without a worker, 42 with one)."""
    from saliency.core.runtime import usable_cores

    return min(4, usable_cores() // 4)


# --------------------------------------------------------------------------------- the run
def _write(item: Item, saliency_map: np.ndarray, threshold: float) -> None:
    for kind, target in item.outputs.items():
        pixels = render_output(kind, saliency_map, item.pixels, threshold)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, encode_png(pixels), durable=False)  # 0.3 ms of encoding (Pillow: 2.7)


def run_predict(config: PredictConfig) -> dict:
    unknown = [kind for kind in config.save if kind not in KINDS]
    if unknown or not config.save:
        raise ConfigError(f"`save` takes a comma-separated list of {', '.join(KINDS)}; got {','.join(config.save)}")
    check_ranges(config)
    if not config.inputs:
        raise UserError("no inputs: name image files, folders or globs")
    extensions = image_extensions()
    total, unlisted = check_inputs(config, extensions)
    detector = SaliencyDetector.load(config.model, config.device, config.precision, config.size, config.batch_size)
    out = ensure_writable_dir(config.out, field="out")

    workers = default_workers() if config.workers is None else config.workers
    stream = ImageStream(config, detector.size, detector.stride, extensions)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is,
                                         prefetch_factor=2 * config.batch_size if workers else None,
                                         persistent_workers=False, worker_init_fn=_yield_to_the_model)
    removed = sum(remove_stale_temporaries(folder) for folder, _, _ in os.walk(out))  # a killed run's
    counts = {"written": 0, "already_done": 0, "skipped": unlisted, "stale_temporaries_removed": removed}
    started = time.perf_counter()
    pending: list[Future] = []
    with progress_bar(total, "predict", enabled=config.progress, unit="img") as bar, \
            ThreadPoolExecutor(max_workers=1, initializer=_yield_to_the_model) as writer:

        def readable() -> Iterator[tuple[Item, PreparedImage]]:
            for item in loader:
                if item.done:
                    counts["already_done"] += 1
                    bar.update(1)
                elif item.error is not None:
                    counts["skipped"] += 1
                    bar.clear()
                    config.warn(f"saliency: warning: skipped {item.error}")
                    bar.update(1)
                else:
                    yield item, item.prepared

        for item, saliency_map in detector.maps(readable()):
            item.prepared = None
            pending.append(writer.submit(_write, item, saliency_map, config.threshold))
            if len(pending) > 2 * config.batch_size:  # bounded: the writer keeps up or the model waits
                pending.pop(0).result()
            counts["written"] += 1
            bar.update(1)
        for future in pending:
            future.result()
    seconds = time.perf_counter() - started
    return {**counts, "images": total, "seconds": round(seconds, 2),
            "images_per_second": round(counts["written"] / seconds, 2) if seconds > 0 else 0.0,
            "out": str(out), "device": str(detector.device), "precision": detector.precision}
