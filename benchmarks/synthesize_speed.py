"""Synthesis throughput against the generator's own forward rate (stage 2).

    ratio = (kept pairs/s x 2 / acceptance rate) / (images/s of a bare forward)

at the same batch (2 x --batch: base and shifted images go through in one call) and
resolution. Target >= 0.9: synthesis adds almost nothing to the generator's own cost.
Also prints the share of synthesis wall time spent inside G's forward (measured within the
same run, so immune to this shared machine's speed drift) and the peak resident memory.

    python benchmarks/synthesize_speed.py [--n 5000] [--run RUN_DIR] [--device cpu]

Without --run it uses the embedded generator's true whiteness direction as h_bg.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from directions.generators import build_generator
from directions.generators.registry import generator_named_in_file
from directions.ground_truth import whiteness_direction
from directions.run_folder import load_run, write_known_direction_run
from pipelines.synthesize import SynthesizeConfig, run_synthesize
from saliency.core.recorded_paths import resolved_options
from saliency.core.runtime import cpu_name, tune_cpu_allocator


def bare_forward_rate(generator, batch: int, seconds: float, classes=None) -> float:
    """Images/s of G alone on the same kind of input (same class pool)."""
    rng = torch.Generator().manual_seed(1)
    z, c = generator.sample_latents(batch, rng), generator.sample_classes(batch, rng, choices=classes)
    with torch.inference_mode():
        generator(z, c)  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            generator(z, c)
            if generator.device.type == "cuda":
                torch.cuda.synchronize()
            count += batch
    return count / (time.perf_counter() - start)


class GeneratorTimer:
    """Accumulates the time spent inside the generator's own forward (class-level patch), so
    a run can also say which share of its wall time is G: a drift-free view of the overhead."""

    def __init__(self, cls) -> None:
        self.cls, self.seconds, self.saved = cls, 0.0, {}

    def __enter__(self):
        for name in ("forward", "forward_with_masks"):
            original = getattr(self.cls, name, None)
            if original is None:
                continue
            self.saved[name] = original

            def timed(*args, _original=original, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - start

            setattr(self.cls, name, timed)
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self.saved.items():
            setattr(self.cls, name, original)


def main() -> None:
    tune_cpu_allocator()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=4.0, help="Duration of the bare-forward measurement.")
    parser.add_argument("--classes", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            gen = build_generator("scenes")
            run = write_known_direction_run(Path(tmp) / "run", "scenes", whiteness_direction(gen), magnitude=6.0,
                                            note="true whiteness direction")
        summary = load_run(run)
        name = generator_named_in_file(summary.get("generator"), Path(run) / "directions.json")
        options = resolved_options(summary["generator_options"], run)  # weights: relative to the run folder
        generator = build_generator(name, device=args.device, **options).eval()
        classes = [int(c) for c in args.classes.split(",")] if generator.conditional else None
        # This machine's speed drifts (shared cores), so each round brackets a synthesis run
        # with bare-forward measurements and compares it with their mean.
        rounds = []
        bare_before = bare_forward_rate(generator, 2 * args.batch, args.seconds, classes)
        for number in range(args.rounds):
            config = SynthesizeConfig(run=run, count=args.n, out=Path(tmp) / f"syn{number}", classes=classes,
                                      batch_size=args.batch, device=args.device, progress=False, preview=0)
            with GeneratorTimer(type(generator)) as timer:
                manifest = run_synthesize(config)
            bare_after = bare_forward_rate(generator, 2 * args.batch, args.seconds, classes)
            pairs_per_s = manifest["count"] / manifest["seconds"]
            equivalent = pairs_per_s * 2 / manifest["acceptance_rate"]
            bare = (bare_before + bare_after) / 2
            rounds.append({"kept_pairs_per_s": round(pairs_per_s, 1), "images_per_s_equivalent": round(equivalent, 1),
                           "bare_forward_images_per_s": round(bare, 1), "ratio": round(equivalent / bare, 3),
                           "acceptance_rate": manifest["acceptance_rate"], "seconds": manifest["seconds"],
                           "generator_share": round(timer.seconds / manifest["seconds"], 3)})
            bare_before = bare_after
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    ratios = sorted(r["ratio"] for r in rounds)
    shares = sorted(r["generator_share"] for r in rounds)
    result = {
        "generator": summary["generator"], "resolution": generator.resolution, "batch": args.batch,
        "forward_batch": 2 * args.batch, "device": args.device, "threads": torch.get_num_threads(),
        "cpu": cpu_name(), "pairs_per_round": args.n, "rounds": rounds,
        "median_ratio": ratios[len(ratios) // 2], "median_generator_share": shares[len(shares) // 2],
        "peak_rss_mb": round(peak_mb, 1),
    }
    print(json.dumps(result, indent=2))
    print(f"synthesis / bare forward = {result['median_ratio']:.3f} (median of {len(rounds)} rounds; target >= 0.9)")
    print(f"share of synthesis wall time inside G's forward = {result['median_generator_share']:.3f} "
          f"(the same question measured inside one run; 1.0 = no overhead)")


if __name__ == "__main__":
    main()
