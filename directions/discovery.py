"""The discovery game (paper, section 3): learn directions A jointly with a reconstructor R.

Each step draws latents z (and classes), a direction index k and a shift eps, renders the
pair (G(z), G(z + eps * A[:, k])) and trains R to tell k (cross-entropy) and eps (L1) from
the pair, and A to make that easy. The generator is frozen: only the shifted image carries
a graph, and no generator weight gets a gradient.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from directions.deformators import Deformator
from directions.generators import Generator
from directions.reconstructors import Reconstructor
from saliency.core import distributed
from saliency.core.artifacts import ensure_writable_dir, remove_stale_temporaries, trim_step_log
from saliency.core.progress import progress_bar
from saliency.core.runtime import autocast
from saliency.core.checkpoint import check_identity, load_checkpoint, save_checkpoint
from saliency.core import limits
from saliency.core.errors import ConfigError, UserError
from saliency.core.fields import bounded, check_ranges

CHECKPOINT_NAME = "checkpoint.safetensors"
METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainSettings:
    """The loop's settings; the paper's values unless a generator's profile says otherwise."""

    steps: int = bounded(limits.STEPS, 100_000)
    batch_size: int = bounded(limits.GAME_BATCH, 32)
    lr: float = bounded(limits.POSITIVE, 1e-4)  # Adam, for A and for R
    deformator_lr: float | None = bounded(limits.POSITIVE)  # None: same as lr
    shift_scale: float = bounded(limits.POSITIVE, 6.0)  # eps ~ shift_scale * U(-1, 1) ...
    min_shift: float = bounded(limits.NON_NEGATIVE, 0.5)  # ... with |eps| snapped up to this
    shift_loss_weight: float = bounded(limits.NON_NEGATIVE, 0.25)  # loss = CE + weight * L1
    log_every: int = bounded(limits.COUNT, 50)
    checkpoint_every: int = bounded(limits.COUNT, 500)
    seed: int = bounded(limits.SEED, 0)
    precision: str = "fp32"  # "bf16": autocast G and R (the loss and Adam stay fp32)
    # RCA during the run: every ``rca_every`` steps (0: only at the end) on ``rca_samples``
    # fresh samples, into metrics.jsonl, so a long run shows its curve and a stopped one says
    # where it got. With ``plateau_change`` > 0 the run stops once the RCA has moved by less
    # than that over the last ``plateau_window`` steps (the rule of a run at the paper's budget).
    rca_every: int = bounded(limits.NON_NEGATIVE_COUNT, 0)
    rca_samples: int = bounded(limits.RCA_SAMPLES, 2048)
    plateau_change: float = bounded(limits.NON_NEGATIVE, 0.0)
    plateau_window: int = bounded(limits.COUNT, 20_000)

    def validate(self) -> None:
        check_ranges(self)
        if self.min_shift >= self.shift_scale:
            raise ConfigError(f"`min_shift` must be below `shift_scale`, got {self.min_shift} >= {self.shift_scale}")
        if self.plateau_change > 0 and not (self.rca_every > 0 and self.plateau_window >= self.rca_every):
            raise ConfigError("`plateau_change` needs `rca_every`, and a `plateau_window` of at least one `rca_every`")


def sample_shifts(
    n: int, num_directions: int, rng: torch.Generator, scale: float, min_shift: float
) -> tuple[Tensor, Tensor]:
    """Direction indices k ~ U{0..K-1} and shifts eps ~ scale * U(-1, 1), |eps| >= min_shift."""
    index = torch.randint(num_directions, (n,), generator=rng, device=rng.device)
    eps = scale * (2 * torch.rand(n, generator=rng, device=rng.device) - 1)
    sign = torch.where(eps < 0, -1.0, 1.0)
    eps = torch.where(eps.abs() < min_shift, sign * min_shift, eps)
    return index, eps


def sample_game(generator: Generator, num_directions: int, n: int, rng: torch.Generator,
                settings: TrainSettings):
    """One batch of the game: z, classes (or None), k, eps; all drawn from ``rng`` on the CPU."""
    z = generator.sample_latents(n, rng)
    classes = generator.sample_classes(n, rng)
    index, eps = sample_shifts(n, num_directions, rng, settings.shift_scale, settings.min_shift)
    return z, classes, index.to(generator.device), eps.to(generator.device, z.dtype)


