"""Choosing the torch device: the one place the project decides where tensors live."""

from __future__ import annotations

import torch

from saliency.core.errors import UserError


def best_device() -> torch.device:
    """The fastest device present: a CUDA GPU, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """Turn ``--device`` (``auto``/None, ``cpu``, ``cuda``, ``cuda:1``, ``mps``) into a device.

    Asking for a device this machine lacks is a user error, not a crash deep in a stage.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "auto")):
        return best_device()
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} asked for, but no CUDA GPU is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"device {spec!r} asked for, but MPS is not available here")
    elif device.type != "cpu":
        raise UserError(f"unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return device
