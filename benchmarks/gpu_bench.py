"""One-call GPU benchmark on a random-weight BigGAN-deep-128 in the real file format.

Installs and downloads nothing. Reports, with the device's name, into a JSON file:

- generator images/s at 128 px, batch 32 and 256, fp32 and bf16;
- discovery steps/s at batch 32 (K 128, ResNet-18 R);
- synthesis pairs/s, and its ratio to a bare forward of the same batch and precision
  (pairs/s x 2 / acceptance over images/s; target >= 0.9);
- U-Net training samples/s at batch 128 (the biggan profile) on one batch in memory, and read
  from the synthesized shards through the real loader (augmentation, the profile's workers):
  their ratio, target >= 0.9;
- evaluation's forward images/s; and the whole biggan profile's wall time projected from these.

Meant to finish well inside 8 minutes on one GPU; ``--tiny`` shrinks everything so the same
code runs on a CPU in a minute or two (a smoke test, not a measurement of BigGAN).

    bash benchmarks/gpu.sh                      # on the GPU machine: writes $OUT/gpu_bench.json
    python benchmarks/gpu_bench.py --tiny --device cpu --out gpu_bench_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from directions.deformators import build_deformator
from directions.discovery import TrainSettings, game_optimizers, play_step
from directions.generators import build_generator
from directions.reconstructors import build_reconstructor
from directions.run_folder import write_known_direction_run
from pipelines.synthesize import SynthesizeConfig, run_synthesize
from pipelines.train_unet import PROFILES
from saliency.core.artifacts import write_json
from saliency.core.device import resolve_device
from saliency.core.runtime import autocast, configure_device, cpu_name, resolve_precision, tune_cpu_allocator
from saliency.shards import SyntheticPairs
from saliency.training import tempered_loss, to_model_input
from saliency.unet import build_unet

from loader_timing import loader_samples_per_s  # benchmarks/, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
# A random BigGAN in the hub's format, a pickle: a test fixture, since the project writes none.
from published_layouts import save_random_biggan  # noqa: E402


def rate(fn, items: int, seconds: float, sync) -> float:
    fn()
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += items
    sync()
    return count / (time.perf_counter() - start)


def main() -> None:
    tune_cpu_allocator()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("gpu_bench.json"))
    parser.add_argument("--seconds", type=float, default=10.0, help="Time per measurement.")
    parser.add_argument("--tiny", action="store_true", help="Small model and batches (CPU smoke test).")
    args = parser.parse_args()
    device = resolve_device(args.device)
    configure_device(device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    tiny = args.tiny
    seconds = min(args.seconds, 3.0) if tiny else args.seconds
    forward_batches, batch_d, batch_u, pairs = ((2, 4), 4, 4, 16) if tiny else ((32, 256), 32, 128, 4096)
    result = {"device": str(device), "name": name, "torch": torch.__version__, "tiny": tiny, "seconds_each": seconds}
    started = time.perf_counter()

    def save(partial: dict) -> None:
        """Written after every section: a run cut off by its time limit keeps what it measured."""
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, partial)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = {"channel_width": 16} if tiny else None  # tiny: a narrow BigGAN-deep, same code path
        save_random_biggan(tmp / "biggan", config=config)
        generator = build_generator("biggan-deep-128", device=device, weights=str(tmp / "biggan")).eval()
        rng = torch.Generator().manual_seed(0)

        def forward_rate(batch: int, precision: str) -> float:
            z, c = generator.sample_latents(batch, rng), generator.sample_classes(batch, rng)

            def forward():
                with torch.inference_mode(), autocast(device, precision):
                    generator(z, c)
            return rate(forward, batch, seconds, sync)

        for batch in forward_batches:
            for precision in ("fp32", "bf16"):
                result[f"generator_images_per_s_{precision}_batch{batch}"] = round(forward_rate(batch, precision), 2)
        save(result)

        # Discovery: the paper's BigGAN game (K 128, ResNet-18 R) at batch 32.
        settings = TrainSettings(batch_size=batch_d, lr=1e-4, precision=resolve_precision("auto", device))
        deformator = build_deformator("ortho", generator.latent_dim, 128, rng).to(device)
        reconstructor = build_reconstructor("resnet18", 128).to(device)
        if device.type == "cuda":
            reconstructor = reconstructor.to(memory_format=torch.channels_last)
        optimizers = game_optimizers(deformator, reconstructor, settings)

        def discover_step():
            play_step(generator, deformator, reconstructor, optimizers, rng, batch_d, settings)
        result["discover_steps_per_s"] = round(rate(discover_step, 1, seconds, sync), 3)
        result["discover_batch"] = batch_d
        result["discover_precision"] = settings.precision
        save(result)

        # Synthesis: a random direction, every pair kept (random weights make no real masks);
        # against a bare forward of its own batch (base and shifted in one call) and precision.
        synth_precision = resolve_precision("auto", device)  # what synthesize resolves "auto" to
        forward_rate(2 * batch_d, synth_precision)  # its shape warmed up (cuDNN) before either is timed
        direction = torch.randn(generator.latent_dim)
        run = write_known_direction_run(tmp / "run", "biggan-deep-128", direction, 6.0,
                                        generator_options={"weights": str(tmp / "biggan")})
        manifest = run_synthesize(SynthesizeConfig(run=run, count=pairs, out=tmp / "syn", classes=list(range(10)),
                                                   min_area=0.0, max_area=1.0, batch_size=batch_d,
                                                   device=str(device), progress=False, preview=0,
                                                   ground_truth=False))
        bare = forward_rate(2 * batch_d, synth_precision)
        result["synthesize_pairs_per_s"] = round(manifest["count"] / manifest["seconds"], 2)
        result["synthesize_pairs"] = manifest["count"]
        result["synthesize_precision"] = manifest.get("precision")
        result["synthesize_bare_forward_images_per_s"] = round(bare, 2)
        # every candidate costs a base and a shifted image
        result["synthesize_ratio_to_bare_forward"] = round(manifest["candidates"] * 2 / manifest["seconds"] / bare, 3)
        save(result)

        # U-Net training at batch 128 on the synthesized 128 px pairs: one batch already in
        # memory, then the real input pipeline (shards, augmentation, the profile's workers).
        profile = PROFILES["biggan"]
        model = build_unet(profile.architecture).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=profile.settings.lr)
        unet_precision = resolve_precision("auto", device)
        synthesized = SyntheticPairs(tmp / "syn")
        size = synthesized.height

        def unet_step(images, masks):
            with autocast(device, unet_precision):
                logits = model(to_model_input(images, device))
            loss = tempered_loss(logits, masks.to(device, non_blocking=True), profile.settings.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        rows = [synthesized[i % len(synthesized)] for i in range(batch_u)]
        images = torch.from_numpy(np.stack([row[0] for row in rows]))
        masks = torch.from_numpy(np.stack([row[1] for row in rows]))
        memory_rate = rate(lambda: unet_step(images, masks), batch_u, seconds, sync)
        workers = 0 if tiny else profile.settings.workers
        loader_rate = loader_samples_per_s(synthesized, profile.settings.augment, batch_u, 1 if tiny else 40, workers,
                                           unet_step, sync, pin_memory=device.type == "cuda")
        result["unet_samples_per_s"] = round(memory_rate, 2)
        result["unet_loader_samples_per_s"] = round(loader_rate, 2)
        result["unet_loader_ratio"] = round(loader_rate / memory_rate, 3)
        result["unet_loader_workers"] = workers
        result["unet_batch"] = batch_u
        result["unet_precision"] = unet_precision
        result["unet_resolution"] = size
        save(result)

        # Evaluation's forward: ECSSD's 300x400 photographs at a shorter side of 128, padded to
        # the encoder's stride (128 x 192), in inference mode (decoding and metrics not included).
        model.eval()
        eval_batch, eval_size = (4, 64) if tiny else (64, size)
        eval_images = torch.randint(0, 256, (eval_batch, eval_size, eval_size * 3 // 2, 3), dtype=torch.uint8)

        def eval_forward():
            with torch.inference_mode(), autocast(device, unet_precision):
                model(to_model_input(eval_images, device))
        result["eval_forward_images_per_s"] = round(rate(eval_forward, eval_batch, seconds, sync), 2)

    # The whole biggan profile at these rates (a projection from this run's measurements).
    from pipelines.discover import PROFILES as DISCOVER_PROFILES
    from pipelines.pipeline import PROFILES as PIPELINE_PROFILES

    ecssd_images = 1000
    projected = {
        "discover": DISCOVER_PROFILES["biggan-deep-128"].steps / result["discover_steps_per_s"],
        "synthesize": PIPELINE_PROFILES["biggan"].pairs / result["synthesize_pairs_per_s"],
        "train_unet": profile.settings.steps * profile.settings.batch_size / result["unet_loader_samples_per_s"],
        "eval_forward": ecssd_images / result["eval_forward_images_per_s"],
    }
    stage_seconds = {k: round(v, 1) for k, v in projected.items()}
    result["projected_biggan_profile_seconds"] = stage_seconds
    # hours to 0.001 (3.6 s) from the stage seconds as reported: within 1.8 s of their sum
    result["projected_biggan_profile_hours"] = round(sum(stage_seconds.values()) / 3600, 3)

    result["total_seconds"] = round(time.perf_counter() - started, 1)
    save(result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