def render_pair(generator: Generator, deformator: Deformator, z: Tensor, classes: Tensor | None,
                index: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """(G(z), G(z + eps * A[:, k])); only the shifted image carries a graph (to A)."""
    with torch.no_grad():
        original = generator(z, classes)
    return original, generator(z + deformator(index, eps), classes)


def game_step(generator: Generator, deformator: Deformator, reconstructor: Reconstructor,
              z: Tensor, classes: Tensor | None, index: Tensor, eps: Tensor, shift_loss_weight: float):
    """Render the pair and score R on it. Returns (loss, ce, shift_l1, accuracy)."""
    logits, eps_pred = reconstructor(*render_pair(generator, deformator, z, classes, index, eps))
    ce = F.cross_entropy(logits, index)
    shift_l1 = (eps_pred - eps).abs().mean()
    accuracy = (logits.argmax(1) == index).float().mean()
    return ce + shift_loss_weight * shift_l1, ce, shift_l1, accuracy


def play_step(generator: Generator, deformator: Deformator, reconstructor: Reconstructor, optimizers: dict,
              rng: torch.Generator, batch_size: int, settings: TrainSettings, parameters: list | None = None):
    """One step of the game: draw a batch, score R on it, update A and R. With ``parameters``,
    their gradients are averaged across processes first (data parallelism).
    Returns (loss, ce, shift_l1, accuracy) as tensors."""
    z, classes, index, eps = sample_game(generator, deformator.num_directions, batch_size, rng, settings)
    with autocast(generator.device, settings.precision):
        loss, ce, shift_l1, accuracy = game_step(
            generator, deformator, reconstructor, z, classes, index, eps, settings.shift_loss_weight
        )
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if parameters is not None:
        distributed.all_reduce_mean_([p.grad for p in parameters if p.grad is not None])
    for optimizer in optimizers.values():
        optimizer.step()
    return loss, ce, shift_l1, accuracy


def _process_seed(seed: int, rank: int, step: int) -> int:
    """Rank 0 draws the single-process stream; every other process a stream of its own."""
    return seed if rank == 0 and step == 0 else (seed * 1_000_003 + rank * 7_919 + step) % (2**63 - 1)


def game_optimizers(deformator: Deformator, reconstructor: Reconstructor, settings: TrainSettings):
    optimizers = {"reconstructor": torch.optim.Adam(reconstructor.parameters(), lr=settings.lr)}
    if deformator.trainable:
        lr = settings.deformator_lr if settings.deformator_lr is not None else settings.lr
        optimizers["deformator"] = torch.optim.Adam(deformator.parameters(), lr=lr)
    return optimizers


def _match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state its parameter's memory layout (a checkpoint stores tensors
    contiguous; a channels-last R keeps channels-last weights): the same values, and the same
    fast multi-tensor update path as in the run that was never interrupted."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for key, value in optimizer.state.get(parameter, {}).items():
                if isinstance(value, Tensor) and value.shape == parameter.shape and value.dim() == 4:
                    optimizer.state[parameter][key] = torch.empty_like(parameter).copy_(value)


def plateaued(history: list[list], window: int, change: float) -> bool:
    """True when RCA records span ``window`` steps back from the last and, over those steps,
    the RCA moved (max - min) by less than ``change``."""
    if change <= 0 or not history:
        return False
    last = history[-1][0]
    if history[0][0] > last - window:
        return False  # not yet a whole window of records
    recent = [rca for step, rca in history if step >= last - window]
    return max(recent) - min(recent) < change


def rca_during_training(generator: Generator, deformator: Deformator, reconstructor: Reconstructor,
                        settings: TrainSettings) -> float:
    """RCA of the current A and R, leaving R exactly as it was (batch-norm statistics and
    training mode), so a run that measures its curve plays the same game as one that does not."""
    saved = {name: buffer.clone() for name, buffer in reconstructor.named_buffers()}
    try:
        return reconstructor_accuracy(generator, deformator, reconstructor, settings, samples=settings.rca_samples)
    finally:
        with torch.no_grad():
            for name, buffer in reconstructor.named_buffers():
                buffer.copy_(saved[name])
        reconstructor.train()


