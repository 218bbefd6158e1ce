"""``saliency synthesize``: stage 2, (image, mask) pairs made with h_bg."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core import limits as L
from pipelines.options import (config_from, data_root_option, device_option, int_list, option_range,
                               precision_option)


@click.command("synthesize")
@click.option("--run", "--run-dir", "run", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A finished discovery run (holds directions.json with h_bg). Under torchrun: --run-dir.")
@click.option("--n", "--count", "count", type=option_range(L.PAIRS), required=True,
              help="Number of (image, mask) pairs to keep. Under torchrun: --count.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: shards, manifest.json, preview.png. Rerun the same command to resume.")
@data_root_option
@click.option("--dataset", default="ecssd", show_default=True, help="Dataset whose train images vote for classes.")
@click.option("--classes", default=None, callback=int_list,
              help="Comma-separated class indices to use instead of voting.")
@click.option("--classifier", default=None,
              help="Voting classifier: resnet18-imagenet, mobilenet-v2-imagenet or scenes-shapes "
                   "(default: the generator's; for BigGAN ResNet-18 when its weights are on disk, else MobileNetV2).")
@click.option("--classifier-weights", default=None, help="Classifier weights file/folder instead of the default.")
@click.option("--top-k", type=option_range(L.TOP_K), default=5, show_default=True, help="Classes each image votes for.")
@click.option("--class-fraction", type=option_range(L.POSITIVE_FRACTION), default=0.25, show_default=True,
              help="Fraction of all classes kept, the most voted first.")
@click.option("--threshold", type=option_range(L.POSITIVE_FRACTION), default=None,
              help="Whiteness threshold (default: the run's, 0.95).")
@click.option("--shift", "magnitude", type=option_range(L.POSITIVE), default=None,
              help="Shift along h_bg (default: the run's magnitude).")
@click.option("--min-area", type=option_range(L.FRACTION), default=0.05, show_default=True,
              help="Smallest kept mask area (fraction).")
@click.option("--max-area", type=option_range(L.FRACTION), default=0.5, show_default=True,
              help="Largest kept mask area (fraction).")
@click.option("--strict-area", is_flag=True,
              help="Keep min < area < max, the bounds themselves out (the reference code's rule).")
@click.option("--bg-vector", type=click.Choice(["run", "column"]), default="run", show_default=True,
              help="run: the run's h_bg as chosen (possibly refined); column: the unit column of A it is, or was "
                   "refined from (the paper's shift, with --shift 26).")
@click.option("--component-filter", "component_fraction", type=option_range(L.POSITIVE_FRACTION), default=None,
              help="Drop mask components smaller than this fraction of the largest (follow-up work: 0.2). "
                   "Off by default.")
@click.option("--bimodal-filter/--no-bimodal-filter", "bimodal", default=False, show_default=True,
              help="Reject pairs whose shifted image is not bimodal (Otsu separability < 0.8).")
@click.option("--batch", "batch_size", type=option_range(L.GAME_BATCH), default=None,
              help="Latents per batch (default 256; BigGAN 32).")
@click.option("--shard-size", type=option_range(L.SHARD_SIZE), default=1024, show_default=True,
              help="Pairs per shard file.")
@click.option("--seed", type=option_range(L.SEED), default=0, show_default=True)
@device_option
@click.option("--ground-truth/--no-ground-truth", default=True, show_default=True,
              help="Score kept masks against the generator's exact masks, where it has them (scenes).")
@precision_option
@click.option("--generator", default=None,
              help="Only for a run of your own package.module:factory: the same spec, to trust it (a run folder "
                   "names code to run only by registered name).")
def synthesize_command(**options) -> None:
    """Stage 2: vote for classes, then write N (image, mask) pairs made with h_bg."""
    from pipelines.synthesize import SynthesizeConfig, run_synthesize

    manifest = run_synthesize(config_from(SynthesizeConfig, options, log=click.echo))
    if manifest.get("part"):  # a torchrun worker other than rank 0: rank 0 reports
        return
    if manifest.get("skipped"):
        click.echo(f"{options['out']} already holds {manifest['count']} pairs; nothing to do")
        return
    click.echo(f"kept {manifest['count']} pairs of {manifest['candidates']} candidates "
               f"(acceptance {manifest['acceptance_rate']:.3f}); classes {manifest['classes']}; "
               f"{manifest['seconds']:.1f} s")
    if manifest.get("ground_truth"):
        click.echo(f"ground truth: mask IoU {manifest['ground_truth']['mask_iou']:.3f}")
    click.echo(f"wrote {Path(options['out']) / 'manifest.json'}")
