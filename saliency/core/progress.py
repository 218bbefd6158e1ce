"""Progress bars that suit both a terminal and a log file."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, enabled: bool = True, initial: int = 0, unit: str = "it",
                 leave: bool = True, unit_scale: bool = False) -> tqdm:
    """A tqdm bar on stderr: redrawn every second on a terminal, every 30 s into a file."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                mininterval=1.0 if interactive else 30.0, dynamic_ncols=True, leave=leave, unit_scale=unit_scale)


def close_progress_bars() -> None:
    """Close every open bar, so that an error message that follows starts on a line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
