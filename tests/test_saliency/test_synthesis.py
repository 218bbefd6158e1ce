"""Stage 2: the mask rule, the filters, class voting, the shard format, and synthesis runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import ECSSD, NEEDS_ECSSD, run_cli
from makers import synthesize_pairs
from saliency.core.errors import UserError
from saliency.shards import (SyntheticPairs, load_manifest, pack_masks, read_shard, unpack_masks, verify_shards,
                             write_shard)
from saliency.synthesis import (AREA_ABOVE, AREA_BELOW, KEPT, NOT_BIMODAL, MaskRule, judge, keep_large_components,
                                masks_from_shifted, otsu_separability)
from saliency.voting import choose_classes, count_votes

SHARED_ROOT = ECSSD.parent  # the data root that holds the real ECSSD


# ------------------------------------------------------------------ rules on hand-made images
def _image_with_dark_pixels(count: int, size: int = 64, dark: float = 0.2) -> torch.Tensor:
    """A white image whose first ``count`` pixels (row-major) are dark."""
    image = torch.ones(3, size * size)
    image[:, :count] = dark
    return image.view(3, size, size)


def test_threshold_is_strict_on_the_mean_over_rgb():
    image = torch.ones(1, 3, 2, 2)
    image[0, :, 0, 0] = torch.tensor([0.95, 0.95, 0.95])  # mean exactly at the threshold: white
    image[0, :, 0, 1] = torch.tensor([0.90, 0.95, 0.99])  # mean 0.9467: object
    image[0, :, 1, 0] = torch.tensor([1.00, 1.00, 0.86])  # mean 0.9533: white, though one channel is dark
    assert masks_from_shifted(image, 0.95)[0].tolist() == [[False, True], [False, False]]


def test_area_rule_keeps_exactly_the_interval():
    total = 64 * 64
    counts = [204, 205, 2048, 2049, 0, total]  # 0.0498, 0.0500, 0.5, 0.5002, empty, everything
    batch = torch.stack([_image_with_dark_pixels(c) for c in counts])
    judged = judge(batch, MaskRule(threshold=0.95, min_area=0.05, max_area=0.5))
    assert judged.reasons.tolist() == [AREA_BELOW, KEPT, KEPT, AREA_ABOVE, AREA_BELOW, AREA_ABOVE]
    assert judged.areas[2].item() == 0.5


def test_component_filter_drops_small_specks():
    mask = np.zeros((1, 32, 32), dtype=bool)
    mask[0, 2:22, 2:22] = True  # 400 px
    mask[0, 28:31, 28:31] = True  # 9 px: < 0.2 of the largest
    mask[0, 2:12, 26:31] = True  # 50 px: < 0.2 too (80 is the bar)
    mask[0, 24:27, 2:30] = True  # 84 px: kept
    cleaned = keep_large_components(mask, 0.2)
    assert cleaned.sum() == 400 + 84
    assert not cleaned[0, 29, 29] and cleaned[0, 25, 10]


def test_otsu_separability_tells_two_levels_from_a_wash():
    two_levels = _image_with_dark_pixels(1000)[None]
    ramp = torch.linspace(0, 1, 64 * 64).view(1, 1, 64, 64).expand(1, 3, 64, 64)
    constant = torch.full((1, 3, 64, 64), 0.5)
    eta = otsu_separability(torch.cat([two_levels, ramp, constant]))
    assert eta[0] > 0.99 and 0.6 < eta[1] < 0.8 and eta[2] == 0
    rule = MaskRule(min_area=0.0, max_area=1.0, bimodal=True)
    assert judge(torch.cat([two_levels, ramp]), rule).reasons.tolist() == [KEPT, NOT_BIMODAL]


def test_mask_rule_validation():
    for rule in (MaskRule(threshold=0), MaskRule(min_area=0.6), MaskRule(max_area=1.5), MaskRule(component_fraction=0)):
        with pytest.raises(UserError):
            rule.validate()


# ------------------------------------------------------------------------------- voting
class PlantedClassifier(torch.nn.Module):
    """Puts classes 3 and 7 in every image's top-5; the other three slots are random."""

    def __init__(self, num_classes: int = 40) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        g = torch.Generator().manual_seed(int(x.sum() * 1000) % 10_000)
        logits = torch.rand(x.shape[0], self.num_classes, generator=g)
        logits[:, [3, 7]] += 2.0
        return logits


