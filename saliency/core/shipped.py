"""The small artifacts the package ships (``checkpoints/`` in a checkout), wherever it is installed.

A checkout keeps them in ``checkpoints/sngan-mnist``, ``checkpoints/scenes-classifier`` and
``checkpoints/mnist-classifier``. A wheel carries the same files as the package
``gan_saliency_checkpoints`` (setup.py maps the folder to it, runtime files only: no pictures, no
paper-budget runs), found through importlib.resources whatever the working folder. Run from a
checkout that is not installed, the folder beside the code is used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE = "gan_saliency_checkpoints"
SHIPPED = ("sngan-mnist", "scenes-classifier", "mnist-classifier")


def shipped_folder(name: str) -> Path:
    """The folder of the shipped artifact ``name`` (one of SHIPPED)."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped artifact {name!r}; one of {', '.join(SHIPPED)}")
    try:
        folder = Path(str(resources.files(PACKAGE) / name))
    except ModuleNotFoundError:  # a checkout run from its folder, not installed
        folder = None
    if folder is not None and folder.is_dir():
        return folder
    return Path(__file__).resolve().parents[2] / "checkpoints" / name
