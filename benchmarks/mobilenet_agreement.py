"""The converted MobileNetV2 against LiteRT's interpreter running Google's uint8 TFLite file.

    python benchmarks/mobilenet_agreement.py --tflite ../shared/weights/mobilenet_v2_1.0_224_quant.tflite \
        --images ../shared/datasets/ECSSD/images

Prints top-1 agreement, top-5 overlap and the per-image largest probability difference, with
TensorFlow's padding (as the classifier runs) and with torchvision's (as the U-Net encoder does).
Needs ai-edge-litert (the test extra installs it where it can).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflite", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="a folder of photographs (*.jpg)")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    from ai_edge_litert.interpreter import Interpreter
    from torchvision.models import mobilenet_v2

    from saliency.classifiers import resize_center_crop
    from saliency.core.imagenet import IMAGENET_MEAN, IMAGENET_STD
    from saliency.tflite_mobilenet import convert_mobilenet_v2_tflite, pad_like_tensorflow

    torch.set_num_threads(2)
    state = convert_mobilenet_v2_tflite(args.tflite)
    models = {}
    for name in ("tensorflow padding", "torchvision padding"):
        model = mobilenet_v2(num_classes=1000)
        model.load_state_dict(state)
        models[name] = (pad_like_tensorflow(model) if name.startswith("tensorflow") else model).eval()
    interpreter = Interpreter(model_path=str(args.tflite))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = target["quantization"]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    files = sorted(args.images.glob("*.jpg"))[: args.limit]
    stats = {name: {"top1": 0, "top5": 0.0, "diff": []} for name in models}
    started = time.perf_counter()
    for path in files:
        pixels = (resize_center_crop(Image.open(path), 256, 224) * 255).round()
        interpreter.set_tensor(source["index"], pixels.permute(1, 2, 0).numpy().astype(np.uint8)[None])
        interpreter.invoke()
        reference = ((interpreter.get_tensor(target["index"])[0].astype(np.float64) - zero) * scale)[1:]
        x = ((pixels / 255 - mean) / std)[None]
        for name, model in models.items():
            with torch.no_grad():
                ours = model(x).softmax(1)[0].numpy()
            stats[name]["top1"] += int(reference.argmax() == ours.argmax())
            stats[name]["top5"] += len(set(np.argsort(-reference)[:5]) & set(np.argsort(-ours)[:5])) / 5
            stats[name]["diff"].append(float(np.abs(reference - ours).max()))
    print(f"{len(files)} images from {args.images}, {time.perf_counter() - started:.0f} s")
    for name, s in stats.items():
        print(f"{name}: top-1 agreement {s['top1'] / len(files):.3f}, top-5 overlap {s['top5'] / len(files):.3f}, "
              f"largest probability difference mean {np.mean(s['diff']):.4f} median {np.median(s['diff']):.4f} "
              f"max {np.max(s['diff']):.4f}")


if __name__ == "__main__":
    main()
