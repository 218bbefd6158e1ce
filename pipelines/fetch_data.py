"""``saliency fetch-data``: a saliency benchmark downloaded (or taken from disk), verified, unpacked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saliency.core.errors import UserError


@dataclass
class FetchDataConfig:
    dataset: str
    data_root: Path | None = None
    mirror: str | None = None  # a base URL serving the same archive names
    source: Path | None = None  # a folder on disk: the archives, or the unpacked dataset
    force: bool = False
    verify: bool = True  # the unpacked files against the known content checksum


def run_fetch_data(config: FetchDataConfig) -> Path:
    """The dataset's folder, fetched and checked."""
    from saliency.datasets import resolve_data_root
    from saliency.downloads.datasets import fetch_dataset

    if config.source is not None and config.mirror is not None:
        raise UserError("--from and --mirror are two sources: give one")
    return fetch_dataset(config.dataset, resolve_data_root(config.data_root), mirror=config.mirror,
                         force=config.force, verify_content=config.verify, source=config.source)
