"""The GPU benchmark script runs end to end (here on the CPU, at its tiny size): the script a
lent GPU will run in one call must not be the first to find its bugs. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ECSSD, NEEDS_ECSSD, REPO


def test_gpu_benchmark_runs_at_tiny_size_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "benchmarks/gpu_bench.py", "--tiny", "--device", "cpu", "--seconds", "0.2",
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    for key in ("generator_images_per_s_fp32_batch2", "generator_images_per_s_bf16_batch4", "discover_steps_per_s",
                "synthesize_pairs_per_s", "synthesize_ratio_to_bare_forward", "unet_samples_per_s",
                "unet_loader_samples_per_s", "unet_loader_ratio", "eval_forward_images_per_s"):
        assert report[key] > 0, key
    stages = report["projected_biggan_profile_seconds"]
    assert set(stages) == {"discover", "synthesize", "train_unet", "eval_forward"}
    # hours are rounded to 0.001 h = 3.6 s, so they sit within 1.8 s of the stages' sum
    assert abs(report["projected_biggan_profile_hours"] * 3600 - sum(stages.values())) <= 1.8 + 1e-6
    assert stages["discover"] == pytest.approx(100_000 / report["discover_steps_per_s"], rel=1e-3)
    assert stages["train_unet"] == pytest.approx(15_000 * 128 / report["unet_loader_samples_per_s"], rel=1e-3)
    assert report["device"] == "cpu" and report["tiny"] is True and report["synthesize_pairs"] == 16


def test_predict_benchmark_runs_on_a_few_real_images():
    """A smoke test of benchmarks/predict_speed.py (speed is its business, not the tests')."""
    images = ECSSD / "images"
    if not images.is_dir():
        pytest.skip(NEEDS_ECSSD)
    result = subprocess.run([sys.executable, "benchmarks/predict_speed.py", "--images", str(images), "--limit", "10",
                             "--rounds", "1", "--workers", "0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert report["images"] == 10 and report["ratio_predict_over_bare"] > 0
    assert all(v > 0 for v in report["predict_images_per_second"] + report["bare_forward_images_per_second"])


def test_rca_curve_draws_the_periodic_records_of_a_run(tmp_path):
    """benchmarks/rca_curve.py on a tiny run made with --rca-every: the table it prints is the
    run's own record (its last RCA, steps), and the picture is written."""
    from conftest import run_cli

    run = tmp_path / "run"
    made = run_cli("discover", "--out", str(run), "--steps", "6", "--rca-every", "3", "--rca-samples", "16",
                   "--resolution", "32", "--directions", "4", "--batch", "8", "--no-charts", "--no-effects",
                   "--no-bg-search", "--device", "cpu")
    assert made.returncode == 0, made.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["rca"]) for r in records if "rca" in r]
    assert [step for step, _ in curve] == [3, 6]
    assert json.loads((run / "directions.json").read_text())["rca"] == curve[-1][1]  # the end of the curve
    out = tmp_path / "curve.png"
    result = subprocess.run([sys.executable, "benchmarks/rca_curve.py", str(run), "--out", str(out),
                             "--paper", "learned=0.88"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    row = next(line for line in result.stdout.splitlines() if line.startswith(f"| {run} "))
    assert f"| {curve[-1][1]:.4f} |" in row and "| 6 |" in row and "| ortho |" in row
    # a curve recorded by a run whose folder is gone, drawn beside it; a malformed one is refused
    again = subprocess.run([sys.executable, "benchmarks/rca_curve.py", str(run), "--out", str(out), "--points",
                            "earlier=5000:0.3/10000:0.5"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    bad = subprocess.run([sys.executable, "benchmarks/rca_curve.py", "--out", str(out), "--points", "earlier=5000"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--points takes LABEL=STEP:RCA" in bad.stderr


def test_predict_memory_benchmark_runs_on_a_few_images(tmp_path):
    """A smoke test of benchmarks/predict_memory.py (its numbers are the benchmark's business)."""
    from makers import make_dataset, random_model

    model = random_model(tmp_path / "model")
    images = make_dataset(tmp_path / "data", stems=("a", "b", "c"), size=(40, 30)) / "ECSSD" / "images"
    result = subprocess.run([sys.executable, "benchmarks/predict_memory.py", "--model", str(model), "--images",
                             str(images), "--counts", "4,9", "--size", "32"], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    assert [row["inputs"] for row in report["rows"]] == [4, 9]
    assert all(row["peak_rss_mib"] > 50 for row in report["rows"])  # a real process with torch loaded was measured


def test_serve_load_benchmark_runs_on_a_tiny_dataset(tmp_path):
    """A smoke test of benchmarks/serve_load.py: it starts the server, drives it, reads its
    memory, stops it (exit 0) and writes its table (speed is its business, not the tests')."""
    pytest.importorskip("uvicorn")
    from makers import fixture_dataset

    root = fixture_dataset(tmp_path / "data")
    out = tmp_path / "load.json"
    result = subprocess.run([sys.executable, "benchmarks/serve_load.py", "--data-root", str(root), "--clients", "2,1",
                             "--requests", "4", "--first-reading", "4", "--soak-to", "12", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [row["clients"] for row in report["levels"]] == [2, 1]
    assert all(row["requests"] == 4 and row["errors"] == 0 for row in report["levels"])
    assert report["memory_mb"]["first"][0] == 4 and report["memory_mb"]["last"][0] == 12
    assert report["images_predicted"] >= 12 and report["server_exit"] == 0
    assert "| clients | images/s |" in result.stdout


def test_silent_stretch_times_the_gaps_between_a_commands_lines(tmp_path):
    """A smoke test of benchmarks/silent_stretch.py: a "\\r" ends a line as "\\n" does, and a line
    counts from its first byte (tqdm writes "\\r" + the bar and ends it only with its next redraw);
    the longest gap is found with the lines around it; the exit status is kept."""
    out = tmp_path / "gaps.json"
    child = ("import sys, time; print(1); time.sleep(0.3); sys.stderr.write('\\r2'); sys.stderr.flush(); "
             "time.sleep(1.0); print(3); sys.exit(3)")
    result = subprocess.run([sys.executable, "benchmarks/silent_stretch.py", "--no-echo", "--json", str(out), "--",
                             sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]  # the command's own status
    report = json.loads(out.read_text())
    assert report["lines"] == 3 and report["returncode"] == 3
    longest = report["gaps"][0]
    assert (longest["before"], longest["after"]) == ("2", "3") and 0.9 <= longest["seconds"] < 30
    assert report["total_seconds"] >= 1.3 and len(report["gaps"]) == 4  # start, 3 lines, exit
    assert "longest silence:" in result.stdout and "top 4 gaps:" in result.stdout


def test_plan_vs_run_puts_the_projection_beside_the_stage_times(tmp_path):
    plan = {"device": "cpu", "device_name": "x", "plan_seconds": 50,
            "stages": {"discover": {"seconds": 300.0}, "synthesize": {"seconds": 11.0}, "unet": {"seconds": 200.0},
                       "eval": {"seconds": 60.0}}}
    record = {"stages": {"discover": {"seconds": 280.0}, "synthesize": {"seconds": 8.0},
                         "unet": {"seconds": 210.0}, "eval-ecssd": {"seconds": 45.0}, "eval-scenes": {"seconds": 5.0}}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "pipeline.json").write_text(json.dumps(record))
    result = subprocess.run([sys.executable, "benchmarks/plan_vs_run.py", str(tmp_path / "plan.json"),
                             str(tmp_path / "pipeline.json")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1  # synthesize: 11 against 8 s; the rest within 25 %
    assert "| eval | 60.0 | 50.0 | 1.20 |" in result.stdout
    assert "| total | 571.0 | 548.0 | 1.04 |" in result.stdout
    assert "off by more than 25%: synthesize" in result.stdout
