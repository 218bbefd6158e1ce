"""``sngan-mnist`` and ``sngan-anime``: the paper's Spectral Norm GAN generators (ResNet-like).

The architecture the authors used (their ``sn_resnet32`` / ``sn_resnet64``): a dense layer to
a 4x4 map, residual up-blocks (BN, ReLU, 2x nearest upsampling, 3x3 conv, BN, ReLU, 3x3 conv;
the shortcut is the upsampled input, through a 3x3 conv when the width changes), then BN,
ReLU, a 3x3 conv to the image and tanh. Latent: 128-d N(0, I). Spectral norm lives in the
discriminator only, so the generator is plain layers.

Weights:
- ``sngan-mnist`` with no ``--weights``: this project's own generator, trained on 5,000 MNIST
  digits by ``python -m tools.train_sngan`` and shipped in ``checkpoints/sngan-mnist/``
  (three up-blocks, 32x32, one channel; widths chosen for a CPU, see that folder's model.json).
- ``--weights`` with the authors' published files: a folder holding ``args.json`` and
  ``generator.pt`` (their SN_MNIST / SN_Anime download), or the ``generator.pt`` file alone.
  The widths are read from the tensors' shapes; the file is read with ``weights_only=True``
  and must match the architecture key for key.
- ``--weights`` with a folder (or ``.safetensors`` file) written by ``tools.train_sngan``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from directions.generators.base import Generator
from directions.generators.registry import register_generator
from saliency.core.weights import load_state_dict_strict, load_torch_weights
from saliency.core.shipped import shipped_folder
from saliency.core.errors import ConfigError, UserError

MNIST_WEIGHTS_DIR = shipped_folder("sngan-mnist")
MODEL_FILE, MODEL_JSON = "model.safetensors", "model.json"
AUTHORS_FILE, AUTHORS_ARGS = "generator.pt", "args.json"
SEED_SIZE = 4  # the dense layer's output map is 4x4

# The authors' two configurations (their sn_gen_resnet.py), for reference and for tests.
AUTHORS_WIDTHS = {"sn_resnet32": (256, 256, 256, 256), "sn_resnet64": (1024, 512, 256, 128, 64)}


class UpBlock(nn.Module):
    """Pre-activation residual block that doubles the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 3, padding=1) if in_channels != out_channels else None
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        up = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        h = nn.functional.interpolate(self.act(self.norm1(x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(self.act(self.norm2(self.conv1(h))))
        return h + (up if self.shortcut is None else self.shortcut(up))


class SNResNetGenerator(Generator):
    """The ResNet generator of SN-GAN; ``widths`` are the channels at 4x4, then after each block."""

    def __init__(self, widths: tuple[int, ...] = (128, 64, 32, 16), latent_dim: int = 128,
                 image_channels: int = 1) -> None:
        super().__init__()
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"an SN-GAN generator needs at least two positive widths, got {widths}")
        self.widths = tuple(int(w) for w in widths)
        self.latent_dim = int(latent_dim)
        self.channels = int(image_channels)
        self.resolution = SEED_SIZE * 2 ** (len(widths) - 1)
        self.dense = nn.Linear(self.latent_dim, SEED_SIZE * SEED_SIZE * self.widths[0])
        self.blocks = nn.ModuleList(UpBlock(a, b) for a, b in zip(self.widths[:-1], self.widths[1:]))
        self.norm = nn.BatchNorm2d(self.widths[-1])
        self.to_image = nn.Conv2d(self.widths[-1], self.channels, 3, padding=1)

    def raw(self, z: Tensor) -> Tensor:
        """The network's own output, in [-1, 1]."""
        x = self.dense(z).reshape(z.shape[0], self.widths[0], SEED_SIZE, SEED_SIZE)
        for block in self.blocks:
            x = block(x)
        return torch.tanh(self.to_image(torch.relu(self.norm(x))))

    def synthesize(self, z: Tensor, classes: Tensor | None) -> Tensor:
        return (self.raw(z) + 1) * 0.5

    def config(self) -> dict:
        return {"architecture": "sngan-resnet", "widths": list(self.widths), "latent_dim": self.latent_dim,
                "image_channels": self.channels, "resolution": self.resolution}


# ---------------------------------------------------------------------- the authors' layout
# Their generator is nn.Sequential(dense, reshape, block..., BN, ReLU, conv, tanh) inside a
# wrapper named ``model``; each block registers conv1/conv2 twice (as attributes and inside
# its own ``model`` Sequential), so a state dict may hold both names for one tensor.
_BLOCK_PARTS = {
    "model.0": "norm1", "model.3": "conv1", "conv1": "conv1", "model.4": "norm2", "model.6": "conv2",
    "conv2": "conv2", "bypass.1": "shortcut",
}
_BLOCK_KEY = re.compile(r"^model\.(\d+)\.(model\.\d+|conv1|conv2|bypass\.1)\.(\w+)$")
_TOP_KEY = re.compile(r"^model\.(\d+)\.(\w+)$")


def _blocks_in(state: dict) -> int:
    indices = {int(m.group(1)) for m in map(_BLOCK_KEY.match, state) if m}
    if not indices or sorted(indices) != list(range(2, 2 + len(indices))):
        raise ValueError("no residual blocks at model.2, model.3, ...")
    return len(indices)


def convert_authors_state_dict(state: dict) -> tuple[dict, dict]:
    """The authors' ``generator.pt`` state dict -> (our state dict, our constructor arguments).

    Keys may carry the wrapper's ``model.`` prefix or not. Every key must be accounted for, and
    the two names of one tensor must hold the same values; anything else is a ValueError.
    """
    if state and not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    elif state and any(k.startswith("model.model.") for k in state):
        raise ValueError("unexpected nesting model.model.*")
    blocks = _blocks_in(state)
    final_norm, final_conv = 2 + blocks, 4 + blocks
    ours: dict[str, Tensor] = {}
    for key, tensor in state.items():
        block = _BLOCK_KEY.match(key)
        top = _TOP_KEY.match(key)
        if block and 2 <= int(block.group(1)) < 2 + blocks:
            part = _BLOCK_PARTS.get(block.group(2))
            if part is None:
                raise ValueError(f"unexpected key {key}")
            name = f"blocks.{int(block.group(1)) - 2}.{part}.{block.group(3)}"
        elif top and int(top.group(1)) in (0, final_norm, final_conv):
            layer = {0: "dense", final_norm: "norm", final_conv: "to_image"}[int(top.group(1))]
            name = f"{layer}.{top.group(2)}"
        else:
            raise ValueError(f"unexpected key {key}")
        if name in ours and not torch.equal(ours[name], tensor):
            raise ValueError(f"{key} disagrees with the other name of the same tensor")
        ours[name] = tensor
    try:
        dense = ours["dense.weight"]
        widths = [dense.shape[0] // (SEED_SIZE * SEED_SIZE)]
        widths += [ours[f"blocks.{i}.conv1.weight"].shape[0] for i in range(blocks)]
        image_channels = ours["to_image.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(f"missing {exc.args[0]}") from exc
    return ours, {"widths": tuple(widths), "latent_dim": dense.shape[1], "image_channels": image_channels}


def _read_authors_args(folder: Path) -> dict:
    path = folder / AUTHORS_ARGS
    if not path.is_file():
        return {}
    from saliency.core.json_files import read_json

    return read_json(path, {"latent_dim?": int, "image_channels?": int})


def load_authors_generator(path: Path, what: str) -> SNResNetGenerator:
    """A generator from the authors' ``generator.pt`` (or their folder holding it)."""
    folder, file = (path, path / AUTHORS_FILE) if path.is_dir() else (path.parent, path)
    state = load_torch_weights(file, what)
    try:
        state, arguments = convert_authors_state_dict(state)
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise UserError(f"{what}: {file} is not an SN-GAN generator in the authors' layout ({exc})") from exc
    args = _read_authors_args(folder)
    for ours, theirs in (("latent_dim", "latent_dim"), ("image_channels", "image_channels")):
        if theirs in args and int(args[theirs]) != arguments[ours]:
            raise UserError(f"{what}: {folder / AUTHORS_ARGS} says {theirs} {args[theirs]}, "
                            f"but {file} holds {arguments[ours]}")
    generator = SNResNetGenerator(**arguments)
    load_state_dict_strict(generator, state, file, what)
    return generator


def load_own_generator(path: Path, what: str) -> SNResNetGenerator:
    """A generator saved by ``tools.train_sngan`` (``model.safetensors`` + ``model.json``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder, file = (path, path / MODEL_FILE) if path.is_dir() else (path.parent, path)
    meta_path = folder / MODEL_JSON
    from saliency.core.json_files import read_json

    meta = read_json(meta_path, {"widths": [int], "latent_dim": int, "image_channels": int},
                     missing=f"{what}: {meta_path} not found (it says how {file.name} was built)")
    try:
        generator = SNResNetGenerator(tuple(meta["widths"]), meta["latent_dim"], meta["image_channels"])
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise UserError(f"{what}: {meta_path} is not a valid SN-GAN model.json ({exc})") from exc
    try:
        state = load_file(str(file))
    except FileNotFoundError as exc:
        raise UserError(f"{what}: weights file {file} not found") from exc
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{what}: {file} is corrupted or truncated ({type(exc).__name__})") from exc
    load_state_dict_strict(generator, state, file, what)
    return generator


def load_sngan(weights: str | os.PathLike, what: str) -> SNResNetGenerator:
    """Either layout, told apart by what the path holds."""
    path = Path(weights)
    if not path.exists():
        raise UserError(f"{what}: weights {path} not found")
    own = path.suffix == ".safetensors" or (path.is_dir() and (path / MODEL_FILE).is_file())
    return load_own_generator(path, what) if own else load_authors_generator(path, what)


@register_generator("sngan-mnist")
def build_sngan_mnist(weights: str | None = None) -> SNResNetGenerator:
    """SN-GAN (ResNet) on MNIST digits, 32 px gray: ours (shipped), or the authors' with --weights."""
    generator = load_sngan(weights if weights is not None else MNIST_WEIGHTS_DIR, "sngan-mnist")
    if generator.channels != 1:
        raise ConfigError(f"sngan-mnist: {weights} holds a {generator.channels}-channel generator; "
                          "use `generator` sngan-anime for colour images")
    return generator


@register_generator("sngan-anime")
def build_sngan_anime(weights: str | None = None) -> SNResNetGenerator:
    """SN-GAN (ResNet) on anime faces, 64 px: the authors' SN_Anime weights, --weights DIR (needed)."""
    if weights is None:
        raise ConfigError("sngan-anime needs `weights`: the authors' SN_Anime folder (args.json + generator.pt) "
                        "from their GANLatentDiscovery download")
    return load_sngan(weights, "sngan-anime")
