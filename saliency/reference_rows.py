"""The reference rows of ``saliency eval`` (zero map, centred Gaussian), cached per dataset.

They depend on the ground-truth masks and the split only, not on the model, yet they cost
more than the model's own scores (about 30 ms an image on ECSSD, 2-core CPU). So they are
computed once and kept under ``$SALIENCY_CACHE`` (default ``$XDG_CACHE_HOME/gan-saliency``,
else ``~/.cache/gan-saliency``) in ``reference-rows/<fingerprint>.json``; the fingerprint is
the SHA-256 of every (stem, split, SHA-256 of the mask file), so a changed, added or moved
mask makes a new entry. A cache that cannot be read or written is simply not used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

VERSION = "reference-rows/2"  # bump when zero_map, gaussian_prior or the metrics change


def cache_folder() -> Path:
    root = os.environ.get("SALIENCY_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "gan-saliency")
    return Path(root) / "reference-rows"


def fingerprint(masks: list[tuple[str, str, Path]]) -> str:
    """``masks``: (stem, split, mask file) for every image scored."""
    digest = hashlib.sha256(VERSION.encode())
    for stem, split, path in sorted(masks):
        digest.update(json.dumps([stem, split, hashlib.sha256(Path(path).read_bytes()).hexdigest()]).encode())
    return digest.hexdigest()


def load(key: str) -> dict | None:
    try:
        return json.loads((cache_folder() / f"{key}.json").read_text(encoding="utf-8"))["references"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(key: str, references: dict, source: str) -> None:
    from saliency.core.artifacts import write_json
    from saliency.core.errors import UserError

    try:
        cache_folder().mkdir(parents=True, exist_ok=True)
        write_json(cache_folder() / f"{key}.json", {"format": VERSION, "source": source, "references": references})
    except (OSError, UserError):
        pass
