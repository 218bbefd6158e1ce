"""The same seed on a CPU gives the same bytes: directions, checkpoints, shards, U-Net weights.

(Across separate processes, killed and resumed or not, see test_fault_injection.py: it
compares such runs with an uninterrupted one byte for byte.) A different seed must give
different bytes, or the comparison would prove nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from makers import synthesize_pairs
from saliency.core.artifacts import sha256_file


def _same_state(a, b) -> bool:
    """Equal checkpoint contents, tensors compared exactly; wall-clock seconds left out."""
    import torch

    if isinstance(a, dict):
        keys = set(a) - {"seconds"}
        return keys == set(b) - {"seconds"} and all(_same_state(a[k], b[k]) for k in keys)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def _same_checkpoint(first: Path, second: Path) -> bool:
    from saliency.core.checkpoint import load_checkpoint

    name = "checkpoint.safetensors"
    return _same_state(load_checkpoint(first / name), load_checkpoint(second / name))


def _discover(out: Path, seed: int) -> Path:
    from pipelines.discover import DiscoverConfig, run_discover

    run_discover(DiscoverConfig(generator="scenes", out=out, num_directions=4, steps=30, batch_size=16, seed=seed,
                                bg_samples=16, refine_steps=10, rca_samples=64, charts=False, progress=False,
                                device="cpu", train_resolution=32, generator_options={"resolution": 32},
                                checkpoint_every=10))
    return out


def test_discovery_with_one_seed_gives_bit_identical_directions(tmp_path):
    first, second, other = (_discover(tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert sha256_file(first / "directions.safetensors") == sha256_file(second / "directions.safetensors")
    assert _same_checkpoint(first, second) and not _same_checkpoint(first, other)
    assert sha256_file(first / "directions.safetensors") != sha256_file(other / "directions.safetensors")
    summaries = [json.loads((run / "directions.json").read_text()) for run in (first, second)]
    assert summaries[0]["bg_direction"] == summaries[1]["bg_direction"] and summaries[0]["rca"] == summaries[1]["rca"]


def test_synthesis_with_one_seed_gives_identical_shard_checksums(known_run, tmp_path):
    runs = [synthesize_pairs(known_run, tmp_path / name, 500, seed=seed, preview=0)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    checksums = [[entry["sha256"] for entry in manifest["shards"]] for manifest in runs]
    assert checksums[0] == checksums[1] and len(checksums[0]) == 4
    assert runs[0]["fingerprint_sha256"] == runs[1]["fingerprint_sha256"]
    assert set(checksums[0]).isdisjoint(checksums[2])


def test_unet_training_with_one_seed_gives_identical_weights(known_run, tmp_path):
    from pipelines.train_unet import TrainUNetConfig, run_train_unet

    data = tmp_path / "pairs"
    synthesize_pairs(known_run, data, 200, preview=0)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_train_unet(TrainUNetConfig(data=data, out=tmp_path / name, encoder="resnet18", batch_size=4, steps=3,
                                       val_count=16, val_every=3, checkpoint_every=3, workers=0, seed=seed,
                                       device="cpu", progress=False))
    weights = [sha256_file(tmp_path / name / "model.safetensors") for name in "abc"]
    assert weights[0] == weights[1] != weights[2]
    assert _same_checkpoint(tmp_path / "a", tmp_path / "b") and not _same_checkpoint(tmp_path / "a", tmp_path / "c")
