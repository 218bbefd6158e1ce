"""RCA against training steps for discovery runs made with ``--rca-every``: one line per run.

    python benchmarks/rca_curve.py RUN [RUN ...] --out docs/images/mnist-paper-budget-rca.png \
        [--paper learned=0.88,random=0.46,coordinate=0.48] [--points "LABEL=STEP:RCA/STEP:RCA/..."]

Each RUN is a ``saliency discover`` folder (finished or not): its ``metrics.jsonl`` holds the
periodic RCA records, its ``config.json`` the deformator that names the line. Prints a
markdown table (run, deformator, steps done, hours of training so far, last RCA, early stop).
``--points`` adds a line measured by a run whose folder is gone (dashed; say where it came from).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LABELS = {"unit": "learned (unit-norm A)", "ortho": "learned (orthonormal A)", "random": "random A",
          "identity": "coordinate A"}


def read_run(folder: Path) -> dict:
    metrics, config = folder / "metrics.jsonl", folder / "config.json"
    if not metrics.is_file() or not config.is_file():
        raise SystemExit(f"rca_curve: {folder} is not a discovery run (no metrics.jsonl or config.json)")
    records = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill
    identity = json.loads(config.read_text(encoding="utf-8"))["identity"]
    summary_path = folder / "directions.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    curve = [(r["step"], r["rca"]) for r in records if "rca" in r]
    last = max((r for r in records if "seconds" in r), key=lambda r: r["step"], default={"step": 0, "seconds": 0})
    return {"run": str(folder), "deformator": identity["deformator"], "K": identity["num_directions"],
            "lambda": identity.get("shift_loss_weight"),
            "curve": curve, "steps": last["step"], "hours": last["seconds"] / 3600,
            "stopped_early": summary.get("stopped_early"), "final_rca": summary.get("rca")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="The PNG to write.")
    parser.add_argument("--paper", default=None, help="The paper's values as LABEL=RCA,..., drawn as dotted lines.")
    parser.add_argument("--title", default="RCA during training")
    parser.add_argument("--points", action="append", default=[],
                        help="LABEL=STEP:RCA/STEP:RCA/...: RCA recorded by a run whose folder is gone (dashed).")
    args = parser.parse_args(argv)
    runs = [read_run(folder) for folder in args.runs]
    recorded = []
    for item in args.points:
        label, _, text = item.partition("=")
        try:
            points = [(int(a), float(b)) for a, _, b in (pair.partition(":") for pair in text.split("/"))]
        except ValueError:
            raise SystemExit(f"rca_curve: --points takes LABEL=STEP:RCA/STEP:RCA/..., got {item!r}")
        recorded.append((label, points))
    if not runs and not recorded:
        raise SystemExit("rca_curve: give run folders or --points")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    settings_differ = len({(run["K"], run["lambda"]) for run in runs}) > 1
    for run in runs:
        if run["curve"]:
            steps, rca = zip(*run["curve"])
            label = LABELS.get(run["deformator"], run["deformator"])
            if settings_differ:  # runs of one A that differ in K or lambda (the paper's Tables 3 and 5)
                label += f", K {run['K']}, lambda {run['lambda']:g}"
            axes.plot(steps, rca, marker="o", markersize=3, label=label)
    for label, points in recorded:
        steps, rca = zip(*points)
        axes.plot(steps, rca, marker="o", markersize=3, linestyle="--", label=label)
    if args.paper:
        placed: list[float] = []
        for item in sorted(args.paper.split(","), key=lambda text: -float(text.partition("=")[2])):
            label, _, value = item.partition("=")
            axes.axhline(float(value), linestyle=":", linewidth=1, color="gray")
            # a label close below another's goes under its line, so the two do not overlap
            below = any(abs(float(value) - other) < 0.05 for other in placed)
            axes.annotate(f"paper, {label}: {float(value):.2f}", (0, float(value)), xycoords=("axes fraction", "data"),
                          textcoords="offset points", xytext=(4, -9 if below else 3), fontsize=7, color="gray")
            placed.append(float(value))
    axes.set_xlabel("training step")
    axes.set_ylabel("RCA (2,048 fresh samples)" if runs else "RCA")
    axes.set_ylim(0, 1)
    axes.set_title(args.title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(f".{args.out.name}.tmp.png")
    figure.savefig(temporary)
    temporary.replace(args.out)  # atomic: a reader never sees half a picture
    plt.close(figure)

    print("| run | A | K | steps | hours | last RCA | stopped early |")
    print("|---|---|---:|---:|---:|---:|---|")
    for run in runs:
        last = run["curve"][-1][1] if run["curve"] else float("nan")
        stop = run["stopped_early"]["rule"] + f" (step {run['stopped_early']['step']})" if run["stopped_early"] else "no"
        print(f"| {run['run']} | {run['deformator']} | {run['K']} | {run['steps']:,} | {run['hours']:.2f} | "
              f"{last:.4f} | {stop} |")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
