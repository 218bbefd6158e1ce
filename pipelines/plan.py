"""``saliency pipeline --plan``: what a run will cost, measured on this machine before it starts.

Every stage is built at its real sizes on the chosen device and a few of its steps are timed
with the stage's own code (discovery steps, a synthesis batch, U-Net steps, held-out scoring,
an evaluation batch); the phases that end a stage (RCA, effects, charts, the h_bg search and
refinement, the vote) are timed on a part and scaled to the whole. Weights that are not on disk
are replaced by random ones in the real architecture (the same arithmetic), and the plan says
so. A batch that runs out of memory is halved until one fits, and the plan names it.

The plan writes ``OUT/plan.json`` and nothing else there (its measurements run in a temporary
folder), downloads nothing, and lists what the run would download first.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from saliency.core.artifacts import ensure_writable_dir, write_json
from saliency.core.errors import UserError

PLAN_NAME = "plan.json"
ECSSD_IMAGES = 1000  # the benchmark's size; its photographs are about 400 x 300
RENDERED_SCENES = 500  # stage 4's rendered-scenes test set (embedded profile)


@dataclass
class PlanRow:
    """One phase of one stage: a measured cost per unit, times how many units the run has."""

    stage: str
    phase: str
    unit: str
    seconds_per_unit: float | None
    count: int
    batch: int | None = None
    peak_memory: int | None = None  # bytes: GPU memory allocated on CUDA, resident memory on a CPU
    disk: int = 0  # bytes the phase's outputs take
    note: str = ""
    done: int = 0  # units OUT already holds (a finished stage: all; a checkpoint: its steps)

    @property
    def left(self) -> int:
        return max(0, self.count - self.done)

    @property
    def seconds(self) -> float | None:
        """The time of the units left to do."""
        return None if self.seconds_per_unit is None else self.seconds_per_unit * self.left

    @property
    def disk_left(self) -> int:
        """What is still to be written: nothing for a phase done; the pairs' share still to come
        (shards grow with the count); else all of it (a checkpoint, a model, charts)."""
        if not self.left:
            return 0
        return round(self.disk * self.left / self.count) if self.phase == "pairs" else self.disk

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds": None if self.seconds is None else round(self.seconds, 3),
                "seconds_per_unit": None if self.seconds_per_unit is None else round(self.seconds_per_unit, 6),
                "disk_left": self.disk_left}


@dataclass
class OutOfMemory:
    stage: str
    batch: int
    fits: int


@dataclass
class PlanContext:
    config: object  # PipelineConfig
    profile: object  # PipelineProfile
    device: torch.device
    tmp: Path
    data_root: Path
    notes: list[str] = field(default_factory=list)
    random_weights: list[str] = field(default_factory=list)
    out_of_memory: list[OutOfMemory] = field(default_factory=list)
    generator_options: dict = field(default_factory=dict)
    vote_needed: bool = False
    authors_weights: str = ""  # the fetch-weights name of the authors' BigGAN-128


# ---------------------------------------------------------------------------------------------
# measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn: Callable[[], object], device: torch.device, min_calls: int = 2, min_seconds: float = 1.0,
                  max_calls: int = 20, warm_up: int = 1) -> float:
    """Seconds per call of ``fn`` after ``warm_up`` calls: at least ``min_calls``, and more
    while under ``min_seconds`` (at most ``max_calls``)."""
    for _ in range(warm_up):
        fn()
    synchronize(device)
    calls, started = 0, time.perf_counter()
    while calls < min_calls or (time.perf_counter() - started < min_seconds and calls < max_calls):
        fn()
        calls += 1
    synchronize(device)
    return (time.perf_counter() - started) / calls


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``."""
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


class PeakMemory:
    """The peak memory of the block: CUDA's allocator peak, or this process's peak resident set
    (Linux: reset through /proc/self/clear_refs; elsewhere the peak since the process began)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.bytes = device, None

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self.bytes = resident_peak()


CPU_TIMED_BATCH = 32


def proc_kilobytes(path: str, field_name: str) -> int | None:
    """A ``NAME: N kB`` field of a Linux /proc file, in bytes (None elsewhere)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resident_now() -> int | None:
    return proc_kilobytes("/proc/self/status", "VmRSS")


def available_memory() -> int | None:
    """Memory the machine can still give (Linux's MemAvailable), in bytes."""
    return proc_kilobytes("/proc/meminfo", "MemAvailable")


def resident_peak() -> int | None:
    peak = proc_kilobytes("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        return None


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text)


