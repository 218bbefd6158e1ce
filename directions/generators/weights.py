"""Loading third-party weights safely: never unpickle code, always say what went wrong."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from saliency.errors import UserError


def load_torch_weights(path: str | Path, what: str) -> dict:
    """``torch.load(path, weights_only=True)`` with one-line errors for missing/bad files.

    ``weights_only=True`` lets only tensors and plain containers through: a file that tries
    to run code on load is refused instead of executed.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: weights file {path} not found")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": noise beside the one-line error
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        called = re.search(r"\bGLOBAL ([\w.]+)", str(exc))  # torch words it in several ways
        if called:  # a pickle that names a callable: loading it the unsafe way would run code
            raise UserError(f"{what}: refused {path}: loading it would call {called.group(1)} (could run code); "
                            "only tensors and plain containers are read") from exc
        raise UserError(f"{what}: cannot load {path}: not a PyTorch weights file") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what}: cannot load {path}: {first_line[:200]}") from exc
    if not isinstance(state, dict):
        raise UserError(f"{what}: {path} does not hold a state dict")
    return state


def load_state_dict_strict(module: torch.nn.Module, state: dict, path: str | Path, what: str) -> None:
    """Load ``state`` into ``module``; a mismatch names the file and the first bad keys."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        missing = [k for k in module.state_dict() if k not in state][:3]
        unexpected = [k for k in state if k not in module.state_dict()][:3]
        detail = f"missing {missing}, unexpected {unexpected}" if (missing or unexpected) else "shape mismatch"
        raise UserError(f"{what}: {path} does not fit the architecture ({detail})") from exc
