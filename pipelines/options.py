"""Options and option types the CLI's commands share, defined once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from saliency.core.errors import UserError
from saliency.core.fields import Range

DEVICE_HELP = "Torch device: auto (default: the best available), cpu, cuda, cuda:N or mps."
PRECISION_HELP = ("auto (bf16 autocast on a CUDA GPU; U-Net training and the sngan-mnist discovery game also "
                  "on CPUs with native bf16; else fp32), fp32 or bf16.")
MODEL_HELP = ("A model folder from `saliency train-unet` (or a pipeline's OUT/unet), or a Hugging Face Hub "
              "repository id owner/name[@revision].")
DATA_ROOT_HELP = "Folder holding datasets by name (ROOT/ECSSD/...); default $SALIENCY_DATA, else ./data."

device_option = click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
precision_option = click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
                                show_default=True, help=PRECISION_HELP)
data_root_option = click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
                                help=DATA_ROOT_HELP)
generator_option = click.option("--generator", default="scenes", show_default=True,
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


# Options of the generator itself, not of the stage: a stage's config keeps them in
# ``generator_options`` when it has no field of their own.
GENERATOR_OPTIONS = ("resolution", "weights", "truncation", "latent_space")


def config_from(config_class: type, options: dict[str, Any], **extra: Any):
    """A command's config from click's keyword arguments, matched by field name: an option is
    declared on its command and received by its field, and written nowhere in between."""
    fields = {field.name for field in dataclasses.fields(config_class)}
    values, generator_options = dict(extra), {}
    for name, value in options.items():
        if name in fields:
            values[name] = value
        elif name in GENERATOR_OPTIONS and "generator_options" in fields:
            generator_options[name] = value
        else:  # a programming error: an option with no field to receive it
            raise TypeError(f"{config_class.__name__} has no field for the option {name!r}")
    if generator_options:
        values["generator_options"] = generator_options
    return config_class(**values)


def parse_int_list(text: str | None, refusal: str = "expected a comma-separated list of integers, got {text!r}",
                   empty: str | None = "the class list is empty") -> list[int] | None:
    """``"1,5,9"`` -> ``[1, 5, 9]``; None stays None. ``refusal`` and ``empty`` (None: an empty
    list is taken) are the one-line errors, in the words of the option that was given."""
    if text is None:
        return None
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise UserError(refusal.format(text=text)) from exc
    if not values and empty is not None:
        raise UserError(empty)
    return values


def int_list(ctx: click.Context, param: click.Parameter, text: str | None) -> list[int] | None:
    """click callback: a comma-separated list of class indices, parsed while the command line is."""
    return parse_int_list(text)


def seed_list(ctx: click.Context, param: click.Parameter, text: str) -> list[int]:
    """click callback: ``sweep --seeds``; an empty list is refused later, by the sweep's own checks."""
    return parse_int_list(text, "--seeds takes a comma-separated list of integers, got {text!r}", empty=None)


def word_list(ctx: click.Context, param: click.Parameter, text: str) -> tuple[str, ...]:
    """click callback: ``"map, mask"`` -> ``("map", "mask")``."""
    return tuple(word.strip() for word in text.split(",") if word.strip())


def as_list(ctx: click.Context, param: click.Parameter, values: tuple) -> list:
    return list(values)


def lowercase(ctx: click.Context, param: click.Parameter, text: str) -> str:
    return text.lower()
