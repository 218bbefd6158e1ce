"""Paths a run records, so that a run folder names no machine.

A JSON file a run writes names other files (its charts, the run a stage was made from, the
weights it read) relative to the folder the JSON file is in, never by an absolute path or one
relative to the directory the command ran in; datasets and downloaded weights are recorded by
name. A tree of run folders can then be moved, copied or shared, and every record still points
at the same files.

``record_path`` writes such a path, ``resolve_recorded`` reads one back (an absolute one as it
is), and ``rebase_recorded`` moves a record copied from one folder's file into another folder's.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def record_path(path: str | os.PathLike, folder: str | os.PathLike) -> str:
    """``path`` as a file in ``folder`` records it: relative to ``folder``, with ``/``
    separators (the same text on every system). Absolute only where no relative path exists
    (another drive on Windows)."""
    try:
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    except ValueError:
        return os.path.abspath(path)
    return PurePosixPath(*Path(relative).parts).as_posix()


def resolve_recorded(value: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """The file or folder that a record in a file of ``folder`` names.

    A relative record is relative to ``folder``; an absolute one (``record_path`` writes one
    where no relative path exists, and a user may write one) is taken as it is.
    """
    path = Path(value)
    return path if path.is_absolute() else Path(folder) / path


def rebase_recorded(value, source: str | os.PathLike, target: str | os.PathLike):
    """A path recorded by a file of ``source``, as a file of ``target`` records it (a value
    that is not a string, e.g. None, is returned as it is)."""
    if not isinstance(value, str) or not value:
        return value
    return record_path(resolve_recorded(value, source), target)


def recorded_options(options: dict, folder: str | os.PathLike) -> dict:
    """A generator's options as a file of ``folder`` records them: ``weights`` (a file or
    folder) relative to ``folder``."""
    weights = options.get("weights")
    if isinstance(weights, (str, os.PathLike)) and str(weights):
        return {**options, "weights": record_path(weights, folder)}
    return dict(options)


def resolved_options(options: dict, folder: str | os.PathLike) -> dict:
    """A generator's options recorded in a file of ``folder``, ready to build it: ``weights``
    resolved against ``folder``."""
    weights = options.get("weights")
    if isinstance(weights, str) and weights:
        return {**options, "weights": str(resolve_recorded(weights, folder))}
    return dict(options)


def rebased_options(options, source: str | os.PathLike, target: str | os.PathLike):
    """A generator's options recorded by a file of ``source``, as a file of ``target`` records them."""
    if not isinstance(options, dict) or not isinstance(options.get("weights"), str):
        return options
    return {**options, "weights": rebase_recorded(options["weights"], source, target)}
