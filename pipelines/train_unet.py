"""``saliency train-unet``: stage 3, from synthetic shards to a saliency model folder.

A model folder holds::

    config.json              the settings (written first)
    checkpoint.safetensors   the training state, replaced every --checkpoint-every steps
    metrics.jsonl            loss and learning rate every few steps, held-out scores
    loss_curve.png           the curves
    model.safetensors        the weights
    model.json               architecture, settings, data, held-out scores (written last)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from saliency.core import distributed
from saliency.core.artifacts import ensure_writable_dir, refuse_output_in_inputs
from saliency.core.device import resolve_device
from saliency.downloads.prefetch import encoder_weights, ensure, weights_need
from saliency.core.errors import ConfigError, UserError
from saliency.model_card import training_card
from saliency.core.recorded_paths import rebase_recorded, rebased_options, record_path
from saliency.core.runtime import configure_device, resolve_precision
from saliency.shards import load_manifest
from saliency.training import CHECKPOINT_NAME, UNetTrainSettings, train_unet
from saliency.augment import AugmentSettings
from saliency.unet import MODEL_META, PLAIN_ARCHITECTURE, UNetArchitecture, encoder_weights_source, save_model


@dataclass(frozen=True)
class UNetProfile:
    architecture: UNetArchitecture
    settings: UNetTrainSettings


PROFILES = {
    # This project's choice for BigGAN's 128 px pairs: the paper's schedule, a ResNet-34 encoder, augmentation
    # (docs/profiles.md names each departure).
    "biggan": UNetProfile(UNetArchitecture(encoder="resnet34", decoder_channels=(256, 128, 64, 32, 16)),
                          UNetTrainSettings(steps=15000, batch_size=128, lr=0.005, lr_step=4000, lr_gamma=0.2,
                                            val_every=1000, checkpoint_every=1000, workers=4)),
    # The reference code's experiment, value for value: its plain U-Net from scratch, Adam 0.005
    # (x 0.2 every 4,000 steps), 15,000 steps of batch 128, temperature 10, no augmentation; the
    # pipeline streams its pairs (--stream) and holds out 1,000 stored ones, as the reference does.
    "paper": UNetProfile(PLAIN_ARCHITECTURE,
                         UNetTrainSettings(steps=15000, batch_size=128, lr=0.005, lr_step=4000, lr_gamma=0.2,
                                           temperature=10.0, val_count=1000, val_every=1000, checkpoint_every=1000,
                                           workers=4,
                                           augment=AugmentSettings(hflip=0.0, scale_min=1.0, color_jitter=0.0))),
    # The embedded default: 64 px scenes pairs on a 2-core CPU. The ImageNet MobileNetV2 encoder,
    # frozen, was chosen on ECSSD's train split against resnet18 from scratch and MobileNetV2
    # fine-tuned, and trains 900 steps in a third of resnet18's time (docs/results.md, U-Net encoders).
    "embedded": UNetProfile(UNetArchitecture(encoder="mobilenet_v2", decoder_channels=(128, 64, 32, 16, 8),
                                             encoder_weights="imagenet"),
                            UNetTrainSettings(steps=900, batch_size=32, lr=0.005, lr_step=300, lr_gamma=0.2,
                                              val_every=200, checkpoint_every=100, workers=1,
                                              freeze_encoder=True)),
}


def profile_for(manifest: dict) -> str:
    return "biggan" if str(manifest.get("generator", "")).startswith("biggan") else "embedded"


@dataclass
class TrainUNetConfig:
    data: Path
    out: Path
    profile: str | None = None  # default: from the data's generator
    encoder: str | None = None
    encoder_weights: str | None = None
    freeze_encoder: bool | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_step: int | None = None
    lr_gamma: float | None = None
    temperature: float | None = None
    val_count: int | None = None
    val_every: int | None = None
    checkpoint_every: int | None = None
    workers: int | None = None
    hflip: float | None = None
    scale_min: float | None = None
    color_jitter: float | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    resume: bool = False
    progress: bool = True
    # Train on fresh pairs drawn from the generator at every step, with the synthesis folder's
    # settings (its run, shift, mask rule and classes); its stored pairs then only score the model.
    stream: bool = False


def resolve_architecture(profile: str, encoder: str | None = None, encoder_weights: str | None = None) -> UNetArchitecture:
    """The profile's U-Net with the user's encoder choices."""
    if profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    arch = PROFILES[profile].architecture
    if encoder is not None and encoder != arch.encoder:
        # the profile's starting weights belong to its own encoder: another starts from scratch
        # unless --encoder-weights says otherwise
        arch = replace(arch, encoder=encoder, encoder_weights=None)
    if encoder_weights is not None:
        arch = replace(arch, encoder_weights=None if encoder_weights == "none" else encoder_weights)
    return arch


def resolve(config: TrainUNetConfig, manifest: dict) -> tuple[str, UNetArchitecture, UNetTrainSettings]:
    name = config.profile or profile_for(manifest)
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    profile = PROFILES[name]
    arch = resolve_architecture(name, config.encoder, config.encoder_weights)
    overrides = {k: v for k, v in {
        "steps": config.steps, "batch_size": config.batch_size, "lr": config.lr, "lr_step": config.lr_step,
        "lr_gamma": config.lr_gamma, "temperature": config.temperature, "val_count": config.val_count,
        "val_every": config.val_every, "checkpoint_every": config.checkpoint_every, "workers": config.workers,
    }.items() if v is not None}
    if "workers" not in overrides:  # the profile's loader workers, at most one per core this process has
        from saliency.core.runtime import usable_cores  # (torch warns of more, and they only contend)

        overrides["workers"] = min(profile.settings.workers, usable_cores())
    if "val_count" not in overrides:  # hold out 10 % of a small dataset, at most the profile's count
        count = int(manifest["count"])  # streamed, every stored pair may score the model: none trains it
        overrides["val_count"] = min(profile.settings.val_count, count if config.stream else max(1, count // 10))
    if config.freeze_encoder is not None:
        overrides["freeze_encoder"] = config.freeze_encoder
    elif arch.encoder_weights is None:  # a profile's frozen pretrained encoder, asked to start from scratch
        overrides["freeze_encoder"] = False
    settings = replace(profile.settings, seed=config.seed, **overrides)
    if settings.freeze_encoder and arch.encoder_weights is None:
        raise ConfigError("`freeze_encoder` needs pretrained encoder weights (`encoder_weights` imagenet): "
                        "a frozen random encoder learns nothing")
    augment = {k: v for k, v in {"hflip": config.hflip, "scale_min": config.scale_min,
                                  "color_jitter": config.color_jitter}.items() if v is not None}
    settings = replace(settings, augment=replace(settings.augment, **augment))
    settings.validate()
    return name, arch, settings


def is_complete(out: Path) -> bool:
    return (Path(out) / MODEL_META).is_file()


def run_train_unet(config: TrainUNetConfig) -> dict:
    refuse_output_in_inputs(config.out, {"--data": config.data})
    manifest = load_manifest(config.data)
    name, arch, settings = resolve(config, manifest)
    ctx = distributed.context()
    device = resolve_device(distributed.device_for(config.device, ctx))
    configure_device(device)
    settings = replace(settings, precision=resolve_precision(config.precision, device, cpu_bf16=True),
                       compile=config.compile)
    if settings.batch_size < ctx.world:
        raise ConfigError(f"`batch_size` {settings.batch_size} is smaller than the {ctx.world} processes")
    if manifest["count"] <= settings.val_count and not config.stream:  # checked before anything is fetched
        raise ConfigError(f"{config.data} has {manifest['count']} pairs; need more than `val_count` {settings.val_count}")
    stream = None
    if config.stream:
        from pipelines.synthesize import stream_from_manifest

        stream = stream_from_manifest(Path(config.data), manifest, device, seed=settings.seed)
    ensure([weights_need(encoder_weights(arch), progress=config.progress)])  # fetched once if missing
    out = ensure_writable_dir(config.out)
    if config.resume and not (out / CHECKPOINT_NAME).exists():
        raise ConfigError(f"`resume`: {out} has no {CHECKPOINT_NAME}")
    if not config.resume and (out / CHECKPOINT_NAME).exists():
        raise ConfigError(f"{out} already holds a training run; pass `resume` to continue it, or use another `out`")
    # Paths relative to the model folder (the data folder, the run it came from), so it can move.
    data = record_path(config.data, out)
    record = {"profile": name, "architecture": asdict(arch), "settings": asdict(settings),
              "data": data, "device": str(device), "processes": ctx.world, "streamed": config.stream}
    result = train_unet(Path(config.data), out, arch, settings, device, resume=config.resume,
                        progress=config.progress, record=record, stream=stream)
    if not ctx.is_main:
        return {"part": True, "rank": ctx.rank}
    manifest = {**manifest, "run": rebase_recorded(manifest.get("run"), config.data, out),
                "generator_options": rebased_options(manifest.get("generator_options"), config.data, out)}
    meta = {
        "profile": name,
        "settings": asdict(settings),
        "data": {"folder": data, "pairs": manifest["count"], "streamed": config.stream,
                 "trained_on": result["train_pairs"], "generator": manifest.get("generator"),
                 "generator_options": manifest.get("generator_options"), "classes": manifest.get("classes"),
                 "resolution": [manifest["height"], manifest["width"]], "run": manifest.get("run")},
        "input": {"normalize": "ImageNet mean/std on [0, 1] RGB", "stride": arch.stride},
        "encoder_weights_source": encoder_weights_source(arch),
        "steps": result["steps"],
        "seconds": result["seconds"],
        "validation": result["validation"],
        "val_pairs": result["val_pairs"],
        "device": str(device),
        "processes": ctx.world,
        "batch_norm": result["batch_norm"],
        "card": training_card(manifest, arch.encoder, data),
    }
    save_model(out, result["model"], arch, meta)
    return {**meta, "architecture": asdict(arch), "loss_curve": result["loss_curve"]}
