"""The GPU path, run for real: every stage through the real CLI at tiny sizes (marker ``cuda``).

Skipped without a CUDA GPU (CI never has one); ``benchmarks/gpu.sh`` runs it on the lent GPU
machine. The same chain runs on the CPU with ``SALIENCY_TEST_DEVICE=cpu python -m pytest -m
cuda tests/gpu/test_cuda.py`` (a narrow BigGAN, no --compile): that is how it is prepared without a
GPU. The tests run in file order and each stage reads the one before it.

Each command is a fresh interpreter (never forked from a process that may have touched CUDA).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from conftest import REPO
from saliency.core.runtime import resolve_precision

DEVICE = os.environ.get("SALIENCY_TEST_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (SALIENCY_TEST_DEVICE=cpu runs the same chain on the CPU)"),
]
# The hub's BigGAN-deep-128 in full on a GPU; a narrow one (same code and file format) on a CPU.
BIGGAN_CONFIG = None if ON_GPU else {"channel_width": 8, "num_classes": 1000}
UNET_BATCH = "16" if ON_GPU else "4"
# The U-Net's precision by the code's own rule: bf16 on a CUDA GPU that has it, and on a CPU with
# native bf16 (measured faster there: docs/benchmarks.md); fp32 elsewhere.
EXPECTED_PRECISION = (resolve_precision("auto", torch.device(DEVICE), cpu_bf16=True)
                      if not ON_GPU or torch.cuda.is_available() else "fp32")


def child_env(**extra: str) -> dict:
    """The environment of now: the session fixtures' TORCH_HOME and SALIENCY_CACHE included."""
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)

SHARED_ECSSD = REPO.parent / "shared" / "datasets" / "ECSSD"


def saliency(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], cwd=REPO, env=child_env(),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"saliency {args[0]} failed:\n{result.stderr[-3000:]}"
    return result


def finite_numbers(value) -> bool:
    """Every number anywhere in a JSON value is finite."""
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def read_json(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert finite_numbers(data), f"{path} holds a non-finite number"
    return data


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    from published_layouts import save_random_biggan

    root = tmp_path_factory.mktemp("gpu-path")
    weights = save_random_biggan(root / "biggan", config=BIGGAN_CONFIG)
    data = root / "data"
    if SHARED_ECSSD.is_dir():  # 50 real ECSSD images, linked (never copied)
        from makers import real_ecssd_root
        real_ecssd_root(data, 50)
    else:  # the GPU machine has no ../shared: 50 stand-ins in the same layout
        from makers import make_dataset
        make_dataset(data, stems=[f"{k:04d}" for k in range(50)], size=(160, 120))
    return {"root": root, "weights": weights, "data": data}


def test_sample_renders_finite_varied_images(work):
    grid = work["root"] / "sample.png"
    saliency("sample", "--generator", "biggan-deep-128", "--weights", work["weights"], "--n", "4", "--out", grid,
             "--device", DEVICE)
    pixels = np.asarray(Image.open(grid), dtype=np.float32)
    assert pixels.std() > 1.0  # not one flat colour (a NaN image saves as black)


def test_discover_resumes_after_a_kill(work):
    run = work["root"] / "run"
    args = ["discover", "--generator", "biggan-deep-128", "--weights", work["weights"], "--out", run,
            "--directions", "8", "--batch", "8", "--steps", "30", "--checkpoint-every", "5", "--log-every", "5",
            "--bg-direction", "0:6", "--no-refine-bg", "--bg-samples", "16", "--rca-samples", "64",
            "--no-charts", "--no-effects", "--device", DEVICE]
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *map(str, args)], cwd=REPO, env=child_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = run / "checkpoint.safetensors"
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), process.stderr.read().decode()[-3000:]
    assert not (run / "directions.json").exists()  # killed before the end: nothing says finished

    saliency(*args, "--resume")
    summary = read_json(run / "directions.json")
    assert summary["steps"] == 30 and summary["num_directions"] == 8
    assert summary["batch_norm"] == "one process (8 samples)"
    tensors = load_file(str(run / "directions.safetensors"))
    assert all(np.isfinite(t).all() for t in tensors.values()) and "bg_direction" in tensors
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # nothing logged twice after the resume
    config = read_json(run / "config.json")
    assert EXPECTED_PRECISION in json.dumps(config)
    work["run"] = run