def test_voting_on_a_planted_classifier_picks_the_planted_classes():
    batches = [torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    counts, images = count_votes(PlantedClassifier(), batches, 40, top_k=5)
    assert images == 80 and int(counts.sum()) == 80 * 5
    assert counts[3] == counts[7] == 80
    assert choose_classes(counts, fraction=2 / 40) == [3, 7]
    assert choose_classes(counts, fraction=0.25)[:2] == [3, 7] and len(choose_classes(counts, 0.25)) == 10


def test_choose_classes_only_keeps_voted_classes_in_count_order():
    counts = torch.tensor([0, 5, 9, 5, 0, 0, 0, 0])
    assert choose_classes(counts, 0.5) == [2, 1, 3]  # ties by index; unvoted classes never kept


# -------------------------------------------------------------------------------- shards
def test_masks_round_trip_through_bit_packing():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 7, 9)) > 0.5  # 63 bits: not a multiple of 8
    packed = pack_masks(masks)
    assert packed.shape == (5, 8) and packed.dtype == np.uint8
    assert np.array_equal(unpack_masks(packed, 7, 9), masks)


def test_shard_round_trip_and_checksum(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    masks = rng.random((6, 16, 16)) > 0.3
    latents = rng.standard_normal((6, 4)).astype(np.float32)
    digest = write_shard(tmp_path / "s.safetensors", images, masks, latents, np.arange(6), np.arange(10, 16))
    shard = read_shard(tmp_path / "s.safetensors", 16, 16, sha256=digest)
    assert np.array_equal(shard.images, images) and np.array_equal(shard.masks, masks)
    assert np.array_equal(shard.latents, latents) and shard.index.tolist() == list(range(10, 16))
    data = bytearray((tmp_path / "s.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "s.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted"):
        read_shard(tmp_path / "s.safetensors", 16, 16, sha256=digest)


# ---------------------------------------------------------------------------- synthesis
def _all_pairs(folder):
    manifest = load_manifest(folder)
    parts = [load_file(str(folder / e["file"])) for e in manifest["shards"]]
    return {key: np.concatenate([p[key] for p in parts]) for key in ("images", "masks", "latents", "classes", "index")}


def test_synthesis_writes_exactly_n_verified_pairs_with_true_masks(known_run, tmp_path):
    out = tmp_path / "syn"
    manifest = synthesize_pairs(known_run, out, 300)
    assert manifest["count"] == 300 == verify_shards(out)
    assert [s["count"] for s in manifest["shards"]] == [128, 128, 44]
    for key in ("count", "acceptance_rate", "classes", "threshold", "shift", "generator", "seconds"):
        assert key in manifest
    assert manifest["classes"] == [0, 1, 2] and manifest["shift"] == 6.0 and manifest["threshold"] == 0.95
    assert manifest["kept"] == 300 and manifest["candidates"] == 300 + sum(manifest["rejected"].values())
    assert sum(manifest["area_histogram"]["all"]) == manifest["candidates"]
    assert sum(manifest["area_histogram"]["kept"]) == 300
    assert manifest["ground_truth"]["mask_iou"] >= 0.85
    pairs = _all_pairs(out)
    assert len(np.unique(pairs["index"])) == 300 and len(np.unique(pairs["latents"], axis=0)) == 300
    assert set(pairs["classes"].tolist()) <= {0, 1, 2}
    areas = pairs["masks"].shape  # packed: (n, 32*32/8)
    assert areas == (300, 128)
    assert (out / "preview.png").is_file()

    dataset = SyntheticPairs(out, verify=True)
    image, mask = dataset[299]
    assert len(dataset) == 300 and image.shape == (32, 32, 3) and mask.shape == (32, 32)
    assert 0.05 <= mask.mean() <= 0.5

    # Masks really are the rule applied to G(z + h_bg, c): re-render a few and compare.
    from directions.generators.scenes import ScenesGenerator
    from safetensors.torch import load_file as load_torch

    generator = ScenesGenerator(resolution=32)
    h = load_torch(str(known_run / "directions.safetensors"))["bg_direction"]
    z = torch.from_numpy(pairs["latents"][:8])
    shifted = generator(z + 6.0 * h, torch.from_numpy(pairs["classes"][:8]))
    expected = masks_from_shifted(shifted, 0.95).flatten(1).numpy()
    unpacked = unpack_masks(pairs["masks"][:8], 32, 32).reshape(8, -1)
    assert (expected == unpacked).mean() > 0.999

    # The same command again: nothing to do. A larger --n: extends to the pairs a fresh run makes.
    assert synthesize_pairs(known_run, out, 300).get("skipped")
    extended = synthesize_pairs(known_run, out, 400)
    fresh = synthesize_pairs(known_run, tmp_path / "fresh", 400)
    assert extended["count"] == fresh["count"] == 400
    a, b = _all_pairs(out), _all_pairs(tmp_path / "fresh")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert extended["candidates"] == fresh["candidates"] and extended["rejected"] == fresh["rejected"]


def test_synthesis_refuses_other_settings_in_the_same_folder(known_run, tmp_path):
    out = tmp_path / "syn"
    synthesize_pairs(known_run, out, 50)
    with pytest.raises(UserError, match="other settings"):
        synthesize_pairs(known_run, out, 50, threshold=0.9)
    with pytest.raises(UserError, match="more than count 20; use another out"):
        synthesize_pairs(known_run, out, 20)


def test_synthesis_stops_with_a_reason_when_almost_no_candidate_passes(known_run, tmp_path, monkeypatch):
    from pipelines import synthesize as stage

    monkeypatch.setattr(stage, "GIVE_UP_AFTER", 640)  # ten batches: the rule, not its size, is under test
    out = tmp_path / "syn"
    with pytest.raises(UserError, match=r"only \d+ of the first [\d,]+ candidates passed the filters \(rejected: [\d,]+ area above max"):
        synthesize_pairs(known_run, out, 50, magnitude=1e-3, ground_truth=False)  # whitens (almost) nothing
    assert not (out / "manifest.json").exists() and not list(out.glob("*.safetensors"))


@pytest.mark.skipif(not ECSSD.is_dir(), reason=NEEDS_ECSSD)
def test_scenes_classifier_votes_on_ecssd_train_offline(known_run, tmp_path):
    out = tmp_path / "syn"
    result = run_cli("synthesize", "--run", str(known_run), "--n", "40", "--out", str(out), "--data-root",
                     str(SHARED_ROOT), "--device", "cpu", env={"SALIENCY_DATA": str(tmp_path / "nowhere")})
    assert result.returncode == 0, result.stderr
    vote = json.loads((out / "classes.json").read_text())
    assert vote["images"] == 500 and vote["settings"]["classifier"] == "scenes-shapes"
    assert sum(vote["counts"].values()) == 500 * 5
    assert len(vote["classes"]) == 3  # ceil(0.25 x 10)
    manifest = load_manifest(out)
    assert manifest["classes"] == vote["classes"] and manifest["class_vote"] == "classes.json"


def test_a_full_disk_mid_run_is_one_error_and_leaves_no_torn_shard(known_run, tmp_path, monkeypatch):
    import errno

    import saliency.shards as shards_module

    real_write, calls = shards_module._write_bytes, []

    def write_until_the_disk_fills(path, payload):
        calls.append(path)
        if len(calls) >= 3:
            Path(path).write_bytes(payload[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, payload)

    monkeypatch.setattr(shards_module, "_write_bytes", write_until_the_disk_fills)
    out = tmp_path / "syn"
    with pytest.raises(UserError, match="disk full"):
        synthesize_pairs(known_run, out, 1000)
    assert sorted(p.name for p in out.iterdir()) == ["progress.json", "shard-00000.safetensors",
                                                     "shard-00001.safetensors"]
    monkeypatch.setattr(shards_module, "_write_bytes", real_write)
    manifest = synthesize_pairs(known_run, out, 1000)  # room again: the same command finishes the job
    assert manifest["count"] == 1000 == verify_shards(out)
