"""Loading third-party weights safely: never unpickle code, always say what went wrong."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from saliency.core.errors import UserError


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
    except Exception as exc:  # noqa: BLE001 (a damaged file: torch's zip, tar and pickle readers raise many kinds)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what}: cannot load {path}: {first_line[:200]}") from exc
    if not isinstance(state, dict):
        raise UserError(f"{what}: {path} does not hold a state dict")
    return state


def _named(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} and {len(keys) - limit} more" if len(keys) > limit else shown


def load_state_dict_strict(module: torch.nn.Module, state: dict, path: str | Path, what: str) -> None:
    """Load ``state`` into ``module``, accepting only the differences torch itself rebuilds.

    Torch's own version hooks fill in what older files lack (spectral norm's ``weight_v`` from
    the ``weight`` an older torch saved, batch norm's ``num_batches_tracked``); whatever is
    still missing or left over is refused, with the keys named. (Upstream loaders such as
    pytorch-pretrained-biggan's use ``strict=False``, which leaves a missing weight at its
    random value without a word.)
    """
    odd = next((key for key, value in state.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)),
               None)
    if odd is not None:  # torch would fail on it deep inside load_state_dict
        raise UserError(f"{what}: {path} does not fit the architecture (entry {str(odd)[:60]!r} is not a named tensor)")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit
        first = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line][:1]
        detail = first[0] if first else "shape mismatch"
        raise UserError(f"{what}: {path} does not fit the architecture ({detail[:200]})") from exc
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = ([f"missing {len(missing)} key(s): {_named(missing)}"] if missing else []) + (
            [f"unexpected {len(unexpected)} key(s): {_named(unexpected)}"] if unexpected else [])
        raise UserError(f"{what}: {path} does not fit the architecture ({'; '.join(parts)})")