def fitting_batch(ctx: PlanContext, stage: str, batch: int, measure: Callable[[int], object]):
    """``measure(batch)``, halving the batch while it runs out of memory; returns (batch, result)."""
    tried = batch
    while True:
        try:
            result = measure(tried)
        except Exception as exc:  # noqa: BLE001 - only running out of memory is handled
            if not is_out_of_memory(exc) or tried <= 1:
                raise
            gc.collect()
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
            tried //= 2
            continue
        if tried != batch:
            ctx.out_of_memory.append(OutOfMemory(stage, batch, tried))
        return tried, result


PHASE_SECONDS = 3.0  # about how long each part of a phase is timed for (on a CPU; twice that on a GPU)


def afford(unit_seconds: float, budget: float, least: int, most: int) -> int:
    """How many units fit in ``budget`` seconds, between ``least`` and ``most``."""
    return max(min(least, most), min(most, int(budget / max(unit_seconds, 1e-9))))


def image_seconds(generator, device: torch.device, batch: int = 16) -> float:
    """Seconds per image of ``generator``'s forward at a small batch (the scale of every phase
    that renders images)."""
    rng = torch.Generator().manual_seed(0)
    z, classes = generator.sample_latents(batch, rng), generator.sample_classes(batch, rng)
    with torch.no_grad():
        return time_per_call(lambda: generator(z, classes), device, min_calls=1, min_seconds=0.5) / batch


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob(pattern) if p.is_file())


def state_bytes(*modules: torch.nn.Module, adam: bool = True) -> int:
    """A training checkpoint's size: every tensor of the modules, and Adam's two moments of
    each trainable parameter."""
    total = 0
    for module in modules:
        total += sum(t.numel() * t.element_size() for t in module.state_dict().values())
        if adam:
            total += 2 * sum(p.numel() * 4 for p in module.parameters() if p.requires_grad)
    return total


# ---------------------------------------------------------------------------------------------
# weights: the real ones when on disk, else random ones in the real file format


def generator_weights(ctx: PlanContext) -> tuple[dict, Callable | None]:
    """The generator options the run would use, and when its weights are not on disk, a factory
    for the real architecture with random weights (built in memory, never written)."""
    config, name = ctx.config, ctx.profile.generator
    options = {"weights": config.weights} if config.weights else {}
    if name == "biggan-deep-128":
        if biggan_deep_on_disk(config.weights):
            return options, None
        ctx.random_weights.append("BigGAN-deep-128 (the generator)")
        return {}, random_biggan_deep
    if name == "biggan-128":
        from saliency.downloads.weights import installed_path

        path = config.weights or installed_path(ctx.authors_weights)
        if Path(path).is_file():
            return {"weights": str(path)}, None
        ctx.random_weights.append("the authors' BigGAN-128 (the generator)")
        return {}, random_biggan128
    return options, None


def biggan_deep_on_disk(weights: str | None) -> bool:
    """Whether BigGAN-deep-128's two files are in ``weights`` or in huggingface_hub's cache,
    looked up on disk only (the hub's own download call reaches for the network even when told
    to read the cache)."""
    from directions.generators import biggan

    if weights is not None:
        biggan.resolve_weight_files(weights)  # a folder the user named: one line if it lacks a file
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    record = biggan._read_digest_record()
    revision = record["revision"] if record else biggan.HUB_REVISION
    cache = os.environ.get("HF_HUB_CACHE") or None
    return all(isinstance(try_to_load_from_cache(biggan.HUB_REPO, name, cache_dir=cache, revision=revision), str)
               for name in (biggan.CONFIG_NAME, biggan.WEIGHTS_NAME))


def random_biggan_deep(weights: str | None = None, truncation: float = 0.4):
    """BigGAN-deep-128 with random weights. The package's random init leaves the last batch
    norm's affine parameters unset (NaN images): identity here; and a few power iterations
    make the spectral norms consistent, so the images are finite."""
    import torch.nn.functional as F
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    from directions.generators.biggan import BigGANDeep

    torch.manual_seed(0)
    config = BigGANConfig()
    model = BigGAN(config)
    with torch.no_grad():
        model.generator.bn.weight.fill_(1.0)
        model.generator.bn.bias.zero_()
        model.train()
        one_hot = F.one_hot(torch.tensor([0, 1]), config.num_classes).float()
        for _ in range(3):
            model(torch.randn(2, config.z_dim), one_hot, truncation)
    return BigGANDeep(model.eval(), truncation=truncation)


def random_biggan128(weights: str | None = None, truncation: float | None = None):
    from directions.generators.biggan_pytorch import BigGAN128

    torch.manual_seed(0)
    return BigGAN128(truncation=truncation)