def _resume(checkpoint_path: Path, identity: dict, run_dir: Path, deformator: Deformator,
            reconstructor: Reconstructor, optimizers: dict, rng: torch.Generator, settings: TrainSettings,
            ctx) -> tuple[int, float, list[list], dict | None, list[dict]]:
    """Load a checkpoint of the same run into A, R, their optimizers and the sample stream;
    returns (step, seconds so far, the RCA history, the early stop if the rule still holds,
    the spans played so far)."""
    state = load_checkpoint(checkpoint_path)
    check_identity(state.get("identity", {}), identity, run_dir)
    try:
        deformator.load_state_dict(state["deformator"])
        reconstructor.load_state_dict(state["reconstructor"])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            _match_parameter_layouts(optimizer)
            # The command line's learning rate wins over the saved one (e.g. a lower
            # --lr after the loss diverged).
            lr = settings.deformator_lr if name == "deformator" and settings.deformator_lr else settings.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
        rng.set_state(state["rng"])
        step, elapsed = int(state["step"]), float(state["seconds"])
        rca_history = [list(record) for record in state.get("rca_history", [])]
        # A run stopped by the plateau rule stays stopped while the rule (as given now) holds.
        stopped_early = None
        if plateaued(rca_history, settings.plateau_window, settings.plateau_change):
            stopped_early = state.get("stopped_early")
        if ctx.rank > 0:  # the checkpoint holds rank 0's stream; the others start fresh ones
            rng.manual_seed(_process_seed(settings.seed, ctx.rank, step))
        spans = [{key: span[key] for key in ("from_step", "device", "precision")} for span in state.get("spans", [])]
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise UserError(f"checkpoint {checkpoint_path} does not fit this run ({type(exc).__name__})") from exc
    return step, elapsed, rca_history, stopped_early, spans


class _StepLog:
    """metrics.jsonl during the game: the mean of each window of steps, the periodic RCA lines,
    and the running loss and accuracy the progress bar shows."""

    def __init__(self, log, started: float) -> None:
        self.log, self.started = log, started
        self.window = {"loss": 0.0, "ce": 0.0, "shift_l1": 0.0, "accuracy": 0.0}
        self.count = 0
        self.first_loss: float | None = None
        self.running_loss: float | None = None
        self.running_acc: float | None = None

    def add(self, step: int, values: dict[str, float]) -> None:
        if not math.isfinite(values["loss"]):
            raise ConfigError(f"the loss became {values['loss']} at step {step}: lower `lr`")
        self.first_loss = values["loss"] if self.first_loss is None else self.first_loss
        for key, value in values.items():
            self.window[key] += value
        self.count += 1
        acc, loss = values["accuracy"], values["loss"]
        self.running_acc = acc if self.running_acc is None else 0.98 * self.running_acc + 0.02 * acc
        self.running_loss = loss if self.running_loss is None else 0.98 * self.running_loss + 0.02 * loss

    def flush(self, step: int) -> None:
        """One line: the window's means, then a new window."""
        n = self.count
        self.write({"step": step, **{k: round(v / n, 5) for k, v in self.window.items()},
                    "seconds": round(time.perf_counter() - self.started, 2)})
        self.window = dict.fromkeys(self.window, 0.0)
        self.count = 0

    def write(self, record: dict) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()


@dataclass
class _GameState:
    """What a checkpoint holds besides A and R: the optimizers, the sample stream, how far the
    game got and its RCA record."""

    optimizers: dict
    rng: torch.Generator
    step: int = 0
    elapsed: float = 0.0  # seconds played before this process started
    resumed_from: int = 0  # the step this process started at: 0 for a fresh game
    rca_history: list = field(default_factory=list)  # [step, rca] of each measurement
    stopped_early: dict | None = None
    # Where and how each stretch of steps was played: {"from_step", "device", "precision"}, a new
    # entry only when a resume changes either, so a run resumed in place keeps one entry.
    spans: list = field(default_factory=list)


def open_span(spans: list[dict], step: int, device: torch.device, precision: str) -> list[dict]:
    """``spans`` with the stretch that starts at ``step`` on ``device`` at ``precision``; a
    checkpoint written before spans were recorded leaves its earlier steps unrecorded."""
    spans = [dict(span) for span in spans]
    if step > 0 and not spans:
        spans.append({"from_step": 0, "device": None, "precision": None})
    here = {"from_step": step, "device": device.type, "precision": precision}
    if not spans or (spans[-1]["device"], spans[-1]["precision"]) != (here["device"], here["precision"]):
        spans.append(here)
    return spans


def stream_device(device: torch.device, checkpoint_path: Path | None) -> torch.device:
    """Where the game's samples are drawn. On a GPU they are drawn there, so nothing crosses
    devices inside the loop (a GPU's stream differs from the CPU's: the same seed gives other
    samples there). A resumed run keeps the stream its checkpoint holds: a run started on a CPU
    and continued on a GPU draws the very samples the CPU would have drawn next."""
    if device.type != "cuda":
        return torch.device("cpu")
    if checkpoint_path is not None and checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path).get("rng")
        if isinstance(saved, Tensor) and saved.numel() == torch.Generator().get_state().numel():
            return torch.device("cpu")
    return device


