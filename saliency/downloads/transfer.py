"""Downloads and archive extraction, checked before anything is kept.

A download goes to a temporary name and is verified (its announced length, and its SHA-256
where known) before the rename; extraction checks every zip member before the first byte is
written (absolute paths, ``..``, links, special files, member count and size bounds).
"""

from __future__ import annotations

import hashlib
import http.client
import stat
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from saliency.core.artifacts import atomic_path
from saliency.core.errors import UserError
from saliency.core.progress import progress_bar

CHUNK = 1 << 20
MAX_EXTRACTED_BYTES = 2 << 30  # 2 GiB: ECSSD unpacks to 72 MB
MAX_MEMBERS = 100_000


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True, timeout: float = 60) -> str:
    """Fetch ``url`` to ``dest`` through a temporary file; verify ``sha256`` before the rename.

    Returns the file's SHA-256. On any failure nothing is left at ``dest``.
    """
    digest = hashlib.sha256()
    received = 0
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http/https only, checked)
                total = response.headers.get("Content-Length")
                with progress_bar(int(total) if total else None, f"download {Path(url).name}",
                                  enabled=progress, unit="B", unit_scale=True) as bar, open(tmp, "wb") as out:
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            if total and received != int(total):  # the server hung up early: never keep a short file
                raise UserError(f"download of {url} was cut short: {received:,} of {int(total):,} bytes; nothing kept")
        except urllib.error.HTTPError as exc:
            raise UserError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except http.client.IncompleteRead as exc:
            raise UserError(f"download of {url} was cut short ({exc.expected or 'some'} bytes missing); "
                            "nothing kept") from exc
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"download of {url} failed: {reason}") from exc
        found = digest.hexdigest()
        if sha256 is not None and found != sha256.lower():
            raise UserError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {found}; nothing kept")
    return found


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.split("/"):
        return "a '..' path"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # no type bits: a plain file
        return "a special file"
    return None


def safe_extract_zip(archive: Path, target: Path, max_bytes: int = MAX_EXTRACTED_BYTES,
                     max_members: int = MAX_MEMBERS) -> list[Path]:
    """Extract ``archive`` below ``target``, refusing anything that could land outside it.

    Every member is checked before the first byte is written: absolute paths, ``..``,
    links and special files, too many members, and a declared total size above
    ``max_bytes``. Writing also stops at ``max_bytes`` should the sizes lie. This is the one
    reader of archives: whatever zipfile and its decompressors raise on a damaged archive (a
    bad CRC, a torn deflate stream, an unknown method, encryption) is one UserError naming it;
    a failure to write (a full disk) stays an OSError for the caller.
    """
    try:
        return _extract(archive, target.resolve(), max_bytes, max_members)
    except (UserError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 (zipfile, zlib, bz2 and lzma raise many kinds on damage)
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"{archive}: damaged zip archive ({detail})") from exc


def _reading(archive: Path, read):
    """``read()``, with whatever reading the archive raises (OSError included: bz2 and lzma say
    "Invalid data stream" with one) as the archive's damage, not as a failure to write."""
    try:
        return read()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"{archive}: damaged zip archive ({detail})") from exc


def _extract(archive: Path, target: Path, max_bytes: int, max_members: int) -> list[Path]:
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{archive}: not a readable zip archive ({exc})") from exc
    with handle:
        members = handle.infolist()
        if len(members) > max_members:
            raise UserError(f"{archive}: {len(members)} entries is more than the {max_members} allowed")
        declared = 0
        for info in members:
            problem = _member_problem(info)
            destination = (target / info.filename).resolve()
            if problem is None and target != destination and target not in destination.parents:
                problem = "a path outside the target folder"
            if problem:
                raise UserError(f"{archive}: refused entry {info.filename!r} ({problem}); nothing extracted")
            declared += info.file_size
        if declared > max_bytes:
            raise UserError(f"{archive}: unpacks to {declared:,} bytes, more than the {max_bytes:,} allowed")
        written, extracted = 0, []
        for info in members:
            destination = target / info.filename
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with _reading(archive, lambda: handle.open(info)) as src, open(destination, "wb") as dst:
                for chunk in iter(lambda: _reading(archive, lambda: src.read(CHUNK)), b""):
                    written += len(chunk)
                    if written > max_bytes:
                        raise UserError(f"{archive}: unpacks to more than the {max_bytes:,} bytes allowed")
                    dst.write(chunk)
            extracted.append(destination)
    return extracted
