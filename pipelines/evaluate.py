"""``saliency eval``: stage 4, a trained U-Net scored on a benchmark or on rendered scenes.

An evaluation folder holds::

    metrics.json      the scores: top level = the test split; also every split, the two
                      reference maps, timing, and the paper-protocol variant if asked
    metrics.md        the same as a table
    predictions.png   image / prediction / ground truth for the first test images (Figure 11)
    gallery.png       the same for the best and the worst images by MAE (rows), so failures
    gallery.json      are seen; which images they are, with their MAE
    maps/             every predicted map as PNG (with --save-maps)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from saliency.core.artifacts import (atomic_path, ensure_writable_dir, refuse_output_in_inputs, remove_stale_temporaries,
                                write_bytes_atomic, write_json)
from saliency.datasets import get_spec, open_dataset, resolve_data_root, split_stems
from saliency.downloads.prefetch import dataset_need, ensure
from saliency.core import limits
from saliency.core.errors import ConfigError, UserError
from saliency.core.fields import bounded, check_ranges
from saliency.detector import SaliencyDetector
from saliency.scoring import SampleScores, folder_samples, scenes_samples, score_samples
from saliency import reference_rows
from saliency.model_card import record_evaluation
from saliency.core.png import encode_png
from saliency.metrics import SaliencyMetrics, markdown_table
from saliency.core.progress import progress_bar
from saliency.core.recorded_paths import rebase_recorded, rebased_options, record_path
from saliency.core.visualize import save_grid

METRICS_NAME = "metrics.json"
GRID_IMAGES = 8
GALLERY_IMAGES = 4  # best and worst each


@dataclass
class EvalConfig:
    dataset: str
    model: Path
    out: Path
    data_root: Path | None = None
    size: int | None = bounded(limits.INFERENCE_SIDE)  # shorter side at inference; default 128 (scenes: its own)
    protocol: str = "standard"  # or "paper": also the reference code's own evaluation
    save_maps: bool = False
    scenes_count: int = bounded(limits.RENDERED_IMAGES, 500)
    scenes_seed: int = 12345
    references: bool = True
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True
    # Record the scores in the model folder's card (model.json): only when asked (the pipeline
    # asks for the U-Net it trained), so that eval leaves its input as it was.
    card: bool = False


def _grid_tile(array: np.ndarray, side: int = 96) -> torch.Tensor:
    image = Image.fromarray(array).convert("RGB").resize((side, side), Image.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


class Gallery:
    """The ``size`` best and ``size`` worst images by MAE, kept as small tiles while the
    images stream past (memory does not grow with the test set)."""

    def __init__(self, size: int) -> None:
        self.size, self.count = size, 0
        self.best: list = []  # heaps of (key, order, stem, mae, tiles): the worst of the best on top
        self.worst: list = []

    def add(self, sample, prediction: np.ndarray) -> None:
        mae = float(np.abs(prediction.astype(np.float64) / 255 - sample.mask).mean())
        self.count += 1
        for heap, key in ((self.best, -mae), (self.worst, mae)):
            if len(heap) < self.size or key > heap[0][0]:
                tiles = [_grid_tile(sample.image), _grid_tile(prediction),
                         _grid_tile(sample.mask.astype(np.uint8) * 255)]
                entry = (key, -self.count, sample.stem, mae, tiles)
                (heapq.heappush if len(heap) < self.size else heapq.heapreplace)(heap, entry)

    def save(self, out: Path) -> None:
        if not self.best:
            return
        best = sorted(self.best, key=lambda e: e[3])
        worst = sorted(self.worst, key=lambda e: -e[3])
        rows = best + worst
        save_grid(torch.stack([t for entry in rows for t in entry[4]]), out / "gallery.png", nrow=3)
        write_json(out / "gallery.json", {
            "columns": ["image", "prediction", "ground truth"], "metric": "MAE", "images_ranked": self.count,
            "best": [{"stem": e[2], "mae": round(e[3], 5)} for e in best],
            "worst": [{"stem": e[2], "mae": round(e[3], 5)} for e in worst]})


@dataclass
class EvalSet:
    """What is scored and how: the samples, the split each belongs to, the inference size."""

    samples: Iterable
    total: int
    splits_of: Callable[[str], tuple[str, ...]]
    split_names: list[str]  # scored splits, then "all" (their union) for a benchmark folder
    size: int
    source: dict
    reference_key: str | None = None  # benchmark folders only: see saliency.reference_rows
    cached_references: dict | None = None


def run_eval(config: EvalConfig) -> dict:
    """Score ``config.model`` on ``config.dataset``; write metrics.json, metrics.md, the
    predictions grid (and maps); returns the summary."""
    _check(config)
    detector = SaliencyDetector.load(config.model, config.device, config.precision)
    test_set = _test_set(config, detector.meta.get("data") or {})
    out = ensure_writable_dir(config.out)
    remove_stale_temporaries(out)
    (out / METRICS_NAME).unlink(missing_ok=True)
    maps_dir = out / "maps"
    if config.save_maps:
        maps_dir.mkdir(exist_ok=True)

    tiles: list[list[torch.Tensor]] = [[], [], []]
    gallery = Gallery(GALLERY_IMAGES)

    def keep(sample, prediction: np.ndarray, names: tuple[str, ...]) -> None:
        """Outputs of each scored image: its map file, the first test images' grid tiles, and
        its place among the best and worst by MAE."""
        if config.save_maps:
            write_bytes_atomic(maps_dir / f"{sample.stem}.png", encode_png(prediction), durable=False)
        if names[0] in ("test", "rendered") and len(tiles[0]) < GRID_IMAGES:
            tiles[0].append(_grid_tile(sample.image))
            tiles[1].append(_grid_tile(prediction))
            tiles[2].append(_grid_tile(sample.mask.astype(np.uint8) * 255))
        if names[0] in ("test", "rendered"):
            gallery.add(sample, prediction)

    detector.size = test_set.size
    scored = [name for name in test_set.split_names if name != "all"]
    with progress_bar(test_set.total, f"eval {config.dataset}", enabled=config.progress, unit="img") as bar:
        result = score_samples(detector, test_set.samples, test_set.size, test_set.splits_of, scored,
                               references=config.references and test_set.cached_references is None,
                               paper_protocol=config.protocol == "paper", on_map=keep, tick=lambda: bar.update(1))
    summary = _summary(config, test_set, result, detector)
    _write_outputs(config, out, test_set, summary, tiles)
    gallery.save(out)
    if config.card and detector.folder is not None and detector.folder.resolve() == Path(config.model).resolve():
        record_evaluation(detector.folder, config.dataset, summary,  # a local model only
                          record_path(out / METRICS_NAME, detector.folder))
    return summary


def _check(config: EvalConfig) -> None:
    """Everything that can be refused before the model loads."""
    if config.protocol not in ("standard", "paper"):
        raise ConfigError(f"`protocol` must be standard or paper, got {config.protocol!r}")
    check_ranges(config)
    inputs = {"--model": config.model if Path(str(config.model)).exists() else None}
    if config.dataset != "scenes":
        spec = get_spec(config.dataset)  # an unknown name fails before the model loads
        inputs["--data-root"] = resolve_data_root(config.data_root) / spec.folder
    refuse_output_in_inputs(config.out, inputs)


def _test_set(config: EvalConfig, data_meta: dict) -> EvalSet:
    if config.dataset == "scenes":
        trained_on_scenes = data_meta.get("generator") == "scenes"
        # A model trained on scenes is tested on its own classes and size; any other on all ten shapes at 64 px.
        resolution = int((data_meta.get("resolution") or [64])[0]) if trained_on_scenes else 64
        classes = data_meta.get("classes") if trained_on_scenes else None
        return EvalSet(samples=scenes_samples(config.scenes_count, config.scenes_seed, resolution, classes),
                       total=config.scenes_count, splits_of=lambda stem: ("rendered",), split_names=["rendered"],
                       size=config.size or resolution,
                       source={"generator": "scenes", "resolution": resolution, "classes": classes,
                               "seed": config.scenes_seed})
    spec = get_spec(config.dataset)
    ensure([dataset_need(spec.name, config.data_root, progress=config.progress)])  # fetched once if missing
    folder = open_dataset(spec.name, config.data_root, "all")
    test = set(split_stems([s.stem for s in folder.samples], "test"))
    if not test:
        raise UserError(f"dataset {spec.name}: the test split is empty ({len(folder)} image(s) in {folder.folder})")
    # train: for choosing settings (the only use of its masks); the tables show test and all.
    # Each image is scored once, in its split; "all" is their union, merged at the end.
    test_set = EvalSet(samples=folder_samples(folder), total=len(folder),
                       splits_of=lambda stem: ("test",) if stem in test else ("train",),
                       split_names=["test", "train", "all"], size=config.size or 128,
                       source={"dataset": spec.name,  # by name: where it lies is this machine's business
                               "split_rule": "sorted stems; odd positions (2nd, 4th, ...) are test"})
    if config.references:
        try:
            test_set.reference_key = reference_rows.fingerprint(
                [(s.stem, test_set.splits_of(s.stem)[0], s.mask_path) for s in folder.samples])
        except OSError:  # a mask that cannot be read: the scoring loop names it
            test_set.reference_key = None
        if test_set.reference_key:
            test_set.cached_references = reference_rows.load(test_set.reference_key)
    return test_set


def _summary(config: EvalConfig, test_set: EvalSet, result: SampleScores, detector: SaliencyDetector) -> dict:
    """metrics.json's content: the primary split's scores at the top, then every split, the
    reference maps, the paper's protocol, timing, and where the numbers came from."""
    scores, refs, paper = result.scores, result.references, result.paper
    scored = [name for name in test_set.split_names if name != "all"]
    if "all" in test_set.split_names:
        for per_split in [scores, *refs.values(), *([paper] if paper is not None else [])]:
            per_split["all"] = SaliencyMetrics.merged([per_split[name] for name in scored])
    primary = test_set.split_names[0]
    results = {name: metric.results() for name, metric in scores.items()}
    total, seconds = test_set.total, result.seconds
    summary = {
        "dataset": config.dataset,
        "split": primary,
        **{k: round(v, 6) if isinstance(v, float) else v for k, v in results[primary].items()},
        "seconds": round(seconds, 2),
        "images_per_second": round(total / seconds, 2),
        "predict_images_per_second": round(total / max(result.predict_seconds, 1e-9), 2),
        "splits": results,
        "references": (test_set.cached_references if test_set.cached_references is not None else
                       {ref: {name: m.results() for name, m in per.items()} for ref, per in refs.items()}),
        "paper_protocol": ({name: m.results() for name, m in paper.items()} if paper is not None else None),
        "protocol": {"size": test_set.size, "resize": "shorter side to size, pad to stride, map resized back to the "
                     "ground truth's size", "stride": detector.stride, "metrics": "paper_mae: the paper's MAE (raw mean of "
                     "|probability - mask| at the image's size); PySODMetrics (mae: min-max normalised maps; max F "
                     "beta^2=0.3, S alpha=0.5, max E); IoU and accuracy at 0.5",
                     "paper_protocol": "the reference code's SegmentationInference(resize_to=size): sigmoid of the "
                     "foreground logit, through uint8, resized back"},
        "source": test_set.source,
        **_model_record(config, detector, Path(config.out)),
        "device": str(detector.device),
        "precision": detector.precision,
    }
    if refs and test_set.reference_key:
        reference_rows.save(test_set.reference_key, summary["references"], str(test_set.source.get("dataset")))
    shown = [name for name in test_set.split_names if name != "train"]
    rows = [(f"U-Net ({name})", results[name]) for name in shown]
    for ref, per in summary["references"].items():
        rows += [(f"{ref} ({name})", per[name]) for name in shown]
    if paper is not None:
        rows += [(f"U-Net, paper protocol ({name})", summary["paper_protocol"][name]) for name in shown]
    summary["table"] = markdown_table(rows)
    return summary


