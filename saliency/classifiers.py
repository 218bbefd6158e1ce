"""Image classifiers that vote for a conditional generator's classes, by name.

A classifier here is a module from a ``(n, 3, S, S)`` batch (already preprocessed) to logits
over the generator's classes, plus ``preprocess`` that turns a PIL image into that input.

- ``resnet18-imagenet``: torchvision's ResNet-18 with its ImageNet weights, for BigGAN (the
  paper's choice). Read from ``--classifier-weights`` or torchvision's cache; never downloaded
  behind the user's back.
- ``mobilenet-v2-imagenet``: MobileNetV2 from Google's quantised TFLite file (Apache-2.0),
  converted to torchvision's layout by ``saliency fetch-weights mobilenet-v2-imagenet`` (or
  from ``--classifier-weights`` pointing at the ``.tflite`` or the converted file): the ImageNet
  classifier that installs offline, padding as TensorFlow does.
- ``scenes-shapes``: a small CNN over the ten shape families of the embedded ``scenes``
  generator, trained by ``python -m tools.scenes_classifier`` and shipped in
  ``checkpoints/scenes-classifier/`` so the whole embedded path runs offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from saliency.core.weights import load_state_dict_strict, load_torch_weights
from saliency.core.json_files import read_json
from saliency.core.shipped import shipped_folder
from saliency.core.errors import ConfigError, UserError
from saliency.core.imagenet import IMAGENET_MEAN, IMAGENET_STD

SCENES_CLASSIFIER_DIR = shipped_folder("scenes-classifier")


@dataclass
class Classifier:
    name: str
    model: nn.Module
    num_classes: int
    input_size: int
    preprocess: Callable[[Image.Image], Tensor]


def resize_center_crop(image: Image.Image, resize: int, crop: int) -> Tensor:
    """Shorter side to ``resize``, centre crop ``crop``; a float tensor in [0, 1]."""
    from torchvision.transforms import functional as TF  # imported here: a second at start-up

    tensor = TF.pil_to_tensor(image.convert("RGB"))
    tensor = TF.resize(tensor, resize, antialias=True)
    return TF.center_crop(tensor, crop).float() / 255.0


class ShapesNet(nn.Module):
    """Four strided conv blocks and a linear head: enough to name a scenes shape at 64 px."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        layers, channels = [], 3
        for out in (width, width * 2, width * 4, width * 4):
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def load_scenes_classifier(weights: str | Path | None = None) -> Classifier:
    folder = Path(weights) if weights else SCENES_CLASSIFIER_DIR
    if folder.is_file():
        folder = folder.parent
    meta_path, tensor_path = folder / "model.json", folder / "model.safetensors"
    for path in (meta_path, tensor_path):
        if not path.is_file():
            raise UserError(f"scenes classifier: {path} not found (make it from a clone with `python -m tools.scenes_classifier`)")
    meta = read_json(meta_path, {"num_classes": int, "width": int, "input_size": int})
    if not (0 < meta["num_classes"] <= 100_000 and 0 < meta["width"] <= 4096 and 8 <= meta["input_size"] <= 4096):
        raise UserError(f"{meta_path}: num_classes, width or input_size out of range")
    try:
        state = load_file(str(tensor_path))
        model = ShapesNet(num_classes=meta["num_classes"], width=meta["width"])
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"scenes classifier in {folder} is unreadable ({type(exc).__name__})") from exc
    load_state_dict_strict(model, state, tensor_path, "scenes classifier")
    size = meta["input_size"]
    return Classifier("scenes-shapes", model.eval(), model.num_classes, size,
                      lambda image: resize_center_crop(image, size, size))


def load_resnet18_imagenet(weights: str | Path | None = None) -> Classifier:
    from torchvision.models import resnet18

    if weights is None:
        path = resnet18_weights_path()
        if not path.is_file():
            raise ConfigError(f"ResNet-18 ImageNet weights not found: torchvision looks for {path} "
                              "(`saliency fetch-weights resnet18-imagenet`, or pass `classifier_weights` PATH)")
    else:
        path = Path(weights)
    model = resnet18(weights=None)
    load_state_dict_strict(model, load_torch_weights(path, "ResNet-18 classifier"), path, "ResNet-18 classifier")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return Classifier("resnet18-imagenet", model.eval(), 1000, 224,
                      lambda image: (resize_center_crop(image, 256, 224) - mean) / std)


