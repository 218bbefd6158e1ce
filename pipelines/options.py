"""Options and option types the CLI's commands share, defined once."""

from __future__ import annotations

from pathlib import Path

import click

DEVICE_HELP = "Torch device: auto (default: the best available), cpu, cuda, cuda:N or mps."
PRECISION_HELP = ("auto (bf16 autocast on a CUDA GPU; U-Net training also on CPUs with native bf16; "
                  "else fp32), fp32 or bf16.")
DATA_ROOT_HELP = "Folder holding datasets by name (ROOT/ECSSD/...); default $SALIENCY_DATA, else ./data."

device_option = click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
precision_option = click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
                                show_default=True, help=PRECISION_HELP)
data_root_option = click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
                                help=DATA_ROOT_HELP)
generator_option = click.option("--generator", "generator_name", default="scenes", show_default=True,
                                help="Generator name (see `saliency generators`) or package.module:factory.")


def at_most(maximum: int, minimum: int = 1) -> click.IntRange:
    """An integer option in [minimum, maximum] (a ceiling of saliency/core/limits.py); click
    refuses a value outside it while parsing and shows the range in --help."""
    return click.IntRange(min=minimum, max=maximum)
