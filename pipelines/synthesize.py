"""``saliency synthesize``: stage 2 end to end, from a discovery run to (image, mask) shards.

classes (given, or voted by a classifier on the dataset's train split) -> batches of
(z, c) from a seeded sampler -> G(z, c) and G(z + h_bg, c) in one call -> mask rule ->
fixed-size shards -> manifest.json and preview.png.

An output folder holds::

    classes.json      the class vote (counts, chosen classes), when voting ran
    progress.json     the settings and every finished shard with its position and totals
    shard-NNNNN.safetensors
    manifest.json     the summary; written last, so its presence means "complete"
    preview.png       image / shifted image / mask for the first pairs (paper Figure 10)

Batch ``b`` draws its latents from its own seed, so a run can stop anywhere and start
again: shards listed in progress.json are kept (after a checksum check), anything else is
discarded, and generation resumes at the recorded (batch, row) position, so the result is
the same n pairs an uninterrupted run writes, bit for bit on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from directions.generators import Generator, build_generator
from directions.generators.registry import generator_named_in_file
from directions.run_folder import SUMMARY_NAME, TENSORS_NAME, load_run
from saliency.core import distributed
from saliency.core.artifacts import ensure_writable_dir, refuse_output_in_inputs, write_json
from saliency.classifiers import build_classifier, default_classifier
from saliency.datasets import get_spec, open_dataset, resolve_data_root
from saliency.downloads.prefetch import classifier_weights, dataset_need, ensure, weights_need
from saliency.core.device import resolve_device
from saliency.core import limits
from saliency.core.errors import ConfigError, UserError
from saliency.core.fields import REQUIRED, bounded, check_ranges
from saliency.core.progress import progress_bar, redraw_if_due
from saliency.core.recorded_paths import rebased_options, record_path, resolve_recorded, resolved_options
from saliency.core.runtime import configure_device, resolve_precision
from saliency.shards import (DATASET_FORMAT, MANIFEST_NAME, PROGRESS_NAME, PairBuffer, ShardWriter,
                             discard_unlisted_shards, load_progress, read_shard)
from saliency.synthesis import HISTOGRAM_BINS, KEPT, REASONS, MaskRule, area_histogram, mask_iou, synthesize_batch
from saliency.core.visualize import save_grid
from saliency.voting import run_vote

CLASSES_NAME = "classes.json"
PREVIEW_NAME = "preview.png"
DEFAULT_BATCH = {"biggan-deep-128": 32}
# After this many candidates, an acceptance under MIN_ACCEPTANCE means the filters will
# practically never fill the count (a random or wrong h_bg: hours for a handful of pairs), so
# stop with a reason instead of looping. A sound h_bg keeps tens of percent.
GIVE_UP_AFTER = 5_000
MIN_ACCEPTANCE = 0.001


@dataclass
class SynthesizeConfig:
    run: Path
    count: int = bounded(limits.PAIRS, REQUIRED)
    out: Path
    data_root: Path | None = None
    dataset: str = "ecssd"
    split: str = "train"
    classes: list[int] | None = None
    classifier: str | None = None
    classifier_weights: str | None = None
    top_k: int = bounded(limits.TOP_K, 5)
    class_fraction: float = bounded(limits.POSITIVE_FRACTION, 0.25)
    threshold: float | None = bounded(limits.POSITIVE_FRACTION)
    magnitude: float | None = bounded(limits.POSITIVE)
    min_area: float = bounded(limits.FRACTION, 0.05)
    max_area: float = bounded(limits.FRACTION, 0.5)
    strict_area: bool = False  # keep min < area < max, as the reference code does
    # "run": the run's h_bg as chosen (a column of A, or the refined vector); "column": the unit
    # column of A that h_bg is, or was refined from, signed like h_bg (the reference code's shift)
    bg_vector: str = "run"
    component_fraction: float | None = bounded(limits.POSITIVE_FRACTION)
    bimodal: bool = False
    batch_size: int | None = bounded(limits.GAME_BATCH)
    shard_size: int = bounded(limits.SHARD_SIZE, 1024)
    seed: int = bounded(limits.SEED, 0)
    device: str = "auto"
    ground_truth: bool = True
    precision: str = "auto"  # bf16 autocast for G on a CUDA GPU
    preview: int = 8
    progress: bool = True
    log: Callable[[str], None] = print  # what the stage says it does (the class vote's classifier, fetches)
    # The run's generator, when it is the user's own package.module:factory: a run folder names
    # code only by registered name, so an import spec runs only if the user gives it here.
    generator: str | None = None

    def validate(self) -> None:
        check_ranges(self)
        if self.bg_vector not in BG_VECTORS:
            raise ConfigError(f"`bg_vector` must be one of {', '.join(BG_VECTORS)}, got {self.bg_vector!r}")


BG_VECTORS = ("run", "column")


# ------------------------------------------------------------------------------ inputs
def load_background_direction(run_dir: Path, summary: dict, latent_dim: int) -> torch.Tensor:
    """The run's h_bg (signed unit vector), from directions.safetensors."""
    bg = summary.get("bg_direction")
    if "bg_direction" in summary and bg is None:
        raise UserError(f"{run_dir} has no h_bg: it was discovered with --no-bg-search; choose one with "
                        f"`saliency discover --out {run_dir} --resume --bg-direction INDEX[:MAGNITUDE]` "
                        "and the run's other options")
    if not isinstance(bg, dict) or "magnitude" not in bg:
        raise UserError(f"{run_dir} has no h_bg in {SUMMARY_NAME} (run `saliency discover` to the end)")
    if not bg.get("reliable", True):
        raise UserError(f"the h_bg of {run_dir} is marked unreliable (the search found no direction that whitens "
                        f"the background); choose one with `saliency discover --out {run_dir} --resume "
                        "--bg-direction INDEX[:MAGNITUDE]` and the run's other options")
    path = run_dir / TENSORS_NAME
    try:
        vector = load_file(str(path))["bg_direction"].float()
    except FileNotFoundError as exc:
        raise UserError(f"{path} not found: the run is incomplete") from exc
    except (SafetensorError, KeyError, OSError) as exc:
        raise UserError(f"{path} is corrupted or has no bg_direction ({type(exc).__name__})") from exc
    if vector.ndim != 1 or vector.numel() != latent_dim or not torch.isfinite(vector).all():
        raise UserError(f"{path}: bg_direction has shape {tuple(vector.shape)}, the generator's latents have {latent_dim}")
    return vector


