"""``saliency export``: a trained model as an ONNX graph, for runtimes without PyTorch.

The graph takes float32 RGB in [0, 1], ``(n, 3, H, W)`` with H and W multiples of the model's
stride (pad as :func:`saliency.detector.prepare_image` does), normalises inside, and returns the
salient-class probability ``(n, H, W)``. Batch, height and width are dynamic. ``model.json``
travels in the file's metadata (``gan_saliency_model``), and the file is checked in
onnxruntime against PyTorch before it is moved into place.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from saliency.core.artifacts import refuse_output_in_inputs
from saliency.core.errors import ConfigError, UserError

CHECK_TOLERANCE = 1e-4  # max |onnxruntime - torch| of the probability map accepted at export


class ProbabilityGraph(nn.Module):
    """[0, 1] RGB in, probability of the salient class out: what a runtime user wants."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        from saliency.core.imagenet import IMAGENET_MEAN, IMAGENET_STD

        self.unet = unet
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.unet((image - self.mean) / self.std).softmax(dim=1)[:, 1]


def onnx_input(prepared_pixels: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, 3) from prepare_image -> the graph's float32 (n, 3, H, W) in [0, 1]."""
    return np.ascontiguousarray(prepared_pixels.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UserError('ONNX export needs onnx and onnxruntime: pip install -e ".[onnx]"') from exc
    return onnx, onnxruntime


def export_onnx(model: str | os.PathLike, out: str | os.PathLike, opset: int = 18) -> dict:
    """Write ``out`` (atomically) and return what was checked."""
    onnx, onnxruntime = _require_onnx()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"`out` must end in .onnx, got {out}")
    if out.exists() and out.is_dir():
        raise ConfigError(f"`out` {out} is a folder")
    if not out.parent.exists():
        raise ConfigError(f"`out` {out}: the folder {out.parent} does not exist")
    refuse_output_in_inputs(out, {"--model": model if Path(model).exists() else None})
    from saliency.detector import resolve_model
    from saliency.unet import load_model

    net, meta = load_model(resolve_model(model), "cpu")  # the trained network as it is: runtimes fuse for themselves
    graph = ProbabilityGraph(net).eval()
    stride = meta["architecture"].stride
    example = torch.rand(1, 3, 4 * stride, 5 * stride, generator=torch.Generator().manual_seed(0))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (example,), str(tmp), input_names=["image"], output_names=["saliency"],
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "saliency": {0: "batch", 1: "height", 2: "width"}},
                              opset_version=opset, dynamo=False)
        proto = onnx.load(str(tmp))
        card = {k: v for k, v in meta.items() if k != "architecture"}
        card["architecture"] = {**meta["architecture"].__dict__}
        for key, value in (("gan_saliency_model", json.dumps(card, default=str)), ("stride", str(stride)),
                           ("input", "float32 RGB in [0, 1], (n, 3, H, W), H and W multiples of the stride"),
                           ("output", "probability of the salient class, (n, H, W)")):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        check = torch.rand(2, 3, 3 * stride, 6 * stride, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            reference = graph(check).numpy()
        difference = float(np.abs(session.run(None, {"image": check.numpy()})[0] - reference).max())
        if not difference <= CHECK_TOLERANCE:
            raise UserError(f"the exported graph differs from PyTorch by {difference:.2e} (> {CHECK_TOLERANCE}); "
                            "not written")
        os.replace(tmp, out)
    except OSError as exc:
        raise UserError(f"cannot write {out} ({exc.strerror or type(exc).__name__})") from exc
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:  # the exporter or checker refusing
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"cannot export {model} to ONNX at opset {opset} ({detail})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return {"opset": opset, "stride": stride, "max_abs_difference": difference}
