"""``saliency fetch-weights``: named third-party weights installed, checked, converted.

The checks and conversions are :mod:`saliency.downloads.weights`'s; this decides which source each
name takes (the hub, a file on disk, a mirror) and refuses combinations that cannot apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from saliency.core.errors import UserError


@dataclass
class FetchWeightsConfig:
    names: tuple[str, ...]
    source: Path | None = None  # a copy on disk instead of the download (one name)
    url: str | None = None  # a mirror of the same file (one name)
    force: bool = False


def run_fetch_weights(config: FetchWeightsConfig, log: Callable[[str], None] = print) -> None:
    from saliency.downloads.weights import HUB_WEIGHTS, fetch_weights, installed_path, spec

    if (config.source or config.url) and len(config.names) > 1:
        raise UserError("--from and --url take one NAME")
    for name in config.names:  # every name known before anything is fetched
        if name != HUB_WEIGHTS:
            spec(name)
    for name in config.names:
        if name == HUB_WEIGHTS:
            if config.source or config.url:
                raise UserError(f"{name} comes through huggingface_hub: --from and --url do not apply "
                                "(set HF_ENDPOINT for a mirror, or pass --weights DIR to the commands)")
            record = fetch_weights(name)
            log(f"{name}: in huggingface_hub's cache; revision and SHA-256 recorded in {record}")
            continue
        existed = installed_path(name).is_file()
        path = fetch_weights(name, source=config.source, url=config.url, force=config.force)
        log(f"{name}: {'already installed at' if existed and not config.force else 'installed'} {path}")
