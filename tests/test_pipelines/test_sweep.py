"""``saliency sweep``: cells, resuming a killed grid, the table, and its refusals."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, assert_one_line_error, run_cli
from makers import effects_by_hand

def tiny(steps: int = 24) -> list[str]:
    return ["--steps", str(steps), "--batch", "16", "--rca-samples", "64", "--no-charts", "--no-bg-search",
            "--checkpoint-every", "4", "--log-every", "2", "--resolution", "32", "--device", "cpu"]


TINY = tiny()




def _sweep(out, *extra, seeds="0"):
    return ["sweep", "--generator", "scenes", "--out", str(out), "--vary", "directions=4,6", "--seeds", seeds,
            *TINY, *extra]


def test_a_killed_sweep_resumes_without_redoing_finished_cells(tmp_path):
    out = tmp_path / "grid"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *_sweep(out, seeds="0,1")], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "cells" / "directions=4,seed=0"
    second = out / "cells" / "directions=4,seed=1"
    deadline = time.time() + 240
    # kill it once the first cell is finished and the second has saved a checkpoint
    while time.time() < deadline and not (second / "checkpoint.safetensors").exists():
        assert process.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (first / "directions.json").exists() and not (second / "directions.json").exists()
    finished_bytes = (first / "directions.safetensors").read_bytes()
    finished_mtime = (first / "directions.json").stat().st_mtime_ns

    result = run_cli(*_sweep(out, seeds="0,1"), env={"OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr
    assert "directions=4,seed=0: done already" in result.stdout
    assert "directions=4,seed=1: resuming" in result.stdout
    assert (first / "directions.json").stat().st_mtime_ns == finished_mtime
    assert (first / "directions.safetensors").read_bytes() == finished_bytes
    steps = [json.loads(line)["step"] for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 25, 2))  # resumed from its checkpoint: no step logged twice or skipped

    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [(r["directions"], r["seeds"]) for r in rows] == [("4", "2"), ("6", "2")]
    cells = list(csv.DictReader((out / "cells.csv").open()))
    assert len(cells) == 4 and {c["seed"] for c in cells} == {"0", "1"}
    for row in rows:
        rcas = [float(c["rca"]) for c in cells if c["directions"] == row["directions"]]
        assert float(row["rca_mean"]) == pytest.approx(sum(rcas) / 2, abs=1e-4)
        assert float(row["rca_min"]) == pytest.approx(min(rcas), abs=1e-4)
    assert "| directions | RCA |" in (out / "table.md").read_text()
    assert (out / "rca.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((second / "directions.json").read_text())
    assert summary["steps"] == 24 and summary["num_directions"] == 4 and summary["bg_direction"] is None
    by_hand = effects_by_hand(second)  # the effects of the directions it saved, computed a second way
    assert summary["effects"]["mean_abs_cos"] == pytest.approx(by_hand["mean_abs_cos"], abs=2e-4)
    assert summary["effects"]["diversity"] == pytest.approx(by_hand["diversity"], abs=2e-4)

    # the same command again: nothing to do, the same table
    again = run_cli(*_sweep(out, seeds="0,1"))
    assert again.returncode == 0 and again.stdout.count("done already") == 4


def test_a_two_key_grid_writes_a_grid_table(tmp_path):
    out = tmp_path / "grid2"
    result = run_cli("sweep", "--generator", "scenes", "--out", str(out), "--vary", "directions=4,6",
                     "--vary", "shift-loss-weight=0,0.5", *tiny(8))
    assert result.returncode == 0, result.stderr
    table = (out / "table.md").read_text()
    assert "| directions \\ shift-loss-weight | 0 | 0.5 |" in table
    assert len(list((out / "cells").iterdir())) == 4
    weights = {json.loads((c / "directions.json").read_text())["shift_loss_weight"] for c in (out / "cells").iterdir()}
    assert weights == {0.0, 0.5}


@pytest.mark.parametrize("args, needle", [
    (["--vary", "colour=1,2"], "discover has no option --colour"),
    (["--vary", "directions=0,4"], "--vary directions=0"),
    (["--vary", "seed=1,2"], "use --seeds"),
    (["--vary", "directions"], "KEY=V1,V2"),
    (["--vary", "directions=4", "--directions", "6"], "also given as a fixed option"),
    (["--vary", "deformator=ortho,spiral"], "--vary deformator=spiral"),
    (["--vary", "directions=4", "--vary", "lr=1", "--vary", "batch=2"], "one or two keys"),
    (["--vary", "directions=4", "--flux", "3"], "options for discover"),
    (["--vary", "directions=4", "--seed", "3"], "sets each cell's --out, --resume and --seed"),
    (["--vary", "no-charts=true"], "vary the positive name"),
    (["--vary", "generator=scenes,nope"], "unknown generator 'nope'"),
    (["--vary", "directions=4", "--resolution", "8"], "--resolution"),
    (["--vary", "directions=4", "--bg-direction", "x"], "--bg-direction"),
    (["--vary", "directions=4", "--seeds", ","], "--seeds is empty"),
])
def test_bad_sweeps_are_one_line_and_run_nothing(tmp_path, args, needle, cli):
    out = tmp_path / "bad"
    generator = [] if any(a.startswith("generator=") for a in args) else ["--generator", "scenes"]
    result = cli("sweep", *generator, "--out", str(out), *args)
    assert_one_line_error(result, needle)
    assert not out.exists()  # checked before anything was written


def test_a_folder_keeps_its_fixed_options_but_may_grow(tmp_path):
    out = tmp_path / "s"
    assert run_cli("sweep", "--generator", "scenes", "--out", str(out), "--vary", "directions=4",
                   *tiny(4)).returncode == 0
    result = run_cli("sweep", "--generator", "scenes", "--out", str(out), "--vary", "directions=4", *tiny(8))
    assert_one_line_error(result, "other fixed options", "steps: 4 there, 8 now")
    # the same options in another order and spelling, a grid that grows: accepted, old cell reused
    reordered = ["--batch=16", "--steps", "4", *tiny(4)[4:]]
    grown = run_cli("sweep", "--out", str(out), "--generator", "scenes", "--vary", "directions=4,5", *reordered)
    assert grown.returncode == 0, grown.stderr
    assert "directions=4,seed=0: done already" in grown.stdout and "directions=5,seed=0: starting" in grown.stdout


def test_plan_lists_the_cells_and_their_state(tmp_path):
    result = run_cli("sweep", "--generator", "scenes", "--out", str(tmp_path / "p"), "--vary", "lr=0.001,0.01",
                     "--seeds", "0,1", "--plan", *TINY)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("new") for line in lines)
    assert not (tmp_path / "p" / "cells").exists()


def test_cells_are_dealt_out_to_torchrun_processes(tmp_path, monkeypatch):
    """Under torchrun each process runs its own share of the cells, alone; the process that
    finishes the last cell writes the table."""
    from pipelines import sweep
    from pipelines.commands.discover import discover_command as discover

    plan = sweep.plan_sweep(tmp_path / "d", ["directions=4,6"], [0, 1], TINY, "scenes", discover)
    ran = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        calls = []
        monkeypatch.setattr(sweep, "run_cell", lambda cell, *a, **k: calls.append(cell.name) or _finish(cell))
        result = sweep.run_sweep(plan, progress=False, log=lambda *_: None)
        ran[rank] = calls
        assert result["finished"] == (rank == 1)
    assert ran[0] == ["directions=4,seed=0", "directions=6,seed=0"]
    assert ran[1] == ["directions=4,seed=1", "directions=6,seed=1"]
    assert (tmp_path / "d" / "table.md").exists()


def _finish(cell):
    cell.folder.mkdir(parents=True, exist_ok=True)
    summary = {"generator": "scenes", "rca": 0.5, "steps": 1, "train_seconds": 1.0, "batch_size": 16, "num_directions": 4,
               "effects": None}
    (cell.folder / "directions.json").write_text(json.dumps(summary))
    return summary
