"""fp32 against bf16 autocast for the discovery game at the paper's MNIST setting, in one run:
the step time and the RCA after N steps, for two seeds of each.

    python benchmarks/discover_precision.py --out /tmp/precision-check [--steps 5000] [--seeds 0,1]

Each cell is a real ``saliency discover`` run (sngan-mnist, unit-norm A, K 64, lenet5, batch 128,
Adam 1e-4, lambda 0.25, RCA on 2,048 fresh samples at the last step), one thread each, two at a
time (so every run shares the CPU with one other, as the paper-budget runs do). The step time
is the wall time per step between step 50 and the last logged step before the RCA, read from
the run's metrics.jsonl. The rule printed at the end (issue 33): bf16 only if it is at least
1.5x faster and its mean RCA lies within the fp32 seeds' range widened by 0.02.
Writes OUT/precision.json; each cell's run folder stays resumable in OUT/<precision>-s<seed>.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from saliency.core.runtime import cpu_has_native_bf16, cpu_name

SPEEDUP_NEEDED = 1.5
RCA_TOLERANCE = 0.02


def paper_command(out: Path, steps: int, seed: int, precision: str) -> list[str]:
    return ["saliency", "discover", "--generator", "sngan-mnist", "--deformator", "unit", "--directions", "64",
            "--reconstructor", "lenet5", "--batch", "128", "--lr", "1e-4", "--shift-loss-weight", "0.25",
            "--steps", str(steps), "--rca-every", str(steps), "--stop-rca-change", "0.01",
            "--stop-rca-window", "20000", "--checkpoint-every", "500", "--seed", str(seed),
            "--precision", precision, "--device", "cpu", "--no-charts", "--no-effects", "--out", str(out)]


def read_cell(folder: Path, steps: int) -> dict:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = {r["step"]: r["seconds"] for r in records if "loss" in r}
    rca = [r["rca"] for r in records if "rca" in r and r["step"] == steps]
    # The RCA is measured at the last step, before that step's log line: stop one window short.
    last = max(step for step in timed if step < steps)
    return {"ms_per_step": round(1000 * (timed[last] - timed[50]) / (last - 50), 1), "rca": rca[0] if rca else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Scratch folder for the four runs.")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = [(precision, seed) for seed in seeds for precision in ("fp32", "bf16")]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    queue, running = list(cells), {}
    while queue or running:
        while queue and len(running) < args.workers:
            precision, seed = queue.pop(0)
            folder = args.out / f"{precision}-s{seed}"
            if (folder / "directions.json").is_file():
                continue  # done in an earlier call
            resume = ["--resume"] if (folder / "checkpoint.safetensors").is_file() else []
            args.out.mkdir(parents=True, exist_ok=True)
            log = open(args.out / f"{precision}-s{seed}.log", "w")
            running[(precision, seed)] = subprocess.Popen(
                paper_command(folder, args.steps, seed, precision) + resume, env=env, stdout=log, stderr=log)
        time.sleep(5)
        for cell, process in list(running.items()):
            if process.poll() is not None:
                if process.returncode:
                    sys.exit(f"discover_precision: {cell} failed (exit {process.returncode}); see its log")
                del running[cell]

    results = {f"{p}-s{s}": read_cell(args.out / f"{p}-s{s}", args.steps) for p, s in cells}
    mean = lambda key, p: sum(results[f"{p}-s{s}"][key] for s in seeds) / len(seeds)  # noqa: E731
    speedup = mean("ms_per_step", "fp32") / mean("ms_per_step", "bf16")
    fp32_rca = [results[f"fp32-s{s}"]["rca"] for s in seeds]
    bf16_rca = mean("rca", "bf16")
    within = min(fp32_rca) - RCA_TOLERANCE <= bf16_rca <= max(fp32_rca) + RCA_TOLERANCE
    choice = "bf16" if speedup >= SPEEDUP_NEEDED and within else "fp32"
    summary = {"cpu": cpu_name(), "native_bf16": cpu_has_native_bf16(), "threads_per_run": 1,
               "runs_at_once": args.workers, "steps": args.steps, "cells": results,
               "speedup_bf16": round(speedup, 3), "bf16_mean_rca": round(bf16_rca, 4),
               "fp32_rca_range": [min(fp32_rca), max(fp32_rca)], "bf16_rca_within": within, "choice": choice}
    (args.out / "precision.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"CPU: {summary['cpu']} (native bf16: {summary['native_bf16']}); 1 thread a run, {args.workers} at once")
    print("| precision | seed | ms / step | RCA at step %d |" % args.steps)
    print("|---|---:|---:|---:|")
    for (p, s) in cells:
        cell = results[f"{p}-s{s}"]
        print(f"| {p} | {s} | {cell['ms_per_step']} | {cell['rca']} |")
    print(f"bf16 speed-up {speedup:.2f}x (needs {SPEEDUP_NEEDED}x); bf16 mean RCA {bf16_rca:.4f}, fp32 "
          f"{min(fp32_rca):.4f}-{max(fp32_rca):.4f} (+-{RCA_TOLERANCE}): {'within' if within else 'outside'}")
    print(f"choice: {choice}")


if __name__ == "__main__":
    main()