def downloads(ctx: PlanContext, vote_needed: bool, architecture, encoder: bool = True) -> list[dict]:
    """What the run would fetch before stage 1 (nothing is fetched here); ``encoder``: whether
    the U-Net is still to train (a finished one needs no encoder weights)."""
    from saliency.downloads.prefetch import classifier_weights, dataset_need, encoder_weights, weights_need

    config, profile = ctx.config, ctx.profile
    needs = [dataset_need("ecssd", ctx.data_root, progress=False),
             weights_need(classifier_weights(config.classifier, profile.generator), progress=False)
             if vote_needed and config.classifier_weights is None else None,
             weights_need(encoder_weights(architecture), progress=False) if encoder else None]
    found = [{"what": n.what, "from": n.url or "a local mirror", "into": n.where.name} for n in needs if n]
    if "BigGAN-deep-128 (the generator)" in ctx.random_weights:
        from directions.generators.biggan import HUB_REPO

        found.insert(0, {"what": "weights biggan-deep-128", "from": f"https://huggingface.co/{HUB_REPO}",
                         "into": "huggingface_hub's cache"})
    if "the authors' BigGAN-128 (the generator)" in ctx.random_weights:
        need = weights_need(ctx.authors_weights, progress=False)
        if need is not None:
            found.insert(0, {"what": need.what, "from": need.url or "a local mirror", "into": need.where.name})
    return found


# ---------------------------------------------------------------------------------------------
# the stages


def plan_discover(ctx: PlanContext) -> tuple[list[PlanRow], dict]:
    """Stage 1: the game's steps at the profile's batch; then RCA, effects, charts and the h_bg
    search and refinement, each timed on a part of its work and scaled to the whole."""
    from directions import background as bg
    from directions.charts import save_direction_charts
    from directions.discovery import game_optimizers, play_step, reconstructor_accuracy
    from directions.effects import direction_effects
    from directions.ground_truth import background_report, factor_table, has_ground_truth
    from pipelines.discover import DiscoverConfig, build_game

    config, profile, device = ctx.config, ctx.profile, ctx.device
    discover = DiscoverConfig(generator=profile.generator, out=ctx.tmp / "discover", device=str(device),
                              steps=config.discover_steps or profile.discover_steps, precision=config.precision,
                              generator_options=ctx.generator_options, refine_bg=profile.refine_bg, progress=False)
    rows: list[PlanRow] = []
    with PeakMemory(device) as memory:
        game = build_game(discover, device, 1)
        settings, generator = game.settings, game.generator
        deformator = game.deformator.to(generator.device).train()
        reconstructor = game.reconstructor.to(generator.device).train()
        optimizers = game_optimizers(deformator, reconstructor, settings)
        rng = torch.Generator().manual_seed(0)

        def measure(batch: int) -> float:
            def step():
                losses = play_step(game.game_generator, deformator, reconstructor, optimizers, rng, batch, settings)
                [t.item() for t in losses]  # the loop reads them every step
            return time_per_call(step, device)

        batch, per_step = fitting_batch(ctx, "discover", settings.batch_size, measure)
    steps = settings.steps
    checkpoint = state_bytes(deformator, reconstructor)
    rows.append(PlanRow("discover", "training", "step", per_step * settings.batch_size / batch, steps,
                        settings.batch_size, memory.bytes, checkpoint,
                        f"K {game.profile.num_directions}, {game.profile.reconstructor}, {settings.precision}"))

    k_total = game.profile.num_directions
    directions = deformator.directions().detach()
    # What one image costs this generator sizes each part below to about PHASE_SECONDS.
    per_image = image_seconds(generator, device)
    budget = PHASE_SECONDS if device.type == "cpu" else 2 * PHASE_SECONDS
    with PeakMemory(device) as memory:
        # RCA: 20 batches re-estimate R's batch norms, then rca_samples are scored (two images each).
        samples = afford(per_image * 2, budget, 16, discover.rca_samples)
        seconds = timed(lambda: reconstructor_accuracy(game.game_generator, deformator, reconstructor, settings,
                                                       samples=samples, batch_size=min(samples, 128),
                                                       calibration_batches=0), device)
    rca_images = discover.rca_samples + 20 * settings.batch_size
    rows.append(PlanRow("discover", "final RCA", "sample", seconds / samples, rca_images, None, memory.bytes,
                        note=f"{discover.rca_samples} samples after 20 batches re-estimate R's batch norms"))
    if discover.effects:  # 32 images a direction
        part = directions[:, :afford(per_image * 32, budget, 1, k_total)]
        with PeakMemory(device) as memory:
            seconds = timed(lambda: direction_effects(generator, part, shift=settings.shift_scale), device)
        rows.append(PlanRow("discover", "effects", "direction", seconds / (part.shape[1] + 1), k_total + 1, None,
                            memory.bytes))
    if discover.charts:  # 5 samples x 9 shifts a direction
        part = directions[:, :afford(per_image * 45, budget, 1, k_total)]
        charts = ctx.tmp / "charts"
        with PeakMemory(device) as memory:
            seconds = timed(lambda: save_direction_charts(generator, part, charts, progress=False), device)
        per_chart = folder_bytes(charts, "direction_*.png") / part.shape[1]
        overview = folder_bytes(charts, "overview.png") * k_total / part.shape[1]
        rows.append(PlanRow("discover", "charts", "direction", seconds / part.shape[1], k_total, None, memory.bytes,
                            int(per_chart * k_total + overview)))
    if game.profile.bg_search or config.bg_direction is not None:
        criterion = bg.BackgroundCriterion()
        magnitudes = len(bg.DEFAULT_MAGNITUDES)
        with PeakMemory(device) as memory:  # every sample: the image, and per sign and magnitude a shifted one
            samples = afford(per_image * (1 + 2 * magnitudes), budget, 4, discover.bg_samples)
            z, classes = bg.evaluation_batch(generator, samples, seed=1)
            one = directions[:, :1]
            seconds = timed(lambda: bg.rank_directions(generator, one, z, classes, criterion), device)
        # the search ranks K directions, then scores the best (and the refined one) on held-out
        # samples, about two directions' work more
        per_direction = seconds * discover.bg_samples / samples
        searched = k_total if config.bg_direction is None else 1
        rows.append(PlanRow("discover", "h_bg search", "direction", per_direction, searched + 2, None, memory.bytes,
                            note=f"{discover.bg_samples} samples, {magnitudes} magnitudes"))
        if discover.refine_bg and discover.refine_steps > 0 and config.bg_direction is None:
            few = afford(per_image * 32 * 6, budget, 2, discover.refine_steps)  # 32 pairs, forward and backward
            with PeakMemory(device) as memory:
                seconds = timed(lambda: bg.refine_direction(generator, directions[:, 0], 6.0, criterion, steps=few),
                                device)
            rows.append(PlanRow("discover", "h_bg refinement", "step", seconds / few, discover.refine_steps, None,
                                memory.bytes))
        if has_ground_truth(generator):
            with PeakMemory(device) as memory:
                seconds = timed(lambda: background_report(generator, directions[:, 0], 6.0, z, classes, criterion),
                                device) * discover.bg_samples / samples
                seconds += timed(lambda: factor_table(generator, directions), device)
            rows.append(PlanRow("discover", "ground truth", "run", seconds, 1, None, memory.bytes))
    facts = {"batch_size": settings.batch_size, "directions": k_total, "precision": settings.precision,
             "latent_dim": generator.latent_dim}
    return rows, facts


