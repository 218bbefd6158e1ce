"""SIGKILL at random moments, then resume: nothing lost, nothing done twice.

For each long stage the real CLI is started and killed at several moments drawn from a
seeded generator (some land during start-up, some mid-step, some mid-write); synthesize's
kills are counted in file replacements, not timed, so they land at the same places on any
machine at any load. After every
kill, what is on disk must be trustworthy (a checkpoint that loads, listed shards that match
their checksums, no "finished" marker); after the last, the same command with --resume
finishes the job, and the result is the one an uninterrupted run writes: on a CPU the very
same bytes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from conftest import REPO, run_cli
from saliency.core.checkpoint import load_checkpoint
from saliency.core.errors import UserError
from saliency.core.artifacts import sha256_file
from saliency.shards import load_manifest, verify_shards

KILLS_PER_STAGE = 4
TINY_DISCOVER = ["--resolution", "32", "--train-resolution", "32", "--directions", "4", "--batch", "8",
                 "--bg-samples", "16", "--refine-steps", "10", "--no-charts", "--device", "cpu"]
# Every process of a comparison uses the same thread count: float sums are ordered by it.
SAME_THREADS = {"OMP_NUM_THREADS": "1"}
TINY_UNET = ["--encoder", "resnet18", "--batch", "4", "--val-count", "16", "--workers", "0", "--device", "cpu"]


def _saved_state(path: Path):
    """A token that changes whenever ``path`` is replaced (a new checkpoint or record)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _kill_at_random_moments(args: list[str], rng: random.Random, saved: Path, jitter: float, check,
                            resume: bool = False):
    """Start ``saliency ARGS`` KILLS_PER_STAGE times (with --resume once ``saved`` exists when
    ``resume``) and SIGKILL each: the first at a random moment of its start-up, the others a
    random 0-``jitter`` s after the process has saved work of its own (``saved`` replaced), so
    they land mid-step or mid-write whatever the machine's speed. After each kill ``check()``
    validates what is on disk and says whether work is saved there. Returns (moment, ended
    by itself, work saved) per attempt."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", **SAME_THREADS)
    landed = []
    for attempt in range(KILLS_PER_STAGE):
        extra = ["--resume"] if resume and saved.exists() else []
        before = _saved_state(saved)
        process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args, *extra], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt == 0:
            pause = rng.uniform(0.3, 1.5)
            moment = f"start-up + {pause:.2f} s"
        else:
            waited = time.monotonic() + 120
            while _saved_state(saved) == before and process.poll() is None and time.monotonic() < waited:
                time.sleep(0.01)
            pause = rng.uniform(0.0, jitter)
            moment = f"first save + {pause:.2f} s"
        deadline = time.monotonic() + pause
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
            ended = True  # it finished (or failed) before the kill: the check below still applies
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            ended = False
        stderr = process.stderr.read().decode()
        process.stderr.close()
        assert ended is False or process.returncode == 0, stderr
        landed.append((moment, ended, check()))
    assert sum(saved_work and not ended for _, ended, saved_work in landed) >= KILLS_PER_STAGE - 1, landed
    return landed


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def _no_temporaries(folder: Path) -> None:
    # A kill may leave a temporary behind; the next run removes it. Nothing else may be torn.
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert ".tmp" not in path.name, path


# ------------------------------------------------------------------------------- discover
def test_discover_survives_random_kills_and_resumes_to_the_same_run(tmp_path):
    steps = 300
    args = ["discover", "--out", str(tmp_path / "killed"), "--steps", str(steps), "--checkpoint-every", "10",
            *TINY_DISCOVER]

    def check():
        out = tmp_path / "killed"
        if (out / "checkpoint.safetensors").exists():
            step = load_checkpoint(out / "checkpoint.safetensors")["step"]  # loads: never torn
            logged = _steps(out / "metrics.jsonl")
            assert logged == sorted(set(logged)) and 0 < step <= steps
        if (out / "directions.json").exists():  # only a run that really finished says so
            assert json.loads((out / "directions.json").read_text())["steps"] == steps
        return (out / "checkpoint.safetensors").exists()

    landed = _kill_at_random_moments(args, random.Random(1), tmp_path / "killed" / "checkpoint.safetensors", 0.4,
                                     check, resume=True)
    print(f"discover: (kill moment, ended by itself, work saved) {landed}")
    result = run_cli(*args, "--resume", env=SAME_THREADS)  # a checkpoint exists: the assertion above
    assert result.returncode == 0, result.stderr
    fresh = run_cli("discover", "--out", str(tmp_path / "fresh"), "--steps", str(steps), "--checkpoint-every", "10",
                    *TINY_DISCOVER, env=SAME_THREADS)
    assert fresh.returncode == 0, fresh.stderr

    killed, uninterrupted = tmp_path / "killed", tmp_path / "fresh"
    assert json.loads((killed / "directions.json").read_text())["steps"] == steps
    assert load_checkpoint(killed / "checkpoint.safetensors")["step"] == steps
    logged = _steps(killed / "metrics.jsonl")
    assert logged == sorted(set(logged)) == _steps(uninterrupted / "metrics.jsonl")  # no step twice or missing
    assert sha256_file(killed / "directions.safetensors") == sha256_file(uninterrupted / "directions.safetensors"), landed
    _no_temporaries(killed)


# ----------------------------------------------------------------------------- synthesize
def _kill_at_replacements(args: list[str], points: list[str], check) -> list[tuple[str, bool]]:
    """Run ``saliency ARGS`` once per point, each SIGKILLed at that file replacement of its own
    (``N``: just before the N-th os.replace, the new file whole but not in place; ``N+``: just
    after it, whatever record follows not yet written; tests/support/guard/sitecustomize.py).
    Counted in the process, not timed: the same moments on any machine at any load. After each
    kill ``check()`` validates what is on disk and says whether work is saved there."""
    landed = []
    for point in points:
        env = dict(os.environ, HF_HUB_OFFLINE="1", SALIENCY_TEST_KILL_AT_REPLACE=point, **SAME_THREADS)
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
        assert result.returncode == -signal.SIGKILL, (point, result.returncode, result.stderr.decode()[-2000:])
        landed.append((point, check()))
    return landed


def test_synthesize_survives_kills_mid_write_and_writes_exactly_n(known_run, tmp_path):
    n = 3000
    common = ["--run", str(known_run), "--n", str(n), "--classes", "0,1,2", "--batch", "64", "--shard-size", "128",
              "--device", "cpu"]
    out = tmp_path / "killed"

    def check():
        if (out / "progress.json").exists():
            listed = json.loads((out / "progress.json").read_text())["shards"]
            for entry in listed:  # every shard the record lists is whole
                assert sha256_file(out / entry["file"]) == entry["sha256"]
        assert not (out / "manifest.json").exists() or load_manifest(out)["count"] == n
        return (out / "progress.json").exists() and bool(json.loads((out / "progress.json").read_text())["shards"])

    # A run of 3,000 pairs in shards of 128 replaces about 50 files; each attempt resumes the
    # last and dies within its first dozen, before and after a replacement in turn.
    rng = random.Random(2)
    points = [f"{rng.randint(2, 12)}{'+' if attempt % 2 else ''}" for attempt in range(KILLS_PER_STAGE)]
    landed = _kill_at_replacements(["synthesize", *common, "--out", str(out)], points, check)
    print(f"synthesize: (kill point, work saved) {landed}")
    assert landed[-1][1], landed  # work saved before the last kill: the resume below has some to keep
    result = run_cli("synthesize", *common, "--out", str(out), env=SAME_THREADS)
    assert result.returncode == 0, result.stderr
    fresh = run_cli("synthesize", *common, "--out", str(tmp_path / "fresh"), env=SAME_THREADS)
    assert fresh.returncode == 0, fresh.stderr

    manifest = load_manifest(out)
    assert manifest["count"] == n == verify_shards(out)
    parts = [load_file(str(out / entry["file"])) for entry in manifest["shards"]]
    index = np.concatenate([part["index"] for part in parts])
    latents = np.concatenate([part["latents"] for part in parts])
    assert len(index) == n and np.all(np.diff(index) > 0)  # in order: nothing skipped, nothing twice
    assert len(np.unique(latents, axis=0)) == n
    expected = [entry["sha256"] for entry in load_manifest(tmp_path / "fresh")["shards"]]
    assert [entry["sha256"] for entry in manifest["shards"]] == expected, landed
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


# ----------------------------------------------------------------------------- train-unet
def test_train_unet_survives_random_kills_without_repeating_a_step(known_run, tmp_path):
    from makers import synthesize_pairs

    data = tmp_path / "pairs"
    synthesize_pairs(known_run, data, 300, preview=0)
    steps = 30
    args = ["train-unet", "--data", str(data), "--steps", str(steps), "--checkpoint-every", "2", "--val-every", "15",
            *TINY_UNET]
    out = tmp_path / "killed"

    def check():
        try:
            step = load_checkpoint(out / "checkpoint.safetensors")["step"]
        except UserError:  # killed before its first checkpoint: there is none (never a torn one)
            assert not (out / "checkpoint.safetensors").exists()
            return False
        assert 0 < step <= steps
        logged = _steps(out / "metrics.jsonl")
        assert logged == sorted(set(logged))
        assert not (out / "model.json").exists() or json.loads((out / "model.json").read_text())["steps"] == steps
        return True

    landed = _kill_at_random_moments([*args, "--out", str(out)], random.Random(3), out / "checkpoint.safetensors",
                                     0.5, check, resume=True)
    print(f"train-unet: (kill moment, ended by itself, work saved) {landed}")
    resume = ["--resume"] if (out / "checkpoint.safetensors").exists() else []
    result = run_cli(*args, "--out", str(out), *resume, env=SAME_THREADS)
    assert result.returncode == 0, result.stderr
    fresh = run_cli(*args, "--out", str(tmp_path / "fresh"), env=SAME_THREADS)
    assert fresh.returncode == 0, fresh.stderr

    meta = json.loads((out / "model.json").read_text())
    assert meta["steps"] == steps and load_checkpoint(out / "checkpoint.safetensors")["step"] == steps
    logged = _steps(out / "metrics.jsonl")
    assert logged == sorted(set(logged)) == _steps(tmp_path / "fresh" / "metrics.jsonl") and logged[-1] == steps
    assert sha256_file(out / "model.safetensors") == sha256_file(tmp_path / "fresh" / "model.safetensors"), landed
    _no_temporaries(out)
