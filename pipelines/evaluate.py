"""``saliency eval``: stage 4, a trained U-Net scored on a benchmark or on rendered scenes.

An evaluation folder holds::

    metrics.json      the scores: top level = the test split; also every split, the two
                      reference maps, timing, and the paper-protocol variant if asked
    metrics.md        the same as a table
    predictions.png   image / prediction / ground truth for the first test images (Figure 11)
    maps/             every predicted map as PNG (with --save-maps)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from saliency.core.artifacts import (atomic_path, ensure_writable_dir, refuse_output_in_inputs, remove_stale_temporaries,
                                write_bytes_atomic, write_json)
from saliency.datasets import get_spec, open_dataset, resolve_data_root, split_stems
from saliency.ensure import dataset_need, ensure
from saliency.core.errors import UserError
from saliency.detector import SaliencyDetector
from saliency.evaluate import folder_samples, scenes_samples, score_samples
from saliency import reference_rows
from saliency.model_card import record_evaluation
from saliency.core.png import encode_png
from saliency.metrics import SaliencyMetrics, markdown_table
from saliency.core.progress import progress_bar
from saliency.core.visualize import save_grid

METRICS_NAME = "metrics.json"
GRID_IMAGES = 8


@dataclass
class EvalConfig:
    dataset: str
    model: Path
    out: Path
    data_root: Path | None = None
    size: int | None = None  # shorter side at inference; default 128 (scenes: its own resolution)
    protocol: str = "standard"  # or "paper": also the reference code's argmax-at-128 variant
    save_maps: bool = False
    scenes_count: int = 500
    scenes_seed: int = 12345
    references: bool = True
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True


def _grid_tile(array: np.ndarray, side: int = 96) -> torch.Tensor:
    image = Image.fromarray(array).convert("RGB").resize((side, side), Image.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def run_eval(config: EvalConfig) -> dict:
    if config.protocol not in ("standard", "paper"):
        raise UserError(f"--protocol must be standard or paper, got {config.protocol!r}")
    if config.size is not None and config.size < 16:
        raise UserError(f"--size must be at least 16, got {config.size}")
    if config.scenes_count <= 0:
        raise UserError(f"--images must be positive, got {config.scenes_count}")
    inputs = {"--model": config.model if Path(str(config.model)).exists() else None}
    if config.dataset != "scenes":
        spec = get_spec(config.dataset)  # an unknown name fails before the model loads
        inputs["--data-root"] = resolve_data_root(config.data_root) / spec.folder
    refuse_output_in_inputs(config.out, inputs)
    detector = SaliencyDetector.load(config.model, config.device, config.precision)
    meta, device, precision = detector.meta, detector.device, detector.precision
    stride = detector.stride
    data_meta = meta.get("data") or {}

    reference_key, cached_references = None, None  # benchmark folders only: see saliency.reference_rows
    if config.dataset == "scenes":
        trained_on_scenes = data_meta.get("generator") == "scenes"
        # A model trained on scenes is tested on its own classes and size; any other on all ten shapes at 64 px.
        resolution = int((data_meta.get("resolution") or [64])[0]) if trained_on_scenes else 64
        classes = data_meta.get("classes") if trained_on_scenes else None
        size = config.size or resolution
        samples = scenes_samples(config.scenes_count, config.scenes_seed, resolution, classes)
        total, splits_of = config.scenes_count, (lambda stem: ("rendered",))
        split_names = ["rendered"]
        source = {"generator": "scenes", "resolution": resolution, "classes": classes,
                  "seed": config.scenes_seed}
    else:
        spec = get_spec(config.dataset)
        ensure([dataset_need(spec.name, config.data_root, progress=config.progress)])  # fetched once if missing
        folder = open_dataset(spec.name, config.data_root, "all")
        size = config.size or 128
        test = set(split_stems([s.stem for s in folder.samples], "test"))
        if not test:
            raise UserError(f"dataset {spec.name}: the test split is empty ({len(folder)} image(s) in {folder.folder})")
        samples = folder_samples(folder)
        total = len(folder)
        # train: for choosing settings (the only use of its masks); the tables show test and all.
        # Each image is scored once, in its split; "all" is their union, merged at the end.
        splits_of = lambda stem: ("test",) if stem in test else ("train",)  # noqa: E731
        split_names = ["test", "train", "all"]
        source = {"folder": str(folder.folder), "split_rule": "sorted stems; odd positions (2nd, 4th, ...) are test"}
        if config.references:
            try:
                reference_key = reference_rows.fingerprint(
                    [(s.stem, splits_of(s.stem)[0], s.mask_path) for s in folder.samples])
            except OSError:  # a mask that cannot be read: the loop below names it
                reference_key = None
            cached_references = reference_rows.load(reference_key) if reference_key else None
    if config.protocol == "paper" and size % stride:
        raise UserError(f"--protocol paper needs --size divisible by {stride}, got {size}")

    out = ensure_writable_dir(config.out)
    remove_stale_temporaries(out)
    (out / METRICS_NAME).unlink(missing_ok=True)
    maps_dir = out / "maps"
    if config.save_maps:
        maps_dir.mkdir(exist_ok=True)

    scored = [name for name in split_names if name != "all"]
    tiles: list[list[torch.Tensor]] = [[], [], []]

    def keep(sample, prediction: np.ndarray, names: tuple[str, ...]) -> None:
        """Outputs of each scored image: its map file, and the first test images' grid tiles."""
        if config.save_maps:
            write_bytes_atomic(maps_dir / f"{sample.stem}.png", encode_png(prediction), durable=False)
        if names[0] in ("test", "rendered") and len(tiles[0]) < GRID_IMAGES:
            tiles[0].append(_grid_tile(sample.image))
            tiles[1].append(_grid_tile(prediction))
            tiles[2].append(_grid_tile(sample.mask.astype(np.uint8) * 255))

    detector.size = size
    with progress_bar(total, f"eval {config.dataset}", enabled=config.progress, unit="img") as bar:
        result = score_samples(detector, samples, size, splits_of, scored,
                               references=config.references and cached_references is None,
                               paper_protocol=config.protocol == "paper", on_map=keep, tick=lambda: bar.update(1))
    scores, refs, paper = result.scores, result.references, result.paper
    seconds, predict_seconds = result.seconds, result.predict_seconds

    if "all" in split_names:
        for per_split in [scores, *refs.values(), *([paper] if paper is not None else [])]:
            per_split["all"] = SaliencyMetrics.merged([per_split[name] for name in scored])
    primary = split_names[0]
    results = {name: metric.results() for name, metric in scores.items()}
    summary = {
        "dataset": config.dataset,
        "split": primary,
        **{k: round(v, 6) if isinstance(v, float) else v for k, v in results[primary].items()},
        "seconds": round(seconds, 2),
        "images_per_second": round(total / seconds, 2),
        "predict_images_per_second": round(total / max(predict_seconds, 1e-9), 2),
        "splits": results,
        "references": (cached_references if cached_references is not None else
                       {ref: {name: m.results() for name, m in per.items()} for ref, per in refs.items()}),
        "paper_protocol": ({name: m.results() for name, m in paper.items()} if paper is not None else None),
        "protocol": {"size": size, "resize": "shorter side to size, pad to stride, map resized back to the "
                     "ground truth's size", "stride": stride, "metrics": "PySODMetrics (MAE, max F beta^2=0.3, "
                     "S alpha=0.5, max E); IoU and accuracy at 0.5"},
        "source": source,
        "model": str(config.model),
        "model_data": data_meta,
        "device": str(device),
        "precision": precision,
    }
    if refs and reference_key:
        reference_rows.save(reference_key, summary["references"], str(source.get("folder")))
    shown = [name for name in split_names if name != "train"]
    rows = [(f"U-Net ({name})", results[name]) for name in shown]
    for ref, per in summary["references"].items():
        rows += [(f"{ref} ({name})", per[name]) for name in shown]
    if paper is not None:
        rows += [(f"U-Net, paper protocol ({name})", summary["paper_protocol"][name]) for name in shown]
    table = markdown_table(rows)
    summary["table"] = table
    with atomic_path(out / "metrics.md") as tmp:
        tmp.write_text(f"# {config.dataset}: {Path(config.model).name}\n\n{table}", encoding="utf-8")
    if tiles[0]:
        save_grid(torch.stack(tiles[0] + tiles[1] + tiles[2]), out / "predictions.png", nrow=len(tiles[0]))
    write_json(out / METRICS_NAME, {k: v for k, v in summary.items() if k != "table"})
    if detector.folder is not None and detector.folder.resolve() == Path(config.model).resolve():
        record_evaluation(detector.folder, config.dataset, summary, str(out / METRICS_NAME))  # a local model only
    return summary


def is_complete(out: Path) -> bool:
    return (Path(out) / METRICS_NAME).is_file()
