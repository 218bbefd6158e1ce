"""A plan's projection beside the run's own stage times (``saliency pipeline --plan``, then the run).

    saliency pipeline --plan --out /tmp/plan && saliency pipeline --out /tmp/run
    python benchmarks/plan_vs_run.py /tmp/plan/plan.json /tmp/run/pipeline.json

Prints one markdown table: per stage, the plan's projected seconds, the run's, and their ratio
(the plan's ``eval`` against the run's eval stages together). Exit status 1 when a stage the
run timed is off by more than ``--tolerance`` (default 25 %).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# the plan's stages and the pipeline's stages they stand for
STAGES = {"discover": ("discover",), "synthesize": ("synthesize",), "unet": ("unet",),
          "eval": ("eval-ecssd", "eval-scenes")}


def compare(plan: dict, record: dict) -> list[dict]:
    rows = []
    for stage, names in STAGES.items():
        ran = [record["stages"][n] for n in names if n in record.get("stages", {})]
        if stage not in plan["stages"] or not ran or any(r.get("skipped_last_run") for r in ran):
            continue
        planned, real = plan["stages"][stage]["seconds"], sum(r["seconds"] for r in ran)
        rows.append({"stage": stage, "planned": planned, "run": real, "ratio": planned / real if real else None})
    planned, real = sum(r["planned"] for r in rows), sum(r["run"] for r in rows)
    rows.append({"stage": "total", "planned": planned, "run": real, "ratio": planned / real if real else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", type=Path, help="plan.json from `saliency pipeline --plan`")
    parser.add_argument("record", type=Path, help="pipeline.json of the run")
    parser.add_argument("--tolerance", type=float, default=0.25)
    args = parser.parse_args(argv)
    plan = json.loads(args.plan.read_text(encoding="utf-8"))
    rows = compare(plan, json.loads(args.record.read_text(encoding="utf-8")))
    print(f"plan on {plan.get('device_name')} ({plan.get('device')}), measured in {plan.get('plan_seconds')} s\n")
    print("| stage | plan (s) | run (s) | plan / run |\n|---|---:|---:|---:|")
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(f"| {row['stage']} | {row['planned']:.1f} | {row['run']:.1f} | {ratio} |")
    off = [r["stage"] for r in rows if r["ratio"] is not None and abs(r["ratio"] - 1) > args.tolerance]
    if off:
        print(f"\noff by more than {args.tolerance:.0%}: {', '.join(off)}")
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
