"""``saliency vote``: stage 2's class vote on its own."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core import limits as L
from pipelines.options import config_from, data_root_option, device_option, option_range


@click.command("vote")
@click.option("--dataset", default="ecssd", show_default=True, help="Dataset whose images vote.")
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="train", show_default=True)
@click.option("--classifier", required=True, help="resnet18-imagenet, mobilenet-v2-imagenet or scenes-shapes.")
@click.option("--classifier-weights", default=None, help="Classifier weights file/folder instead of the default.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="classes.json to write.")
@data_root_option
@click.option("--top-k", type=option_range(L.TOP_K), default=5, show_default=True, help="Classes each image votes for.")
@click.option("--class-fraction", type=option_range(L.FRACTION), default=0.25, show_default=True,
              help="Fraction of all classes kept, the most voted first.")
@device_option
def vote_command(**options) -> None:
    """The class vote of stage 2 on its own: which classes a long synthesis would draw."""
    from pipelines.vote import VoteConfig, run_vote

    record = run_vote(config_from(VoteConfig, options), log=click.echo)
    names = record.get("class_names", {})
    counts = record["counts"]
    click.echo(f"{record['images']} images voted in {record['seconds']:.0f} s; {len(record['classes'])} classes chosen")
    for c in record["classes"][:10]:
        click.echo(f"  {counts[str(c)]:5d}  {c:4d}  {names.get(str(c), '')}")
    if len(record["classes"]) > 10:
        click.echo(f"  ... and {len(record['classes']) - 10} more")
    click.echo(f"wrote {options['out']}")
