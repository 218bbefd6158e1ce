"""Third-party weights by name: where they come from, how they are checked, where they are kept.

``saliency fetch-weights NAME`` downloads one to a temporary name, checks its SHA-256 before
anything reads it, converts it where the project needs another layout (written atomically as
safetensors), and keeps the result in torch hub's checkpoints folder
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), where
torchvision looks too. Nothing is ever unpickled: the TFLite file is read as a flatbuffer,
``.pth`` files only by the loaders, with ``weights_only=True``.

Where the publisher gives no digest (the authors' BigGAN archive), the first download records
the file's SHA-256 beside the installed weights (trust on first use) and every later install is
checked against it. From an archive, the one member the project needs is extracted and kept.

``--from FILE`` installs a copy already on disk (the same checks), for machines without a
network; ``SALIENCY_WEIGHTS_MIRROR`` names a folder (or an http(s) base URL) where the files are
looked for by their published names before the network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from saliency.core.artifacts import write_json, write_safetensors
from saliency.core.errors import ConfigError, UserError
from saliency.core.artifacts import sha256_file
from saliency.downloads.transfer import download


@dataclass(frozen=True)
class PretrainedWeights:
    name: str
    url: str
    filename: str  # the file as published
    sha256: str  # the full digest, or the prefix the publisher gives (torchvision names files by one)
    installed_name: str  # what the cache keeps
    convert: Callable[[Path], dict] | None = None  # published file -> state dict (then kept as safetensors)
    licence: str = ""
    notes: str = ""
    member: str | None = None  # a tar archive: keep its one file of this name
    max_member_bytes: int = 2 << 30  # a member larger than this is refused before it is read


TOFU_SUFFIX = ".sha256.json"  # beside an installed file whose publisher gives no digest


def _convert_mobilenet(path: Path) -> dict:
    from saliency.tflite_mobilenet import convert_mobilenet_v2_tflite

    return convert_mobilenet_v2_tflite(path)


CORAL_COMMIT = "104342d2d3480b3e66203073dac24f4e2dbb4c41"
MOBILENET_SHA256 = "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"
WEIGHTS: dict[str, PretrainedWeights] = {
    "mobilenet-v2-imagenet": PretrainedWeights(
        name="mobilenet-v2-imagenet",
        url=f"https://raw.githubusercontent.com/google-coral/test_data/{CORAL_COMMIT}/mobilenet_v2_1.0_224_quant.tflite",
        filename="mobilenet_v2_1.0_224_quant.tflite",
        sha256=MOBILENET_SHA256,
        installed_name=f"mobilenet_v2-tflite-{MOBILENET_SHA256[:8]}.safetensors",
        convert=_convert_mobilenet,
        licence="Apache-2.0 (google-coral/test_data)",
        notes="uint8 MobileNetV2 1.0 / 224, dequantised into torchvision's mobilenet_v2 layout",
    ),
    "resnet18-imagenet": PretrainedWeights(
        name="resnet18-imagenet",
        url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        filename="resnet18-f37072fd.pth",
        sha256="f37072fd",  # torchvision publishes the first 8 hex digits, in the file name
        installed_name="resnet18-f37072fd.pth",
        licence="BSD-3-Clause (torchvision)",
        notes="torchvision's ResNet18_Weights.IMAGENET1K_V1",
    ),
}


WEIGHTS["biggan-128-authors"] = PretrainedWeights(
    name="biggan-128-authors",
    # The archive the reference code's download.py names (``?dl=1``: the file, not Dropbox's page).
    url="https://www.dropbox.com/s/zte4oein08ajsij/pretrained_biggan.tar?dl=1",
    filename="pretrained_biggan.tar",
    sha256="",  # none published: recorded at the first download, checked after
    installed_name="biggan-128-authors-G_ema.pth",
    member="G_ema.pth",
    licence="MIT (BigGAN-PyTorch, Brock and Andonian)",
    notes="BigGAN-PyTorch's 128 px ImageNet G_ema.pth from the reference code's pretrained_biggan archive: "
          "the generator of the paper's saliency experiment (the `paper` profile)",
)

# Fetched through huggingface_hub into its cache, where the generator looks; no published digest.
HUB_WEIGHTS = "biggan-deep-128"


def fetch_biggan() -> Path:
    """Download BigGAN-deep-128 into huggingface_hub's cache; the first download records the
    revision and the files' SHA-256, later ones check them. Returns the recorded digests' file."""
    from directions.generators.biggan import DIGESTS_NAME, hub_repo_folder, resolve_weight_files

    resolve_weight_files(None)
    return hub_repo_folder() / DIGESTS_NAME


def weights_dir() -> Path:
    """torch hub's checkpoints folder (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def spec(name: str) -> PretrainedWeights:
    if name not in WEIGHTS:
        known = ", ".join(sorted([*WEIGHTS, HUB_WEIGHTS]))
        raise UserError(f"unknown weights {name!r}; known: {known}")
    return WEIGHTS[name]


def installed_path(name: str) -> Path:
    """Where ``fetch-weights NAME`` puts the weights (they may not be there yet)."""
    return weights_dir() / spec(name).installed_name


