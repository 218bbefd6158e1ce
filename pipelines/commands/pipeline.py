"""``saliency pipeline``: the main job, the four stages in one folder."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core import limits as L
from saliency.core.errors import UserError
from pipelines.options import (config_from, data_root_option, device_option, int_list, option_range,
                               precision_option)


@click.command("pipeline")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("checkpoints/pipeline"),
              show_default=True, help="Folder for all stages' outputs.")
@data_root_option
@click.option("--profile", type=click.Choice(["embedded", "biggan", "paper"]), default="embedded", show_default=True,
              help="embedded: the scenes generator on a CPU in minutes; paper: the paper's experiment on the "
                   "authors' BigGAN-128 (GPU); biggan: this project's choices on BigGAN-deep-128 (GPU). "
                   "docs/profiles.md sets each beside the paper.")
@click.option("--weights", default=None,
              help="Generator weights (paper profile: the authors' G_ema.pth, needed; biggan profile: a folder, "
                   "default the hub cache).")
@click.option("--pairs", type=option_range(L.PAIRS), default=None,
              help="Synthetic pairs (default: embedded 10,000, biggan 100,000).")
@click.option("--unet-steps", type=option_range(L.STEPS), default=None, help="U-Net steps (default: the profile's).")
@click.option("--discover-steps", type=option_range(L.STEPS), default=None,
              help="Discovery steps (default: embedded 1,200; otherwise the generator's profile).")
@click.option("--classes", default=None, callback=int_list,
              help="Stage 2: comma-separated class indices instead of the vote.")
@click.option("--classifier", default=None,
              help="Stage 2's voting classifier (default: the generator's; for BigGAN ResNet-18 when its weights "
                   "are on disk, else MobileNetV2).")
@click.option("--classifier-weights", default=None,
              help="Stage 2: the classifier's weights file instead of the default.")
@click.option("--min-area", type=option_range(L.FRACTION), default=None,
              help="Stage 2: smallest kept mask area (default 0.05).")
@click.option("--max-area", type=option_range(L.FRACTION), default=None,
              help="Stage 2: largest kept mask area (default 0.5).")
@click.option("--encoder", default=None, help="Stage 3: the U-Net encoder (default: the profile's).")
@click.option("--encoder-weights", type=click.Choice(["imagenet", "none"]), default=None,
              help="Stage 3: the encoder's starting weights (default: the profile's; none trains it from scratch).")
@click.option("--freeze-encoder/--train-encoder", default=None, help="Stage 3: train the decoder only, or all.")
@click.option("--bg-direction", default=None, metavar="INDEX[:MAGNITUDE]",
              help="Stage 1: use this direction as h_bg instead of the search's choice (after looking at the "
                   "charts, as the paper did); on a finished discovery, training is not repeated (h_bg, scores "
                   "and charts are).")
@device_option
@precision_option
@click.option("--plan", is_flag=True,
              help="Measure instead of run: build every stage at its real sizes on --device, time a few steps of "
                   "each, print the projected time, memory and disk per stage (of the work left, where OUT holds "
                   "some) and write OUT/plan.json (nothing else; nothing is downloaded).")
def pipeline_command(**options) -> None:
    """The main job: discover, synthesize, train, evaluate; each stage skipped when already complete."""
    from pipelines.pipeline import PipelineConfig, run_pipeline

    result = run_pipeline(config_from(PipelineConfig, options, log=click.echo))
    if options["plan"]:
        from pipelines.plan import PLAN_NAME, out_of_memory_line, plan_table

        click.echo("\n" + plan_table(result["plan"]))
        click.echo(f"\nwrote {Path(options['out']) / PLAN_NAME}")
        too_big = out_of_memory_line(result["plan"])
        if too_big:
            raise UserError(too_big)
        return
    for name, table in result["tables"].items():
        click.echo(f"\n{name}:\n{table.rstrip()}")
    click.echo(f"\nwrote {Path(options['out']) / 'pipeline.json'}")
    if result.get("report"):
        click.echo(f"wrote {result['report']} (open it in a browser)")
