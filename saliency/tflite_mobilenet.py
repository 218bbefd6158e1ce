"""MobileNetV2 ImageNet weights from TensorFlow's quantised TFLite file, in torchvision's layout.

The one ImageNet classifier whose weights install offline here is Google's
``mobilenet_v2_1.0_224_quant.tflite`` (Apache-2.0): uint8 weights, batch norm folded into the
convolutions, inputs in [-1, 1], 1001 outputs (index 0 "background"). This module reads it
with the ``tflite`` package (the flatbuffer schema, not a hand-written parser) and rebuilds a
float state dict for ``torchvision.models.mobilenet_v2`` (also the encoder of smp's
``mobilenet_v2`` U-Net):

- each weight dequantised, ``(q - zero_point) * scale``, per tensor or along its quantised
  axis; TFLite conv weights are ``O x kh x kw x I``, depthwise ``1 x kh x kw x C``;
- the folded bias goes into a BatchNorm set to identity (mean 0, variance 1 - eps, weight 1);
- the input scaling folded into the first convolution, so the model takes the ImageNet
  mean/std input of every other model here;
- the classifier keeps ImageNet's 1000 classes (the "background" row is dropped).

What cannot carry over: TensorFlow pads stride-2 layers on the bottom/right only and runs
uint8 activations; torchvision pads both sides in float. The test measures the agreement
with LiteRT's interpreter on real photographs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from saliency.core.imagenet import IMAGENET_MEAN, IMAGENET_STD
from saliency.core.errors import UserError

BN_EPS = 1e-5  # torchvision's MobileNetV2 BatchNorm eps
# torchvision's inverted-residual settings (t, c, n, s) for width 1.0
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _torchvision_convs() -> list[tuple[str, str, str, int]]:
    """(conv weight key, bn prefix, kind, stride) for every conv of torchvision's mobilenet_v2, in
    graph order; kind is 'conv' or 'depthwise'."""
    convs = [("features.0.0.weight", "features.0.1", "conv", 2)]
    index = 1
    for t, _, n, s in INVERTED_RESIDUAL_SETTING:
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            prefix, layer = f"features.{index}.conv", 0
            if t != 1:  # the 1x1 expansion
                convs.append((f"{prefix}.0.0.weight", f"{prefix}.0.1", "conv", 1))
                layer = 1
            convs.append((f"{prefix}.{layer}.0.weight", f"{prefix}.{layer}.1", "depthwise", stride))
            convs.append((f"{prefix}.{layer + 1}.weight", f"{prefix}.{layer + 2}", "conv", 1))
            index += 1
    convs.append((f"features.{index}.0.weight", f"features.{index}.1", "conv", 1))
    return convs


def _dequantize(model, tensor) -> np.ndarray:
    import tflite

    raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
    dtypes = {tflite.TensorType.UINT8: np.uint8, tflite.TensorType.INT8: np.int8,
              tflite.TensorType.INT32: np.int32, tflite.TensorType.FLOAT32: np.float32}
    if tensor.Type() not in dtypes or not isinstance(raw, np.ndarray):
        raise UserError(f"TFLite tensor {tensor.Name().decode()!r} has no constant data of a known type")
    values = np.frombuffer(raw.tobytes(), dtype=dtypes[tensor.Type()]).reshape(shape).astype(np.float64)
    quant = tensor.Quantization()
    if tensor.Type() == tflite.TensorType.FLOAT32 or quant is None or quant.ScaleLength() == 0:
        return values
    scale, zero = quant.ScaleAsNumpy().astype(np.float64), quant.ZeroPointAsNumpy().astype(np.float64)
    if scale.size > 1:  # per-axis quantisation
        view = [1] * len(shape)
        view[quant.QuantizedDimension()] = -1
        scale, zero = scale.reshape(view), zero.reshape(view)
    return (values - zero) * scale


def _operators(model) -> list[tuple[str, object, list]]:
    """(builtin name, options table or None, input tensors) for each operator of subgraph 0."""
    import tflite

    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.Subgraphs(0)
    result = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
        options = None
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            options = tflite.Conv2DOptions() if name == "CONV_2D" else tflite.DepthwiseConv2DOptions()
            table = op.BuiltinOptions()
            options.Init(table.Bytes, table.Pos)
        result.append((name, options, [graph.Tensors(int(j)) for j in op.InputsAsNumpy()]))
    return result


def convert_mobilenet_v2_tflite(path: str | Path) -> dict[str, Tensor]:
    """The state dict of ``torchvision.models.mobilenet_v2(num_classes=1000)`` from the TFLite file.

    Refuses (one line) a file that is not a TFLite flatbuffer or not this MobileNetV2 graph.
    """
    import tflite

    path = Path(path)
    try:
        buffer = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(buffer) < 8 or buffer[4:8] != b"TFL3":
        raise UserError(f"{path} is not a TFLite model (no TFL3 identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buffer, 0)
        ops = _operators(model)
    except Exception as exc:  # a damaged flatbuffer raises anything from struct to IndexError
        raise UserError(f"{path} is not a readable TFLite model ({type(exc).__name__})") from exc
    convs = [op for op in ops if op[0] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    layout = _torchvision_convs()
    if len(convs) != len(layout) + 1:  # + the 1x1 conv that is the classifier
        raise UserError(f"{path}: {len(convs)} convolutions; MobileNetV2 1.0 has {len(layout) + 1}")
    state: dict[str, Tensor] = {}
    mean = np.array(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD).reshape(1, 3, 1, 1)
    try:
        for index, ((op, options, inputs), (key, bn, kind, stride)) in enumerate(zip(convs, layout)):
            expected = "DEPTHWISE_CONV_2D" if kind == "depthwise" else "CONV_2D"
            if op != expected or options.StrideH() != stride:
                raise UserError(f"{path}: convolution {index} is {op} stride {options.StrideH()}, "
                                f"MobileNetV2 has {expected} stride {stride} there")
            weight, bias = _dequantize(model, inputs[1]), _dequantize(model, inputs[2])
            if kind == "depthwise":  # 1 x kh x kw x C -> C x 1 x kh x kw
                weight = weight.transpose(3, 0, 1, 2)
            else:  # O x kh x kw x I -> O x I x kh x kw
                weight = weight.transpose(0, 3, 1, 2)
            if index == 0:
                # TF input x/127.5 - 1 = 2 std u + (2 mean - 1) for the ImageNet-normalised u:
                # scale the weight by 2 std, move the constant into the bias.
                bias = bias + (weight * (2 * mean - 1)).sum(axis=(1, 2, 3))
                weight = weight * 2 * std
            state[key] = torch.from_numpy(np.ascontiguousarray(weight)).float()
            channels = bias.shape[0]
            state[f"{bn}.weight"] = torch.ones(channels)
            state[f"{bn}.bias"] = torch.from_numpy(bias).float()
            state[f"{bn}.running_mean"] = torch.zeros(channels)
            state[f"{bn}.running_var"] = torch.full((channels,), 1.0 - BN_EPS)
            state[f"{bn}.num_batches_tracked"] = torch.tensor(0)
        _, _, inputs = convs[-1]
        weight, bias = _dequantize(model, inputs[1]), _dequantize(model, inputs[2])
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: cannot read the weights ({type(exc).__name__}: {exc})") from exc
    if weight.shape[0] != 1001:
        raise UserError(f"{path}: the classifier has {weight.shape[0]} outputs, expected 1001")
    state["classifier.1.weight"] = torch.from_numpy(weight.reshape(1001, -1)[1:].copy()).float()
    state["classifier.1.bias"] = torch.from_numpy(bias[1:].copy()).float()
    return state


def pad_like_tensorflow(model: torch.nn.Module) -> torch.nn.Module:
    """Make a torchvision ``mobilenet_v2`` pad its stride-2 convolutions as TensorFlow's "SAME"
    does (the extra row and column at the bottom and right), the image border in the first
    convolution with the grey that TFLite's zero input means. The weights are untouched (forward
    pre-hooks), so the state dict keeps torchvision's layout. Measured on ECSSD against LiteRT
    (tests/test_saliency/test_pretrained.py): top-1 agreement rises from about 70 % to 96 %.
    """
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    grey = ((0.5 - mean) / std).view(1, 3, 1, 1)  # TF input 0 = pixel 127.5

    def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def hook(conv: torch.nn.Conv2d, args: tuple) -> tuple:
        x = args[0]
        top, bottom = same_padding(x.shape[-2], conv.kernel_size[0], conv.stride[0])
        left, right = same_padding(x.shape[-1], conv.kernel_size[1], conv.stride[1])
        if conv.in_channels == 3 and conv.groups == 1:  # the image: pad with TF's zero, not ours
            fill = grey.to(x.device, x.dtype)
            return (torch.nn.functional.pad(x - fill, (left, right, top, bottom)) + fill,)
        return (torch.nn.functional.pad(x, (left, right, top, bottom)),)

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.stride[0] > 1:
            module.padding = (0, 0)
            module.register_forward_pre_hook(hook)
    return model
