"""Synthesis throughput against the generator's own forward rate (stage 2).

    ratio = (kept pairs/s x 2 / acceptance rate) / (images/s of a bare forward)

at the same batch (2 x --batch: base and shifted images go through in one call) and
resolution. Target >= 0.9: synthesis adds almost nothing to the generator's own cost.
Also prints the peak resident memory of the synthesis process.

    python benchmarks/synthesize_speed.py [--n 5000] [--run RUN_DIR] [--device cpu]

Without --run it uses the embedded generator's true whiteness direction as h_bg.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from directions.generators import build_generator
from directions.ground_truth import whiteness_direction
from pipelines.discover import load_run, write_known_direction_run
from pipelines.synthesize import SynthesizeConfig, run_synthesize


def bare_forward_rate(generator, batch: int, seconds: float) -> float:
    rng = torch.Generator().manual_seed(1)
    z, c = generator.sample_latents(batch, rng), generator.sample_classes(batch, rng)
    with torch.inference_mode():
        generator(z, c)  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            generator(z, c)
            if generator.device.type == "cuda":
                torch.cuda.synchronize()
            count += batch
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=8.0, help="Duration of the bare-forward measurement.")
    parser.add_argument("--classes", default="0,1,2")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            gen = build_generator("scenes")
            run = write_known_direction_run(Path(tmp) / "run", "scenes", whiteness_direction(gen), magnitude=6.0,
                                            note="true whiteness direction")
        summary = load_run(run)
        generator = build_generator(summary["generator"], device=args.device, **summary["generator_options"]).eval()
        classes = [int(c) for c in args.classes.split(",")] if generator.conditional else None
        config = SynthesizeConfig(run=run, count=args.n, out=Path(tmp) / "syn", classes=classes, batch_size=args.batch,
                                  device=args.device, progress=False, preview=0)
        start = time.perf_counter()
        manifest = run_synthesize(config)
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        loop_seconds = manifest["seconds"]
        bare = bare_forward_rate(generator, 2 * args.batch, args.seconds)

    pairs_per_s = manifest["count"] / loop_seconds
    equivalent = pairs_per_s * 2 / manifest["acceptance_rate"]
    result = {
        "generator": summary["generator"], "resolution": generator.resolution, "batch": args.batch,
        "device": args.device, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "pairs": manifest["count"], "acceptance_rate": manifest["acceptance_rate"],
        "synthesis_seconds": round(loop_seconds, 2), "wall_seconds_with_setup": round(wall, 2),
        "kept_pairs_per_s": round(pairs_per_s, 1), "images_per_s_equivalent": round(equivalent, 1),
        "bare_forward_images_per_s": round(bare, 1), "ratio": round(equivalent / bare, 3),
        "peak_rss_mb": round(peak_mb, 1),
    }
    print(json.dumps(result, indent=2))
    print(f"synthesis / bare forward = {result['ratio']:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
