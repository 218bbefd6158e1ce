"""``saliency fetch-data``: download a benchmark's official archives and unpack them safely.

Every download goes to a temporary name and is checked (SHA-256 where the archive's digest is
known) before it is used; extraction refuses absolute paths, ``..``, links and archives whose
members add up past a size bound, and happens in a staging folder that is renamed into place
only after the dataset's layout (and, for ECSSD, the digest of its 2000 files) checks out.

The ECSSD authors publish no archive digests, and archives can be re-zipped; what must match
is the content, so ECSSD is verified by ``content_sha256``: SHA-256 over the sorted lines
``<relative path> <sha256 of the file>`` of every extracted image and mask.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from saliency.core.artifacts import ensure_writable_dir, refuse_output_in_inputs, sha256_file
from saliency.downloads.transfer import download, safe_extract_zip
from saliency.datasets import DatasetSpec, get_spec
from saliency.core.errors import ConfigError, UserError

@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str | None = None  # the archive's digest, where it is published


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from and how to recognise it once unpacked."""

    dataset: str
    archives: tuple[Archive, ...]
    content_sha256: str | None = None
    homepage: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


ECSSD_BASE = "http://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/data/ECSSD/"
SOURCES: dict[str, Source] = {
    "ecssd": Source(
        dataset="ecssd",
        archives=(Archive(ECSSD_BASE + "images.zip"), Archive(ECSSD_BASE + "ground_truth_mask.zip")),
        # Measured on the research copy in ../shared/datasets/ECSSD with content_digest().
        content_sha256="90dc9e3a0a929b1dd7cb9857fdd806420ee468164e04292faf8b9c248f304dd7",
        homepage="http://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/dataset.html",
    ),
}