def plan_synthesize(ctx: PlanContext, pairs: int) -> tuple[list[PlanRow], Path]:
    """Stage 2: the class vote on part of the train split, then the stage itself on two batches
    of a random direction (every candidate kept: random directions make no real masks)."""
    from directions.generators import build_generator
    from directions.run_folder import write_known_direction_run
    from pipelines.synthesize import DEFAULT_BATCH, SynthesizeConfig, run_synthesize
    from saliency.classifiers import build_classifier, default_classifier
    from saliency.datasets import open_dataset
    from saliency.voting import count_votes

    config, profile, device = ctx.config, ctx.profile, ctx.device
    rows: list[PlanRow] = []
    generator = build_generator(profile.generator, device=device, **ctx.generator_options)
    conditional = generator.num_classes is not None and generator.num_classes > 1
    ctx.vote_needed = conditional and config.classes is None
    if ctx.vote_needed:
        name = config.classifier or default_classifier(profile.generator)[0]
        try:
            started = time.perf_counter()
            dataset = open_dataset("ecssd", ctx.data_root, "train")
            classifier = build_classifier(name, config.classifier_weights)
            set_up = time.perf_counter() - started
        except UserError as exc:
            ctx.notes.append(f"the class vote is not timed ({exc})")
        else:
            with PeakMemory(device) as memory:
                model = classifier.model.to(device)
                count = min(len(dataset), 16 if device.type == "cpu" else 128)

                def vote():
                    images = torch.stack([classifier.preprocess(dataset.image(i)) for i in range(count)])
                    count_votes(model, [images], classifier.num_classes, 5, device)
                seconds = time_per_call(vote, device, min_calls=1, min_seconds=0.0)
            rows.append(PlanRow("synthesize", f"class vote ({name})", "image", seconds / count, len(dataset), 32,
                                memory.bytes))
            rows.append(PlanRow("synthesize", "class vote set-up", "run", set_up, 1,
                                note="the train split's file list and the classifier's weights read"))
    classes = None if not conditional else (config.classes or list(range(min(10, generator.num_classes))))
    batch = DEFAULT_BATCH.get(profile.generator, 256)
    direction = torch.randn(generator.latent_dim, generator=torch.Generator().manual_seed(0))
    run = write_known_direction_run(ctx.tmp / "run", profile.generator, direction / direction.norm(),
                                    profile.shift or 6.0, generator_options=ctx.generator_options)
    del generator
    out = ctx.tmp / "synthesize"

    def measure(size: int) -> tuple[float, float, dict]:
        """One batch, then two: the difference is a batch in steady state, the rest set-up."""
        import shutil

        walls = []
        for batches in (1, 2):
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            manifest = run_synthesize(SynthesizeConfig(run=run, count=batches * size, out=out,
                                                       data_root=ctx.data_root, classes=classes, device=str(device),
                                                       precision=config.precision, min_area=0.0, max_area=1.0,
                                                       batch_size=size, progress=False))
            walls.append(time.perf_counter() - started)
        per_pair = (walls[1] - walls[0]) / size if walls[1] > walls[0] else walls[1] / (2 * size)
        return per_pair, max(0.0, walls[0] - size * per_pair), manifest

    # A CPU that runs out of memory is killed, not told: there the batch is timed at most at
    # CPU_TIMED_BATCH, and its memory projected to the real batch against what the machine has.
    timed_batch = batch if device.type != "cpu" else min(batch, CPU_TIMED_BATCH)
    gc.collect()
    baseline = resident_now() or 0
    with PeakMemory(device) as memory:
        fitted, (per_pair, fixed, manifest) = fitting_batch(ctx, "synthesize", timed_batch, measure)
    peak, note = memory.bytes, "every candidate kept; rejected ones cost as much again"
    if fitted == timed_batch < batch and peak:
        per_sample = max(peak - baseline, 0) / timed_batch
        peak = int(baseline + per_sample * batch)
        note += f"; timed at batch {timed_batch}, memory projected to {batch}"
        available = available_memory()
        if available and per_sample > 0 and peak - baseline > available:
            fits = max(1, 2 ** int(math.log2(max(1.0, available / per_sample))))
            ctx.out_of_memory.append(OutOfMemory("synthesize", batch, min(fits, batch)))
        fitted = batch
    per_pair_disk = folder_bytes(out, "shard-*.safetensors") / manifest["count"]
    rows.append(PlanRow("synthesize", "pairs", "pair", per_pair, pairs, fitted, peak,
                        int(per_pair_disk * pairs + folder_bytes(out, "preview.png")), note))
    rows.append(PlanRow("synthesize", "set-up and preview", "run", fixed, 1))
    return rows, out


