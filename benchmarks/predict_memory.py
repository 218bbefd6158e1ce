"""Peak memory of `saliency predict` against the number of inputs: it must not grow with them.

    python benchmarks/predict_memory.py --model checkpoints/pipeline/unet --images DATA/ECSSD/images \
        [--counts 1000,20000] [--size 32]

For each count N, a temporary folder of N links to the given images (cycled, each under a name
of its own) is predicted in a fresh process; its peak RSS is read
from getrusage in that process. Prints each peak and the difference between the largest and the smallest
count (target: under 20 MB). `--size` is small by default so that the run measures the
bookkeeping, not the model: the memory of the forward pass does not depend on N either.

`--trace N` instead predicts N linked inputs in this process under tracemalloc and prints the
allocation sites whose Python memory grew most between image 300 and image N - 1: what, if
anything, predict keeps per image.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs the CLI in a fresh process and prints that process's own peak RSS (KiB on Linux) and exit
# code. RUSAGE_SELF, not the children of a wrapper: a helper forked from a large process (a
# library looking up the CPU, say) would report the parent's pages as its own.
MEASURE = ("import resource, sys; from pipelines.cli import main; code = main(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)")


def linked_folder(root: Path, images: list[Path], count: int) -> Path:
    folder = root / f"inputs-{count}"
    folder.mkdir()
    for i in range(count):
        source = images[i % len(images)]
        (folder / f"{i:07d}{source.suffix}").symlink_to(source.resolve())
    return folder


def peak_rss_mib(model: str, folder: Path, out: Path, size: int) -> tuple[float, float]:
    command = ["predict", "--model", model, str(folder), "--out", str(out), "--size", str(size), "--device", "cpu"]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    *_, last = result.stdout.strip().splitlines() or ["0 1"]
    kib, code = (int(v) for v in last.split())
    if code != 0:
        raise SystemExit(f"predict failed on {folder}:\n{result.stderr[-2000:]}")
    return kib / 1024, seconds


def trace_growth(model: str, folder: Path, out: Path, size: int, count: int) -> None:
    import tracemalloc

    import pipelines.predict as predict

    snapshots = []
    write = predict._write
    written = [0]

    def counted(*args, **kwargs):  # the writer thread, once per image
        written[0] += 1
        if written[0] in (300, count - 1):
            snapshots.append(tracemalloc.take_snapshot())
        return write(*args, **kwargs)

    predict._write = counted
    tracemalloc.start(4)
    predict.run_predict(predict.PredictConfig(model=model, inputs=[str(folder)], out=out, size=size, device="cpu",
                                              progress=False))
    tracemalloc.stop()
    growth = snapshots[1].compare_to(snapshots[0], "traceback")
    total = sum(stat.size_diff for stat in growth)
    print(f"Python heap, image 300 to {count - 1:,}: {total / 1024:+.1f} KiB in all; the largest sites:")
    for stat in growth[:6]:
        print(f"  {stat.size_diff / 1024:+8.1f} KiB  {stat.count_diff:+6d} blocks  {stat.traceback.format()[-2].strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="A model folder (or Hub id) predict can load.")
    parser.add_argument("--images", type=Path, required=True, help="A folder of images to link to (e.g. ECSSD's).")
    parser.add_argument("--counts", default="1000,20000", help="Comma-separated input counts.")
    parser.add_argument("--size", type=int, default=32, help="predict --size (default 32: measure the bookkeeping).")
    parser.add_argument("--trace", type=int, default=None, metavar="N",
                        help="Trace Python's allocations over N inputs in this process instead.")
    args = parser.parse_args()
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise SystemExit(f"no images in {args.images}")
    if args.trace is not None:
        if args.trace <= 300:
            raise SystemExit("--trace needs more than 300 inputs")
        with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp:
            folder = linked_folder(Path(tmp), images, args.trace)
            trace_growth(args.model, folder, Path(tmp) / "out", args.size, args.trace)
        return
    counts = sorted(int(c) for c in args.counts.split(","))
    rows = []
    with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp:
        root = Path(tmp)
        for count in counts:
            folder = linked_folder(root, images, count)
            peak, seconds = peak_rss_mib(args.model, folder, root / f"out-{count}", args.size)
            rows.append({"inputs": count, "peak_rss_mib": round(peak, 1), "seconds": round(seconds, 1)})
            print(f"{count:>8,} inputs: peak RSS {peak:7.1f} MiB ({seconds:.0f} s)", flush=True)
    growth = rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown") if os.path.exists("/proc/cpuinfo") else "unknown"
    print(json.dumps({"rows": rows, "growth_mib": round(growth, 1), "cpu": cpu}, indent=2))
    print(f"peak RSS at {counts[-1]:,} inputs minus at {counts[0]:,}: {growth:.1f} MiB (target: under 20 MB, 19.1 MiB)")


if __name__ == "__main__":
    main()