WEIGHTS_MIRROR_ENV = "SALIENCY_WEIGHTS_MIRROR"


def mirror_source(weights: PretrainedWeights) -> tuple[Path | None, str | None]:
    """(a local copy, a mirror URL) of the published file from ``$SALIENCY_WEIGHTS_MIRROR``."""
    mirror = os.environ.get(WEIGHTS_MIRROR_ENV)
    if not mirror:
        return None, None
    if mirror.startswith(("http://", "https://")):
        return None, mirror.rstrip("/") + "/" + weights.filename
    local = Path(mirror) / weights.filename
    return (local, None) if local.is_file() else (None, None)


def _record_path(final: Path) -> Path:
    return final.with_name(final.name + TOFU_SUFFIX)


def _recorded_digest(final: Path, weights: PretrainedWeights) -> dict | None:
    """The digest recorded at the first install of weights whose publisher gives none."""
    if weights.sha256:
        return None
    path = _record_path(final)
    if not path.is_file():
        return None
    from saliency.core.json_files import read_json

    return read_json(path, {"sha256": str, "weights?": str, "file?": str, "note?": str})


def _extract_member(archive: Path, weights: PretrainedWeights, staging: Path) -> Path:
    """The one regular file named ``weights.member`` in the tar ``archive``, copied out (never
    extracted by path: no member can write outside ``staging``)."""
    import tarfile

    try:
        with tarfile.open(archive) as tar:
            found = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name == weights.member]
            if len(found) != 1:
                raise UserError(f"{weights.name}: {weights.filename} holds {len(found)} files named {weights.member}, "
                                "not one; not installed")
            member = found[0]
            if member.size > weights.max_member_bytes:
                raise UserError(f"{weights.name}: {member.name} in {weights.filename} is {member.size:,} bytes, over "
                                f"{weights.max_member_bytes:,}; not installed")
            out = staging / f"member-{weights.member}"
            with tar.extractfile(member) as source, open(out, "wb") as target:
                shutil.copyfileobj(source, target)
    except (tarfile.TarError, EOFError) as exc:
        raise UserError(f"{weights.name}: {weights.filename} is not a readable tar archive ({type(exc).__name__}); "
                        "not installed") from exc
    return out


def digest_matches(found: str, expected: str) -> bool:
    return found.lower().startswith(expected.lower()) and len(expected) >= 8


def fetch_weights(name: str, source: str | os.PathLike | None = None, url: str | None = None,
                  force: bool = False, progress: bool = True, timeout: float = 60) -> Path:
    """Install weights ``name`` into :func:`weights_dir`; returns the installed file.

    ``source``: a local copy of the published file instead of a download; ``url``: another
    address for it (a mirror). Either way the digest is checked before anything reads it,
    and on any failure nothing new is left in the cache.
    """
    if name == HUB_WEIGHTS:
        return fetch_biggan()
    weights = spec(name)
    if url is not None and not url.startswith(("http://", "https://")):  # checked before any early return
        raise ConfigError(f"{name}: `url` must be an http(s) URL, got {url!r}")
    if source is not None and not Path(source).is_file():
        raise UserError(f"{name}: {source} not found")
    final = installed_path(name)
    if final.is_file() and not force:
        return final
    if source is None and url is None:
        source, url = mirror_source(weights)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the weights folder {final.parent}: {exc.strerror or exc}") from exc
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=final.parent))
    try:
        published = staging / weights.filename
        record = _recorded_digest(final, weights)
        expected = weights.sha256 or (record or {}).get("sha256", "")
        if source is not None:
            source = Path(source)
            if not source.is_file():
                raise UserError(f"{name}: {source} not found")
            found = sha256_file(source)
            if expected and not digest_matches(found, expected):
                raise UserError(f"{name}: {source} has sha256 {found[:16]}..., expected {expected[:16]}...; "
                                "not installed")
            shutil.copyfile(source, published)
        else:
            address = url or weights.url
            if not address.startswith(("http://", "https://")):
                raise ConfigError(f"{name}: `url` must be an http(s) URL, got {address!r}")
            found = download(address, published, progress=progress, timeout=timeout)
            if expected and not digest_matches(found, expected):
                raise UserError(f"{name}: checksum mismatch for {address}: expected sha256 {expected[:16]}..., "
                                f"got {found[:16]}...; nothing kept")
        if weights.member is not None:
            published = _extract_member(published, weights, staging)
        if weights.convert is not None:
            state = weights.convert(published)
            write_safetensors(final, state, {"weights": name, "source": weights.url, "source_sha256": found,
                                             "licence": weights.licence})
        else:
            os.replace(published, final)
        if not weights.sha256 and record is None:  # trust on first use: what later installs must match
            write_json(_record_path(final), {"weights": name, "file": weights.filename, "sha256": found,
                                             "note": "recorded at the first install (no digest is published); "
                                                     "later installs are checked against it"})
    except OSError as exc:
        raise UserError(f"cannot install {name} into {final.parent}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
