"""``saliency eval``: stage 4, a trained U-Net scored on a saliency benchmark."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core import limits as L
from pipelines.options import (config_from, data_root_option, device_option, lowercase, option_range,
                               precision_option)


@click.command("eval")
@click.option("--dataset", required=True, callback=lowercase,
              help="ecssd (or another named benchmark), or scenes (rendered, exact masks).")
@click.option("--model", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A model folder from `saliency train-unet`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: metrics.json, metrics.md, predictions.png.")
@data_root_option
@click.option("--size", type=option_range(L.INFERENCE_SIDE), default=None,
              help="Shorter side at inference (default 128; scenes: its resolution).")
@click.option("--protocol", type=click.Choice(["standard", "paper"]), default="standard", show_default=True,
              help="paper: also score the reference code's own evaluation (sigmoid of the foreground logit, through "
                   "uint8, resized back), its MAE by the paper's formula.")
@click.option("--save-maps", is_flag=True, help="Write every predicted map as PNG into OUT/maps.")
@click.option("--images", "scenes_count", type=option_range(L.RENDERED_IMAGES), default=500, show_default=True,
              help="Number of rendered images (--dataset scenes).")
@device_option
@precision_option
@click.option("--card", is_flag=True,
              help="Also record the scores in the model folder's card (its model.json). Without it the model "
                   "folder is left as it was.")
def eval_command(**options) -> None:
    """Stage 4: score a trained U-Net on a saliency benchmark (test split and all images)."""
    from pipelines.evaluate import EvalConfig, run_eval

    summary = run_eval(config_from(EvalConfig, options))
    click.echo(summary["table"].rstrip())
    click.echo(f"{summary['images_per_second']:.1f} images/s; wrote {Path(options['out']) / 'metrics.json'}")
