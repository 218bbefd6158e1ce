"""The fast PNG writer and the resize that predict and eval share: what they write is what
Pillow reads back, and the resize is Pillow's bilinear to within one level."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest
from PIL import Image

from makers import real_ecssd_root
from saliency.core.artifacts import write_bytes_atomic
from saliency.detector import prepare_image, resize_bilinear
from saliency.core.errors import UserError
from saliency.core.png import encode_png


@pytest.mark.parametrize("shape, mode", [((1, 1), "L"), ((37, 53), "L"), ((37, 53, 3), "RGB"), ((20, 9, 4), "RGBA")])
def test_encoded_pngs_read_back_exactly_in_pillow(shape, mode):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    image = Image.open(io.BytesIO(encode_png(pixels)))
    assert image.format == "PNG" and image.mode == mode
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_a_smooth_map_compresses_below_pillows_fast_level():
    y, x = np.mgrid[0:300, 0:400]
    smooth = (127.5 + 127.5 * np.sin(x / 37.0) * np.cos(y / 23.0)).round().astype(np.uint8)
    ours = encode_png(smooth)
    theirs = io.BytesIO()
    Image.fromarray(smooth).save(theirs, format="PNG", compress_level=1)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(ours))), smooth)
    assert len(ours) < 1.2 * len(theirs.getvalue())  # one filter for every row loses little on maps


@pytest.mark.parametrize("pixels", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8),
                                    np.zeros((0, 4), np.uint8), np.zeros(4, np.uint8)])
def test_what_is_not_an_8_bit_image_is_refused(pixels):
    with pytest.raises(ValueError):
        encode_png(pixels)


def test_write_bytes_atomic_gives_the_usual_permissions_and_leaves_nothing_on_failure(tmp_path):
    target = write_bytes_atomic(tmp_path / "a.png", b"abc", durable=False)
    assert target.read_bytes() == b"abc"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    with pytest.raises(UserError, match="cannot write in"):
        write_bytes_atomic(tmp_path / "missing" / "b.png", b"abc")
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_the_resize_is_pillows_bilinear_to_one_level_on_real_photographs(tmp_path):
    images = sorted((real_ecssd_root(tmp_path, 10) / "ECSSD" / "images").glob("*.jpg"))
    differing = []
    for path in images:
        photo = np.asarray(Image.open(path).convert("RGB"))
        h, w = photo.shape[:2]
        scale = 128 / min(h, w)
        size = (round(w * scale), round(h * scale))
        ours = resize_bilinear(photo, size).astype(int)
        pillow = np.asarray(Image.fromarray(photo).resize(size, Image.BILINEAR)).astype(int)
        assert ours.shape == pillow.shape
        assert np.abs(ours - pillow).max() <= 1
        differing.append(float((ours != pillow).mean()))
    assert np.mean(differing) < 0.02


def test_prepared_images_are_edge_padded_to_the_stride():
    photo = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    prepared = prepare_image(photo, 128, 32)
    assert (prepared.resized_height, prepared.resized_width) == (128, 192)
    small = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    prepared = prepare_image(small, 50, 32)  # 50 x 70 -> padded to 64 x 96
    assert prepared.shape == (64, 96)
    np.testing.assert_array_equal(prepared.pixels, np.pad(small, ((0, 14), (0, 26), (0, 0)), mode="edge"))
    flipped = photo[::-1, ::-1]  # negative strides: a view numpy makes for free
    np.testing.assert_array_equal(prepare_image(flipped, 128, 32).pixels,
                                  prepare_image(flipped.copy(), 128, 32).pixels)