def plan_unet(ctx: PlanContext, data: Path, pairs: int, per_pair: float | None) -> tuple[list[PlanRow], Path, dict]:
    """Stage 3: the profile's U-Net, optimiser steps on batches of the synthesized pairs held in
    memory (the loader's workers prepare the next batch meanwhile), and the held-out scoring."""
    from pipelines.train_unet import TrainUNetConfig, resolve
    from saliency.core.runtime import resolve_precision
    from saliency.shards import SyntheticPairs
    from saliency.training import build_training, train_step, set_training_mode, validate
    from saliency.unet import converted_encoder_weights, save_model

    config, profile, device = ctx.config, ctx.profile, ctx.device
    name, arch, settings = resolve(TrainUNetConfig(data=data, out=ctx.tmp / "unet", profile=profile.unet_profile,
                                                   steps=config.unet_steps, encoder=config.encoder,
                                                   encoder_weights=config.encoder_weights,
                                                   freeze_encoder=config.freeze_encoder, stream=profile.stream),
                                   {"count": pairs, "generator": profile.generator})
    settings = replace(settings, precision=resolve_precision(config.precision, device, cpu_bf16=True))
    if arch.encoder_weights is not None:
        try:
            converted_encoder_weights(arch)
        except UserError:
            ctx.random_weights.append(f"the U-Net's {arch.encoder} encoder (ImageNet weights)")
            arch = replace(arch, encoder_weights=None)
    stored = SyntheticPairs(data)
    rows: list[PlanRow] = []

    def measure(batch: int):
        net, optimizer, schedule = build_training(arch, replace(settings, batch_size=batch), device)
        set_training_mode(net, settings.freeze_encoder)
        chosen = [stored[i % len(stored)] for i in range(batch)]
        images = torch.from_numpy(np.stack([row[0] for row in chosen]))
        masks = torch.from_numpy(np.stack([row[1] for row in chosen]))
        seconds = time_per_call(lambda: train_step(net, optimizer, schedule, images, masks, device, settings),
                                device)
        return net, optimizer, seconds

    with PeakMemory(device) as memory:
        batch, (net, optimizer, per_step) = fitting_batch(ctx, "unet", settings.batch_size, measure)
    per_step = per_step * settings.batch_size / batch
    note = f"{arch.encoder}, {settings.precision}"
    if profile.stream:  # every step draws its batch from the generator
        note += "; each step also renders its batch (timed in stage 2)"
        per_step += settings.batch_size * (per_pair or 0.0)
    model_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    rows.append(PlanRow("unet", "training", "step", per_step, settings.steps, settings.batch_size, memory.bytes,
                        model_bytes + state_bytes(net), note))
    budget = PHASE_SECONDS if device.type == "cpu" else 2 * PHASE_SECONDS
    held_out = afford(per_step / settings.batch_size / 3, budget, 16, min(len(stored), settings.val_count))
    with PeakMemory(device) as memory:
        seconds = timed(lambda: validate(net, stored, np.arange(held_out), device, settings.temperature,
                                         freeze_encoder=settings.freeze_encoder), device)
    scorings = math.ceil(settings.steps / settings.val_every)
    rows.append(PlanRow("unet", "held-out scoring", "pair", seconds / held_out, scorings * settings.val_count, None,
                        memory.bytes, note=f"{settings.val_count} pairs, {scorings} times"))
    folder = ctx.tmp / "model"
    save_model(folder, net.eval(), arch, {"data": {"generator": profile.generator,
                                                   "resolution": [stored.height, stored.width]}})
    return rows, folder, {"batch_size": settings.batch_size, "steps": settings.steps, "encoder": arch.encoder}


