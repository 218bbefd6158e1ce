"""Streamed training (`train-unet --stream`): a fresh batch from the generator at every step, as
the reference code trains; each step's batch fixed by (seed, step), so a resumed run trains on
the batches an uninterrupted one would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from makers import synthesize_pairs

TINY = ["--encoder", "resnet18", "--batch", "4", "--val-count", "16", "--workers", "0", "--device", "cpu",
        "--checkpoint-every", "3", "--val-every", "3", "--stream"]


@pytest.fixture(scope="module")
def synthesis(tmp_path_factory) -> Path:
    """48 stored pairs (the held-out ones) from a run whose h_bg is the true whiteness direction."""
    from directions.generators.scenes import ScenesGenerator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run

    root = tmp_path_factory.mktemp("stream")
    run = write_known_direction_run(root / "run", "scenes", whiteness_direction(ScenesGenerator(resolution=32)),
                                    magnitude=6.0, generator_options={"resolution": 32})
    synthesize_pairs(run, root / "syn", 48, strict_area=True)
    return root / "syn"


def test_each_step_draws_its_own_fresh_batch_that_passes_the_rule(synthesis):
    from pipelines.synthesize import stream_from_manifest

    manifest = json.loads((synthesis / "manifest.json").read_text())
    stream = stream_from_manifest(synthesis, manifest, torch.device("cpu"), seed=5)
    images, masks = stream.batch(7, 6)
    again, _ = stream.batch(7, 6)
    other, _ = stream.batch(8, 6)
    assert images.shape == (6, 32, 32, 3) and images.dtype == torch.uint8 and masks.shape == (6, 32, 32)
    assert torch.equal(images, again) and not torch.equal(images, other)  # (seed, step) fixes the batch
    areas = masks.flatten(1).float().mean(1)
    assert bool(((areas > 0.05) & (areas < 0.5)).all())  # the folder's strict rule
    assert stream.rule.strict_area and stream.classes == [0, 1, 2]
    stored = torch.from_numpy(np.stack(list(_stored_images(synthesis))))
    assert not any(torch.equal(image, s) for image in images for s in stored)  # not the stored pairs


def _stored_images(synthesis: Path):
    from saliency.shards import SyntheticPairs

    pairs = SyntheticPairs(synthesis)
    for i in range(len(pairs)):
        yield pairs[i][0]


def test_a_streamed_run_resumed_ends_with_the_uninterrupted_bytes(synthesis, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    result = run_cli("train-unet", "--data", str(synthesis), "--out", str(whole), "--steps", "6", *TINY)
    assert result.returncode == 0, result.stderr
    meta = json.loads((whole / "model.json").read_text())
    assert meta["data"]["streamed"] and meta["data"]["trained_on"] == 24 and meta["val_pairs"] == 16
    assert run_cli("train-unet", "--data", str(synthesis), "--out", str(split), "--steps", "3", *TINY).returncode == 0
    resumed = run_cli("train-unet", "--data", str(synthesis), "--out", str(split), "--steps", "6", "--resume", *TINY)
    assert resumed.returncode == 0, resumed.stderr
    assert (whole / "model.safetensors").read_bytes() == (split / "model.safetensors").read_bytes()
    # the stored pairs' run and a streamed one are not the same run: resuming across is refused
    stored = run_cli("train-unet", "--data", str(synthesis), "--out", str(split), "--steps", "9", "--resume",
                     *[a for a in TINY if a != "--stream"])
    assert stored.returncode != 0 and "other settings or data" in stored.stderr


def test_streaming_needs_the_run_the_pairs_came_from(synthesis, tmp_path):
    import shutil

    moved = tmp_path / "syn"
    shutil.copytree(synthesis, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["run"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("train-unet", "--data", str(moved), "--out", str(tmp_path / "u"), "--steps", "2", *TINY)
    assert result.returncode != 0 and "Traceback" not in result.stderr and "gone" in result.stderr
