"""A fingerprint of what the CLI writes and prints, to compare two versions of the code.

A refactor promises that behaviour does not change: every file a short pipeline writes, and
every line it prints, the same. This runs a short pipeline (and `sample`, `predict`) through
the real CLI on the CPU, and three tiny SN-GAN trainings, and prints one line per output: a file's SHA-256, a checkpoint's
tensors by their bytes (safetensors headers can differ only in order), a JSON file with its
wall-clock fields and absolute paths masked. Run it at both commits and diff the two outputs:

    python benchmarks/behaviour_fingerprint.py --work /tmp/fp-old > old.txt   # at the old commit
    python benchmarks/behaviour_fingerprint.py --work /tmp/fp-new > new.txt   # at the new one
    diff old.txt new.txt

The run needs ECSSD (`--data-root`, default $SALIENCY_DATA) and the MobileNetV2 weights where
`saliency fetch-weights` finds them. One thread (OMP_NUM_THREADS=1) keeps the bits stable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

VOLATILE_KEYS = re.compile(r"(^|_)(seconds|time|elapsed|per_second|speed|started|finished|date|created|host|"
                           r"cpu|torch|python|version|threads)($|_)", re.IGNORECASE)
TIMING_IN_TEXT = re.compile(r"\d+(\.\d+)?\s*(s|ms|min|KB|MB|it/s|s/it|images/s|pairs/s)\b")


def _mask(value, work: str):
    if isinstance(value, dict):
        return {k: ("<volatile>" if VOLATILE_KEYS.search(k) else _mask(v, work)) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) == 2 and isinstance(value[0], str) and VOLATILE_KEYS.search(value[0]):
            return [value[0], "<volatile>"]  # a checkpoint's header keeps dicts as [key, value] pairs
        return [_mask(v, work) for v in value]
    if isinstance(value, str):
        return value.replace(work, "<work>")
    return value


def _tensor_digest(path: Path) -> str:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _metadata_digest(path: Path, work: str) -> str:
    """A safetensors file's metadata (the checkpoint's step, settings, identity, ...), its
    JSON values parsed and their wall-clock fields masked."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    parsed = {}
    for key, value in metadata.items():
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value
    return hashlib.sha256(json.dumps(_mask(parsed, work), sort_keys=True).encode()).hexdigest()


def _fingerprint(path: Path, work: str) -> str:
    if path.suffix == ".safetensors":
        return f"tensors {_tensor_digest(path)} metadata {_metadata_digest(path, work)}"
    if path.suffix == ".json":
        masked = _mask(json.loads(path.read_text()), work)
        return "json " + hashlib.sha256(json.dumps(masked, sort_keys=True).encode()).hexdigest()
    if path.suffix == ".jsonl":
        lines = [_mask(json.loads(line), work) for line in path.read_text().splitlines() if line.strip()]
        return "jsonl " + hashlib.sha256(json.dumps(lines, sort_keys=True).encode()).hexdigest()
    if path.suffix == ".md":  # a run's report: its timings masked
        text = TIMING_IN_TEXT.sub("<t>", path.read_text(encoding="utf-8").replace(work, "<work>"))
        return "text " + hashlib.sha256(text.encode()).hexdigest()
    if path.suffix in {".html", ".log", ".txt"}:
        return "text (volatile: timings inside)"
    return "bytes " + hashlib.sha256(path.read_bytes()).hexdigest()


def _run(args: list[str], work: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True)
    lines = [TIMING_IN_TEXT.sub("<t>", line.replace(work, "<work>")) for line in result.stdout.splitlines()
             if not line.startswith("fetching weights")]  # printed once per cache, not per run
    errors = [line.replace(work, "<work>") for line in result.stderr.splitlines()
              if line.startswith(("saliency: error", "Usage:", "Error:", "warning:"))]  # not the bars
    return f"exit {result.returncode} | " + " / ".join(lines) + (" | stderr " + " / ".join(errors) if errors else "")


def _command_names() -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], capture_output=True, text=True)
    listing = result.stdout.split("Commands:", 1)[1]
    return [line.split()[0] for line in listing.splitlines() if line.startswith("  ") and line.split()]


