"""The saliency model: a segmentation-models-pytorch U-Net with two output classes, or (encoder
``"plain"``) the paper's plain U-Net trained from scratch (:mod:`saliency.plain_unet`).

Saved as ``model.safetensors`` (weights) + ``model.json`` (architecture and the settings it
was trained with), so a model folder is all ``saliency eval`` needs. Encoder weights from
ImageNet are used only when already on disk: smp's own (its hub cache), or, for
``mobilenet_v2``, the MobileNetV2 that ``saliency fetch-weights mobilenet-v2-imagenet``
converts from Google's TFLite file, which installs offline.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from saliency.core.artifacts import write_json, write_safetensors
from saliency.core.json_files import read_json
from saliency.core.errors import ConfigError, UserError

MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"
MODEL_FORMAT = "gan-saliency-unet/1"


@dataclass(frozen=True)
class UNetArchitecture:
    encoder: str = "resnet18"
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8)
    classes: int = 2
    encoder_weights: str | None = None

    @property
    def stride(self) -> int:
        """Inputs must be a multiple of this many pixels on each side."""
        return 2 ** len(self.decoder_channels)


def smp_weights_cached(encoder: str, weights: str) -> bool:
    """Whether smp would find ``encoder``'s ``weights`` in its hub cache without a network."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from segmentation_models_pytorch.encoders import encoders

        settings = encoders[encoder]["pretrained_settings"][weights]
        found = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings.get("revision"))
    except (ImportError, KeyError, TypeError, ValueError):
        return False
    return isinstance(found, str)


CONVERTED_WEIGHTS = "mobilenet-v2-imagenet"  # the `saliency fetch-weights` name of those weights


def converted_encoder_weights(arch: UNetArchitecture) -> Path | None:
    """The project's own converted ImageNet weights for this encoder, when smp has none cached."""
    if arch.encoder != "mobilenet_v2" or arch.encoder_weights != "imagenet":
        return None
    if smp_weights_cached(arch.encoder, arch.encoder_weights):
        return None
    from saliency.downloads.weights import installed_path

    path = installed_path(CONVERTED_WEIGHTS)
    if not path.is_file():
        raise ConfigError(f"no ImageNet weights for the mobilenet_v2 encoder: smp has none in its cache and {path} "
                          "is missing; run `saliency fetch-weights mobilenet-v2-imagenet` (offline: add --from "
                          "FILE.tflite), or pass `encoder_weights` none")
    return path


def encoder_weights_source(arch: UNetArchitecture) -> str | None:
    """Where the encoder's starting weights come from, for model.json: by name (the weights
    and their file), never by where they lie on this machine."""
    if arch.encoder_weights is None:
        return None
    converted = converted_encoder_weights(arch)
    if converted:
        return f"saliency fetch-weights {CONVERTED_WEIGHTS} ({converted.name})"
    return f"segmentation-models-pytorch {arch.encoder} {arch.encoder_weights}"


PLAIN = "plain"  # the encoder name of the paper's plain U-Net
PLAIN_ARCHITECTURE = UNetArchitecture(encoder=PLAIN, decoder_channels=(256, 128, 64, 64))


def build_unet(arch: UNetArchitecture) -> nn.Module:
    if arch.encoder == PLAIN:
        from saliency.plain_unet import ENCODER_WIDTHS, PlainUNet

        if arch.encoder_weights is not None:
            raise ConfigError("the plain U-Net has no pretrained weights: pass `encoder_weights` none")
        if len(arch.decoder_channels) != len(ENCODER_WIDTHS) - 1:
            raise UserError(f"a plain U-Net has {len(ENCODER_WIDTHS) - 1} decoder levels, "
                            f"got {len(arch.decoder_channels)}")
        return PlainUNet(arch.classes, decoder_widths=tuple(arch.decoder_channels))
    import segmentation_models_pytorch as smp

    converted = converted_encoder_weights(arch)
    if converted is not None:
        model = build_unet(UNetArchitecture(**{**asdict(arch), "encoder_weights": None}))
        try:
            state = load_file(str(converted))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"{converted} is unreadable ({type(exc).__name__}); fetch it again with `force`") from exc
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        try:
            model.encoder.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise UserError(f"{converted} does not fit smp's mobilenet_v2 encoder") from exc
        return model
    try:
        return smp.Unet(encoder_name=arch.encoder, encoder_weights=arch.encoder_weights, in_channels=3,
                        classes=arch.classes, decoder_channels=tuple(arch.decoder_channels),
                        encoder_depth=len(arch.decoder_channels))
    except KeyError as exc:
        raise UserError(f"unknown U-Net encoder {arch.encoder!r} (see segmentation-models-pytorch's encoder list)") from exc
    except (OSError, RuntimeError, ValueError) as exc:  # weights requested but not on disk, offline
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot build the U-Net encoder {arch.encoder} with {arch.encoder_weights} weights: {first}") from exc


def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """``(n, 2, H, W)`` logits -> ``(n, H, W)`` probability of the salient class."""
    return logits.float().softmax(dim=1)[:, 1]


def save_model(folder: Path, model: nn.Module, arch: UNetArchitecture, meta: dict) -> None:
    """Write the weights, then model.json (last, so its presence means complete)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_safetensors(folder / MODEL_WEIGHTS, state, {"format": MODEL_FORMAT})
    write_json(folder / MODEL_META, {"format": MODEL_FORMAT, "architecture": asdict(arch), **meta})


# What model.json must hold for the model to be rebuilt (saliency/core/json_files.py's notation).
MODEL_META_SHAPE = {"format": str, "architecture": {"encoder": str, "decoder_channels": [int], "classes?": int,
                                                    "encoder_weights?": (str, None)},
                    "data?": {"resolution?": [int], "classes?": ([int], None), "generator?": (str, None)},
                    "card?": dict, "settings?": dict}


def read_model_meta(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / MODEL_META
    if not folder.is_dir():
        raise UserError(f"model folder {folder} not found")
    if not path.is_file():
        raise UserError(f"{folder} holds no trained model (no {MODEL_META}; has `saliency train-unet` finished?)")
    meta = read_json(path, MODEL_META_SHAPE)
    if meta["format"] != MODEL_FORMAT:
        raise UserError(f"{path} is not a model description of this tool (format {meta['format']!r})")
    arch = meta["architecture"]
    arch["decoder_channels"] = tuple(arch["decoder_channels"])
    try:
        meta["architecture"] = UNetArchitecture(**arch)
    except TypeError as exc:  # a key UNetArchitecture does not take
        raise UserError(f"{path} is not a model description of this tool ({exc})") from exc
    return meta


def load_model(folder: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model that ``model.json`` describes and load its weights strictly."""
    folder = Path(folder)
    meta = read_model_meta(folder)
    arch = meta["architecture"]
    model = build_unet(UNetArchitecture(**{**asdict(arch), "encoder_weights": None}))
    path = folder / MODEL_WEIGHTS
    try:
        state = load_file(str(path))
    except FileNotFoundError as exc:
        raise UserError(f"{path} not found") from exc
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path} is corrupted ({type(exc).__name__})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path} does not fit the {arch.encoder} U-Net that {MODEL_META} describes") from exc
    return model.to(device).eval(), meta
