"""Peak memory of synthesis at n = 2,000 and n = 20,000 pairs: it streams, so it should not grow.

Each size runs in a fresh process (the allocator setting of the CLI applied) that reports
its own peak resident set size. Target: the larger run within 1.2x of the smaller.

    python benchmarks/synthesize_memory.py [--small 2000] [--large 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(count: int, folder: Path) -> None:
    from directions.generators import build_generator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run
    from pipelines.synthesize import SynthesizeConfig, run_synthesize
    from saliency.core.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    run = write_known_direction_run(folder / "run", "scenes", whiteness_direction(build_generator("scenes")), 6.0)
    manifest = run_synthesize(SynthesizeConfig(run=run, count=count, out=folder / "syn", classes=[0, 1, 2],
                                               device="cpu", progress=False))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"count": manifest["count"], "peak_rss_mb": round(peak_mb, 1), "seconds": manifest["seconds"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.folder)
        return
    results = {}
    for count in (args.small, args.large):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, __file__, "--child", str(count), "--folder", tmp], cwd=REPO,
                                 capture_output=True, text=True, check=True)
            results[count] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = results[args.large]["peak_rss_mb"] / results[args.small]["peak_rss_mb"]
    print(json.dumps({"runs": list(results.values()), "ratio": round(ratio, 3)}, indent=2))
    print(f"peak memory n={args.large} / n={args.small} = {ratio:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
