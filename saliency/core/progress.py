"""Progress bars that suit both a terminal and a log file."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

# Into a file or a pipe a bar is redrawn at most this often: a long phase still writes a line
# at least every FILE_INTERVAL seconds plus one of its units (so keep a unit to a few seconds).
FILE_INTERVAL = 10.0


def progress_bar(total: int | None, desc: str, enabled: bool = True, initial: int = 0, unit: str = "it",
                 leave: bool = True, unit_scale: bool = False) -> tqdm:
    """A tqdm bar on stderr: redrawn every second on a terminal, every 10 s into a file."""
    interactive = sys.stderr.isatty()
    # miniters=1: every update checks the clock. tqdm's default skips the number of updates that
    # took mininterval so far, which leaves a phase that slows down (RCA's recalibration batches,
    # then its larger scoring ones) silent for up to two intervals.
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                mininterval=1.0 if interactive else FILE_INTERVAL, miniters=1, dynamic_ncols=True, leave=leave,
                unit_scale=unit_scale)


def redraw_if_due(bar: tqdm) -> None:
    """Redraw ``bar`` (its time and postfix) once its interval has passed since its last line:
    for a loop whose bar may not advance for a while (synthesis batches that keep no pair)."""
    if bar.disable:
        return
    now = time.time()
    if now - getattr(bar, "last_print_t", 0.0) >= bar.mininterval:
        bar.refresh()
        bar.last_print_t = now  # what update() would set: the next redraw waits its interval


class PostfixProgress:
    """The progress of a phase that runs inside another bar's phase (the U-Net's held-out
    scoring between two training steps), shown as that bar's postfix ``LABEL n/total`` and
    redrawn once the bar's own interval has passed, so the outer bar keeps writing lines
    without a second bar nested under it. ``update(n)`` as on a bar."""

    def __init__(self, bar: tqdm, total: int, label: str):
        self.bar, self.total, self.label, self.n = bar, total, label, 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar.disable:
            return
        self.bar.set_postfix_str(f"{self.label} {self.n}/{self.total}", refresh=False)
        redraw_if_due(self.bar)


def close_progress_bars() -> None:
    """Close every open bar, so that an error message that follows starts on a line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
