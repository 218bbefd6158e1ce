"""`saliency discover` end to end, as a user runs it, including a kill and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file

from conftest import REPO, run_cli

TINY = ["--resolution", "32", "--train-resolution", "32", "--directions", "4", "--batch", "8",
        "--bg-samples", "16", "--refine-steps", "10", "--device", "cpu"]


def test_a_tiny_discovery_run_writes_every_artifact(tmp_path):
    out = tmp_path / "run"
    result = run_cli("discover", "--out", str(out), "--steps", "12", "--checkpoint-every", "5", *TINY)
    assert result.returncode == 0, result.stderr
    assert "RCA" in result.stdout and "bg_cos" in result.stdout
    summary = json.loads((out / "directions.json").read_text())
    assert summary["steps"] == 12 and summary["num_directions"] == 4 and summary["generator"] == "scenes"
    assert 0.0 <= summary["rca"] <= 1.0
    bg = summary["bg_direction"]
    assert bg["sign"] in (1, -1) and bg["magnitude"] > 0 and len(bg["vector"]) == 32
    report = summary["ground_truth"]
    assert set(report["background"]) >= {"bg_cos", "bg_mask_iou", "oracle_mask_iou"}
    assert len(report["factors"]) == 4
    tensors = load_file(str(out / "directions.safetensors"))
    assert tuple(tensors["directions"].shape) == (32, 4) and tuple(tensors["bg_direction"].shape) == (32,)
    charts = sorted(p.name for p in (out / "charts").iterdir())
    assert charts == ["direction_000.png", "direction_001.png", "direction_002.png", "direction_003.png", "overview.png"]
    assert (out / "bg_candidates.png").exists()
    ranked = json.loads((out / "bg_candidates.json").read_text())["ranked"]
    assert {c["index"] for c in ranked} >= {0, 1, 2, 3}

    # h_bg override on the finished run, without retraining
    again = run_cli("discover", "--out", str(out), "--steps", "12", "--resume", "--bg-direction", "2:6", *TINY)
    assert again.returncode == 0, again.stderr
    chosen = json.loads((out / "directions.json").read_text())["bg_direction"]
    assert chosen["index"] == 2 and chosen["magnitude"] == 6.0 and chosen["extra"]["chosen_by"] == "user"


def test_killed_run_resumes_to_the_same_step_count(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "saliency.cli", "discover", "--out", str(out), "--steps", "400",
            "--checkpoint-every", "10", *TINY, "--no-charts", "--no-refine-bg"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for _ in range(2):  # kill it twice, at different points
        process = subprocess.Popen(args + (["--resume"] if (out / "checkpoint.safetensors").exists() else []),
                                   cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        start_lines = _log_lines(out)
        while time.time() < deadline and _log_lines(out) < start_lines + 3:
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert (out / "checkpoint.safetensors").exists()
    result = run_cli("discover", "--out", str(out), "--steps", "400", "--checkpoint-every", "10", "--resume",
                     *TINY, "--no-charts", "--no-refine-bg")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "directions.json").read_text())
    assert summary["steps"] == 400
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 400  # no step logged twice, none past the end
    from saliency.checkpoint import load_checkpoint

    assert load_checkpoint(out / "checkpoint.safetensors")["step"] == 400


def _log_lines(out) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0