def _model_record(config: EvalConfig, detector: SaliencyDetector, out: Path) -> dict:
    """The model scored and the data it was trained on, for metrics.json: a model folder and
    the paths its model.json records relative to this folder (a Hub model by its id)."""
    data = dict(detector.meta.get("data") or {})
    local = detector.folder is not None and Path(str(config.model)).exists()
    if not local:
        return {"model": str(config.model), "model_data": data}
    folder = detector.folder
    for key in ("folder", "run"):
        if key in data:
            data[key] = rebase_recorded(data[key], folder, out)
    if "generator_options" in data:
        data["generator_options"] = rebased_options(data["generator_options"], folder, out)
    return {"model": record_path(config.model, out), "model_data": data}


def _write_outputs(config: EvalConfig, out: Path, test_set: EvalSet, summary: dict,
                   tiles: list[list[torch.Tensor]]) -> None:
    with atomic_path(out / "metrics.md") as tmp:
        tmp.write_text(f"# {config.dataset}: {Path(config.model).name}\n\n{summary['table']}", encoding="utf-8")
    if tiles[0]:
        save_grid(torch.stack(tiles[0] + tiles[1] + tiles[2]), out / "predictions.png", nrow=len(tiles[0]))
    write_json(out / METRICS_NAME, {k: v for k, v in summary.items() if k != "table"})


def is_complete(out: Path) -> bool:
    return (Path(out) / METRICS_NAME).is_file()
