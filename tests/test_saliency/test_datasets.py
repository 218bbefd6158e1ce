"""Saliency folders: pairing by stem, binarised masks, the split, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from makers import make_dataset
from saliency.datasets import (DATA_ROOT_ENV, SaliencyFolder, get_spec, load_image, load_mask, open_dataset,
                               resolve_data_root, split_stems)
from saliency.core.errors import UserError
from conftest import ECSSD, NEEDS_ECSSD

SHARED_ROOT = ECSSD.parent  # the data root that holds the real ECSSD


def test_pairs_by_stem_and_binarises_above_128(tmp_path):
    root = make_dataset(tmp_path)
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0], mask[0, 1], mask[0, 2], mask[0, 3] = 127, 128, 255, 129
    Image.fromarray(mask).save(root / "ECSSD" / "ground_truth_mask" / "a.png")
    data = open_dataset("ecssd", root)
    assert [s.stem for s in data.samples] == ["a", "b", "c", "d"]
    loaded = data.mask(0)
    # one rule with PySODMetrics, which scores the files: 128 is background, 129 foreground
    assert loaded.dtype == bool and loaded[0].tolist() == [False, False, True, True]
    assert data.image(1).mode == "RGB" and data.image(1).size == (12, 10)


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((5, 6), 80, dtype=np.uint8)).save(gray)
    rgba = tmp_path / "r.png"
    Image.fromarray(np.full((5, 6, 4), 200, dtype=np.uint8)).save(rgba)
    for path in (gray, rgba):
        image = load_image(path)
        assert image.mode == "RGB" and image.size == (6, 5)


def test_split_is_deterministic_disjoint_and_covers_everything():
    stems = [f"{i:04d}" for i in range(1, 11)]
    shuffled = stems[::-1]
    train, test = split_stems(shuffled, "train"), split_stems(stems, "test")
    assert train == ["0001", "0003", "0005", "0007", "0009"]
    assert test == ["0002", "0004", "0006", "0008", "0010"]
    assert sorted(train + test) == split_stems(stems, "all") == stems


@pytest.mark.skipif(not ECSSD.is_dir(), reason=NEEDS_ECSSD)
def test_ecssd_from_the_shared_copy_splits_500_500():
    train = open_dataset("ecssd", SHARED_ROOT, "train")
    test = open_dataset("ecssd", SHARED_ROOT, "test")
    assert len(train) == len(test) == 500
    assert train.samples[0].stem == "0001" and test.samples[0].stem == "0002"
    assert train.mask(0).shape == np.asarray(train.image(0)).shape[:2]


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert resolve_data_root(None) == Path("data")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "env"))
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"


@pytest.mark.parametrize("breakage, needle", [
    ("no-folder", "not found"),
    ("no-masks-dir", "ground_truth_mask"),
    ("empty", "no images"),
    ("image-without-mask", "without a mask"),
    ("mask-without-image", "without an image"),
])
def test_bad_layouts_are_one_clear_error(tmp_path, breakage, needle):
    root = tmp_path / "root"
    if breakage != "no-folder":
        make_dataset(root)
    folder = root / "ECSSD"
    if breakage == "no-masks-dir":
        for path in (folder / "ground_truth_mask").iterdir():
            path.unlink()
        (folder / "ground_truth_mask").rmdir()
    elif breakage == "empty":
        for path in (folder / "images").iterdir():
            path.unlink()
    elif breakage == "image-without-mask":
        (folder / "ground_truth_mask" / "b.png").unlink()
    elif breakage == "mask-without-image":
        (folder / "images" / "c.jpg").unlink()
    with pytest.raises(UserError, match=needle):
        SaliencyFolder(root, get_spec("ecssd"))


def test_unreadable_and_oversized_images_are_refused_by_name(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserError, match="broken.jpg"):
        load_image(broken)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(UserError, match="truncated.png"):
        load_mask(truncated)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 15_000)).save(bomb)  # 300 megapixels in a few kilobytes
    assert bomb.stat().st_size < 300_000
    with pytest.raises(UserError, match="bomb.png"):
        load_image(bomb)


def test_unknown_dataset_name():
    with pytest.raises(UserError, match="unknown dataset"):
        get_spec("imagenet")
