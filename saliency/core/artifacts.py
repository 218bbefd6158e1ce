"""Writing run outputs atomically: a file is either absent or complete, never torn.

Every artifact goes to a temporary name in the same folder and is renamed into place, so a
run killed at any moment leaves nothing a later run would trust by mistake.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from saliency.core.errors import ConfigError, UserError

TEMP_SUFFIX = ".tmp"
# A write that fails for want of room: a full disk, a quota, or a file-size limit (ulimit -f).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
METADATA_KEY = "gan_saliency"


def tensor_file_metadata(info: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata holding ``info`` as one JSON value.

    safetensors writes its metadata map in an order that changes from process to process, so
    a file with two keys has different bytes for the same content. One key, with its JSON
    keys sorted, makes equal content give equal bytes (and equal checksums).
    """
    return {METADATA_KEY: json.dumps(info, sort_keys=True, separators=(",", ":"))}


def write_safetensors(path: str | os.PathLike, tensors: dict, info: dict[str, Any] | None = None,
                      durable: bool = True) -> Path:
    """Torch tensors to a safetensors file, atomically, with ``info`` as its one metadata key.

    The bytes are built in memory and written here rather than by safetensors' own writer, so
    a full disk is an ordinary OSError (one clear line) and no writer temporary is left behind.
    """
    from safetensors.torch import save

    payload = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                   metadata=tensor_file_metadata(info or {}))
    path = Path(path)
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(payload)
    return path


def write_failure(path: str | os.PathLike, exc: OSError) -> UserError:
    """The one-line error for a failed write of ``path``."""
    if exc.errno in DISK_FULL_ERRNOS:
        return UserError(f"disk full while writing {path} ({exc.strerror})")
    return UserError(f"cannot write {path}: {exc.strerror or exc}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refuse_output_in_inputs(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | None],
                            flag: str = "--out", what: str | None = None) -> None:
    """One line if ``out`` equals, contains or lies inside an input (paths resolved, symlinks
    followed): a command never writes into what it reads. ``inputs``: option -> path (None: unset);
    ``what`` names the output in the message (default: ``flag``)."""
    target = Path(os.path.realpath(out))
    for option, path in inputs.items():
        if path is None or str(path) == "":
            continue
        source = Path(os.path.realpath(path))
        if target == source:
            relation = "is"
        elif source in target.parents:
            relation = "lies inside"
        elif target in source.parents:
            relation = "contains"
        else:
            continue
        raise UserError(f"{what or flag} {out} {relation} the input {option} {path}: a command never writes into "
                        f"what it reads; choose another {flag}")


def ensure_writable_dir(path: str | os.PathLike, field: str | None = None) -> Path:
    """Create ``path`` (and parents) if needed and check that files can be written in it. With
    ``field`` (the option that named it, e.g. ``out``), each refusal is a ConfigError naming it."""
    path = Path(path)
    if field is not None and path.exists() and not path.is_dir():
        raise ConfigError(f"`{field}` {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if field is not None:
            raise ConfigError(f"cannot create `{field}` {path} ({exc.strerror or type(exc).__name__})") from exc
        if isinstance(exc, FileExistsError):
            raise UserError(f"cannot use {path} as an output folder: a file of that name exists") from exc
        raise UserError(f"cannot create output folder {path}: {exc.strerror}") from exc
    if field is not None and not os.access(path, os.W_OK):
        raise ConfigError(f"`{field}` {path} is not writable")
    if field is None and not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"output folder {path} is not writable")
    return path


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """An open, empty temporary file in ``path``'s folder, named so that
    :func:`remove_stale_temporaries` finds it if the process dies."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write in {path.parent}: {exc.strerror}") from exc
    return fd, Path(name)


@contextlib.contextmanager
def _removed_on_failure(tmp: Path, path: Path) -> Iterator[None]:
    """Delete ``tmp`` if the block fails; an OS error becomes the one-line write failure."""
    try:
        yield
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failure(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any error the temporary file is removed and ``path`` keeps its old content (or stays
    absent). A full disk or a missing permission becomes a one-line :class:`UserError`.
    ``durable=False`` skips the fsync: the rename still makes the file all-or-nothing for a
    killed process; use it only for files whose checksum is verified before reuse (a power
    cut can leave them short).
    """
    path = Path(path)
    ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    fd, tmp = _temporary_beside(path)
    os.close(fd)
    with _removed_on_failure(tmp, path):
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    """``atomic_path`` for bytes already in memory, in fewer system calls (one open, written
    through the temporary file's own descriptor): what ``saliency predict`` writes per image."""
    path = Path(path)
    fd, tmp = _temporary_beside(path)
    with _removed_on_failure(tmp, path):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporary files that :func:`atomic_path` left behind when a process was killed
    mid-write. Call it only where no other writer is active. Returns how many went."""
    removed = 0
    # Ours end in TEMP_SUFFIX; safetensors (Rust's tempfile crate) writes through ".tmpXXXXXX".
    stale_files = set(Path(folder).glob(f".*{TEMP_SUFFIX}")) | set(Path(folder).glob(".tmp??????"))
    for stale in sorted(stale_files):
        try:
            stale.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def trim_step_log(path: Path, last_step: int) -> None:
    """Drop JSON-lines log entries past the checkpoint a resumed run restarts from, so no
    step is logged twice (and lines torn by a kill go too)."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