def plan_eval(ctx: PlanContext, model: Path) -> list[PlanRow]:
    """Stage 4: ECSSD's images through the detector and the metrics (random photographs of
    ECSSD's size when the dataset is not on disk); the rendered scenes for the embedded profile."""
    from pipelines.evaluate import EvalConfig, run_eval
    from saliency.datasets import open_dataset
    from saliency.detector import SaliencyDetector
    from saliency.scoring import EvalSample, folder_samples, score_samples

    config, profile, device = ctx.config, ctx.profile, ctx.device
    rows: list[PlanRow] = []
    detector = SaliencyDetector.load(model, str(device), config.precision)
    try:
        images = folder_samples(open_dataset("ecssd", ctx.data_root, "all"))
    except UserError:
        ctx.notes.append("ECSSD is not on disk: evaluation timed on random 400 x 300 images")
        rng = np.random.default_rng(0)
        images = (EvalSample(f"random-{i}", rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
                             rng.random((300, 400)) > 0.5) for i in itertools.count())
    size = 128
    detector.size = size

    def score(part):
        return score_samples(detector, part, size, lambda stem: ("all",), ["all"], references=False,
                             paper_protocol=profile.eval_protocol == "paper")

    budget = PHASE_SECONDS if device.type == "cpu" else 2 * PHASE_SECONDS
    with PeakMemory(device) as memory:
        first = list(itertools.islice(images, 2 * detector.batch_size))
        warm_up = timed(lambda: score(first), device)  # also the scale of the timed part
        count = afford(warm_up / len(first), budget, len(first), ECSSD_IMAGES)
        timed_part = first + list(itertools.islice(images, count - len(first)))
        count = len(timed_part)
        seconds = timed(lambda: score(timed_part), device)
        # the outputs a stage-4 folder holds (tables, the predictions grid, the gallery), measured
        # on a few rendered scenes
        out = ctx.tmp / "eval"
        run_eval(EvalConfig(dataset="scenes", model=model, out=out, scenes_count=16, device=str(device),
                            precision=config.precision, progress=False))
    disk = folder_bytes(out)
    rows.append(PlanRow("eval", "ECSSD", "image", seconds / count, ECSSD_IMAGES, detector.batch_size, memory.bytes,
                        disk))
    # An evaluation's set-up (the model loaded, the tables and pictures written), whichever the
    # profile runs: 32 rendered scenes, then 96; the difference is 64 images, the rest set-up.
    walls = []
    with PeakMemory(device) as memory:
        for count in (32, 96):
            started = time.perf_counter()
            run_eval(EvalConfig(dataset="scenes", model=model, out=ctx.tmp / f"eval-scenes-{count}",
                                scenes_count=count, device=str(device), precision=config.precision,
                                progress=False))
            walls.append(time.perf_counter() - started)
    # a noisy machine can make the larger run no slower: then its mean, an upper bound
    per_image = (walls[1] - walls[0]) / 64 if walls[1] > walls[0] else walls[1] / 96
    if profile.scenes_eval:
        rows.append(PlanRow("eval", "rendered scenes", "image", per_image, RENDERED_SCENES, None, memory.bytes, disk))
    rows.append(PlanRow("eval", "set-up and outputs", "run", max(0.0, walls[0] - 32 * per_image),
                        2 if profile.scenes_eval else 1, None, None,
                        note="each evaluation: the model loaded, the tables and pictures written"))
    return rows


