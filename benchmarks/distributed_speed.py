"""Two processes under torchrun (gloo, CPU) against one, for discover and synthesize.

Prints the throughput ratio (2 processes / 1; from the stages' own loop timers, so start-up
is excluded) and checks the outputs agree in kind (same manifest keys, same pair count,
same step count). The single process gets every core as torch threads; each of the two gets
cores / 2.

    python benchmarks/distributed_speed.py [--pairs 10000] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], processes: int, threads: int) -> None:
    prefix = [sys.executable, "-m", "pipelines.cli"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "pipelines.cli"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    result = subprocess.run(prefix + args, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{result.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    sys.path.insert(0, str(REPO))
    from directions.generators import build_generator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run

    result = {"cores": cores}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        known = write_known_direction_run(tmp / "run", "scenes", whiteness_direction(build_generator("scenes")), 6.0)
        manifests = {}
        for processes in (1, 2):
            out = tmp / f"syn-{processes}"
            run(["synthesize", "--run-dir", str(known), "--count", str(args.pairs), "--out", str(out), "--classes",
                 "0,1,2", "--device", "cpu"], processes, max(1, cores // processes))
            manifests[processes] = json.loads((out / "manifest.json").read_text())
        rates = {p: m["count"] / m["seconds"] for p, m in manifests.items()}
        result["synthesize"] = {
            "pairs": args.pairs, "pairs_per_s_1": round(rates[1], 1), "pairs_per_s_2": round(rates[2], 1),
            "ratio": round(rates[2] / rates[1], 3),
            "same_count": manifests[1]["count"] == manifests[2]["count"] == args.pairs,
            "same_keys": set(manifests[1]) == set(manifests[2]),
        }
        summaries = {}
        for processes in (1, 2):
            out = tmp / f"disc-{processes}"
            run(["discover", "--out", str(out), "--steps", str(args.steps), "--no-charts", "--no-refine-bg",
                 "--checkpoint-every", str(args.steps), "--device", "cpu"], processes, max(1, cores // processes))
            summaries[processes] = json.loads((out / "directions.json").read_text())
        speeds = {p: s["steps"] / s["train_seconds"] for p, s in summaries.items()}
        result["discover"] = {
            "steps": args.steps, "batch": summaries[1]["batch_size"], "steps_per_s_1": round(speeds[1], 2),
            "steps_per_s_2": round(speeds[2], 2), "ratio": round(speeds[2] / speeds[1], 3),
            "same_steps": summaries[1]["steps"] == summaries[2]["steps"] == args.steps,
            "same_keys": set(summaries[1]) == set(summaries[2]),
            "rca_1": summaries[1]["rca"], "rca_2": summaries[2]["rca"],
        }
    print(json.dumps(result, indent=2))
    print(f"2 processes / 1: synthesize {result['synthesize']['ratio']:.3f}, discover {result['discover']['ratio']:.3f} "
          f"(on {cores} cores)")


if __name__ == "__main__":
    main()
