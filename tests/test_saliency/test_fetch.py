"""`saliency fetch-data` against a local HTTP server on loopback (never the internet)."""

from __future__ import annotations

import hashlib
import stat
import zipfile
from pathlib import Path

import pytest

from conftest import ECSSD, NEEDS_ECSSD, assert_one_line_error, run_cli
from makers import zip_folder
from saliency.core.errors import UserError
from saliency.downloads.transfer import download, safe_extract_zip

SHARED_ECSSD = ECSSD


def test_download_verifies_the_checksum_before_keeping_anything(server, tmp_path):
    www, base = server
    payload = b"saliency" * 1000
    (www / "file.bin").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "got" / "file.bin"
    assert download(base + "file.bin", dest, sha256=good, progress=False) == good
    assert dest.read_bytes() == payload

    bad_dest = tmp_path / "bad" / "file.bin"
    with pytest.raises(UserError, match="checksum mismatch"):
        download(base + "file.bin", bad_dest, sha256="0" * 64, progress=False)
    assert list((tmp_path / "bad").iterdir()) == []  # no file, no temporary left

    with pytest.raises(UserError, match="HTTP 404"):
        download(base + "missing.zip", tmp_path / "missing.zip", progress=False)
    assert not (tmp_path / "missing.zip").exists()


def _zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


@pytest.mark.parametrize("entries, links, needle", [
    ({"ok.txt": b"1", "../evil.txt": b"x"}, None, "'..' path"),
    ({"/abs/evil.txt": b"x"}, None, "absolute path"),
    ({"ok.txt": b"1"}, {"link": "/etc/passwd"}, "symbolic link"),
    ({"big.bin": b"0" * 5000}, None, "more than"),
])
def test_extraction_refuses_escapes_links_and_bombs(tmp_path, entries, links, needle):
    archive = _zip(tmp_path / "a.zip", entries, links)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(UserError, match=needle):
        safe_extract_zip(archive, target, max_bytes=1000)
    assert list(target.iterdir()) == []  # checked before the first byte is written
    assert not (tmp_path / "evil.txt").exists()


def test_extraction_keeps_normal_members(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"images/1.jpg": b"abc", "images/2.jpg": b"de"})
    written = safe_extract_zip(archive, tmp_path / "t")
    assert sorted(p.name for p in written) == ["1.jpg", "2.jpg"]
    assert (tmp_path / "t" / "images" / "1.jpg").read_bytes() == b"abc"


@pytest.mark.skipif(not SHARED_ECSSD.is_dir(), reason=NEEDS_ECSSD)
def test_fetch_data_ecssd_from_a_mirror_verifies_and_unpacks(server, tmp_path):
    www, base = server
    zip_folder(SHARED_ECSSD / "images", www / "images.zip")
    zip_folder(SHARED_ECSSD / "ground_truth_mask", www / "ground_truth_mask.zip")
    root = tmp_path / "root"
    result = run_cli("fetch-data", "ecssd", "--data-root", str(root), "--mirror", base)
    assert result.returncode == 0, result.stderr
    assert len(list((root / "ECSSD" / "images").glob("*.jpg"))) == 1000
    assert len(list((root / "ECSSD" / "ground_truth_mask").glob("*.png"))) == 1000
    assert sorted(p.name for p in root.iterdir()) == ["ECSSD"]  # no staging or download left

    again = run_cli("fetch-data", "ecssd", "--data-root", str(root), "--mirror", base)
    assert_one_line_error(again, "already exists")

    # A mirror serving other content: refused, nothing installed.
    _zip(www / "ground_truth_mask.zip", {"ground_truth_mask/0001.png": b"not the real mask"})
    other = tmp_path / "other"
    tampered = run_cli("fetch-data", "ecssd", "--data-root", str(other), "--mirror", base)
    assert_one_line_error(tampered, "content checksum mismatch")
    assert not (other / "ECSSD").exists()


def test_fetch_data_refuses_an_escaping_archive_and_bad_urls(server, tmp_path):
    www, base = server
    _zip(www / "images.zip", {"images/1.jpg": b"x", "../../escaped.txt": b"x"})
    root = tmp_path / "root"
    result = run_cli("fetch-data", "ecssd", "--data-root", str(root), "--mirror", base)
    assert_one_line_error(result, "escaped.txt")
    assert not (root / "ECSSD").exists() and not (tmp_path / "escaped.txt").exists()
    assert [p.name for p in root.iterdir()] == []

    missing = run_cli("fetch-data", "ecssd", "--data-root", str(tmp_path / "r2"), "--mirror", base + "nothing/")
    assert_one_line_error(missing, "HTTP 404")
    assert_one_line_error(run_cli("fetch-data", "ecssd", "--data-root", str(tmp_path / "r3"), "--mirror", "file:///etc/"),
                          "--mirror")
    assert_one_line_error(run_cli("fetch-data", "nope"), "unknown dataset")
