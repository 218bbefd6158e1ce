"""Training checkpoints as one safetensors file: tensors in the body, everything else as JSON
in its header. Written atomically; loading never unpickles anything.

A state is any nesting of dicts, lists, numbers, strings and tensors (a model's or an
optimizer's ``state_dict()``, a ``torch.Generator`` state, a step counter). Tensors are
stored under their path in the nesting; the rest of the structure is kept as JSON with a
placeholder where each tensor was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from saliency.core.artifacts import METADATA_KEY, write_safetensors
from saliency.core.errors import UserError

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
FORMAT = "saliency-checkpoint/1"


def _split(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = path or "tensor"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {_TENSOR: key}
    if isinstance(value, dict):
        if not all(isinstance(k, (str, int)) for k in value):
            raise TypeError(f"checkpoint keys must be str or int at {path!r}")
        # JSON keys are strings: remember which were ints (optimizer state is keyed by int).
        return {
            "__dict__": [
                [k, _split(v, f"{path}/{k}" if path else str(k), tensors)] for k, v in value.items()
            ]
        }
    if isinstance(value, tuple):
        return {_TUPLE: [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {path!r} in a checkpoint")


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        if _TUPLE in value:
            return tuple(_join(v, tensors) for v in value[_TUPLE])
        if "__dict__" in value:
            return {k: _join(v, tensors) for k, v in value["__dict__"]}
        raise ValueError("malformed checkpoint structure")
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` (``.safetensors``), atomically."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _split(state, "", tensors)
    return write_safetensors(path, tensors, {"format": FORMAT, "state": structure})  # equal state, equal bytes


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a damaged file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            info = json.loads(metadata.get(METADATA_KEY, "null"))
            if not isinstance(info, dict) or info.get("format") != FORMAT:
                raise UserError(f"checkpoint {path} is corrupted, or not a saliency checkpoint")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        state = _join(info.get("state"), tensors)
        if not isinstance(state, dict):
            raise UserError(f"checkpoint {path} is corrupted (no training state in it)")
        return state
    except UserError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise UserError(f"checkpoint {path} is corrupted or truncated ({type(exc).__name__})") from exc


def checkpoint_value(path: str | Path, key: str) -> Any:
    """One top-level value of a checkpoint that is not a tensor (its step), from the file's
    header alone: no tensor is read. None where the file is not a checkpoint or lacks it."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            info = json.loads((handle.metadata() or {}).get(METADATA_KEY, "null"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("state"), dict):
        return None
    entries = info["state"].get("__dict__")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == key:
            return None if isinstance(entry[1], (dict, list)) else entry[1]
    return None


RESUME_REFUSAL = "cannot resume {where}: it was made with other settings ({detail})"


def _comparable(value: Any) -> Any:
    """``value`` as its JSON text reads back (a tuple as a list, an int key as a string)."""
    return json.loads(json.dumps(value))


def check_identity(saved: Any, identity: dict, where: str | Path, message: str = RESUME_REFUSAL,
                   error: type[UserError] = UserError) -> None:
    """Refuse to resume a run whose checkpoint was made with other settings: ``saved`` is the
    identity the checkpoint holds, ``identity`` what this call would make. One ``error``, its
    ``message`` filled in with ``where`` (the run the caller names), ``detail`` (each differing
    key, sorted: its value in the run and now) and ``saved`` (the checkpoint's identity as it is)."""
    before = saved if isinstance(saved, dict) else {}
    differs = sorted(k for k in {*before, *identity}
                     if k not in before or k not in identity or _comparable(before[k]) != _comparable(identity[k]))
    if differs or not isinstance(saved, dict):
        detail = ", ".join(f"{k}: {before.get(k)!r} in the run, {identity.get(k)!r} now" for k in differs)
        raise error(message.format(where=where, detail=detail, saved=saved))