def load_mobilenet_v2_imagenet(weights: str | Path | None = None) -> Classifier:
    from torchvision.models import mobilenet_v2

    from saliency.downloads.weights import installed_path
    from saliency.tflite_mobilenet import convert_mobilenet_v2_tflite, pad_like_tensorflow

    path = Path(weights) if weights is not None else installed_path("mobilenet-v2-imagenet")
    if not path.is_file():
        if weights is None:
            raise ConfigError(f"MobileNetV2 ImageNet weights not found at {path}: run "
                              "`saliency fetch-weights mobilenet-v2-imagenet` (add --from FILE.tflite offline), "
                              "or pass `classifier_weights` PATH")
        raise UserError(f"MobileNetV2 classifier: {path} not found")
    if path.suffix == ".tflite":
        state = convert_mobilenet_v2_tflite(path)
    else:
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"MobileNetV2 classifier: {path} is not a safetensors file ({type(exc).__name__})") from exc
    model = mobilenet_v2(num_classes=1000)
    load_state_dict_strict(model, state, path, "MobileNetV2 classifier")
    pad_like_tensorflow(model)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return Classifier("mobilenet-v2-imagenet", model.eval(), 1000, 224,
                      lambda image: (resize_center_crop(image, 256, 224) - mean) / std)


CLASSIFIERS: dict[str, Callable[..., Classifier]] = {
    "resnet18-imagenet": load_resnet18_imagenet,
    "mobilenet-v2-imagenet": load_mobilenet_v2_imagenet,
    "scenes-shapes": load_scenes_classifier,
}

# The classifiers that speak each conditional generator's class vocabulary, in order of
# preference: the paper's ResNet-18 where its weights are on disk, else the one that installs offline.
GENERATOR_CLASSIFIERS = {
    "biggan-deep-128": ("resnet18-imagenet", "mobilenet-v2-imagenet"),
    "biggan-128": ("resnet18-imagenet", "mobilenet-v2-imagenet"),
    "scenes": ("scenes-shapes",),
}


def resnet18_weights_path() -> Path:
    """Where torchvision (and ``fetch-weights resnet18-imagenet``) keeps the weights."""
    from saliency.downloads.weights import installed_path

    return installed_path("resnet18-imagenet")


def default_classifier(generator: str) -> tuple[str, str]:
    """(classifier name, why) for the class vote of ``generator``; one line if none can run."""
    choices = GENERATOR_CLASSIFIERS.get(generator)
    if not choices:
        raise ConfigError(f"no classifier knows the classes of {generator}; pass `classes` or `classifier`")
    if choices[0] != "resnet18-imagenet":
        return choices[0], f"the classifier of {generator}'s classes"
    if resnet18_weights_path().is_file():
        return "resnet18-imagenet", f"the paper's ResNet-18 (weights found at {resnet18_weights_path()})"
    from saliency.downloads.weights import installed_path

    if installed_path("mobilenet-v2-imagenet").is_file():
        return "mobilenet-v2-imagenet", (f"MobileNetV2 (no ResNet-18 weights at {resnet18_weights_path()}; "
                                         "the paper used ResNet-18)")
    raise ConfigError(f"no ImageNet classifier for the class vote of {generator}: run `saliency fetch-weights "
                      "resnet18-imagenet` (the paper's) or `saliency fetch-weights mobilenet-v2-imagenet`, "
                      "or pass `classes`")


def build_classifier(name: str, weights: str | Path | None = None) -> Classifier:
    if name not in CLASSIFIERS:
        raise UserError(f"unknown classifier {name!r}; known: {', '.join(sorted(CLASSIFIERS))}")
    return CLASSIFIERS[name](weights)