def background_column(run_dir: Path, summary: dict, h_bg: torch.Tensor) -> torch.Tensor:
    """The unit column of A that h_bg is, or that its refinement started from, signed like h_bg."""
    bg = summary.get("bg_direction") or {}
    index = bg.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        index = (bg.get("extra") or {}).get("start") if isinstance(bg.get("extra"), dict) else None
    if not isinstance(index, int) or isinstance(index, bool):
        raise UserError(f"{run_dir}: its h_bg names no column of A; use `bg_vector` run")
    path = run_dir / TENSORS_NAME
    try:
        directions = load_file(str(path))["directions"].float()
    except (SafetensorError, KeyError, OSError) as exc:
        raise UserError(f"{path} is corrupted or has no directions ({type(exc).__name__})") from exc
    if directions.ndim != 2 or directions.shape[0] != h_bg.numel() or not 0 <= index < directions.shape[1]:
        raise UserError(f"{path}: directions of shape {tuple(directions.shape)} hold no column {index} "
                        f"of {h_bg.numel()} values")
    column = directions[:, index]
    norm = column.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise UserError(f"{path}: column {index} of the directions is zero or not finite")
    column = column / norm
    return column if float(torch.dot(column, h_bg)) >= 0 else -column


def stream_from_manifest(folder: Path, manifest: dict, device: torch.device, seed: int = 0,
                         generator_spec: str | None = None):
    """The generator, shift, mask rule and classes a synthesis folder was made with, as a source
    of fresh pairs for every training step (:class:`saliency.streaming.StreamedPairs`)."""
    from saliency.streaming import StreamedPairs

    run = manifest.get("run")
    if not isinstance(run, str):
        raise UserError(f"{folder / MANIFEST_NAME} names no discovery run to stream pairs from")
    run_dir = resolve_recorded(run, folder)  # relative to the synthesis folder
    summary = load_run(run_dir)
    name = generator_named_in_file(summary.get("generator"), run_dir / SUMMARY_NAME, generator_spec)
    options = summary.get("generator_options") or {}
    if not isinstance(options, dict):
        raise UserError(f"{run_dir / SUMMARY_NAME}: generator_options is not an object")
    generator = build_generator(name, device=device, **resolved_options(options, run_dir)).eval()
    direction = load_background_direction(run_dir, summary, generator.latent_dim)
    if manifest.get("bg_vector") == "column":
        direction = background_column(run_dir, summary, direction)
    filters = manifest.get("filters") or {}
    try:
        rule = MaskRule(threshold=float(manifest["threshold"]), min_area=float(manifest["min_area"]),
                        max_area=float(manifest["max_area"]), strict_area=bool(manifest.get("strict_area", False)),
                        component_fraction=filters.get("component_fraction"),
                        bimodal=filters.get("bimodal_min") is not None,
                        **({"bimodal_min": filters["bimodal_min"]} if filters.get("bimodal_min") is not None else {}))
        magnitude = float(manifest["shift"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{folder / MANIFEST_NAME} lacks the synthesis settings to stream from ({exc})") from exc
    rule.validate()
    if (generator.resolution, generator.resolution) != (manifest.get("height"), manifest.get("width")):
        raise UserError(f"{folder / MANIFEST_NAME}: pairs of {manifest.get('height')}x{manifest.get('width')}, but "
                        f"{name} renders {generator.resolution} px")
    shift = (direction * magnitude).to(generator.device, generator.dtype)
    return StreamedPairs(generator, shift, rule, manifest.get("classes"), seed=seed,
                         precision=str(manifest.get("precision", "fp32")))


def vote_for_classes(config: SynthesizeConfig, generator_name: str, generator: Generator, out: Path) -> dict:
    """Run (or reuse) the class vote; returns the content of classes.json.

    A finished vote is reused when its settings match; without --classifier, whichever
    classifier made it (so a resumed synthesis needs no classifier weights)."""
    cached = out / CLASSES_NAME
    previous = None
    if cached.is_file():
        try:
            previous = json.loads(cached.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None
    wanted = {"dataset": config.dataset, "split": config.split, "top_k": config.top_k,
              "fraction": config.class_fraction}
    if isinstance(previous, dict) and isinstance(previous.get("settings"), dict):
        settings = previous["settings"]
        if {k: settings.get(k) for k in wanted} == wanted and config.classifier in (None, settings.get("classifier")):
            return previous
    # The vote's classifier weights and dataset: fetched now if missing, or one line.
    ensure([weights_need(classifier_weights(config.classifier, generator_name), progress=config.progress)
            if config.classifier_weights is None else None,
            dataset_need(config.dataset, config.data_root, progress=config.progress)], log=config.log)
    if config.classifier:
        classifier_name, why = config.classifier, "--classifier"
    else:
        classifier_name, why = default_classifier(generator_name)
    settings = {"classifier": classifier_name, **wanted}
    classifier = build_classifier(classifier_name, config.classifier_weights)
    if classifier.num_classes != generator.num_classes:
        raise UserError(f"classifier {classifier_name} has {classifier.num_classes} classes, "
                        f"{generator_name} has {generator.num_classes}")
    config.log(f"class vote with {classifier_name}: {why}")
    dataset = open_dataset(config.dataset, config.data_root, config.split)
    vote = {"settings": settings, "why": why,
            **run_vote(classifier, dataset, config.top_k, config.class_fraction, generator.device,
                       progress=config.progress)}
    write_json(cached, vote)
    return vote


def batch_latents(generator: Generator, seed: int, batch: int, size: int, classes: list[int] | None):
    """Batch ``batch``'s latents and classes, from a seed of its own (so any batch can be redone)."""
    digest = hashlib.sha256(f"gan-saliency/synthesize/{seed}/{batch}".encode()).digest()
    rng = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    z = generator.sample_latents(size, rng)
    c = generator.sample_classes(size, rng, choices=classes) if generator.conditional else None
    return z, c


# ------------------------------------------------------------------------- bookkeeping
def empty_totals() -> dict:
    return {"candidates": 0, "kept": 0, "rejected": {name: 0 for name in REASONS.values()},
            "area_histogram_all": [0] * HISTOGRAM_BINS, "area_histogram_kept": [0] * HISTOGRAM_BINS,
            "truth_iou_sum": 0.0, "truth_pairs": 0, "seconds": 0.0}


# ------------------------------------------------------------------------------ the run
@dataclass
class _Job:
    """What a synthesis request resolves to, before any pair is made."""

    run_dir: Path
    generator_name: str
    options: dict
    generator: Generator
    device: torch.device
    ctx: distributed.Context
    precision: str
    direction: torch.Tensor
    magnitude: float
    rule: MaskRule
    out: Path
    classes: list[int] | None
    vote: dict | None
    batch_size: int
    with_truth: bool

    @property
    def shift(self) -> torch.Tensor:
        return (self.direction * self.magnitude).to(self.generator.device, self.generator.dtype)


def run_synthesize(config: SynthesizeConfig) -> dict:
    """Write ``config.count`` pairs into ``config.out``; returns the manifest."""
    config.validate()
    started = time.perf_counter()
    job = _resolve_job(config)
    fingerprint = _fingerprint(config, job)
    manifest_path = job.out / MANIFEST_NAME
    if _finished(manifest_path, config.count, fingerprint, job.ctx.world):
        return _skipped(manifest_path)
    part = _claim_part(config, job, fingerprint, manifest_path)
    shards, totals = _synthesize_part(config, job, part)
    distributed.barrier()
    if not job.ctx.is_main:
        return {"count": part.count, "rank": job.ctx.rank, "part": True}
    if job.ctx.distributed:
        shards, totals = _merge_parts(job.out, job.ctx.world)
    return _write_manifest(config, job, fingerprint, shards, totals, job.shift, manifest_path, started)


def _resolve_job(config: SynthesizeConfig) -> _Job:
    """Every input checked (and the class vote run) before the output folder's pairs are touched."""
    run_dir, summary, generator_name, options = _open_run(config)
    ctx = distributed.context()
    device = resolve_device(distributed.device_for(config.device, ctx))
    configure_device(device)
    precision = resolve_precision(config.precision, device)
    # the run records its weights relative to its own folder; the fingerprint keeps them so
    generator = build_generator(generator_name, device=device, **resolved_options(options, run_dir)).eval()
    direction, magnitude = _background_shift(config, run_dir, summary, generator)
    rule = _acceptance_rule(config, summary)
    out = ensure_writable_dir(config.out)
    classes, vote = _choose_classes(config, generator_name, generator, out, ctx)
    return _Job(run_dir=run_dir, generator_name=generator_name, options=options, generator=generator, device=device,
                ctx=ctx, precision=precision, direction=direction, magnitude=magnitude, rule=rule, out=out,
                classes=classes, vote=vote, batch_size=config.batch_size or DEFAULT_BATCH.get(generator_name, 256),
                with_truth=config.ground_truth and hasattr(generator, "forward_with_masks"))


def _open_run(config: SynthesizeConfig) -> tuple[Path, dict, str, dict]:
    """The discovery run's folder, summary, generator name and options; refuses an output inside any input."""
    run_dir = Path(config.run)
    refuse_output_in_inputs(config.out, {"--run": run_dir, "--data-root": resolve_data_root(config.data_root)
                                         / get_spec(config.dataset).folder, "--classifier-weights": config.classifier_weights})
    summary = load_run(run_dir)
    generator_name = generator_named_in_file(summary.get("generator"), run_dir / SUMMARY_NAME, config.generator)
    options = summary.get("generator_options") or {}
    if not isinstance(options, dict):
        raise UserError(f"{run_dir / SUMMARY_NAME}: generator_options is not an object")
    return run_dir, summary, generator_name, options


def _background_shift(config: SynthesizeConfig, run_dir: Path, summary: dict,
                      generator: Generator) -> tuple[torch.Tensor, float]:
    """The unit h_bg to shift along (the run's, or its column of A) and how far."""
    direction = load_background_direction(run_dir, summary, generator.latent_dim)
    if config.bg_vector == "column":
        direction = background_column(run_dir, summary, direction)
    bg = summary.get("bg_direction") or {}
    return direction, float(config.magnitude if config.magnitude is not None else bg["magnitude"])


def _acceptance_rule(config: SynthesizeConfig, summary: dict) -> MaskRule:
    """The mask rule; its threshold defaults to the one the run's h_bg was chosen with."""
    bg = summary.get("bg_direction") or {}
    rule = MaskRule(threshold=float(config.threshold if config.threshold is not None else bg.get("threshold", 0.95)),
                    min_area=config.min_area, max_area=config.max_area, strict_area=config.strict_area,
                    component_fraction=config.component_fraction, bimodal=config.bimodal)
    rule.validate()
    return rule


def _choose_classes(config: SynthesizeConfig, generator_name: str, generator: Generator, out: Path,
                    ctx: distributed.Context) -> tuple[list[int] | None, dict | None]:
    """(classes, vote): the given classes, or the vote's; none for an unconditional generator."""
    if not generator.conditional:
        return None, None
    if config.classes is not None:
        bad = [c for c in config.classes if not 0 <= c < generator.num_classes]
        if bad:
            raise ConfigError(f"`classes` {bad[0]} is out of range: {generator_name} has classes 0..{generator.num_classes - 1}")
        return sorted(set(config.classes)), None
    if ctx.is_main:  # rank 0 votes; the others then read its classes.json
        vote = vote_for_classes(config, generator_name, generator, out)
    distributed.barrier()
    if not ctx.is_main:
        vote = vote_for_classes(config, generator_name, generator, out)
    if not vote["classes"]:
        raise UserError("the class vote chose no class")
    return vote["classes"], vote


def _fingerprint(config: SynthesizeConfig, job: _Job) -> dict:
    """The settings that decide the pairs: a folder made with others is refused, not extended."""
    return {
        "generator": job.generator_name, "generator_options": job.options, "resolution": job.generator.resolution,
        "shift_sha256": hashlib.sha256(job.direction.numpy().tobytes()).hexdigest(), "magnitude": job.magnitude,
        "rule": job.rule.fingerprint(), "classes": job.classes, "batch_size": job.batch_size,
        "shard_size": config.shard_size, "seed": config.seed, "ground_truth": job.with_truth,
        "precision": job.precision,
    }


def _skipped(manifest_path: Path) -> dict:
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["skipped"] = True
    return manifest


@dataclass
class _Part:
    """This process's share of the request: all of OUT alone, else OUT/rank-RR."""

    folder: Path
    count: int
    fingerprint: dict
    shards: list[dict]  # the shards it already holds, verified


def _claim_part(config: SynthesizeConfig, job: _Job, fingerprint: dict, manifest_path: Path) -> _Part:
    """This process's part, with the shards it holds; the old manifest goes only once every
    rank has checked its part."""
    ctx = job.ctx
    # Each process fills its own part: all of OUT alone, else OUT/rank-RR with its share of n
    # and every world-th batch, so the parts hold disjoint latents and add up to exactly n.
    if ctx.distributed:
        work = ensure_writable_dir(job.out / f"rank-{ctx.rank:02d}")
        part_count = config.count // ctx.world + (1 if ctx.rank < config.count % ctx.world else 0)
        part_fingerprint = {**fingerprint, "world": ctx.world, "rank": ctx.rank}
    else:
        work, part_count, part_fingerprint = job.out, config.count, fingerprint
    previous = load_progress(work, part_fingerprint)  # refuses other settings before anything changes
    held = sum(int(e["count"]) for e in previous)
    if held > part_count:
        raise ConfigError(f"{work} already holds {held} pairs, more than `count` {config.count}; use another `out`")
    distributed.barrier()
    if ctx.is_main:
        manifest_path.unlink(missing_ok=True)
    return _Part(work, part_count, part_fingerprint, previous)


def _write_manifest(config: SynthesizeConfig, job: _Job, fingerprint: dict, shards: list[dict], totals: dict,
                    shift: torch.Tensor, manifest_path: Path, started: float) -> dict:
    """The preview, then manifest.json: written last, so its presence means the folder is complete."""
    manifest = _manifest(config, job, shards, totals)
    manifest["processes"] = job.ctx.world
    manifest["precision"] = job.precision
    manifest["fingerprint_sha256"] = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    if config.preview > 0:
        _save_preview(job.generator, job.out, shards, manifest, shift, config.preview)
        manifest["preview"] = PREVIEW_NAME
    manifest["wall_seconds_this_call"] = round(time.perf_counter() - started, 2)
    write_json(manifest_path, manifest)
    return manifest


def _finished(manifest_path: Path, count: int, fingerprint: dict, world: int) -> bool:
    """A manifest for exactly this request (count, settings, number of processes)."""
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(manifest, dict):
        return False
    if manifest.get("count") != count or manifest.get("processes", 1) != world:
        return False
    expected = fingerprint if world == 1 else None
    if expected is not None and "fingerprint_sha256" in manifest:
        return manifest["fingerprint_sha256"] == hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()
    # Distributed manifests (whose parts hold the per-rank fingerprints) are checked through
    # progress records when the run continues; here the count decides.
    return True


def _too_few_kept(totals: dict) -> str:
    rejected = ", ".join(f"{n:,} {reason.replace('_', ' ')}" for reason, n in totals["rejected"].items() if n)
    return (f"only {totals['kept']:,} of the first {totals['candidates']:,} candidates passed the filters "
            f"(rejected: {rejected}; under {MIN_ACCEPTANCE:.1%} kept): the run's h_bg does not whiten a "
            "background here; check it (directions.json, bg_candidates.png) or --threshold, --shift, "
            "--min-area and --max-area")


def _synthesize_part(config: SynthesizeConfig, job: _Job, part: _Part) -> tuple[list[dict], dict]:
    """Fill the part's folder with its count of pairs, continuing from its verified shards;
    returns (shards, totals)."""
    generator, ctx, batch_size, shards, count = job.generator, job.ctx, job.batch_size, part.shards, part.count
    shift = job.shift
    done = sum(int(e["count"]) for e in shards)
    discard_unlisted_shards(part.folder, shards)
    # A shard that was the last of a smaller run is complete but short; from here on the
    # run extends it like any other, so positions and totals continue from its snapshot.
    totals = json.loads(json.dumps(shards[-1]["totals"])) if shards else empty_totals()
    batch, row = (shards[-1]["position"]["batch"], shards[-1]["position"]["row"]) if shards else (0, 0)
    if done == count:
        return shards, totals
    filler = _ShardFiller(ShardWriter(part.folder, part.fingerprint, shards), totals, done, count, config.shard_size)
    desc = "synthesize" if not ctx.distributed else f"synthesize [rank {ctx.rank}]"
    with filler.writer, progress_bar(count, desc, enabled=config.progress and ctx.is_main, initial=done,
                                     unit="pair") as bar:
        while filler.collected < count:
            global_batch = batch * ctx.world + ctx.rank  # disjoint seeds across processes
            z, c = batch_latents(generator, config.seed, global_batch, batch_size, job.classes)
            pairs = synthesize_batch(generator, z, c, shift, job.rule, with_truth=job.with_truth,
                                     precision=job.precision)
            _fill_from_batch(filler, pairs, z, c, (batch, row), global_batch, batch_size, bar)
            batch, row = batch + 1, 0
            bar.set_postfix(acceptance=f"{totals['kept'] / max(1, totals['candidates']):.2f}", refresh=False)
            redraw_if_due(bar)  # a line now and then also while batches keep no pair
            _give_up_if_hopeless(filler)
        filler.writer.close()
    return shards, totals


class _ShardFiller:
    """Kept pairs on their way into shards: each full shard (and the last, short one) goes to
    the writer with the position to resume from and a snapshot of the totals."""

    def __init__(self, writer: ShardWriter, totals: dict, done: int, count: int, shard_size: int) -> None:
        self.writer, self.totals, self.count, self.shard_size = writer, totals, count, shard_size
        self.seconds_before = totals["seconds"]
        self.started = time.perf_counter()
        self.buffer = PairBuffer()
        self.written = done

    @property
    def collected(self) -> int:
        return self.written + self.buffer.size

    def room(self) -> int:
        """Pairs the current shard still takes; 0 once all ``count`` are collected."""
        return min(self.shard_size - self.buffer.size, self.count - self.collected)

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        self.buffer.add(**arrays)

    def flush_if_due(self, position: tuple[int, int]) -> None:
        if self.buffer.size == self.shard_size or self.collected == self.count:
            self.flush(position)

    def flush(self, position: tuple[int, int]) -> None:
        arrays = self.buffer.take()
        self.totals["seconds"] = round(self.seconds_before + time.perf_counter() - self.started, 3)
        self.writer.submit(arrays, {"batch": position[0], "row": position[1]}, json.loads(json.dumps(self.totals)))
        self.written += len(arrays["index"])


def _fill_from_batch(filler: _ShardFiller, pairs, z, c, position: tuple[int, int], global_batch: int,
                     batch_size: int, bar) -> None:
    """Hand the batch's kept rows from ``position`` on to ``filler``, one shard's worth at a time.
    Candidates count up to the last row taken, so each shard's totals match its position; once
    all pairs are collected the rest of the batch is never looked at."""
    batch, row = position
    reasons = pairs.judged.reasons.cpu()
    kept_rows = torch.nonzero(reasons == KEPT).flatten()
    kept_rows = kept_rows[kept_rows >= row]
    need = filler.room()
    while need:
        take = kept_rows[:need]
        end = int(take[-1]) + 1 if len(take) == need else batch_size
        _account(filler.totals, pairs, reasons, row, end, take)
        if len(take):
            filler.add(_kept_arrays(pairs, z, c, take, global_batch, batch_size))
            bar.update(len(take))
        kept_rows = kept_rows[len(take):]
        filler.flush_if_due((batch + 1, 0) if end == batch_size else (batch, end))
        if end == batch_size:
            return
        row, need = end, filler.room()


def _give_up_if_hopeless(filler: _ShardFiller) -> None:
    """Stop with a reason once the acceptance shows the filters will practically never fill the count."""
    totals = filler.totals
    if (filler.collected < filler.count and totals["candidates"] >= GIVE_UP_AFTER
            and totals["kept"] < MIN_ACCEPTANCE * totals["candidates"]):
        raise UserError(_too_few_kept(totals))


def _merge_parts(out: Path, world: int) -> tuple[list[dict], dict]:
    """Rank 0, after the barrier: the union of every rank's shards and totals."""
    shards: list[dict] = []
    totals = empty_totals()
    for rank in range(world):
        folder = f"rank-{rank:02d}"
        progress = json.loads((out / folder / PROGRESS_NAME).read_text(encoding="utf-8"))
        part = progress["shards"]
        shards += [{**entry, "file": f"{folder}/{entry['file']}"} for entry in part]
        if part:
            last = part[-1]["totals"]
            for key in ("candidates", "kept", "truth_iou_sum", "truth_pairs"):
                totals[key] += last[key]
            for key in totals["rejected"]:
                totals["rejected"][key] += last["rejected"][key]
            for key in ("area_histogram_all", "area_histogram_kept"):
                totals[key] = [a + b for a, b in zip(totals[key], last[key])]
            totals["seconds"] = max(totals["seconds"], last["seconds"])
    return shards, totals


def _account(totals: dict, pairs, reasons: torch.Tensor, start: int, end: int, take: torch.Tensor) -> None:
    """Add candidates ``start:end`` of a batch to the running totals."""
    if end <= start:
        return
    seen = reasons[start:end]
    areas = pairs.judged.areas[start:end].cpu()
    totals["candidates"] += int(end - start)
    totals["kept"] += int(len(take))
    for code, name in REASONS.items():
        totals["rejected"][name] += int((seen == code).sum())
    totals["area_histogram_all"] = (np.asarray(totals["area_histogram_all"]) + area_histogram(areas)).tolist()
    if len(take):
        kept_areas = pairs.judged.areas.cpu()[take]
        totals["area_histogram_kept"] = (np.asarray(totals["area_histogram_kept"]) + area_histogram(kept_areas)).tolist()
        if pairs.truth is not None:
            ious = mask_iou(pairs.judged.masks[take.to(pairs.judged.masks.device)],
                            pairs.truth[take.to(pairs.truth.device)])
            totals["truth_iou_sum"] += float(ious.double().sum())
            totals["truth_pairs"] += int(len(take))


def _kept_arrays(pairs, z, c, take: torch.Tensor, batch: int, batch_size: int) -> dict[str, np.ndarray]:
    rows = take.to(pairs.images_u8.device)
    return {
        "images": pairs.images_u8[rows].cpu().numpy(),
        "masks": pairs.judged.masks[rows].cpu().numpy(),
        "latents": z[take.to(z.device)].float().cpu().numpy(),
        "classes": (c[take.to(c.device)].cpu().numpy() if c is not None else np.full(len(take), -1, dtype=np.int64)),
        "index": (batch * batch_size + take).numpy().astype(np.int64),
    }


def _manifest(config: SynthesizeConfig, job: _Job, shards: list[dict], totals: dict) -> dict:
    rule, generator = job.rule, job.generator
    count = sum(int(e["count"]) for e in shards)
    edges = [round(i / HISTOGRAM_BINS, 3) for i in range(HISTOGRAM_BINS + 1)]
    return {
        "format": DATASET_FORMAT,
        "count": count,
        "acceptance_rate": round(totals["kept"] / max(1, totals["candidates"]), 4),
        "candidates": totals["candidates"],
        "kept": totals["kept"],
        "rejected": totals["rejected"],
        "area_histogram": {"edges": edges, "all": totals["area_histogram_all"], "kept": totals["area_histogram_kept"]},
        "classes": job.classes,
        "class_vote": CLASSES_NAME if job.vote is not None else None,
        "threshold": rule.threshold,
        "shift": job.magnitude,
        "min_area": rule.min_area,
        "max_area": rule.max_area,
        "strict_area": rule.strict_area,
        "bg_vector": config.bg_vector,
        "filters": {"component_fraction": rule.component_fraction,
                    "bimodal_min": rule.bimodal_min if rule.bimodal else None},
        "generator": job.generator_name,
        "generator_options": rebased_options(job.options, job.run_dir, job.out),
        "run": record_path(job.run_dir, job.out),  # relative to this folder, as every path a run records
        "height": generator.resolution,
        "width": generator.resolution,
        "latent_dim": generator.latent_dim,
        "layout": {"images": "uint8 (n, H, W, 3)", "masks": "uint8 (n, ceil(H*W/8)), np.packbits of the row-major mask",
                   "latents": "float32 (n, d)", "classes": "int64 (n,), -1 if unconditional",
                   "index": "int64 (n,), batch * batch_size + row"},
        "seed": config.seed,
        "batch_size": job.batch_size,
        "shard_size": config.shard_size,
        "shards": [{"file": e["file"], "count": e["count"], "sha256": e["sha256"]} for e in shards],
        "seconds": totals["seconds"],
        "device": str(job.device),
        "ground_truth": ({"mask_iou": round(totals["truth_iou_sum"] / max(1, totals["truth_pairs"]), 4),
                          "pairs": totals["truth_pairs"]} if job.with_truth else None),
    }


def _save_preview(generator: Generator, out: Path, shards: list[dict], manifest: dict, shift: torch.Tensor,
                  count: int) -> None:
    """Rows: images, shifted images, masks (the paper's Figure 10), re-rendered from stored latents."""
    first = read_shard(out / shards[0]["file"], manifest["height"], manifest["width"])
    k = min(count, len(first.index))
    z = torch.from_numpy(first.latents[:k]).to(generator.device, generator.dtype)
    c = torch.from_numpy(first.classes[:k]).to(generator.device) if generator.conditional else None
    with torch.inference_mode():
        shifted = generator(z + shift, c).float().cpu().expand(-1, 3, -1, -1)
    images = torch.from_numpy(first.images[:k]).permute(0, 3, 1, 2).float() / 255
    masks = torch.from_numpy(first.masks[:k]).float().unsqueeze(1).expand(-1, 3, -1, -1)
    save_grid(torch.cat([images, shifted, masks]), out / PREVIEW_NAME, nrow=k)
