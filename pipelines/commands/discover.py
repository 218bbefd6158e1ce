"""``saliency discover``: stage 1, K latent directions and the background-removal direction h_bg."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core import limits as L
from pipelines.options import config_from, device_option, generator_option, option_range, precision_option


@click.command("discover")
@generator_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder (created; holds checkpoints, charts, directions.json).")
@click.option("--deformator", type=click.Choice(["ortho", "unit", "random", "identity"]), default=None,
              help="Direction matrix A: learned orthonormal or unit-norm columns, or a frozen "
                   "random / coordinate baseline. Default: the generator's profile.")
@click.option("--directions", "num_directions", type=option_range(L.DIRECTIONS), default=None,
              help="K, the number of directions.")
@click.option("--reconstructor", type=click.Choice(["lenet", "lenet5", "resnet18"]), default=None,
              help="Reconstructor R (lenet5: the reference code's for MNIST). Default: the generator's profile.")
@click.option("--steps", type=option_range(L.STEPS), default=None, help="Training steps (total, also when resuming).")
@click.option("--batch", "batch_size", type=option_range(L.GAME_BATCH), default=None, help="Batch size.")
@click.option("--lr", type=option_range(L.POSITIVE), default=None, help="Adam learning rate for A and R.")
@click.option("--shift-loss-weight", type=option_range(L.NON_NEGATIVE), default=0.25, show_default=True,
              help="lambda: loss = CE + lambda * L1(shift) (the paper's Table 5 varies it).")
@click.option("--seed", type=option_range(L.SEED), default=0, show_default=True)
@device_option
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--checkpoint-every", type=option_range(L.COUNT), default=250, show_default=True,
              help="Steps between checkpoints.")
@click.option("--refine-bg/--no-refine-bg", default=True, show_default=True,
              help="Refine the best h_bg candidate on the image criterion; kept only if it scores higher.")
@click.option("--refine-steps", type=option_range(L.REFINE_STEPS), default=300, show_default=True,
              help="Steps of the h_bg refinement.")
@click.option("--bg-search/--no-bg-search", default=None,
              help="Search the directions for h_bg. Default: the generator's profile (off for sngan-mnist).")
@click.option("--bg-direction", default=None, metavar="INDEX[:MAGNITUDE]",
              help="Use this direction as h_bg instead of the automatic choice.")
@click.option("--bg-samples", type=option_range(L.BG_SAMPLES), default=128, show_default=True,
              help="Samples for scoring h_bg candidates.")
@click.option("--rca-samples", type=option_range(L.RCA_SAMPLES), default=2048, show_default=True,
              help="Fresh samples each RCA is measured on.")
@click.option("--rca-every", type=option_range(L.NON_NEGATIVE_COUNT), default=0, show_default=True,
              help="Also measure the RCA every N steps into metrics.jsonl (0: only at the end).")
@click.option("--stop-rca-change", type=option_range(L.NON_NEGATIVE), default=0.0, show_default=True,
              help="Stop early once the RCA has moved by less than this over --stop-rca-window steps "
                   "(0: never; needs --rca-every).")
@click.option("--stop-rca-window", type=option_range(L.COUNT), default=20_000, show_default=True,
              help="Steps the --stop-rca-change rule looks back over.")
@click.option("--charts/--no-charts", default=True, show_default=True, help="Write a chart per direction.")
@click.option("--effects/--no-effects", default=True, show_default=True,
              help="Measure what the directions do in image space (mean |cos|, diversity; directions/effects.py).")
@click.option("--log-every", type=option_range(L.COUNT), default=50, show_default=True,
              help="Steps between metrics.jsonl lines.")
@click.option("--resolution", type=option_range(L.RESOLUTION), default=None,
              help="Image size, for generators that take one (scenes).")
@click.option("--train-resolution", type=option_range(L.RESOLUTION), default=None,
              help="Image size for the training game only (scenes default: 32; directions carry over).")
@click.option("--weights", default=None, help="Generator weights (see `saliency sample --help`).")
@click.option("--truncation", type=float, default=None, help="Truncation (biggan-deep-128, biggan-128).")
@click.option("--latent-space", type=click.Choice(["w", "z"]), default=None,
              help="stylegan2: discover directions in W (default, as the paper's code) or in Z.")
@precision_option
@click.option("--compile", is_flag=True,
              help="torch.compile G and R for the game (pays off on long runs; costs a compile per process).")
def discover_command(**options) -> None:
    """Stage 1: learn K latent directions and find the background-removal direction h_bg."""
    from pipelines.discover import DiscoverConfig, run_discover

    summary = run_discover(config_from(DiscoverConfig, options))
    if summary.get("part"):  # a torchrun worker other than rank 0
        return
    bg = summary["bg_direction"]
    click.echo(f"RCA {summary['rca']:.3f} over {summary['num_directions']} directions "
               f"({summary['steps']} steps, {summary['train_seconds']:.0f} s)")
    if summary.get("stopped_early"):
        click.echo(f"stopped early at step {summary['stopped_early']['step']}: {summary['stopped_early']['rule']}")
    if summary.get("effects"):
        measured = summary["effects"]
        click.echo(f"effects: mean |cos| {measured['mean_abs_cos']:.3f}, diversity {measured['diversity']:.3f}")
    if bg is None:
        click.echo("h_bg: not searched (--no-bg-search, or the generator's profile)")
    else:
        click.echo(f"h_bg: direction {bg['index']}, sign {bg['sign']:+d}, magnitude {bg['magnitude']:g}, "
                   f"score {bg['score']:.3f}")
    if bg is not None and not bg.get("reliable", True):
        click.echo("warning: no direction whitens the background without changing the rest; this h_bg is "
                   "not usable for synthesis (train longer, or pick one with --bg-direction)", err=True)
    if summary.get("ground_truth"):
        report = summary["ground_truth"]["background"]
        click.echo(f"ground truth: bg_cos {report['bg_cos']:.3f}, bg_mask_iou {report['bg_mask_iou']:.3f}, "
                   f"oracle_mask_iou {report['oracle_mask_iou']:.3f}")
    click.echo(f"wrote {Path(options['out']) / 'directions.json'}")
