"""The synthetic dataset on disk: fixed-size shards of (image, mask) pairs and a manifest.

One shard is one safetensors file (memory-mappable, no pickle, readable from any language):

    images   uint8 (n, H, W, 3)          the generator's image G(z, c)
    masks    uint8 (n, ceil(H*W / 8))    the mask, bit-packed row-major (np.packbits)
    latents  float32 (n, d)              z, to re-render any pair
    classes  int64 (n,)                  c (-1 for an unconditional generator)
    index    int64 (n,)                  the candidate's global number (batch * batch_size + row)

Shards are written atomically and listed, with their SHA-256, in ``manifest.json``; a reader
trusts only what the manifest lists and can verify every byte against it. While a synthesis
runs, ``progress.json`` lists the shards finished so far (a killed run resumes from it).

Two format tags, one per kind of file: ``gan-saliency-pairs/1`` for the dataset's JSON
(manifest and progress), ``gan-saliency-shard/1`` in each shard's safetensors header.
This module writes and reads both; ``pipelines/synthesize.py`` decides what goes in them.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save

from saliency.core.artifacts import atomic_path, remove_stale_temporaries, tensor_file_metadata, write_json
from saliency.core.errors import ConfigError, UserError
from saliency.core.json_files import read_json
from saliency.core.artifacts import sha256_file

DATASET_FORMAT = "gan-saliency-pairs/1"  # manifest.json and progress.json
SHARD_FORMAT = "gan-saliency-shard/1"  # each shard file's safetensors metadata
MANIFEST_NAME = "manifest.json"
PROGRESS_NAME = "progress.json"
# What the readers use of manifest.json and progress.json (saliency/core/json_files.py's notation).
SHARD_SHAPE = {"file": str, "count": int, "sha256": str}
MANIFEST_SHAPE = {"shards": [SHARD_SHAPE], "count": int, "height": int, "width": int}


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """bool (n, H, W) -> uint8 (n, ceil(H*W/8))."""
    return np.packbits(masks.reshape(masks.shape[0], -1).astype(bool), axis=1)


def unpack_masks(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (n, ceil(H*W/8)) -> bool (n, H, W)."""
    bits = np.unpackbits(packed, axis=1, count=height * width)
    return bits.reshape(packed.shape[0], height, width).astype(bool)


def write_shard(path: Path, images: np.ndarray, masks: np.ndarray, latents: np.ndarray, classes: np.ndarray,
                index: np.ndarray) -> str:
    """Write one shard atomically; returns its SHA-256."""
    n, height, width, _ = images.shape
    tensors = {
        "images": np.ascontiguousarray(images, dtype=np.uint8),
        "masks": pack_masks(masks),
        "latents": np.ascontiguousarray(latents, dtype=np.float32),
        "classes": np.ascontiguousarray(classes, dtype=np.int64),
        "index": np.ascontiguousarray(index, dtype=np.int64),
    }
    for name, array in tensors.items():
        if array.shape[0] != n:
            raise ValueError(f"shard field {name} has {array.shape[0]} rows, images have {n}")
    # Identical shards must have identical bytes (and checksums): see tensor_file_metadata.
    metadata = tensor_file_metadata({"format": SHARD_FORMAT, "height": height, "width": width, "count": n})
    try:
        payload = save(tensors, metadata=metadata)
    except SafetensorError as exc:
        raise UserError(f"cannot write {path}: {exc}") from exc
    digest = hashlib.sha256(payload).hexdigest()  # from memory: no second read of the file
    # No fsync: a shard is trusted only after its checksum matches (see pipelines/synthesize).
    with atomic_path(path, durable=False) as tmp:
        _write_bytes(tmp, payload)
    return digest


def _write_bytes(path: Path, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload)


@dataclass
class Shard:
    images: np.ndarray  # (n, H, W, 3) uint8
    masks: np.ndarray  # (n, H, W) bool
    latents: np.ndarray
    classes: np.ndarray
    index: np.ndarray


def read_shard(path: Path, height: int, width: int, sha256: str | None = None) -> Shard:
    """Read a shard; with ``sha256`` its bytes are checked first."""
    if not path.is_file():
        raise UserError(f"shard {path} is missing")
    if sha256 is not None and sha256_file(path) != sha256:
        raise UserError(f"shard {path} is corrupted (checksum mismatch)")
    try:
        data = load_file(str(path))
        return Shard(images=data["images"], masks=unpack_masks(data["masks"], height, width),
                     latents=data["latents"], classes=data["classes"], index=data["index"])
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise UserError(f"shard {path} is unreadable ({type(exc).__name__})") from exc


def load_manifest(folder: str | os.PathLike) -> dict:
    """A finished synthetic dataset's manifest, with its basic structure checked."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{folder} is not a finished synthetic dataset (no {MANIFEST_NAME})")
    manifest = read_json(path, MANIFEST_SHAPE)
    if sum(s["count"] for s in manifest["shards"]) != manifest["count"]:
        raise UserError(f"{path} is corrupted (shard counts do not add up to count)")
    _refuse_paths(path, manifest["shards"])
    return manifest


def _refuse_paths(path: Path, shards: list[dict]) -> None:
    """A shard lies inside the dataset's folder (beside the manifest, or in a rank's part of
    it): an absolute name, '..' or a backslash is refused."""
    for entry in shards:
        name = entry["file"]
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or "\\" in name or any(p in ("..", ".") for p in parts):
            raise UserError(f"{path} lists a shard outside its folder ({name!r})")


def verify_shards(folder: str | os.PathLike, manifest: dict | None = None) -> int:
    """Check every listed shard's SHA-256; returns the number of pairs verified."""
    folder = Path(folder)
    manifest = manifest or load_manifest(folder)
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            raise UserError(f"shard {path} is missing")
        if sha256_file(path) != entry["sha256"]:
            raise UserError(f"shard {path} is corrupted (checksum mismatch)")
    return int(manifest["count"])