def _start_game(run_dir: Path, device: torch.device, deformator: Deformator, reconstructor: Reconstructor,
                settings: TrainSettings, identity: dict, resume: bool, ctx) -> _GameState:
    """A fresh game, or the run's checkpoint loaded (with ``resume``); the step log trimmed to match."""
    deformator.to(device).train()
    reconstructor.to(device).train()
    optimizers = game_optimizers(deformator, reconstructor, settings)
    checkpoint_path, metrics_path = run_dir / CHECKPOINT_NAME, run_dir / METRICS_NAME
    rng = torch.Generator(device=stream_device(device, checkpoint_path if resume else None))
    rng.manual_seed(_process_seed(settings.seed, ctx.rank, 0))
    state = _GameState(optimizers, rng)
    if checkpoint_path.exists():
        if not resume:
            raise ConfigError(f"{run_dir} already holds a discovery run: pass `resume` to continue it, or another `out`")
        state.step, state.elapsed, state.rca_history, state.stopped_early, state.spans = _resume(
            checkpoint_path, identity, run_dir, deformator, reconstructor, state.optimizers, rng, settings, ctx)
        state.resumed_from = state.step
        if ctx.is_main:
            trim_step_log(metrics_path, state.step)
    elif metrics_path.exists() and ctx.is_main:
        metrics_path.unlink()  # a log with no checkpoint behind it: start afresh
    state.spans = open_span(state.spans, state.step, device, settings.precision)
    return state


def _save_game(path: Path, state: _GameState, identity: dict, settings: TrainSettings, deformator: Deformator,
               reconstructor: Reconstructor, seconds: float) -> None:
    save_checkpoint(path, {
        "identity": identity,
        "settings": asdict(settings),
        "step": state.step,
        "seconds": seconds,
        "deformator": deformator.state_dict(),
        "reconstructor": reconstructor.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in state.optimizers.items()},
        "rng": state.rng.get_state(),
        "rca_history": state.rca_history,
        "stopped_early": state.stopped_early,
        "spans": state.spans,
    })


def _measure_rca(state: _GameState, generator: Generator, deformator: Deformator, reconstructor: Reconstructor,
                 settings: TrainSettings, log: "_StepLog", note: Callable[[str], None]) -> None:
    """The periodic RCA into the log and the record; the plateau rule may stop the game here."""
    rca = round(rca_during_training(generator, deformator, reconstructor, settings), 4)
    state.rca_history.append([state.step, rca])
    log.write({"step": state.step, "rca": rca, "rca_samples": settings.rca_samples,
               "seconds": round(time.perf_counter() - log.started, 2)})
    note(f"step {state.step}: RCA {rca:.4f} on {settings.rca_samples} fresh samples")
    if plateaued(state.rca_history, settings.plateau_window, settings.plateau_change):
        state.stopped_early = {"step": state.step, "rule": f"RCA moved by less than {settings.plateau_change:g} "
                                                           f"over the last {settings.plateau_window} steps"}
        note(f"stopping early at step {state.step}: {state.stopped_early['rule']}")


