"""``saliency import-run``: a run of the paper's reference code as a discovery run."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core import limits as L
from pipelines.options import option_range


@click.command("import-run")
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="New discovery run folder (directions.json, directions.safetensors) for `saliency synthesize`.")
@click.option("--bg-direction", default=None, metavar="INDEX[:MAGNITUDE]",
              help="h_bg: a direction and its shift (negative flips it; default 26, the reference code's). "
                   "Default: the direction human_annotation.txt names as background removal.")
@click.option("--generator", default=None,
              help="Our generator for the run (default: from its gan_type: BigGAN -> biggan-128, ...).")
@click.option("--step", type=option_range(L.NON_NEGATIVE_COUNT), default=None,
              help="Which models/deformator_STEP.pt (default: the last).")
@click.option("--weights", default=None,
              help="The generator's weights: recorded for later stages, and the latent size checked.")
@click.option("--latent-dim", type=option_range(L.LATENT_DIM), default=None,
              help="Latent size, for an id deformator without --weights.")
def import_run_command(**options) -> None:
    """Convert a run of the paper's reference code (args.json, models/deformator_N.pt) into a discovery run."""
    from pipelines.import_run import import_run as run_import

    summary = run_import(**options)
    bg = summary["bg_direction"]
    click.echo(f"{summary['num_directions']} directions of {summary['generator']} ({summary['deformator']}, step "
               f"{summary['imported_from']['step']}); h_bg: direction {bg['index']}, sign {bg['sign']:+d}, "
               f"magnitude {bg['magnitude']:g} ({bg['extra']['chosen_by']})")
    click.echo(f"wrote {Path(options['out']) / 'directions.json'}")
