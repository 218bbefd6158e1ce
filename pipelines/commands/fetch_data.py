"""``saliency fetch-data``: a saliency benchmark's archives, downloaded, verified, unpacked."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.options import config_from, data_root_option


@click.command("fetch-data")
@click.argument("dataset")
@data_root_option
@click.option("--mirror", default=None,
              help="Base URL that serves the same archive names (default: $SALIENCY_DATA_MIRROR, else the "
                   "official site).")
@click.option("--from", "source", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder on disk instead of the network: the published archives, or the unpacked dataset "
                   "(the same checks).")
@click.option("--force", is_flag=True, help="Replace the dataset if it is already there.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the unpacked files against the known content checksum.")
def fetch_data_command(**options) -> None:
    """Download a saliency benchmark's official archives, verify them, unpack them safely."""
    from pipelines.fetch_data import FetchDataConfig, run_fetch_data

    folder = run_fetch_data(config_from(FetchDataConfig, options))
    click.echo(f"wrote {folder}")