def _stage_commands(work: Path) -> dict[str, list[str]]:
    """Each stage's command on its own, on the pipeline's outputs, and the one-line errors."""
    run, cpu = work / "pipeline", ["--device", "cpu"]
    return {
        "discover": ["discover", "--out", str(work / "discover"), "--steps", "6", "--directions", "6",
                     "--rca-samples", "32", "--bg-samples", "8", "--refine-steps", "3", "--no-charts",
                     "--precision", "fp32", *cpu],
        "synthesize": ["synthesize", "--run", str(run / "discover"), "--n", "24", "--out", str(work / "synth"),
                       "--classes", "0,1", "--batch", "16", "--shard-size", "10", "--precision", "fp32", *cpu],
        "train-unet": ["train-unet", "--data", str(work / "synth"), "--out", str(work / "unet"), "--steps", "3",
                       "--batch", "4", "--encoder-weights", "none", "--val-count", "4", "--val-every", "3",
                       "--precision", "fp32", *cpu],
        "eval": ["eval", "--dataset", "scenes", "--model", str(work / "unet"), "--out", str(work / "eval"),
                 "--images", "6", "--precision", "fp32", *cpu],
        "vote": ["vote", "--classifier", "scenes-shapes", "--split", "test", "--out", str(work / "classes.json"),
                 *cpu],
        "sweep-plan": ["sweep", "--out", str(work / "sweep"), "--vary", "directions=4,8", "--seeds", "0,1",
                       "--plan", "--steps", "5"],
        "report": ["report", str(run / "unet"), "--out", str(work / "unet-report.html")],
        "generators": ["generators"],
        "error-range": ["discover", "--out", str(work / "bad"), "--steps", "0"],
        "error-classes": ["sample", "--classes", "a,b", "--out", str(work / "bad.png")],
        "error-bg-direction": ["discover", "--out", str(work / "bad"), "--bg-direction", "x:y"],
        "error-no-run": ["synthesize", "--run", str(work / "missing"), "--n", "5", "--out", str(work / "bad")],
        "error-weights-name": ["fetch-weights", "no-such-weights"],
        "error-weights-from": ["fetch-weights", "a", "b", "--from", str(work / "grid.png")],
        "error-classifier": ["vote", "--classifier", "nope", "--out", str(work / "bad.json")],
        "error-model": ["predict", "--model", str(work / "missing"), str(work / "grid.png"), "--out",
                        str(work / "bad")],
        "error-sweep-seeds": ["sweep", "--out", str(work / "bad"), "--seeds", "x"],
        "error-data-mirror": ["fetch-data", "ecssd", "--from", str(work), "--mirror", "http://localhost:9"],
        "error-import": ["import-run", str(work / "missing"), "--out", str(work / "bad")],
        "error-eval": ["eval", "--dataset", "nosuch", "--model", str(work / "unet"), "--out", str(work / "bad")],
        "error-train": ["train-unet", "--data", str(work / "missing"), "--out", str(work / "bad")],
        "error-pipeline": ["pipeline", "--out", str(work / "bad"), "--classes", ","],
        "error-serve": ["serve", "--model", str(work / "missing"), "--port", "0"],
        "error-export": ["export", "--model", str(work / "missing"), "--out", str(work / "bad.onnx")],
    }


def _sngan_runs(work: Path) -> None:
    """Three tiny SN-GAN trainings on made-up digits: plain, a new discriminator warmed up on a
    finished generator, and one interrupted (its checkpoint)."""
    import gzip

    import numpy as np

    sys.path.insert(0, os.getcwd())
    from tools import train_sngan

    rng = np.random.default_rng(0)
    rows = np.zeros((40, 785), dtype=np.int64)
    for i in range(40):
        digit = np.zeros((28, 28), dtype=np.int64)
        digit[6 + i % 5: 22, 10 + i % 3: 14 + i % 4] = 200 + rng.integers(0, 55)
        rows[i, :784], rows[i, 784] = digit.flatten(), i % 10
    work.mkdir(parents=True, exist_ok=True)
    mnist = work / "digits.csv.gz"
    with gzip.GzipFile(mnist, "wb", mtime=0) as handle:  # no time stamp: the same bytes on every run
        np.savetxt(handle, rows, fmt="%d", delimiter=",")
    small = dict(batch_size=8, g_widths=(16, 8, 8, 4), d_width=4, checkpoint_every=2, sample_every=3, log_every=1)
    settings = train_sngan.SNGANSettings
    train_sngan.train(work / "plain", settings(steps=5, **small), mnist, progress=False, standing_batches=2)
    train_sngan.train(work / "warmed", settings(steps=4, d_warmup=3, **small), mnist, progress=False,
                      standing_batches=2, init_from=work / "plain")
    train_sngan.train(work / "interrupted", settings(steps=5, **small), mnist, progress=False, stop_after=3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (emptied first).")
    parser.add_argument("--pairs", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    work = str(args.work.resolve())
    run = args.work / "pipeline"
    commands = {
        "pipeline": ["pipeline", "--out", str(run), "--pairs", str(args.pairs), "--unet-steps", "6",
                     "--discover-steps", "20", "--device", "cpu", "--precision", "fp32"],
        "sample": ["sample", "--n", "4", "--out", str(args.work / "grid.png"), "--device", "cpu"],
        "predict": ["predict", "--model", str(run / "unet"), str(run / "discover" / "bg_candidates.png"),
                    "--out", str(args.work / "maps"), "--device", "cpu", "--save", "map,mask,cutout"],
    }
    for name, command in commands.items():
        print(f"cli {name}: {_run(command, work)}")
    for name, command in _stage_commands(args.work).items():
        print(f"cli {name}: {_run(command, work)}")
    for name in ["", *_command_names()]:  # every --help, byte for byte
        text = _run([*name.split(), "--help"], work)
        print(f"help {name or 'saliency'}: {hashlib.sha256(text.encode()).hexdigest()}")
    _sngan_runs(args.work / "sngan")
    for path in sorted(p for p in args.work.rglob("*") if p.is_file()):
        name = str(path.relative_to(args.work)).replace(work.lstrip("/"), "<work>")  # predict mirrors input paths
        print(f"{name}: {_fingerprint(path, work)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
