"""Config fields whose allowed range is declared once, beside the default.

A config writes ``steps: int = bounded(limits.STEPS, 100_000)``, a named Range of
``saliency/core/limits.py``. ``check_ranges`` enforces it for a Python caller, naming the field;
the CLI builds click's range type from the same Range (``pipelines/options.py: option_range``),
so a wrong number on the command line is refused while parsing, before any library loads, and
``--help`` shows the range. Neither repeats the other, and this module imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from saliency.core.errors import ConfigError

RANGE = "range"  # the key of a field's metadata that holds its Range


@dataclass(frozen=True)
class Range:
    """[low, high] (either end open, or absent) of integers or of finite floats."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def admits(self, value: float) -> bool:
        if self.integer and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            return False
        if not self.integer and not (isinstance(value, numbers.Real) and math.isfinite(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, name: str, value) -> None:
        """Refuse ``value`` (None passes: an unset optional setting) naming the field ``name``."""
        if value is not None and not self.admits(value):
            raise ConfigError(f"`{name}` must be {self.describe()}, got {value}")

    def describe(self) -> str:
        kind = "an integer " if self.integer else ""
        if self.high is None:
            if (self.low == 0 and self.low_open) or (self.integer and self.low == 1):
                return "a positive integer" if self.integer else "positive"
            return f"{kind}{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{kind}{'<' if self.high_open else '<='} {self.high}"
        return f"{kind}in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


def ints(low: int | None = None, high: int | None = None) -> Range:
    return Range(low, high, integer=True)


def floats(low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Range:
    return Range(low, high, low_open, high_open)


REQUIRED = dataclasses.MISSING  # bounded(allowed, REQUIRED): a field with no default


def bounded(allowed: Range, default: Any = None) -> Any:
    """A dataclass field with ``default`` and an allowed range (None, where None is the default, is allowed)."""
    return dataclasses.field(default=default, metadata={RANGE: allowed})


def check_ranges(config: Any) -> None:
    """Refuse the first field outside its declared range, naming it (ConfigError)."""
    for field in dataclasses.fields(config):
        if RANGE in field.metadata:
            field.metadata[RANGE].check(field.name, getattr(config, field.name))
