"""Stage 3: train the U-Net on synthetic (image, mask) pairs (paper section 5.1).

Per-pixel cross-entropy on logits divided by a temperature (10 in the paper), Adam, learning
rate multiplied by ``lr_gamma`` every ``lr_step`` steps. The last ``val_count`` pairs are
held out and scored every ``val_every`` steps. Checkpoints hold everything a resumed run
needs (model, optimizer, schedule, step); the batch of step s depends only on (seed, s).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from saliency.core import distributed
from saliency.core.artifacts import atomic_path, remove_stale_temporaries, trim_step_log, write_json
from saliency.augment import AugmentedPairs, AugmentSettings, StepBatchSampler
from saliency.core.imagenet import IMAGENET_MEAN, IMAGENET_STD
from saliency.core.checkpoint import check_identity, load_checkpoint, save_checkpoint
from saliency.core import limits
from saliency.core.errors import ConfigError, UserError
from saliency.core.fields import bounded, check_ranges
from saliency.core.progress import PostfixProgress, progress_bar
from saliency.core.runtime import autocast
from saliency.shards import SyntheticPairs
from saliency.unet import MODEL_META, UNetArchitecture, build_unet, foreground_probability

if TYPE_CHECKING:
    from saliency.streaming import StreamedPairs

CHECKPOINT_NAME = "checkpoint.safetensors"
METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "loss_curve.png"


@dataclass(frozen=True)
class UNetTrainSettings:
    steps: int = bounded(limits.STEPS, 15000)
    batch_size: int = bounded(limits.TRAIN_BATCH, 128)
    lr: float = bounded(limits.POSITIVE, 0.005)
    lr_step: int = bounded(limits.COUNT, 4000)
    lr_gamma: float = bounded(limits.POSITIVE_FRACTION, 0.2)
    temperature: float = bounded(limits.POSITIVE, 10.0)
    val_count: int = bounded(limits.VAL_COUNT, 512)
    val_every: int = bounded(limits.COUNT, 500)
    checkpoint_every: int = bounded(limits.COUNT, 500)
    log_every: int = bounded(limits.COUNT, 10)
    seed: int = bounded(limits.SEED, 0)
    workers: int = bounded(limits.WORKERS, 1)
    precision: str = "fp32"  # "bf16": autocast the U-Net (the loss and Adam stay fp32)
    compile: bool = False  # torch.compile the model
    freeze_encoder: bool = False  # train the decoder only; the encoder's batch-norm statistics stay too
    augment: AugmentSettings = field(default_factory=AugmentSettings)

    def validate(self) -> None:
        check_ranges(self)
        check_ranges(self.augment)


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(n, H, W, 3)`` -> normalised float ``(n, 3, H, W)`` on ``device`` (channels-last
    memory on a GPU, which its convolutions prefer)."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def tempered_loss(logits: torch.Tensor, masks: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-pixel cross-entropy of ``logits / temperature`` against the 0/1 masks."""
    return F.cross_entropy(logits.float() / temperature, masks.long())


def make_schedule(optimizer: torch.optim.Optimizer, settings: UNetTrainSettings):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_step, gamma=settings.lr_gamma)


def set_training_mode(net: torch.nn.Module, freeze_encoder: bool) -> None:
    """Training mode, except a frozen encoder, whose batch norm keeps its running statistics."""
    net.train()
    if freeze_encoder:
        net.encoder.eval()


def freeze(net: torch.nn.Module) -> None:
    for parameter in net.encoder.parameters():
        parameter.requires_grad_(False)


@torch.no_grad()
def validate(model, pairs: SyntheticPairs, indices: np.ndarray, device, temperature: float, batch: int = 128,
             freeze_encoder: bool = False, progress=None) -> dict:
    """Mean tempered CE, MAE and IoU@0.5 of the foreground probability on held-out pairs.
    ``progress``: a bar (or :class:`PostfixProgress`), advanced by the pairs of each batch."""
    model.eval()
    loss = mae = iou = 0.0
    for start in range(0, len(indices), batch):
        chunk = [pairs[int(i)] for i in indices[start:start + batch]]
        images = torch.from_numpy(np.stack([c[0] for c in chunk]))
        masks = torch.from_numpy(np.stack([c[1] for c in chunk])).to(device)
        logits = model(to_model_input(images, device))
        loss += float(tempered_loss(logits, masks, temperature)) * len(chunk)
        prob = foreground_probability(logits)
        mae += float((prob - masks.float()).abs().mean(dim=(1, 2)).sum())
        pred, truth = prob >= 0.5, masks.bool()
        inter = (pred & truth).flatten(1).sum(1).float()
        union = (pred | truth).flatten(1).sum(1).float()
        iou += float(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).sum())
        if progress is not None:
            progress.update(len(chunk))
    set_training_mode(model, freeze_encoder)
    n = max(1, len(indices))
    return {"val_loss": loss / n, "val_mae": mae / n, "val_iou": iou / n}


