"""``saliency sweep``: discover over a grid of settings, tabulated and charted."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.commands.discover import discover_command
from pipelines.options import DEVICE_HELP, config_from, seed_list


@click.command("sweep", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--generator", default=None,
              help="Generator of every cell (see `saliency generators`). Default: discover's (scenes).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Sweep folder: cells/ (one discover run each), table.md, table.csv, cells.csv, rca.png.")
@click.option("--vary", multiple=True, metavar="KEY=V1,V2,...",
              help="A discover option and its values, e.g. directions=16,32,64 or shift-loss-weight=0,0.25. "
                   "Give it twice for a grid.")
@click.option("--seeds", default="0", show_default=True, callback=seed_list,
              help="Comma-separated seeds: one cell per seed and setting.")
@click.option("--device", default=None, help=DEVICE_HELP + " Under torchrun: each process's own GPU.")
@click.option("--plan", is_flag=True, help="List the cells and their state, run nothing.")
@click.pass_context
def sweep_command(ctx, **options) -> None:
    """Run discover over a grid of settings (resumable), then tabulate and chart RCA.

    Any other option is passed to every cell's discover, e.g. --steps 2000 --batch 64.
    """
    from pipelines.sweep import SweepConfig, sweep

    result = sweep(config_from(SweepConfig, options), list(ctx.args), discover_command, log=click.echo)
    for state, folder in result.get("listing", []):
        click.echo(f"{state:12s} {folder}")
    if result["finished"]:
        click.echo(result["table"].rstrip())
        click.echo(f"wrote {Path(options['out']) / 'table.md'}, table.csv, cells.csv, rca.png")
