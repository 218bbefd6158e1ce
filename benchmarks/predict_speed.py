"""`saliency predict` against the model's bare forward on the same tensors, in one run.

    python benchmarks/predict_speed.py [--model UNET_DIR] [--images ../shared/datasets/ECSSD/images]

Bare forward: every image is decoded and prepared beforehand (outside the clock), batched by
padded shape as predict batches them, and the clock runs over the model alone (input
normalisation and forward). Predict: the whole command's work after the model has loaded
(listing, decoding in workers, batching, forward, resizing the maps back, writing PNGs).
Rounds alternate (predict, bare, predict, bare, ...); the medians give the ratio (target:
>= 0.85). Also reported: the bare forward one image at a time, to show what batching by
padded shape buys. Without --model, an untrained U-Net of the embedded profile's shape
(mobilenet_v2) stands in: speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from saliency.core.runtime import cpu_name, tune_cpu_allocator


def untrained_embedded_unet(folder: Path) -> Path:
    """An untrained U-Net of the embedded profile's shape (mobilenet_v2) in ``folder``: speed does
    not depend on the weights' values."""
    from saliency.unet import UNetArchitecture, build_unet, save_model

    arch = UNetArchitecture(encoder="mobilenet_v2")
    save_model(folder, build_unet(arch), arch, {})
    return folder


def main() -> None:
    tune_cpu_allocator()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: an untrained mobilenet_v2 U-Net)")
    parser.add_argument("--images", type=Path, default=Path("../shared/datasets/ECSSD/images"))
    parser.add_argument("--limit", type=int, default=None, help="the first N images only (a smoke test)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from pipelines.predict import PredictConfig, run_predict
    from saliency.detector import SaliencyDetector, prepare_image, as_rgb_array

    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))[: args.limit]
    if not files:
        raise SystemExit(f"no images in {args.images}")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or untrained_embedded_unet(Path(tmp) / "untrained")
        detector = SaliencyDetector.load(model, device=args.device, precision="fp32", batch_size=args.batch)
        device = detector.device

        prepared = [prepare_image(as_rgb_array(path), detector.size, detector.stride) for path in files]
        groups: dict[tuple[int, int], list] = {}
        for item in prepared:
            groups.setdefault(item.shape, []).append(item.pixels)
        batches = [torch.from_numpy(np.stack(pixels[i:i + args.batch]))
                   for pixels in groups.values() for i in range(0, len(pixels), args.batch)]

        @torch.inference_mode()
        def bare(batched: list[torch.Tensor]) -> float:
            start = time.perf_counter()
            for batch in batched:
                detector.model(detector.model_input(batch))
            if device.type == "cuda":
                torch.cuda.synchronize()
            return len(files) / (time.perf_counter() - start)

        def predict(round_index: int) -> float:
            out = Path(tmp) / f"out-{round_index}"
            result = run_predict(PredictConfig(model=str(model), inputs=[str(p) for p in files], out=out,
                                               batch_size=args.batch, workers=args.workers, device=args.device,
                                               precision="fp32", progress=False))
            return result["written"] / result["seconds"]

        bare(batches[:2])  # warm-up
        predicted, bares = [], []
        for round_index in range(args.rounds):
            predicted.append(predict(round_index))
            bares.append(bare(batches))
        singles = [torch.from_numpy(item.pixels[None].copy()) for item in prepared]
        one_at_a_time = bare(singles)

    result = {
        "images": len(files), "batch": args.batch, "size": detector.size, "device": str(device),
        "threads": torch.get_num_threads(), "cpu": cpu_name(), "torch": torch.__version__,
        "padded_shapes": len(groups),
        "predict_images_per_second": [round(v, 2) for v in predicted],
        "bare_forward_images_per_second": [round(v, 2) for v in bares],
        "bare_forward_one_at_a_time_images_per_second": round(one_at_a_time, 2),
        "ratio_predict_over_bare": round(statistics.median(predicted) / statistics.median(bares), 3),
        "batching_gain": round(statistics.median(bares) / one_at_a_time, 3),
    }
    print(json.dumps(result, indent=2))
    print(f"predict {statistics.median(predicted):.1f} images/s, bare forward {statistics.median(bares):.1f} "
          f"(ratio {result['ratio_predict_over_bare']:.3f}; target >= 0.85); one image at a time "
          f"{one_at_a_time:.1f} images/s (batching by padded shape: {result['batching_gain']:.2f}x)")


if __name__ == "__main__":
    main()
