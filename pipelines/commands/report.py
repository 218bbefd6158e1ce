"""``saliency report``: one HTML page of a run folder."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The page to write (default: RUN_DIR/report.html).")
def report_command(**options) -> None:
    """One HTML page of a run folder of any stage, or of a whole pipeline folder: numbers,
    curves, pictures and a slider along every direction. Opens from the file system; nothing
    to install, no network."""
    import sys
    import time

    from pipelines.report import write_report

    started = time.perf_counter()
    # a bar on a terminal only: a page takes seconds, and a log or a pipe wants the one line below
    path = write_report(**options, progress=sys.stderr.isatty())
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB, {time.perf_counter() - started:.1f} s)")