def save_loss_curve(metrics_path: Path, out: Path) -> Path | None:
    """Training loss (and validation MAE) against steps, as a PNG."""
    if not metrics_path.exists():
        return None
    rows = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"], r["val_mae"]) for r in rows if "val_loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(7, 4), dpi=100)
    left.plot(*zip(*train), color="tab:blue", linewidth=0.8, label="train loss (CE of logits / T)")
    if val:
        steps, losses, maes = zip(*val)
        left.plot(steps, losses, "o-", color="tab:orange", markersize=3, label="held-out loss")
        right = left.twinx()
        right.plot(steps, maes, "s--", color="tab:green", markersize=3, label="held-out MAE")
        right.set_ylabel("held-out MAE")
        right.legend(loc="upper center", fontsize=8)
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.set_yscale("log")
    left.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def _resume(checkpoint_path: Path, identity: dict, net: torch.nn.Module, optimizer, schedule,
            settings: UNetTrainSettings) -> tuple[int, float]:
    """Load a checkpoint of the same run (settings and data) into the model, the optimizer and
    the schedule; returns (its step, its training seconds)."""
    state = load_checkpoint(checkpoint_path)
    check_identity(state.get("identity"), identity, checkpoint_path, error=ConfigError,
                   message="{where} was trained with other settings or data; use another `out`")
    try:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = int(state["step"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise UserError(f"checkpoint {checkpoint_path} does not fit this run ({type(exc).__name__})") from exc
    if start > settings.steps:
        raise ConfigError(f"{checkpoint_path} is at step {start}, past `steps` {settings.steps}")
    return start, float(state.get("seconds", 0.0))


def train_unet(data: Path, out: Path, arch: UNetArchitecture, settings: UNetTrainSettings, device: torch.device,
               resume: bool = False, progress: bool = True, record: dict | None = None,
               stream: "StreamedPairs | None" = None) -> dict:
    """Train into ``out``; returns a summary (steps, seconds, final validation metrics).

    With ``stream``, every step trains on a fresh batch drawn from the generator, and the pairs
    in ``data`` (the last ``val_count``) only score the model. Nothing in ``out`` changes until
    every check has passed (the data's checksums, and on ``resume`` the checkpoint's settings);
    then ``record`` is written as ``config.json``.
    """
    settings.validate()
    torch.manual_seed(settings.seed)
    pairs, train_indices, val_indices = _open_pairs(data, arch, settings, streamed=stream is not None)
    ctx = distributed.context()
    if stream is not None and ctx.distributed:
        raise ConfigError("streamed training runs in one process (each step's batch is drawn whole); "
                          "run it without torchrun")
    net, optimizer, schedule = build_training(arch, settings, device)
    identity = _run_identity(arch, settings, pairs, data, streamed=stream is not None)
    checkpoint_path, metrics_path = out / CHECKPOINT_NAME, out / METRICS_NAME
    start, seconds_before = 0, 0.0
    if resume:
        start, seconds_before = _resume(checkpoint_path, identity, net, optimizer, schedule, settings)
    _prepare_run_folder(out, start, resume, record, ctx)
    loader = (stream.batches(start, settings.steps, settings.batch_size) if stream is not None
              else _step_loader(pairs, train_indices, settings, start, device, ctx))
    set_training_mode(net, settings.freeze_encoder)
    started = time.perf_counter()
    step, running, last_val = start, None, {}
    # Under torchrun on GPUs the batch norms see the whole global batch, as in one process.
    sync_norms = distributed.batch_norm_is_synchronised(device, ctx)
    with distributed.synchronised_batch_norm(net, sync_norms), \
            progress_bar(settings.steps, "train-unet", enabled=progress and ctx.is_main, initial=start,
                         unit="step") as bar, \
            open(metrics_path if ctx.is_main else os.devnull, "a", encoding="utf-8") as log:
        model = _data_parallel(net, device, ctx)  # ``net`` itself in one process
        forward = torch.compile(model) if settings.compile else model
        for images, masks in loader:
            value = train_step(forward, optimizer, schedule, images, masks, device, settings)
            step += 1
            if not math.isfinite(value):
                raise ConfigError(f"the loss became {value} at step {step}; lower `lr`")
            running = value if running is None else 0.95 * running + 0.05 * value
            bar.update(1)
            validation = None
            if ctx.is_main and (step % settings.val_every == 0 or step == settings.steps):
                # the held-out scoring shows in the bar's postfix (a minute and more on a CPU)
                validation = last_val = validate(net, pairs, val_indices, device, settings.temperature,
                                                 freeze_encoder=settings.freeze_encoder,
                                                 progress=PostfixProgress(bar, len(val_indices), "held-out"))
            postfix = {"loss": f"{running:.3f}"} | ({"val_mae": f"{validation['val_mae']:.3f}"} if validation else {})
            bar.set_postfix(**postfix, refresh=False)
            if step % settings.log_every == 0 or validation is not None:
                log.write(json.dumps({"step": step, "loss": value, "lr": schedule.get_last_lr()[0],
                                      **(validation or {})}) + "\n")
                log.flush()
            if ctx.is_main and (step % settings.checkpoint_every == 0 or step == settings.steps):
                save_checkpoint(checkpoint_path, {
                    "identity": identity, "step": step, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "seconds": seconds_before + time.perf_counter() - started})
    distributed.barrier()
    if ctx.is_main and step == start and not last_val:  # resumed at the end already
        with progress_bar(len(val_indices), "held-out scoring", enabled=progress, leave=False, unit="pair") as bar:
            last_val = validate(net, pairs, val_indices, device, settings.temperature, progress=bar)
    curve = save_loss_curve(metrics_path, out / CURVE_NAME) if ctx.is_main else None
    return {"model": net, "steps": step, "seconds": round(seconds_before + time.perf_counter() - started, 1),
            "validation": {k: round(v, 5) for k, v in last_val.items()}, "val_pairs": len(val_indices),
            "train_pairs": settings.steps * settings.batch_size if stream is not None else len(train_indices),
            "streamed": stream is not None, "loss_curve": curve.name if curve else None,
            "batch_norm": distributed.batch_norm_report(device, ctx, settings.batch_size)}


def _open_pairs(data: Path, arch: UNetArchitecture, settings: UNetTrainSettings, streamed: bool = False):
    """The pairs (every shard verified: a damaged one is refused before the first step), and
    the indices of the training pairs and of the held-out last ``val_count`` (streamed: no
    training pairs, and at most every stored pair held out)."""
    pairs = SyntheticPairs(data, verify=True)
    if len(pairs) <= settings.val_count and not streamed:
        raise ConfigError(f"{data} has {len(pairs)} pairs; need more than `val_count` {settings.val_count}")
    side = arch.stride
    if pairs.height % side or pairs.width % side:
        raise UserError(f"pairs are {pairs.height}x{pairs.width}; this U-Net needs sides divisible by {side}")
    split = max(0, len(pairs) - settings.val_count) if streamed else len(pairs) - settings.val_count
    if streamed:
        return pairs, np.arange(0), np.arange(split, len(pairs))
    return pairs, np.arange(split), np.arange(split, len(pairs))


def build_training(arch: UNetArchitecture, settings: UNetTrainSettings, device: torch.device):
    """The U-Net (channels-last on a GPU; its encoder frozen if asked), Adam over what trains,
    and the step schedule."""
    net = build_unet(arch).to(device)  # the module itself; ``model`` may wrap it for data parallelism
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    if settings.freeze_encoder:
        freeze(net)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=settings.lr)
    return net, optimizer, make_schedule(optimizer, settings)


def _run_identity(arch: UNetArchitecture, settings: UNetTrainSettings, pairs: SyntheticPairs, data: Path,
                  streamed: bool = False) -> dict:
    """What a resumed run must share with its checkpoint (not steps, workers or compilation)."""
    return {"architecture": asdict(arch),
            "settings": {**asdict(settings), "steps": None, "workers": None, "compile": None},
            "data_pairs": len(pairs), "data_manifest_sha": _manifest_digest(data), "streamed": streamed}


def _prepare_run_folder(out: Path, start: int, resume: bool, record: dict | None, ctx) -> None:
    """Every check has passed: trim the step log to the checkpoint (or start it afresh), drop
    a finished model that is being trained further, write ``config.json``."""
    if not ctx.is_main:
        return
    metrics_path = out / METRICS_NAME
    if resume:
        trim_step_log(metrics_path, start)
    elif metrics_path.exists():
        metrics_path.unlink()
    remove_stale_temporaries(out)
    (out / MODEL_META).unlink(missing_ok=True)
    if record is not None:
        write_json(out / "config.json", record)


def _step_loader(pairs: SyntheticPairs, train_indices: np.ndarray, settings: UNetTrainSettings, start: int,
                 device: torch.device, ctx) -> torch.utils.data.DataLoader:
    """Augmented batches from step ``start`` on; every process sees the same global batch of
    each step and trains on its own slice of it."""
    sampler = StepBatchSampler(train_indices, settings.batch_size, settings.steps, settings.seed, start=start,
                               rank=ctx.rank, world=ctx.world)
    return torch.utils.data.DataLoader(
        AugmentedPairs(pairs, settings.augment), batch_sampler=sampler, num_workers=settings.workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if settings.workers > 0 else None,
    )


def train_step(forward, optimizer, schedule, images: torch.Tensor, masks: torch.Tensor, device: torch.device,
                settings: UNetTrainSettings) -> float:
    """One optimiser step on a batch; returns its loss."""
    x = to_model_input(images, device)
    y = masks.to(device, non_blocking=True)
    with autocast(device, settings.precision):
        logits = forward(x)
    loss = tempered_loss(logits, y, settings.temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.item()


def _data_parallel(net: torch.nn.Module, device: torch.device, ctx: distributed.Context) -> torch.nn.Module:
    if not ctx.distributed:
        return net
    # gloo on CPU reports this for smp's U-Net although each grad matches its parameter's
    # strides outside DDP; it costs a copy per bucket, not correctness.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True)


def _manifest_digest(data: Path) -> str:
    """Identifies the training data by its shards' checksums."""
    import hashlib

    from saliency.shards import load_manifest

    checksums = [entry["sha256"] for entry in load_manifest(data)["shards"]]
    return hashlib.sha256(json.dumps(checksums).encode()).hexdigest()[:16]
