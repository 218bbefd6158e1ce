"""``saliency sample``: a grid of a generator's images."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core import limits as L
from pipelines.options import config_from, device_option, generator_option, int_list, option_range


@click.command("sample")
@generator_option
@click.option("--n", "count", type=option_range(L.GRID_IMAGES), default=16, show_default=True, help="Number of images.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file to write the grid to.")
@click.option("--classes", default=None, callback=int_list,
              help="Comma-separated class indices, cycled over the images (conditional generators).")
@click.option("--seed", type=option_range(L.SEED), default=0, show_default=True,
              help="Seed of the latents and classes.")
@device_option
@click.option("--nrow", type=option_range(L.GRID_IMAGES), default=None,
              help="Images per grid row (default: about square).")
@click.option("--resolution", type=option_range(L.RESOLUTION), default=None,
              help="Image size, for generators that take one (scenes).")
@click.option("--weights", default=None,
              help="Weights: a folder (biggan-deep-128) or file (dcgan-faces); default: hub cache / package.")
@click.option("--truncation", type=float, default=None,
              help="Truncation (biggan-deep-128: default 0.4; biggan-128: a normal cut at +-T, default none).")
@click.option("--latent-space", type=click.Choice(["w", "z"]), default=None,
              help="stylegan2: shift and sample in W (default, as the paper's code) or in Z.")
def sample_command(**options) -> None:
    """Render a grid of samples from a generator."""
    from pipelines.sample import SampleConfig, run_sample

    path = run_sample(config_from(SampleConfig, options))
    click.echo(f"wrote {path}")
