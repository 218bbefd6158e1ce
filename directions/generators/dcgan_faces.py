"""``dcgan-faces``: a real pretrained 64x64 DCGAN face generator (100-d latent).

The weights ship inside the PyPI package ``gan-face-generate`` (MIT): install it with
``pip install --no-deps gan-face-generate==1.1.1`` (its declared dependencies, wandb among
them, are not needed). Only its weight file is read, with ``weights_only=True``; the network
is defined here: the DCGAN generator of Radford et al. (transposed convolutions 4x4,
stride 2, batch norm, ReLU, tanh), 512-256-128-64 feature maps.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from torch import Tensor, nn

from directions.generators.base import Generator
from directions.generators.registry import register_generator
from saliency.core.weights import load_state_dict_strict, load_torch_weights
from saliency.core.errors import UserError

PACKAGE = "gan_face_generate"
INSTALL_HINT = "pip install --no-deps gan-face-generate==1.1.1"
CHECKPOINT_KEY = "netG_state_dict"


def packaged_weights() -> Path:
    """The weight file inside the installed ``gan-face-generate`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"dcgan-faces needs the package gan-face-generate: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights.tar"
    if not path.is_file():
        raise UserError(f"gan-face-generate is installed but has no weights.tar; reinstall: {INSTALL_HINT}")
    return path


class DCGANFaces(Generator):
    latent_dim = 100
    num_classes = 0
    resolution = 64

    def __init__(self, features: int = 64) -> None:
        super().__init__()

        def up(c_in: int, c_out: int, stride: int, padding: int) -> list[nn.Module]:
            return [
                nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]

        f = features
        # Named `main` with this layer order so the published state dict loads as is.
        self.main = nn.Sequential(
            *up(self.latent_dim, f * 8, 1, 0),  # 4x4
            *up(f * 8, f * 4, 2, 1),  # 8x8
            *up(f * 4, f * 2, 2, 1),  # 16x16
            *up(f * 2, f, 2, 1),  # 32x32
            nn.ConvTranspose2d(f, 3, 4, 2, 1, bias=False),  # 64x64
            nn.Tanh(),
        )

    def synthesize(self, z: Tensor, classes: Tensor | None) -> Tensor:
        return (self.main(z[:, :, None, None]) + 1) * 0.5


def load_dcgan_faces(weights: str | os.PathLike | None = None) -> DCGANFaces:
    path = Path(weights) if weights is not None else packaged_weights()
    checkpoint = load_torch_weights(path, "dcgan-faces")
    state = checkpoint.get(CHECKPOINT_KEY, None)
    if not isinstance(state, dict):
        raise UserError(f"dcgan-faces: {path} has no {CHECKPOINT_KEY!r} entry")
    generator = DCGANFaces()
    load_state_dict_strict(generator, state, path, "dcgan-faces")
    return generator


@register_generator("dcgan-faces")
def build_dcgan_faces(weights: str | None = None) -> DCGANFaces:
    """The pretrained DCGAN faces (weights from gan-face-generate, or --weights FILE)."""
    return load_dcgan_faces(weights)