def test_synthesize_256_pairs(work):
    from saliency.shards import SyntheticPairs, verify_shards

    out = work["root"] / "pairs"
    saliency("synthesize", "--run-dir", work["run"], "--count", "256", "--out", out, "--classes", "0,1,2,3",
             "--min-area", "0", "--max-area", "1", "--batch", "32", "--shard-size", "128", "--device", DEVICE)
    manifest = read_json(out / "manifest.json")
    assert manifest["count"] == 256 == verify_shards(out)
    image, mask = SyntheticPairs(out)[0][:2]
    assert image.dtype == np.uint8 and image.std() > 0 and set(np.unique(mask)) <= {0, 1}
    work["pairs"] = out


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_train_unet_bf16_channels_last(work, compiled):
    if compiled and not ON_GPU:
        pytest.skip("--compile of the U-Net is run on the GPU only (minutes of compilation on a CPU)")
    out = work["root"] / ("unet-compiled" if compiled else "unet")
    saliency("train-unet", "--data", work["pairs"], "--out", out, "--profile", "biggan", "--encoder-weights", "none",
             "--steps", "30", "--batch", UNET_BATCH, "--val-count", "32", "--val-every", "15", "--checkpoint-every", "15",
             "--workers", "2", "--device", DEVICE, *(["--compile"] if compiled else []))
    meta = read_json(out / "model.json")
    assert meta["steps"] == 30 and meta["settings"]["precision"] == EXPECTED_PRECISION
    assert meta["settings"]["compile"] is compiled and 0 <= meta["validation"]["val_mae"] <= 1
    weights = load_file(str(out / "model.safetensors"))
    assert all(np.isfinite(t).all() for t in weights.values())
    if not compiled:
        work["unet"] = out


def test_eval_on_50_images(work):
    out = work["root"] / "eval"
    saliency("eval", "--dataset", "ecssd", "--model", work["unet"], "--data-root", work["data"], "--out", out,
             "--save-maps", "--device", DEVICE)
    metrics = read_json(out / "metrics.json")
    assert metrics["dataset"] == "ecssd" and metrics["images"] > 0 and 0 <= metrics["mae"] <= 1
    assert len(list((out / "maps").rglob("*.png"))) == 50  # every image's map, test split or not


def test_predict_writes_a_map_per_image(work):
    out = work["root"] / "predict"
    images = work["data"] / "ECSSD" / "images"
    saliency("predict", "--model", work["unet"], "--out", out, images, "--device", DEVICE)
    maps = sorted(out.rglob("*.png"))
    assert len(maps) == 50
    assert all(np.asarray(Image.open(p)).ndim == 2 for p in maps[:5])


def test_pipeline_biggan_profile_at_tiny_sizes(work):
    if not ON_GPU:
        pytest.skip("the biggan profile (K 128, 128 charts, U-Net batch 128) takes most of an hour on a CPU")
    out = work["root"] / "pipeline"
    # Random weights whiten no background: h_bg is named, and every mask area is let through.
    saliency("pipeline", "--profile", "biggan", "--weights", work["weights"], "--data-root", work["data"],
             "--out", out, "--discover-steps", "30", "--pairs", "256", "--unet-steps", "30", "--classes", "0,1,2,3",
             "--bg-direction", "0:6", "--min-area", "0", "--max-area", "1", "--encoder-weights", "none",
             "--device", DEVICE, timeout=1200)
    for stage in ("pipeline.json", "discover/directions.json", "synthesize/manifest.json", "unet/model.json",
                  "eval-ecssd/metrics.json"):
        read_json(out / stage)
    assert read_json(out / "unet" / "model.json")["settings"]["precision"] == EXPECTED_PRECISION


def test_two_processes_on_one_gpu_synchronise_batch_norm(known_run, tmp_path):
    """torchrun with two processes sharing the GPU (gloo carries CUDA tensors; NCCL refuses two
    ranks on one device): R's and the U-Net's batch norms run as SyncBatchNorm, and say so.
    Self-contained, so benchmarks/gpu.sh can run it first."""
    if not ON_GPU:
        pytest.skip("on a CPU the per-process statistics are tested in tests/test_pipelines/test_distributed.py")
    env = child_env(SALIENCY_DIST_BACKEND="gloo", OMP_NUM_THREADS="1")

    def torchrun(*args):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "-m", "pipelines.cli", *map(str, args)]
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    run = tmp_path / "run"
    torchrun("discover", "--out", run, "--resolution", "32", "--train-resolution", "32", "--directions", "4",
             "--batch", "8", "--steps", "6", "--bg-samples", "16", "--refine-steps", "2", "--no-charts",
             "--device", f"{DEVICE.split(':')[0]}:0")
    assert read_json(run / "directions.json")["batch_norm"] == "synchronised over 2 processes (8 samples)"
    from makers import synthesize_pairs

    pairs = tmp_path / "pairs"
    synthesize_pairs(known_run, pairs, 64)  # scenes pairs, made on the CPU in seconds
    unet = tmp_path / "unet"
    torchrun("train-unet", "--data", pairs, "--out", unet, "--encoder", "resnet18", "--encoder-weights",
             "none", "--steps", "4", "--batch", "8", "--val-count", "16", "--workers", "0",
             "--device", f"{DEVICE.split(':')[0]}:0")
    assert read_json(unet / "model.json")["batch_norm"] == "synchronised over 2 processes (8 samples)"
