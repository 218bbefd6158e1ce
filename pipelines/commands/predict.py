"""``saliency predict``: saliency maps for your own images."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from saliency.core import limits as L
from pipelines.options import (MODEL_HELP, as_list, config_from, device_option, option_range, precision_option,
                               word_list)


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True, callback=as_list)
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder; each input's relative path is mirrored under it (NAME.map.png, ...).")
@click.option("--save", default="map", show_default=True, callback=word_list,
              help="Comma-separated kinds: map (8-bit soft map), mask (binary at --threshold), cutout (RGBA, "
                   "background transparent), overlay (the map over the image).")
@click.option("--threshold", type=option_range(L.OPEN_FRACTION), default=0.5,
              show_default=True, help="Where a map becomes a mask.")
@click.option("--size", type=option_range(L.INFERENCE_SIDE), default=None,
              help="Shorter side at inference (default 128, as eval).")
@click.option("--batch", "batch_size", type=option_range(L.PREDICT_BATCH), default=8, show_default=True,
              help="Images a forward pass (batched by padded size).")
@click.option("--workers", type=option_range(L.WORKERS), default=None,
              help="Processes that decode images while the model runs (default: 1 per 4 cores, at most 4; "
                   "0 decodes in the main process).")
@click.option("--overwrite", is_flag=True, help="Redo images whose outputs already exist (default: skip them).")
@device_option
@precision_option
def predict_command(**options) -> None:
    """Saliency maps for your own images: files, folders (recursive) and globs.

    Images that cannot be read are skipped with a warning and counted; the exit status is then 1.
    Rerunning skips images whose outputs exist, so a killed run resumes where it stopped.
    Photos above 40 megapixels are decoded at the size the model needs (maps still come back at
    the photo's size); files above 250 megapixels are refused unread as decompression bombs.
    """
    from pipelines.predict import PredictConfig, run_predict
    from saliency.core.progress import close_progress_bars

    def warn(line: str) -> None:
        close_progress_bars()
        click.echo(line, err=True)

    result = run_predict(config_from(PredictConfig, options, warn=warn))
    click.echo(f"wrote {result['written']} image(s) ({result['images_per_second']:.1f} images/s), "
               f"{result['already_done']} already done, {result['skipped']} skipped; outputs in {result['out']}")
    if result["skipped"]:
        sys.exit(1)