def train(
    generator: Generator,
    deformator: Deformator,
    reconstructor: Reconstructor,
    settings: TrainSettings,
    run_dir: Path,
    identity: dict,
    resume: bool = False,
    progress: bool = True,
    on_ready: Callable[[], None] | None = None,
) -> dict:
    """Play the game for ``settings.steps`` steps, checkpointing into ``run_dir``.

    ``identity`` (generator name, deformator, K, ...) is stored in every checkpoint; resuming
    from a checkpoint whose identity differs is refused. Returns a summary of the run.
    """
    settings.validate()
    ctx = distributed.context()
    if settings.batch_size % ctx.world:
        raise ConfigError(f"`batch_size` {settings.batch_size} does not split evenly over {ctx.world} processes")
    per_process = settings.batch_size // ctx.world  # the global batch stays the paper's
    run_dir = ensure_writable_dir(run_dir)
    if ctx.is_main:
        remove_stale_temporaries(run_dir)  # left by a run killed mid-write
    state = _start_game(run_dir, generator.device, deformator, reconstructor, settings, identity, resume, ctx)
    if on_ready is not None:  # every check passed: the caller may now change the run folder
        on_ready()
    parameters = [p for p in list(deformator.parameters()) + list(reconstructor.parameters()) if p.requires_grad]

    def note(line: str) -> None:  # a line between the progress bar's redraws
        if ctx.is_main and progress:
            tqdm.write(line, file=sys.stderr)

    bar = progress_bar(settings.steps, "discover", enabled=progress and ctx.is_main, initial=state.step, unit="step")
    # Under torchrun on GPUs, R's batch norms see the whole global batch, as in one process.
    sync_norms = distributed.batch_norm_is_synchronised(generator.device, ctx)
    with distributed.synchronised_batch_norm(reconstructor, sync_norms), \
            open(run_dir / METRICS_NAME if ctx.is_main else os.devnull, "a", encoding="utf-8") as log_file:
        log = _StepLog(log_file, time.perf_counter() - state.elapsed)
        while state.step < settings.steps and state.stopped_early is None:
            # Data parallel: every process applies the mean gradient.
            loss, ce, shift_l1, accuracy = play_step(generator, deformator, reconstructor, state.optimizers,
                                                     state.rng, per_process, settings,
                                                     parameters if ctx.distributed else None)
            state.step += 1
            log.add(state.step, {"loss": loss.item(), "ce": ce.item(), "shift_l1": shift_l1.item(),
                                 "accuracy": accuracy.item()})
            bar.update(1)
            last = state.step == settings.steps
            if state.step % 10 == 0 or last:
                bar.set_postfix(loss=f"{log.running_loss:.3f}", acc=f"{log.running_acc:.3f}", refresh=False)
            if settings.rca_every and state.step % settings.rca_every == 0:
                _measure_rca(state, generator, deformator, reconstructor, settings, log, note)
            ending = last or state.stopped_early is not None
            if state.step % settings.log_every == 0 or ending:
                log.flush(state.step)
            if ctx.is_main and (state.step % settings.checkpoint_every == 0 or ending):
                _save_game(run_dir / CHECKPOINT_NAME, state, identity, settings, deformator, reconstructor,
                           time.perf_counter() - log.started)
    bar.close()
    distributed.barrier()
    return {"steps": state.step, "seconds": round(time.perf_counter() - log.started, 2),
            "resumed_from": state.resumed_from, "rca_curve": state.rca_history,
            "stopped_early": state.stopped_early, "spans": state.spans,
            "first_loss": log.first_loss, "final_running_loss": log.running_loss,
            "final_running_accuracy": log.running_acc,
            "batch_norm": distributed.batch_norm_report(generator.device, ctx, settings.batch_size)}


def rca_batches(samples: int = 2048, batch_size: int = 128, calibration_batches: int = 20) -> int:
    """The batches :func:`reconstructor_accuracy` renders, recalibration included: its bar's total."""
    return calibration_batches + -(-samples // batch_size)


@torch.no_grad()
def recalibrate_batch_norm(generator: Generator, deformator: Deformator, reconstructor: Reconstructor,
                           settings: TrainSettings, batches: int = 20, seed: int = 54321, progress=None) -> None:
    """Re-estimate R's batch-norm statistics as plain averages over fresh batches of the final A.

    The running averages kept during training trail a moving A; evaluated with them, R
    scores visibly lower than it plays. ``progress``: a bar, advanced by one per batch.
    """
    norms = [m for m in reconstructor.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        if progress is not None:
            progress.update(batches)
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    reconstructor.train()
    rng = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        z, classes, index, eps = sample_game(generator, deformator.num_directions, settings.batch_size, rng, settings)
        reconstructor(*render_pair(generator, deformator, z, classes, index, eps))
        if progress is not None:
            progress.update(1)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@torch.no_grad()
def reconstructor_accuracy(generator: Generator, deformator: Deformator, reconstructor: Reconstructor,
                           settings: TrainSettings, samples: int = 2048, batch_size: int = 128,
                           seed: int = 12345, calibration_batches: int = 20, progress=None) -> float:
    """RCA: R's direction accuracy on fresh samples (a seed the training never used), in
    inference mode, after :func:`recalibrate_batch_norm`. ``progress``: a bar advanced by one
    per batch, :func:`rca_batches` in all."""
    recalibrate_batch_norm(generator, deformator, reconstructor, settings, batches=calibration_batches,
                           progress=progress)
    reconstructor.eval()
    rng = torch.Generator().manual_seed(seed)
    correct, seen = 0, 0
    while seen < samples:
        n = min(batch_size, samples - seen)
        z, classes, index, eps = sample_game(generator, deformator.num_directions, n, rng, settings)
        logits, _ = reconstructor(*render_pair(generator, deformator, z, classes, index, eps))
        correct += int((logits.argmax(1) == index).sum())
        seen += n
        if progress is not None:
            progress.update(1)
    reconstructor.train()
    return correct / seen
