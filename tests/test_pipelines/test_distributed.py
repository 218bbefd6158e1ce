"""Two CPU processes under torchrun (gloo): synthesize and train-unet, at a tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import REPO

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is exercised on Linux CI")


def torchrun(*args: str, processes: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "pipelines.cli", *args]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_process_synthesis_writes_exactly_n_disjoint_pairs(known_run, tmp_path):
    from pipelines.synthesize import SynthesizeConfig, run_synthesize
    from saliency.shards import SyntheticPairs, load_manifest, verify_shards

    out = tmp_path / "syn"
    args = ("synthesize", "--run-dir", str(known_run), "--count", "301", "--out", str(out), "--classes", "0,1,2",
            "--batch", "32", "--shard-size", "64", "--device", "cpu")
    result = torchrun(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = load_manifest(out)
    assert manifest["count"] == 301 == verify_shards(out) and manifest["processes"] == 2
    assert {s["file"].split("/")[0] for s in manifest["shards"]} == {"rank-00", "rank-01"}
    parts = [load_file(str(out / s["file"])) for s in manifest["shards"]]
    latents = np.concatenate([p["latents"] for p in parts])
    index = np.concatenate([p["index"] for p in parts])
    assert len(latents) == 301 and len(np.unique(latents, axis=0)) == 301 and len(np.unique(index)) == 301
    assert len(SyntheticPairs(out)) == 301

    single = run_synthesize(SynthesizeConfig(run=known_run, count=301, out=tmp_path / "single", classes=[0, 1, 2],
                                             batch_size=32, shard_size=64, device="cpu", progress=False))
    assert set(single) - {"skipped"} == set(manifest) - {"skipped"}  # the same schema
    assert single["count"] == manifest["count"]

    again = torchrun(*args)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_two_process_unet_training(known_run, tmp_path):
    from pipelines.synthesize import SynthesizeConfig, run_synthesize

    data = tmp_path / "syn"
    run_synthesize(SynthesizeConfig(run=known_run, count=200, out=data, classes=[0, 1, 2], batch_size=64,
                                    device="cpu", progress=False))
    out = tmp_path / "unet"
    result = torchrun("train-unet", "--data", str(data), "--out", str(out), "--steps", "4", "--batch", "4",
                      "--val-count", "16", "--val-every", "2", "--checkpoint-every", "2", "--workers", "0",
                      "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((out / "model.json").read_text())
    assert meta["steps"] == 4 and meta["processes"] == 2
    # torch's SyncBatchNorm runs only on GPUs: on CPU each process normalises its own slice, and says so.
    assert meta["batch_norm"] == "per process (2 samples each; SyncBatchNorm needs GPUs)"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # rank 0 alone writes the log


def test_two_process_discovery(tmp_path):
    out = tmp_path / "run"
    result = torchrun("discover", "--out", str(out), "--resolution", "32", "--train-resolution", "32",
                      "--directions", "4", "--batch", "8", "--bg-samples", "16", "--refine-steps", "5",
                      "--steps", "12", "--checkpoint-every", "4", "--no-charts", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "directions.json").read_text())
    assert summary["steps"] == 12 and summary["num_directions"] == 4
    assert summary["batch_norm"] == "per process (4 samples each; SyncBatchNorm needs GPUs)"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [12]  # one writer (log every 50, and the last step)
    odd = torchrun("discover", "--out", str(tmp_path / "odd"), "--batch", "7", "--steps", "2", "--device", "cpu")
    assert odd.returncode != 0 and "split evenly" in odd.stderr


def test_two_process_sweep_deals_out_the_cells(tmp_path):
    """One cell per process: each runs its own discovery alone (no gradient averaging between
    cells), and the table is complete whichever process finishes last."""
    out = tmp_path / "sweep"
    result = torchrun("sweep", "--generator", "scenes", "--out", str(out), "--vary", "directions=4,6",
                      "--resolution", "32", "--batch", "8", "--steps", "6", "--rca-samples", "32", "--no-charts",
                      "--no-bg-search", "--no-effects", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[1/1 on rank 0] directions=4,seed=0" in result.stdout
    assert "[1/1 on rank 1] directions=6,seed=0" in result.stdout
    for k in (4, 6):
        summary = json.loads((out / "cells" / f"directions={k},seed=0" / "directions.json").read_text())
        assert summary["steps"] == 6 and summary["num_directions"] == k and summary["batch_size"] == 8
    assert "| 4 |" in (out / "table.md").read_text() and "| 6 |" in (out / "table.md").read_text()


def test_batch_norm_is_synchronised_only_under_torchrun_on_gpus():
    from saliency.core.distributed import Context, batch_norm_is_synchronised, batch_norm_report

    two, one = Context(rank=0, world=2), Context()
    assert batch_norm_is_synchronised(torch.device("cuda", 0), two)
    assert not batch_norm_is_synchronised(torch.device("cpu"), two)
    assert not batch_norm_is_synchronised(torch.device("cuda", 0), one)
    assert batch_norm_report(torch.device("cuda", 0), two, 32) == "synchronised over 2 processes (32 samples)"
    assert batch_norm_report(torch.device("cpu"), one, 32) == "one process (32 samples)"


def test_synchronised_batch_norm_shares_the_tensors_and_puts_the_layers_back():
    from directions.reconstructors import build_reconstructor
    from saliency.core.distributed import synchronised_batch_norm

    torch.manual_seed(0)
    model = build_reconstructor("lenet", 4, 1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 1, 32, 32), torch.randn(8, 1, 32, 32)
    with synchronised_batch_norm(model, True):
        synced = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert len(synced) == len(norms) and all(isinstance(m, torch.nn.SyncBatchNorm) for m in synced)
        assert all(a.weight is b.weight and a.running_mean is b.running_mean for a, b in zip(norms, synced))
        model.train()
        model(*x)  # no process group: a plain batch norm, whose statistics land in the shared tensors
        model.eval()
    after = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(a is b for a, b in zip(norms, after)) and not after[0].training  # the originals, mode kept
    assert before.keys() == model.state_dict().keys()
    key = next(k for k in before if k.endswith("running_mean"))
    assert not torch.equal(before[key], model.state_dict()[key])  # trained inside, kept outside
    with synchronised_batch_norm(model, False):
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
