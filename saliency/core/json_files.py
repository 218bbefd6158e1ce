"""The one reader of the JSON files the project reads back: run folders, model folders,
manifests, records. It parses, then checks the shape its caller expects (an object, its keys,
their types), so that a file written by someone else, or damaged, is one line naming the file
and what is wrong, never a library exception further on.

A shape is a type (``int`` excludes ``bool``; ``float`` takes ``int`` too; ``object`` takes
anything), ``None`` (JSON null), a tuple of alternatives, a dict (an object with those keys; a
key ending in ``?`` may be absent; other keys are allowed), or a one-element list (a list whose
every item has that shape)::

    read_json(path, {"generator": str, "generator_options?": (dict, None), "shards": [{"file": str}]})
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from saliency.core.errors import UserError

Shape = Any  # type | None | tuple | dict | list (see the module's docstring)
_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
          bool: "true or false", type(None): "null"}


def read_json(path: str | os.PathLike, shape: Shape = dict, missing: str | None = None) -> Any:
    """The parsed file, checked against ``shape``; else a UserError naming ``path``. ``missing``:
    the line to give when the file does not exist (default: "PATH not found")."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(missing or f"{path} not found") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is corrupted (not UTF-8 text)") from exc
    except OSError as exc:
        raise UserError(f"{path} is unreadable ({exc.strerror or type(exc).__name__})") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is corrupted (not JSON: {exc.msg} at line {exc.lineno})") from exc
    except RecursionError as exc:
        raise UserError(f"{path} is corrupted (nested too deeply)") from exc
    problem = shape_problem(value, shape)
    if problem is not None:
        raise UserError(f"{path} is not what this tool wrote: {problem}")
    return value


def shape_problem(value: Any, shape: Shape, where: str = "") -> str | None:
    """None if ``value`` has ``shape``, else one phrase saying where and what differs."""
    here = where or "the file"
    if isinstance(shape, tuple):
        problems = [shape_problem(value, option, where) for option in shape]
        if not all(problems):
            return None
        # The value is an object or a list and an alternative is one: say what is wrong inside it.
        inside = [p for option, p in zip(shape, problems) if isinstance(option, (dict, list))
                  and isinstance(value, dict if isinstance(option, dict) else list)]
        return inside[0] if inside else _expected(shape, value, here)
    if shape is None:
        return None if value is None else _expected(shape, value, here)
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return _expected(dict, value, here)
        for key, item_shape in shape.items():
            name, optional = (key[:-1], True) if key.endswith("?") else (key, False)
            if name not in value:
                if not optional:
                    return f"{here} has no {name!r}"
                continue
            problem = shape_problem(value[name], item_shape, f"{where}.{name}" if where else name)
            if problem:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return _expected(list, value, here)
        for index, item in enumerate(value):
            problem = shape_problem(item, shape[0], f"{where}[{index}]" if where else f"item {index}")
            if problem:
                return problem
        return None
    if shape is object:
        return None
    if shape is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif shape is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, shape)
    return None if ok else _expected(shape, value, here)


def _expected(shape: Shape, value: Any, here: str) -> str:
    options = shape if isinstance(shape, tuple) else (shape,)
    wanted = " or ".join(_describe(option) for option in options)
    return f"{here} is {_NAMES.get(type(value), type(value).__name__)}, not {wanted}"


def _describe(shape: Shape) -> str:
    if shape is None:
        return "null"
    if isinstance(shape, dict):
        return "an object"
    if isinstance(shape, list):
        return "a list"
    return _NAMES.get(shape, getattr(shape, "__name__", str(shape)))
