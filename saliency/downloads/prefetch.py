"""Fetch what a command needs and does not have, once, before any work starts.

A dataset comes into the data root through ``fetch-data``'s verified path, third-party weights
into torch hub's cache through ``fetch-weights``' (checksum, atomic rename, progress bar). A
second run finds them and fetches nothing. Every source is probed first: when one cannot be
reached (no network), the command stops in seconds with one line that names what is missing
and the two ways to provide it, and nothing has been written anywhere.

Local mirrors, for machines with a copy but no network: ``SALIENCY_DATA=DIR`` (a data root that
already holds the dataset) and ``SALIENCY_WEIGHTS_MIRROR=DIR`` (the weights files by their
published names; an http(s) base URL works too).
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from saliency.datasets import DATA_ROOT_ENV, get_spec, resolve_data_root
from saliency.core.errors import UserError

PROBE_TIMEOUT = 10.0  # seconds to reach a host before calling it unreachable
DOWNLOAD_TIMEOUT = 30.0


@dataclass(frozen=True)
class Need:
    """Something a command needs that is not on disk, and how to get it."""

    what: str  # "dataset ECSSD", "weights mobilenet-v2-imagenet"
    where: Path  # where it will be kept
    url: str | None  # what is fetched first (probed before anything is written); None: a local copy
    fetch: Callable[[], Path]
    remedy: str  # the two ways to provide it by hand


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when the host answers (any HTTP status counts), else the reason it cannot be reached."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 (http/https, checked by the caller)
            return None
    except urllib.error.HTTPError:
        return None  # the host is there; the download reports a real failure itself
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def dataset_need(name: str, data_root: str | Path | None, progress: bool = True) -> Need | None:
    """The dataset, unless ``ROOT/<folder>`` exists (its layout is checked where it is read)."""
    from saliency.downloads.datasets import DATA_MIRROR_ENV, SOURCES, fetch_dataset

    spec = get_spec(name)
    root = resolve_data_root(data_root)
    if (root / spec.folder).exists() or spec.name not in SOURCES:
        return None
    mirror = os.environ.get(DATA_MIRROR_ENV) or None
    first = SOURCES[spec.name].archives[0].url
    url = mirror.rstrip("/") + "/" + first.rsplit("/", 1)[-1] if mirror else first
    archives = " and ".join(a.url.rsplit("/", 1)[-1] for a in SOURCES[spec.name].archives)
    return Need(
        what=f"dataset {spec.folder}", where=root / spec.folder, url=url,
        fetch=lambda: fetch_dataset(spec.name, root, mirror=mirror, progress=progress, timeout=DOWNLOAD_TIMEOUT),
        remedy=(f"`saliency fetch-data {spec.name} --data-root {root} --from DIR` (DIR holding {archives}, "
                f"or an unpacked {spec.folder}), or set {DATA_ROOT_ENV} to a folder that holds {spec.folder}/"))


def weights_need(name: str | None, progress: bool = True) -> Need | None:
    """Weights known to ``fetch-weights``, unless they are installed (or ``name`` is None)."""
    from saliency.downloads.weights import WEIGHTS_MIRROR_ENV, fetch_weights, installed_path, mirror_source, spec

    if name is None:
        return None
    weights = spec(name)
    final = installed_path(name)
    if final.is_file():
        return None
    local, url = mirror_source(weights)
    return Need(
        what=f"weights {name}", where=final, url=None if local is not None else (url or weights.url),
        fetch=lambda: fetch_weights(name, progress=progress, timeout=DOWNLOAD_TIMEOUT),
        remedy=(f"`saliency fetch-weights {name} --from FILE` (FILE: a copy of {weights.filename}), "
                f"or set {WEIGHTS_MIRROR_ENV} to a folder that holds {weights.filename}"))


def ensure(needs: list[Need | None], log: Callable[[str], None] = print) -> None:
    """Fetch every need, after checking that each source can be reached; else one line and
    nothing written."""
    needs = [need for need in needs if need is not None]
    unreachable = []
    for need in needs:
        if need.url is None:
            continue
        if not need.url.startswith(("http://", "https://")):
            raise UserError(f"{need.what}: the address {need.url!r} is not an http(s) URL")
        reason = reachable(need.url)
        if reason is not None:
            host = urllib.parse.urlsplit(need.url).netloc
            unreachable.append(f"{need.what} is not in {need.where} and {host} cannot be reached ({reason}); "
                               f"provide it with {need.remedy}")
    if unreachable:
        raise UserError("; and ".join(unreachable))
    for need in needs:
        log(f"fetching {need.what} into {need.where} (once; later runs find it there)")
        need.fetch()


def classifier_weights(classifier: str | None, generator: str) -> str | None:
    """The ``fetch-weights`` name the class vote of ``generator`` needs (None: none to fetch).

    With no ``--classifier``, the paper's ResNet-18 for ImageNet generators, unless MobileNetV2
    (the one that installs offline) is already there and ResNet-18 is not."""
    from saliency.classifiers import GENERATOR_CLASSIFIERS
    from saliency.downloads.weights import WEIGHTS, installed_path

    if classifier is not None:
        return classifier if classifier in WEIGHTS else None
    choices = GENERATOR_CLASSIFIERS.get(generator, ())
    installed = [name for name in choices if name in WEIGHTS and installed_path(name).is_file()]
    if installed or not choices or choices[0] not in WEIGHTS:
        return None
    return choices[0]


def encoder_weights(arch) -> str | None:
    """The ``fetch-weights`` name a U-Net's ImageNet encoder needs (None: none, or smp has it)."""
    from saliency.unet import smp_weights_cached

    if arch.encoder == "mobilenet_v2" and arch.encoder_weights == "imagenet" \
            and not smp_weights_cached(arch.encoder, arch.encoder_weights):
        return "mobilenet-v2-imagenet"
    return None