# ---------------------------------------------------------------------------------------------
# the plan


EVALUATIONS = {"ECSSD": "eval-ecssd", "rendered scenes": "eval-scenes"}  # a stage-4 row -> its folder
RESUMED_PHASES = {"discover": "training", "synthesize": "pairs", "unet": "training"}  # what a checkpoint carries


def mark_done(rows: list[PlanRow], done: dict[str, int | bool], out: Path) -> None:
    """Set each row's ``done`` from what OUT holds (``pipeline.done_in``): a finished stage's
    rows are done; a resumed stage's steps or pairs count from its checkpoint (the U-Net's
    held-out scorings in step with its steps); a vote on record is not held again; each
    finished evaluation takes one of stage 4's set-ups. A U-Net checkpoint past the steps asked
    is refused, as the run refuses it."""
    trained = {row.stage: row for row in rows if row.phase == RESUMED_PHASES.get(row.stage)}
    unet_step = done.get("unet", 0)
    if unet_step is not True and "unet" in trained and unet_step > trained["unet"].count:
        raise UserError(f"{out / 'unet'} is at step {unet_step:,}, past the {trained['unet'].count:,} steps asked "
                        "(--unet-steps): the run would refuse it; remove it or use another --out")
    for row in rows:
        state = done.get(row.stage, 0)
        if row.stage == "eval":
            if row.phase in EVALUATIONS:
                row.done = row.count if done.get(EVALUATIONS[row.phase]) is True else 0
            else:
                row.done = sum(done.get(name) is True for name in EVALUATIONS.values() if name in done)
        elif state is True:
            row.done = row.count
        elif row.phase == RESUMED_PHASES.get(row.stage):
            row.done = min(int(state), row.count)
        elif row.stage == "unet" and row.phase == "held-out scoring" and "unet" in trained:
            row.done = row.count * min(int(state), trained["unet"].count) // trained["unet"].count
        elif row.stage == "synthesize" and row.phase.startswith("class vote") and done.get("class-vote"):
            row.done = row.count


def done_lines(done: dict[str, int | bool], rows: list[PlanRow]) -> list[str]:
    """What the run will skip or resume, in words, for the table."""
    units = {row.stage: (row.unit, row.count) for row in rows if row.phase == RESUMED_PHASES.get(row.stage)}
    parts = []
    for name, state in done.items():
        if name == "class-vote":
            continue
        if state is True:
            parts.append(f"{name} finished (skipped)")
        elif state and name in units:
            unit, count = units[name]
            if unit == "step" and state >= count:
                parts.append(f"{name}'s training is done (step {state:,}); what follows it is left")
            else:
                parts.append(f"{name} resumes at {unit} {state:,} of {count:,}" if unit == "step"
                             else f"{name} holds {state:,} of {count:,} {unit}s (kept)")
    if done.get("class-vote") and done.get("synthesize") is not True:
        parts.append("the class vote is on record (not held again)")
    return parts


