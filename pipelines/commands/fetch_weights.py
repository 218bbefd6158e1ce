"""``saliency fetch-weights``: named third-party weights, downloaded and checked."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.options import config_from


@click.command("fetch-weights")
@click.argument("names", nargs=-1, required=True)
@click.option("--from", "source", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Install a copy already on disk instead of downloading (same checks; one NAME).")
@click.option("--url", default=None, help="Another address of the same file (a mirror; one NAME).")
@click.option("--force", is_flag=True, help="Install again even if the weights are in the cache.")
def fetch_weights_command(**options) -> None:
    """Download named third-party weights, check their SHA-256, convert where needed.

    NAMES: mobilenet-v2-imagenet (Google's quantised TFLite MobileNetV2, converted to
    torchvision's layout), resnet18-imagenet (torchvision's), biggan-128-authors (G_ema.pth
    from the reference code's pretrained_biggan archive, the paper's generator; no digest is
    published, so the first install records it and later ones are checked), kept in torch
    hub's checkpoints folder ($TORCH_HOME/hub/checkpoints); biggan-deep-128 (the hub repository, into
    huggingface_hub's cache; its revision and digests recorded at the first download and
    checked on every later use). `saliency fetch-weights biggan-deep-128 resnet18-imagenet`
    gets all the biggan profile needs.
    """
    from pipelines.fetch_weights import FetchWeightsConfig, run_fetch_weights

    run_fetch_weights(config_from(FetchWeightsConfig, options), log=click.echo)