def content_digest(folder: Path, spec: DatasetSpec) -> str:
    """SHA-256 over sorted ``relative-path sha256`` lines of the dataset's image and mask files."""
    lines = []
    for sub in (spec.image_dir, spec.mask_dir):
        for path in sorted((folder / sub).iterdir()):
            if path.is_file() and not path.name.startswith("."):
                lines.append(f"{sub}/{path.name} {sha256_file(path)}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def _find_dataset_folder(staging: Path, spec: DatasetSpec) -> Path:
    """Archives differ in nesting; find the folder that holds both the image and mask dirs."""
    candidates = [staging] + sorted(p for p in staging.rglob("*") if p.is_dir())
    for folder in candidates:
        if (folder / spec.image_dir).is_dir() and (folder / spec.mask_dir).is_dir():
            return folder
    raise UserError(f"the downloaded archives do not hold {spec.image_dir}/ and {spec.mask_dir}/ for {spec.name}")


DATA_MIRROR_ENV = "SALIENCY_DATA_MIRROR"  # a base URL serving the archives by their published names


def fetch_dataset(name: str, data_root: Path, mirror: str | None = None, progress: bool = True,
                  force: bool = False, verify_content: bool = True, source: Path | None = None,
                  timeout: float = 60) -> Path:
    """Download, verify and unpack dataset ``name`` into ``data_root/<folder>``; returns it.

    ``source``: a local folder instead of the network, holding either the published archives
    (by their names) or the unpacked dataset; it gets the same checks. ``mirror`` (else
    ``$SALIENCY_DATA_MIRROR``): a base URL serving the archives by their published names.
    """
    spec = get_spec(name)
    if spec.name not in SOURCES:
        raise UserError(f"no download source for {spec.name}; place it under {data_root / spec.folder} by hand")
    source_spec = SOURCES[spec.name]
    final = data_root / spec.folder
    if final.exists() and not force:
        raise ConfigError(f"{final} already exists; pass `force` to download it again")
    mirror = _mirror_url(mirror)
    if source is None:
        fill = functools.partial(_download_archives, source_spec, mirror, progress, timeout)
    else:
        source = Path(source)
        fill = _local_source(source, spec, source_spec)
        # --force would otherwise replace the very copy it reads
        refuse_output_in_inputs(final, {"--from": source}, flag="--data-root", what="the dataset folder")
    return _unpack_verified(spec, source_spec, data_root, final, fill, verify_content)


def _mirror_url(mirror: str | None) -> str | None:
    mirror = mirror or os.environ.get(DATA_MIRROR_ENV) or None
    if mirror and not mirror.startswith(("http://", "https://")):
        raise ConfigError(f"`mirror` (or ${DATA_MIRROR_ENV}) must be an http(s) URL, got {mirror!r}")
    return mirror


def _archive_name(archive: Archive) -> str:
    return archive.url.rsplit("/", 1)[-1]


def _local_source(source: Path, spec: DatasetSpec, source_spec: Source) -> Callable[[Path, Path], None]:
    """How to fill the staging folder from ``source``: an unpacked copy, else the archives; refuses
    a folder with neither before anything is written."""
    archive_names = [_archive_name(archive) for archive in source_spec.archives]
    if not source.is_dir():
        raise ConfigError(f"`source` {source}: not a folder (give the folder that holds {' and '.join(archive_names)}, "
                          f"or an unpacked {spec.folder})")
    if (source / spec.image_dir).is_dir() and (source / spec.mask_dir).is_dir():
        return functools.partial(_copy_unpacked, source, spec)
    absent = [n for n in archive_names if not (source / n).is_file()]
    if absent:
        raise ConfigError(f"`source` {source}: holds neither {spec.image_dir}/ and {spec.mask_dir}/ nor "
                          f"{', '.join(absent)}")
    return functools.partial(_copy_archives, source, source_spec)


def _download_archives(source_spec: Source, mirror: str | None, progress: bool, timeout: float,
                       staging: Path, downloads: Path) -> None:
    for archive in source_spec.archives:
        name = _archive_name(archive)
        url = mirror.rstrip("/") + "/" + name if mirror else archive.url
        download(url, downloads / name, archive.sha256, progress=progress, timeout=timeout)
        safe_extract_zip(downloads / name, staging)


def _copy_archives(source: Path, source_spec: Source, staging: Path, downloads: Path) -> None:
    """The archives from a local folder, checked like a download before they are unpacked."""
    for archive in source_spec.archives:
        name = _archive_name(archive)
        local = downloads / name
        shutil.copyfile(source / name, local)
        if archive.sha256 is not None and sha256_file(local) != archive.sha256.lower():
            raise UserError(f"checksum mismatch for {source / name}: expected sha256 {archive.sha256}")
        safe_extract_zip(local, staging)


def _copy_unpacked(source: Path, spec: DatasetSpec, staging: Path, downloads: Path) -> None:
    """Only the image and mask folders: whatever else lies beside them stays out of the data root."""
    for sub in (spec.image_dir, spec.mask_dir):
        shutil.copytree(source / sub, staging / sub)


def _unpack_verified(spec: DatasetSpec, source_spec: Source, data_root: Path, final: Path,
                     fill: Callable[[Path, Path], None], verify_content: bool) -> Path:
    """Fill a staging folder, check its layout and content, and only then rename it to ``final``,
    so an interrupted or refused fetch never leaves a partial dataset where one is looked for."""
    root = ensure_writable_dir(data_root)
    staging = root / f".{spec.folder}.partial"
    downloads = root / f".{spec.folder}.downloads"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    downloads.mkdir(exist_ok=True)
    try:
        fill(staging, downloads)
        folder = _find_dataset_folder(staging, spec)
        if verify_content and source_spec.content_sha256:
            found = content_digest(folder, spec)
            if found != source_spec.content_sha256:
                raise UserError(f"{spec.name}: content checksum mismatch (expected {source_spec.content_sha256[:16]}..., "
                                f"got {found[:16]}...); pass --no-verify to keep it anyway")
        if final.exists():
            shutil.rmtree(final)
        os.replace(folder, final)
    except OSError as exc:
        raise UserError(f"cannot unpack {spec.name} into {root}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)
    return final
