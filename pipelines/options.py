"""Options and option types the CLI's commands share, defined once."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core.fields import Range

DEVICE_HELP = "Torch device: auto (default: the best available), cpu, cuda, cuda:N or mps."
PRECISION_HELP = ("auto (bf16 autocast on a CUDA GPU; U-Net training and the sngan-mnist discovery game also "
                  "on CPUs with native bf16; else fp32), fp32 or bf16.")
DATA_ROOT_HELP = "Folder holding datasets by name (ROOT/ECSSD/...); default $SALIENCY_DATA, else ./data."

device_option = click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
precision_option = click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
                                show_default=True, help=PRECISION_HELP)
data_root_option = click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
                                help=DATA_ROOT_HELP)
generator_option = click.option("--generator", "generator_name", default="scenes", show_default=True,
                                help="Generator name (see `saliency generators`) or package.module:factory.")


def option_range(allowed: Range) -> click.ParamType:
    """click's range type for a named Range of saliency/core/limits.py, the one the config field
    declares: the range is written once, click refuses a value outside it while parsing (before
    any library loads), and --help shows it."""
    if allowed.integer:
        return click.IntRange(min=allowed.low, max=allowed.high)
    return click.FloatRange(min=allowed.low, max=allowed.high, min_open=allowed.low_open, max_open=allowed.high_open)


# Library fields whose CLI flag is not the field's name; the rest are found by the command's own
# parameters (``flag_names``).
FIELD_FLAGS = {"generator": "--generator", "plateau_change": "--stop-rca-change",
               "plateau_window": "--stop-rca-window"}


def flag_names(*commands: click.Command | None) -> dict[str, str]:
    """Config field -> the flag that sets it, for a ConfigError's message on the command line
    (a later command's parameters win)."""
    names = dict(FIELD_FLAGS)
    for command in commands:
        for param in command.params if command is not None else ():
            if isinstance(param, click.Option) and param.name:
                names[param.name] = param.opts[0]
    return names
