"""Evaluation speed on a benchmark (images/s): prediction alone, and with the metrics.

    python benchmarks/eval_speed.py --model UNET_DIR [--dataset ecssd] [--data-root ../shared/datasets]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from pipelines.evaluate import EvalConfig, run_eval
from saliency.core.runtime import cpu_name, tune_cpu_allocator


def main() -> None:
    tune_cpu_allocator()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", default="ecssd")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_eval(EvalConfig(dataset=args.dataset, model=args.model, out=Path(tmp), data_root=args.data_root,
                                      device=args.device, references=False, progress=False))
    result = {"dataset": args.dataset, "images": summary["splits"]["all" if "all" in summary["splits"] else summary["split"]]["images"],
              "images_per_second_with_metrics": summary["images_per_second"],
              "predict_images_per_second": summary["predict_images_per_second"], "size": summary["protocol"]["size"],
              "device": summary["device"], "threads": torch.get_num_threads(),
              "cpu": cpu_name()}
    print(json.dumps(result, indent=2))
    print(f"{args.dataset}: {result['predict_images_per_second']:.1f} images/s predicting, "
          f"{result['images_per_second_with_metrics']:.1f} with the metrics")


if __name__ == "__main__":
    main()
