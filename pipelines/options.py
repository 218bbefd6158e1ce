"""Option types the CLI's commands share."""

from __future__ import annotations

import click


def at_most(maximum: int, minimum: int = 1) -> click.IntRange:
    """An integer option in [minimum, maximum] (a ceiling of saliency/core/limits.py); click
    refuses a value outside it while parsing and shows the range in --help."""
    return click.IntRange(min=minimum, max=maximum)