# ------------------------------------------------------------------ writing, resumably
def load_progress(out: Path, fingerprint: dict) -> list[dict]:
    """The shards a previous run finished with these settings (verified), else []."""
    path = out / PROGRESS_NAME
    if not path.is_file():
        return []
    try:
        progress = read_json(path, {"fingerprint": dict, "shards": [SHARD_SHAPE]})
    except UserError as exc:
        raise ConfigError(f"{exc}; remove {out} or use another `out`") from exc
    recorded, shards = progress["fingerprint"], progress["shards"]
    try:
        _refuse_paths(path, shards)
    except UserError as exc:
        raise ConfigError(f"{exc}; remove {out} or use another `out`") from exc
    if recorded != fingerprint:
        changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
        raise ConfigError(f"{out} holds a synthesis with other settings ({', '.join(changed)}); use another `out`")
    valid = []
    for entry in shards:  # keep the prefix of shards whose bytes still match
        shard = out / entry["file"]
        if not shard.is_file() or sha256_file(shard) != entry["sha256"]:
            break
        valid.append(entry)
    return valid


def save_progress(out: Path, fingerprint: dict, shards: list[dict]) -> None:
    write_json(out / PROGRESS_NAME, {"format": DATASET_FORMAT, "fingerprint": fingerprint, "shards": shards})


def discard_unlisted_shards(out: Path, shards: list[dict]) -> None:
    listed = {entry["file"] for entry in shards}
    for path in out.glob("shard-*.safetensors"):
        if path.name not in listed:
            path.unlink()
    remove_stale_temporaries(out)


class ShardWriter:
    """Writes shards (and the progress record after each) on a background thread, in order,
    so file I/O and checksums overlap with rendering. Errors surface at the next call."""

    def __init__(self, out: Path, fingerprint: dict, shards: list[dict]) -> None:
        self.out, self.fingerprint, self.shards = out, fingerprint, shards
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="shard-writer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if self.error is not None:
                continue
            arrays, position, totals = job
            try:
                name = shard_name(len(self.shards))
                digest = write_shard(self.out / name, **arrays)
                self.shards.append({"file": name, "count": int(len(arrays["index"])), "sha256": digest,
                                    "position": position, "totals": totals})
                save_progress(self.out, self.fingerprint, self.shards)
            except BaseException as exc:  # handed to the main thread
                self.error = exc

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def submit(self, arrays: dict, position: dict, totals: dict) -> None:
        self._raise()
        self.queue.put((arrays, position, totals))

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        self._raise()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.close()
        elif self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()


class PairBuffer:
    """Kept pairs waiting for their shard (CPU arrays)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in ("images", "masks", "latents", "classes", "index")}
        self.size = 0

    def add(self, **arrays: np.ndarray) -> None:
        for key, value in arrays.items():
            self.parts[key].append(value)
        self.size += len(arrays["index"])

    def take(self) -> dict[str, np.ndarray]:
        joined = {k: np.concatenate(v) for k, v in self.parts.items()}
        self.__init__()
        return joined



# --------------------------------------------------------------------------- reading
class SyntheticPairs(torch.utils.data.Dataset):
    """The pairs of a synthetic dataset, by global index: ``(image HWC uint8, mask HW uint8)``.

    Rows are read through memory-mapped shard files (safetensors slices), so random access
    costs a page-cache read, memory stays flat at any dataset size, and DataLoader workers
    share the OS cache. Handles are opened lazily in each process.
    """

    def __init__(self, folder: str | os.PathLike, verify: bool = False) -> None:
        self.folder = Path(folder)
        self.manifest = load_manifest(self.folder)
        if verify:
            verify_shards(self.folder, self.manifest)
        self.height, self.width = int(self.manifest["height"]), int(self.manifest["width"])
        self.entries = self.manifest["shards"]
        self.offsets = np.cumsum([0] + [int(e["count"]) for e in self.entries])
        self._handles: dict[int, object] = {}
        self._pid = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:  # handles do not cross process boundaries
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, None
        return state

    def _handle(self, number: int):
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if number not in self._handles:
            path = self.folder / self.entries[number]["file"]
            try:
                self._handles[number] = safe_open(str(path), framework="numpy")
            except (SafetensorError, OSError) as exc:
                raise UserError(f"shard {path} is unreadable ({type(exc).__name__})") from exc
        return self._handles[number]

    def locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        number = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return number, index - int(self.offsets[number])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        number, row = self.locate(index)
        handle = self._handle(number)
        image = handle.get_slice("images")[row : row + 1][0]
        packed = handle.get_slice("masks")[row : row + 1]
        return image, unpack_masks(packed, self.height, self.width)[0].astype(np.uint8)
