"""``biggan-deep-128``: the paper's generator, BigGAN-deep at 128 px, 1000 ImageNet classes.

Architecture from the ``pytorch-pretrained-biggan`` package; weights (``config.json`` and
``pytorch_model.bin``) from ``--weights DIR`` or from the Hugging Face hub repository
``osanseviero/BigGAN-deep-128`` through ``huggingface_hub``'s cache (offline mode honoured).
The package's own download URLs are dead and its loader unpickles freely, so neither is used.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from directions.generators.base import Generator
from directions.generators.registry import register_generator
from saliency.core.weights import load_state_dict_strict, load_torch_weights
from saliency.core.errors import ConfigError, UserError

HUB_REPO = "osanseviero/BigGAN-deep-128"
# The repository commit a first download takes (its config.json and pytorch_model.bin are
# those of the repository's "Add initial model" and "Rename file" commits of August 2021, the
# files every later commit keeps), so a change pushed to the repository is never taken silently.
HUB_REVISION = "8298f9813ae8188fa7404299d4d8edcd00bbd728"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
TRUNCATION_BOUND = 2.0  # latents are drawn from N(0, 1) truncated to [-2, 2], then scaled


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_weight_files(weights: str | os.PathLike | None) -> tuple[Path, Path]:
    """``(config.json, pytorch_model.bin)`` from a folder, else from the hub's cache.

    The hub is asked only when no folder is given; offline (``HF_HUB_OFFLINE=1``, or no
    network) only its cache is read. Missing weights are a one-line error that says which
    files to put where.
    """
    if weights is not None:
        folder = Path(weights)
        config, model = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        missing = [p.name for p in (config, model) if not p.is_file()]
        if missing:
            raise UserError(
                f"biggan-deep-128: {folder} lacks {' and '.join(missing)}; it needs "
                f"{CONFIG_NAME} and {WEIGHTS_NAME} from https://huggingface.co/{HUB_REPO}"
            )
        return config, model
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise UserError("biggan-deep-128 needs huggingface_hub: pip install huggingface_hub") from exc
    # Read at call time (huggingface_hub reads its variables once, at import).
    record = _read_digest_record()
    options = {
        "cache_dir": os.environ.get("HF_HUB_CACHE") or None,
        "endpoint": os.environ.get("HF_ENDPOINT") or None,
        "local_files_only": _hub_offline(),
        "revision": record["revision"] if record else HUB_REVISION,  # what the first download recorded
    }
    try:
        config = hf_hub_download(HUB_REPO, CONFIG_NAME, **options)
        model = hf_hub_download(HUB_REPO, WEIGHTS_NAME, **options)
    except Exception as exc:  # offline, no network, or not in the cache
        raise ConfigError(
            f"biggan-deep-128 weights not found ({type(exc).__name__}): put {CONFIG_NAME} and "
            f"{WEIGHTS_NAME} from https://huggingface.co/{HUB_REPO} in a folder and pass "
            f"`weights` DIR, or go online once so huggingface_hub caches them"
        ) from exc
    _check_digests(Path(config), Path(model), record)
    return Path(config), Path(model)


# The repository publishes no file digests, so the first download of the pinned revision
# records both files' SHA-256 (trust on first use) in the hub cache beside them; every later
# use loads that revision and checks the digests.
DIGESTS_NAME = "gan-saliency-digests.json"


def hub_repo_folder() -> Path:
    from huggingface_hub import constants

    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    return Path(cache) / ("models--" + HUB_REPO.replace("/", "--"))


def _read_digest_record() -> dict | None:
    path = hub_repo_folder() / DIGESTS_NAME
    if not path.is_file():
        return None
    from saliency.core.json_files import read_json

    try:
        return read_json(path, {"files": dict, "revision": str})
    except UserError as exc:
        raise UserError(f"{exc}; remove it to record the digests again") from exc


def _check_digests(config: Path, model: Path, record: dict | None) -> None:
    from saliency.core.artifacts import write_json
    from saliency.core.artifacts import sha256_file

    found = {CONFIG_NAME: sha256_file(config), WEIGHTS_NAME: sha256_file(model)}
    path = hub_repo_folder() / DIGESTS_NAME
    if record is None:
        try:
            write_json(path, {"repository": HUB_REPO, "revision": model.parent.name, "files": found,
                              "note": "recorded at the first download (trust on first use); checked on every use"})
        except (UserError, OSError) as exc:  # a read-only shared cache: load, unrecorded, and say so
            import warnings

            warnings.warn(f"biggan-deep-128: cannot record the weights' digests in {path} ({exc}); "
                          "they are not checked", stacklevel=2)
        return
    for name, digest in found.items():
        if record["files"].get(name) != digest:
            raise UserError(f"biggan-deep-128: {name} in the hub cache has sha256 {digest[:16]}..., not the "
                            f"{str(record['files'].get(name))[:16]}... recorded at the first download ({path}); "
                            "if the repository really changed, remove that file")


def _biggan_package():
    try:
        import pytorch_pretrained_biggan
    except ImportError as exc:
        raise UserError(f"biggan-deep-128 needs pytorch-pretrained-biggan and its imports ({exc}): "
                        f"pip install -e . installs them") from exc
    return pytorch_pretrained_biggan


def _read_config(path: Path):
    BigGANConfig = _biggan_package().BigGANConfig

    try:
        return BigGANConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise UserError(f"biggan-deep-128: {path} is not a valid BigGAN config.json") from exc


class BigGANDeep(Generator):
    """BigGAN-deep wrapped in the generator protocol: class one-hot in, [0, 1] images out."""

    def __init__(self, model: torch.nn.Module, truncation: float = 0.4) -> None:
        super().__init__()
        if not 0.0 < truncation <= 1.0:
            raise UserError(f"truncation must lie in (0, 1], got {truncation}")
        self.model = model
        self.truncation = float(truncation)
        config = model.config
        self.latent_dim = int(config.z_dim)
        self.num_classes = int(config.num_classes)
        self.resolution = int(config.output_dim)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The truncation trick's prior: ``truncation * z``, z ~ N(0, 1) truncated to [-2, 2]
        (drawn by inverting the normal CDF, so one seed gives one sample everywhere)."""
        lo = 0.5 * (1 + math.erf(-TRUNCATION_BOUND / math.sqrt(2)))
        device = generator.device if generator is not None else torch.device("cpu")
        u = lo + (1 - 2 * lo) * torch.rand(n, self.latent_dim, generator=generator, dtype=torch.float64, device=device)
        z = torch.special.ndtri(u) * self.truncation
        return z.to(self.device, self.dtype)

    def synthesize(self, z: Tensor, classes: Tensor) -> Tensor:
        one_hot = F.one_hot(classes, self.num_classes).to(z.dtype)
        images = self.model(z, one_hot, self.truncation)
        return (images + 1) * 0.5


def load_biggan(weights: str | os.PathLike | None = None, truncation: float = 0.4) -> BigGANDeep:
    """Build BigGAN-deep from ``config.json`` + ``pytorch_model.bin`` (see module docstring)."""
    BigGAN = _biggan_package().BigGAN
    config_path, model_path = resolve_weight_files(weights)
    config = _read_config(config_path)
    model = BigGAN(config)
    state = load_torch_weights(model_path, "biggan-deep-128")
    load_state_dict_strict(model, state, model_path, "biggan-deep-128")
    return BigGANDeep(model.eval(), truncation=truncation)


@register_generator("biggan-deep-128")
def build_biggan(weights: str | None = None, truncation: float = 0.4) -> BigGANDeep:
    """BigGAN-deep-128 (weights: --weights DIR or the hub cache)."""
    return load_biggan(weights, truncation)