def make_plan(config, profile, data_root: Path, pairs: int, authors_weights: str,
              log: Callable[[str], None] = print, done: dict[str, int | bool] | None = None) -> dict:
    """Measure every stage of ``config``'s run (``pairs`` pairs) and write OUT/plan.json;
    returns the plan. ``done``: what OUT already holds of each stage (``pipeline.done_in``):
    the projected time, memory and disk are those of the work left."""
    from contextlib import nullcontext

    from directions.generators.registry import substituted
    from pipelines.train_unet import resolve_architecture
    from saliency.core.device import resolve_device
    from saliency.core.runtime import configure_device, cpu_name

    done = done or {}
    device = resolve_device(config.device)
    configure_device(device)
    out = ensure_writable_dir(config.out)
    started = time.perf_counter()
    log(f"[plan] profile {config.profile} on {device}: building every stage at its real sizes and timing a few steps")
    with tempfile.TemporaryDirectory(prefix="saliency-plan-") as tmp:
        ctx = PlanContext(config, profile, device, Path(tmp), data_root, authors_weights=authors_weights)
        ctx.generator_options, random_factory = generator_weights(ctx)
        rows: list[PlanRow] = []
        with substituted(profile.generator, random_factory) if random_factory else nullcontext():
            log("[plan] stage 1: discover")
            discover_rows, facts = plan_discover(ctx)
            rows += discover_rows
            log("[plan] stage 2: synthesize")
            synth_rows, data = plan_synthesize(ctx, pairs)
            rows += synth_rows
            per_pair = next(r.seconds_per_unit for r in synth_rows if r.phase == "pairs")
            log("[plan] stage 3: train-unet")
            unet_rows, model, unet_facts = plan_unet(ctx, data, pairs, per_pair)
            rows += unet_rows
            log("[plan] stage 4: eval")
            rows += plan_eval(ctx, model)
        # nothing is fetched for a vote on record or a U-Net already trained
        fetch = downloads(ctx, ctx.vote_needed and not done.get("class-vote"),
                          resolve_architecture(profile.unet_profile, config.encoder, config.encoder_weights),
                          encoder=done.get("unet") is not True)
    mark_done(rows, done, Path(config.out))
    stages = {}
    for row in rows:
        entry = stages.setdefault(row.stage, {"seconds": 0.0, "peak_memory": 0, "disk": 0})
        entry["seconds"] = round(entry["seconds"] + (row.seconds or 0.0), 1)
        if row.left:  # a phase with nothing left takes no memory and writes nothing
            entry["peak_memory"] = max(entry["peak_memory"], row.peak_memory or 0)
        entry["disk"] += row.disk_left
    finished = {row.stage for row in rows} - {row.stage for row in rows if row.left}
    # a batch that does not fit matters only where there is work left
    ctx.out_of_memory = [o for o in ctx.out_of_memory if o.stage not in finished]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    plan = {
        "profile": config.profile, "device": str(device), "device_name": name, "precision": config.precision,
        "torch": torch.__version__, "pairs": pairs, "discover": facts, "unet": unet_facts,
        "rows": [row.as_dict() for row in rows], "stages": stages,
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
        "peak_memory": max(s["peak_memory"] for s in stages.values()),
        "disk": sum(s["disk"] for s in stages.values()),
        "random_weights": ctx.random_weights, "downloads": fetch, "notes": ctx.notes,
        "out_of_memory": [asdict(o) for o in ctx.out_of_memory], "done": done_lines(done, rows),
        "memory_kind": "GPU memory allocated" if device.type == "cuda" else "resident memory of the process",
        "plan_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / PLAN_NAME, plan)
    return plan


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} us"
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def size(value: int | None) -> str:
    if not value:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def plan_table(plan: dict) -> str:
    """The plan as a markdown table, then its total, downloads and notes."""
    lines = [f"Plan: profile {plan['profile']} on {plan['device']} ({plan['device_name']}), precision "
             f"{plan['precision']}; peak memory is {plan['memory_kind']}.", "",
             "| stage | phase | per unit | count | projected | peak memory | disk |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in plan["rows"]:
        per = f"{duration(row['seconds_per_unit'])} / {row['unit']}"
        done = row.get("done", 0)
        batch = f" (batch {row['batch']})" if row["batch"] else ""
        if done >= row["count"]:  # nothing left of it: no time, memory or disk
            lines.append(f"| {row['stage']} | {row['phase']} | {per} | done{batch} | - | - | - |")
            continue
        count = (f"{row['count'] - done:,} of {row['count']:,} left" if done else f"{row['count']:,}") + batch
        lines.append(f"| {row['stage']} | {row['phase']} | {per} | {count} | {duration(row['seconds'])} | "
                     f"{size(row['peak_memory'])} | {size(row.get('disk_left', row['disk']))} |")
    for stage, entry in plan["stages"].items():
        lines.append(f"| **{stage}** | | | | **{duration(entry['seconds'])}** | {size(entry['peak_memory'])} | "
                     f"{size(entry['disk'])} |")
    lines.append(f"| **total** | | | | **{duration(plan['total_seconds'])}** | {size(plan['peak_memory'])} | "
                 f"{size(plan['disk'])} |")
    lines.append("")
    if plan.get("done"):
        lines.append(f"Already in the output folder: {'; '.join(plan['done'])}. The projection is the work left.")
    for o in plan["out_of_memory"]:
        lines.append(f"Out of memory: {o['stage']} at batch {o['batch']}; batch {o['fits']} fits.")
    if plan["random_weights"]:
        lines.append("Random weights in the real architecture (the real ones are not on disk): "
                     + "; ".join(plan["random_weights"]) + ".")
    if plan["downloads"]:
        lines.append("The run downloads first: " + "; ".join(f"{d['what']} from {d['from']}" for d in plan["downloads"])
                     + ".")
    else:
        lines.append("The run downloads nothing: every input is on disk.")
    for note in plan["notes"]:
        lines.append(f"Note: {note}.")
    lines.append(f"Measured in {duration(plan['plan_seconds'])}.")
    return "\n".join(lines)


def out_of_memory_line(plan: dict) -> str | None:
    if not plan["out_of_memory"]:
        return None
    parts = [f"{o['stage']} runs out of memory at batch {o['batch']} on {plan['device']}; batch {o['fits']} fits"
             for o in plan["out_of_memory"]]
    return "; ".join(parts)
