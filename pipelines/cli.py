"""The ``saliency`` command line: one sub-command per stage, the same option names throughout.

Bad input ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from saliency import __version__
from saliency.core import limits as L
from saliency.core.errors import ConfigError, UserError, one_line
from pipelines.options import (DEVICE_HELP, data_root_option, device_option, flag_names,
                               generator_option, option_range, precision_option)


def parse_int_list(text: str | None) -> list[int] | None:
    """``"1,5,9"`` -> ``[1, 5, 9]``; None stays None."""
    if text is None:
        return None
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise UserError(f"expected a comma-separated list of integers, got {text!r}") from exc
    if not values:
        raise UserError("the class list is empty")
    return values


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="saliency")
def cli() -> None:
    """Saliency detection from a GAN's latent directions, with no pixel labels.

    Stages (Voynov & Babenko, ICML 2020): discover latent directions and the
    background-removal direction, synthesize (image, mask) pairs with it, train a U-Net
    on them, evaluate on a saliency benchmark such as ECSSD.
    """


@cli.command()
@generator_option
@click.option("--n", "count", type=option_range(L.GRID_IMAGES), default=16, show_default=True, help="Number of images.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file to write the grid to.")
@click.option("--classes", default=None,
              help="Comma-separated class indices, cycled over the images (conditional generators).")
@click.option("--seed", type=option_range(L.SEED), default=0, show_default=True, help="Seed of the latents and classes.")
@device_option
@click.option("--nrow", type=option_range(L.GRID_IMAGES), default=None, help="Images per grid row (default: about square).")
@click.option("--resolution", type=option_range(L.RESOLUTION), default=None,
              help="Image size, for generators that take one (scenes).")
@click.option("--weights", default=None,
              help="Weights: a folder (biggan-deep-128) or file (dcgan-faces); default: hub cache / package.")
@click.option("--truncation", type=float, default=None,
              help="Truncation (biggan-deep-128: default 0.4; biggan-128: a normal cut at +-T, default none).")
@click.option("--latent-space", type=click.Choice(["w", "z"]), default=None,
              help="stylegan2: shift and sample in W (default, as the paper's code) or in Z.")
def sample(generator_name, count, out, classes, seed, device, nrow, resolution, weights, truncation,
           latent_space) -> None:
    """Render a grid of samples from a generator."""
    from pipelines.sample import SampleConfig, run_sample

    config = SampleConfig(
        generator=generator_name,
        count=count,
        out=out,
        classes=parse_int_list(classes),
        seed=seed,
        device=device,
        nrow=nrow,
        generator_options={"resolution": resolution, "weights": weights, "truncation": truncation,
                           "latent_space": latent_space},
    )
    path = run_sample(config)
    click.echo(f"wrote {path}")


@cli.command()
@generator_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder (created; holds checkpoints, charts, directions.json).")
@click.option("--deformator", type=click.Choice(["ortho", "unit", "random", "identity"]), default=None,
              help="Direction matrix A: learned orthonormal or unit-norm columns, or a frozen "
                   "random / coordinate baseline. Default: the generator's profile.")
@click.option("--directions", "num_directions", type=option_range(L.DIRECTIONS), default=None, help="K, the number of directions.")
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
@click.option("--checkpoint-every", type=option_range(L.COUNT), default=250, show_default=True, help="Steps between checkpoints.")
@click.option("--refine-bg/--no-refine-bg", default=True, show_default=True,
              help="Refine the best h_bg candidate on the image criterion; kept only if it scores higher.")
@click.option("--refine-steps", type=option_range(L.REFINE_STEPS), default=300, show_default=True, help="Steps of the h_bg refinement.")
@click.option("--bg-search/--no-bg-search", default=None,
              help="Search the directions for h_bg. Default: the generator's profile (off for sngan-mnist).")
@click.option("--bg-direction", default=None, metavar="INDEX[:MAGNITUDE]",
              help="Use this direction as h_bg instead of the automatic choice.")
@click.option("--bg-samples", type=option_range(L.BG_SAMPLES), default=128, show_default=True, help="Samples for scoring h_bg candidates.")
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
@click.option("--log-every", type=option_range(L.COUNT), default=50, show_default=True, help="Steps between metrics.jsonl lines.")
@click.option("--resolution", type=option_range(L.RESOLUTION), default=None,
              help="Image size, for generators that take one (scenes).")
@click.option("--train-resolution", type=option_range(L.RESOLUTION), default=None,
              help="Image size for the training game only (scenes default: 32; directions carry over).")
@click.option("--weights", default=None, help="Generator weights (see `saliency sample --help`).")
@click.option("--truncation", type=float, default=None, help="Truncation (biggan-deep-128, biggan-128).")
@click.option("--latent-space", type=click.Choice(["w", "z"]), default=None,
              help="stylegan2: discover directions in W (default, as the paper's code) or in Z.")
@precision_option
@click.option("--compile", "compile_game", is_flag=True,
              help="torch.compile G and R for the game (pays off on long runs; costs a compile per process).")
def discover(**params) -> None:
    """Stage 1: learn K latent directions and find the background-removal direction h_bg."""
    from pipelines.discover import config_from_options, run_discover

    summary = run_discover(config_from_options(**params))
    if summary.get("part"):  # a torchrun worker other than rank 0
        return
    bg = summary["bg_direction"]
    click.echo(f"RCA {summary['rca']:.3f} over {summary['num_directions']} directions "
               f"({summary['steps']} steps, {summary['train_seconds']:.0f} s)")
    if summary.get("stopped_early"):
        click.echo(f"stopped early at step {summary['stopped_early']['step']}: {summary['stopped_early']['rule']}")
    if summary.get("effects"):
        effects = summary["effects"]
        click.echo(f"effects: mean |cos| {effects['mean_abs_cos']:.3f}, diversity {effects['diversity']:.3f}")
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
    click.echo(f"wrote {Path(params['out']) / 'directions.json'}")




@cli.command()
@click.option("--run", "--run-dir", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A finished discovery run (holds directions.json with h_bg). Under torchrun: --run-dir.")
@click.option("--n", "--count", "count", type=option_range(L.PAIRS), required=True,
              help="Number of (image, mask) pairs to keep. Under torchrun: --count.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: shards, manifest.json, preview.png. Rerun the same command to resume.")
@data_root_option
@click.option("--dataset", default="ecssd", show_default=True, help="Dataset whose train images vote for classes.")
@click.option("--classes", default=None, help="Comma-separated class indices to use instead of voting.")
@click.option("--classifier", default=None,
              help="Voting classifier: resnet18-imagenet, mobilenet-v2-imagenet or scenes-shapes "
                   "(default: the generator's; for BigGAN ResNet-18 when its weights are on disk, else MobileNetV2).")
@click.option("--classifier-weights", default=None, help="Classifier weights file/folder instead of the default.")
@click.option("--top-k", type=option_range(L.TOP_K), default=5, show_default=True, help="Classes each image votes for.")
@click.option("--class-fraction", type=option_range(L.POSITIVE_FRACTION), default=0.25, show_default=True,
              help="Fraction of all classes kept, the most voted first.")
@click.option("--threshold", type=option_range(L.POSITIVE_FRACTION), default=None, help="Whiteness threshold (default: the run's, 0.95).")
@click.option("--shift", "magnitude", type=option_range(L.POSITIVE), default=None, help="Shift along h_bg (default: the run's magnitude).")
@click.option("--min-area", type=option_range(L.FRACTION), default=0.05, show_default=True, help="Smallest kept mask area (fraction).")
@click.option("--max-area", type=option_range(L.FRACTION), default=0.5, show_default=True, help="Largest kept mask area (fraction).")
@click.option("--strict-area", is_flag=True, help="Keep min < area < max, the bounds themselves out (the reference code's rule).")
@click.option("--bg-vector", type=click.Choice(["run", "column"]), default="run", show_default=True,
              help="run: the run's h_bg as chosen (possibly refined); column: the unit column of A it is, or was "
                   "refined from (the paper's shift, with --shift 26).")
@click.option("--component-filter", "component_fraction", type=option_range(L.POSITIVE_FRACTION), default=None,
              help="Drop mask components smaller than this fraction of the largest (follow-up work: 0.2). Off by default.")
@click.option("--bimodal-filter/--no-bimodal-filter", default=False, show_default=True,
              help="Reject pairs whose shifted image is not bimodal (Otsu separability < 0.8).")
@click.option("--batch", "batch_size", type=option_range(L.GAME_BATCH), default=None, help="Latents per batch (default 256; BigGAN 32).")
@click.option("--shard-size", type=option_range(L.SHARD_SIZE), default=1024, show_default=True, help="Pairs per shard file.")
@click.option("--seed", type=option_range(L.SEED), default=0, show_default=True)
@device_option
@click.option("--ground-truth/--no-ground-truth", default=True, show_default=True,
              help="Score kept masks against the generator's exact masks, where it has them (scenes).")
@precision_option
@click.option("--generator", default=None,
              help="Only for a run of your own package.module:factory: the same spec, to trust it (a run folder "
                   "names code to run only by registered name).")
def synthesize(run_dir, count, out, data_root, dataset, classes, classifier, classifier_weights, top_k, class_fraction,
               threshold, magnitude, min_area, max_area, strict_area, bg_vector, component_fraction, bimodal_filter,
               batch_size, shard_size, seed, device, ground_truth, precision, generator) -> None:
    """Stage 2: vote for classes, then write N (image, mask) pairs made with h_bg."""
    from pipelines.synthesize import SynthesizeConfig, run_synthesize

    config = SynthesizeConfig(
        run=run_dir, count=count, out=out, data_root=data_root, dataset=dataset, classes=parse_int_list(classes),
        classifier=classifier, classifier_weights=classifier_weights, top_k=top_k, class_fraction=class_fraction,
        threshold=threshold, magnitude=magnitude, min_area=min_area, max_area=max_area, strict_area=strict_area,
        bg_vector=bg_vector, component_fraction=component_fraction, bimodal=bimodal_filter, batch_size=batch_size, shard_size=shard_size,
        seed=seed, device=device, ground_truth=ground_truth, precision=precision, generator=generator,
    )
    manifest = run_synthesize(config)
    if manifest.get("part"):  # a torchrun worker other than rank 0: rank 0 reports
        return
    if manifest.get("skipped"):
        click.echo(f"{out} already holds {manifest['count']} pairs; nothing to do")
        return
    click.echo(f"kept {manifest['count']} pairs of {manifest['candidates']} candidates "
               f"(acceptance {manifest['acceptance_rate']:.3f}); classes {manifest['classes']}; "
               f"{manifest['seconds']:.1f} s")
    if manifest.get("ground_truth"):
        click.echo(f"ground truth: mask IoU {manifest['ground_truth']['mask_iou']:.3f}")
    click.echo(f"wrote {Path(out) / 'manifest.json'}")


@cli.command()
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
def vote(dataset, split, classifier, classifier_weights, out, data_root, top_k, class_fraction, device) -> None:
    """The class vote of stage 2 on its own: which classes a long synthesis would draw."""
    from saliency.core.artifacts import refuse_output_in_inputs, write_json
    from saliency.classifiers import CLASSIFIERS, build_classifier
    from saliency.datasets import get_spec, open_dataset, resolve_data_root
    from saliency.core.device import resolve_device
    from saliency.ensure import classifier_weights as weights_of, dataset_need, ensure, weights_need
    from saliency.voting import run_vote

    if classifier not in CLASSIFIERS:  # the options first, then what is missing
        raise UserError(f"unknown classifier {classifier!r}; known: {', '.join(sorted(CLASSIFIERS))}")
    refuse_output_in_inputs(out, {"--data-root": resolve_data_root(data_root) / get_spec(dataset).folder,
                                  "--classifier-weights": classifier_weights})
    ensure([weights_need(weights_of(classifier, generator="") if classifier_weights is None else None),
            dataset_need(dataset, data_root)], log=click.echo)  # fetched once if missing
    model = build_classifier(classifier, classifier_weights)
    folder = open_dataset(dataset, data_root, split)
    record = run_vote(model, folder, top_k, class_fraction, resolve_device(device))
    record = {"settings": {"classifier": classifier, "dataset": dataset, "split": split, "top_k": top_k,
                           "fraction": class_fraction}, **record}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out.parent}: {exc.strerror or exc}") from exc
    write_json(out, record)
    names = record.get("class_names", {})
    counts = record["counts"]
    click.echo(f"{record['images']} images voted in {record['seconds']:.0f} s; {len(record['classes'])} classes chosen")
    for c in record["classes"][:10]:
        click.echo(f"  {counts[str(c)]:5d}  {c:4d}  {names.get(str(c), '')}")
    if len(record["classes"]) > 10:
        click.echo(f"  ... and {len(record['classes']) - 10} more")
    click.echo(f"wrote {out}")


@cli.command("fetch-weights")
@click.argument("names", nargs=-1, required=True)
@click.option("--from", "source", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Install a copy already on disk instead of downloading (same checks; one NAME).")
@click.option("--url", default=None, help="Another address of the same file (a mirror; one NAME).")
@click.option("--force", is_flag=True, help="Install again even if the weights are in the cache.")
def fetch_weights(names, source, url, force) -> None:
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
    from saliency.pretrained import HUB_WEIGHTS, fetch_weights as fetch, installed_path, spec

    if (source or url) and len(names) > 1:
        raise UserError("--from and --url take one NAME")
    for name in names:  # every name known before anything is fetched
        if name != HUB_WEIGHTS:
            spec(name)
    for name in names:
        if name == HUB_WEIGHTS:
            if source or url:
                raise UserError(f"{name} comes through huggingface_hub: --from and --url do not apply "
                                "(set HF_ENDPOINT for a mirror, or pass --weights DIR to the commands)")
            record = fetch(name)
            click.echo(f"{name}: in huggingface_hub's cache; revision and SHA-256 recorded in {record}")
            continue
        existed = installed_path(name).is_file()
        path = fetch(name, source=source, url=url, force=force)
        click.echo(f"{name}: {'already installed at' if existed and not force else 'installed'} {path}")


@cli.command("fetch-data")
@click.argument("dataset")
@data_root_option
@click.option("--mirror", default=None,
              help="Base URL that serves the same archive names (default: $SALIENCY_DATA_MIRROR, else the official site).")
@click.option("--from", "source", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder on disk instead of the network: the published archives, or the unpacked dataset "
                   "(the same checks).")
@click.option("--force", is_flag=True, help="Replace the dataset if it is already there.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the unpacked files against the known content checksum.")
def fetch_data(dataset, data_root, mirror, source, force, verify) -> None:
    """Download a saliency benchmark's official archives, verify them, unpack them safely."""
    from saliency.datasets import resolve_data_root
    from saliency.fetch import fetch_dataset

    if source is not None and mirror is not None:
        raise UserError("--from and --mirror are two sources: give one")
    folder = fetch_dataset(dataset, resolve_data_root(data_root), mirror=mirror, force=force, verify_content=verify,
                           source=source)
    click.echo(f"wrote {folder}")


@cli.command("train-unet")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A synthetic dataset folder from `saliency synthesize`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Model folder: checkpoint, metrics, loss curve, model.safetensors + model.json.")
@click.option("--profile", type=click.Choice(["embedded", "biggan", "paper"]), default=None,
              help="Default settings: paper = the paper's (its plain U-Net from scratch, no augmentation); "
                   "biggan = this project's choice for BigGAN pairs (a ResNet-34 encoder, augmentation); "
                   "embedded = measured for a 2-core CPU. Default: from the data's generator.")
@click.option("--encoder", default=None,
              help="U-Net encoder (segmentation-models-pytorch name), e.g. resnet18. Another encoder than the "
                   "profile's starts from scratch unless --encoder-weights imagenet.")
@click.option("--encoder-weights", type=click.Choice(["imagenet", "none"]), default=None,
              help="imagenet (smp's when in its cache; for mobilenet_v2 also the weights of "
                   "`saliency fetch-weights mobilenet-v2-imagenet`) or none. Default: the profile's.")
@click.option("--freeze-encoder/--train-encoder", default=None,
              help="Train the decoder only (the encoder's batch-norm statistics frozen too). Default: the profile's.")
@click.option("--steps", type=option_range(L.STEPS), default=None, help="Training steps (total, also when resuming).")
@click.option("--batch", "batch_size", type=option_range(L.TRAIN_BATCH), default=None, help="Batch size (paper: 128).")
@click.option("--lr", type=option_range(L.POSITIVE), default=None, help="Adam learning rate (paper: 0.005).")
@click.option("--lr-step", type=option_range(L.COUNT), default=None, help="Multiply the rate by --lr-gamma every this many steps.")
@click.option("--lr-gamma", type=option_range(L.POSITIVE_FRACTION), default=None, help="Learning-rate factor (paper: 0.2).")
@click.option("--temperature", type=option_range(L.POSITIVE), default=None, help="Logits are divided by this in the loss (paper: 10).")
@click.option("--val-count", type=option_range(L.VAL_COUNT), default=None, help="Pairs held out for validation (the last ones).")
@click.option("--val-every", type=option_range(L.COUNT), default=None, help="Steps between validations.")
@click.option("--checkpoint-every", type=option_range(L.COUNT), default=None, help="Steps between checkpoints.")
@click.option("--workers", type=option_range(L.WORKERS), default=None, help="DataLoader worker processes.")
@click.option("--hflip", type=option_range(L.FRACTION), default=None, help="Horizontal flip probability (default 0.5).")
@click.option("--scale-min", type=option_range(L.POSITIVE_FRACTION), default=None, help="Random resized crop: smallest kept area (1 = off).")
@click.option("--color-jitter", type=option_range(L.FRACTION), default=None, help="Colour jitter probability (0 = off).")
@click.option("--seed", type=option_range(L.SEED), default=0, show_default=True)
@device_option
@click.option("--resume", is_flag=True, help="Continue the training in --out from its last checkpoint.")
@precision_option
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the U-Net (worth it on long GPU runs).")
@click.option("--stream", is_flag=True,
              help="Train on fresh pairs drawn from the generator at every step, with --data's synthesis settings (the "
                   "paper's way: 15,000 x 128 distinct pairs); --data's stored pairs then only score the model.")
def train_unet(data, out, profile, encoder, encoder_weights, freeze_encoder, steps, batch_size, lr, lr_step, lr_gamma, temperature,
               val_count, val_every, checkpoint_every, workers, hflip, scale_min, color_jitter, seed, device,
               resume, precision, compile_model, stream) -> None:
    """Stage 3: train a U-Net on the synthetic (image, mask) pairs."""
    from pipelines.train_unet import TrainUNetConfig, run_train_unet

    summary = run_train_unet(TrainUNetConfig(
        data=data, out=out, profile=profile, encoder=encoder, encoder_weights=encoder_weights,
        freeze_encoder=freeze_encoder, steps=steps,
        batch_size=batch_size, lr=lr, lr_step=lr_step, lr_gamma=lr_gamma, temperature=temperature,
        val_count=val_count, val_every=val_every, checkpoint_every=checkpoint_every, workers=workers, hflip=hflip,
        scale_min=scale_min, color_jitter=color_jitter, seed=seed, device=device, resume=resume, precision=precision,
        compile=compile_model, stream=stream))
    if summary.get("part"):  # a torchrun worker other than rank 0
        return
    val = summary["validation"]
    click.echo(f"{summary['steps']} steps in {summary['seconds']:.0f} s; held-out MAE {val.get('val_mae', float('nan')):.4f}, "
               f"IoU {val.get('val_iou', float('nan')):.3f}")
    click.echo(f"wrote {Path(out) / 'model.json'}")


@cli.command("eval")
@click.option("--dataset", required=True, help="ecssd (or another named benchmark), or scenes (rendered, exact masks).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A model folder from `saliency train-unet`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: metrics.json, metrics.md, predictions.png.")
@data_root_option
@click.option("--size", type=option_range(L.INFERENCE_SIDE), default=None, help="Shorter side at inference (default 128; scenes: its resolution).")
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
def eval_command(dataset, model_dir, out, data_root, size, protocol, save_maps, scenes_count, device, precision,
                 card) -> None:
    """Stage 4: score a trained U-Net on a saliency benchmark (test split and all images)."""
    from pipelines.evaluate import EvalConfig, run_eval

    summary = run_eval(EvalConfig(dataset=dataset.lower(), model=model_dir, out=out, data_root=data_root, size=size,
                                  protocol=protocol, save_maps=save_maps, scenes_count=scenes_count, device=device,
                                  precision=precision, card=card))
    click.echo(summary["table"].rstrip())
    click.echo(f"{summary['images_per_second']:.1f} images/s; wrote {Path(out) / 'metrics.json'}")


MODEL_HELP = ("A model folder from `saliency train-unet` (or a pipeline's OUT/unet), or a Hugging Face Hub "
              "repository id owner/name[@revision].")


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder; each input's relative path is mirrored under it (NAME.map.png, ...).")
@click.option("--save", default="map", show_default=True,
              help="Comma-separated kinds: map (8-bit soft map), mask (binary at --threshold), cutout (RGBA, "
                   "background transparent), overlay (the map over the image).")
@click.option("--threshold", type=option_range(L.OPEN_FRACTION), default=0.5,
              show_default=True, help="Where a map becomes a mask.")
@click.option("--size", type=option_range(L.INFERENCE_SIDE), default=None, help="Shorter side at inference (default 128, as eval).")
@click.option("--batch", "batch_size", type=option_range(L.PREDICT_BATCH), default=8, show_default=True,
              help="Images a forward pass (batched by padded size).")
@click.option("--workers", type=option_range(L.WORKERS), default=None,
              help="Processes that decode images while the model runs (default: 1 per 4 cores, at most 4; 0 decodes in the main process).")
@click.option("--overwrite", is_flag=True, help="Redo images whose outputs already exist (default: skip them).")
@device_option
@precision_option
def predict(inputs, model, out, save, threshold, size, batch_size, workers, overwrite, device, precision) -> None:
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

    kinds = tuple(kind.strip() for kind in save.split(",") if kind.strip())
    result = run_predict(PredictConfig(model=model, inputs=list(inputs), out=out, save=kinds, threshold=threshold,
                                       size=size, batch_size=batch_size, workers=workers, overwrite=overwrite,
                                       device=device, precision=precision, warn=warn))
    click.echo(f"wrote {result['written']} image(s) ({result['images_per_second']:.1f} images/s), "
               f"{result['already_done']} already done, {result['skipped']} skipped; outputs in {result['out']}")
    if result["skipped"]:
        sys.exit(1)


@cli.command()
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .onnx file to write.")
@click.option("--opset", type=option_range(L.OPSET), default=18, show_default=True, help="ONNX opset version.")
def export(model, out, opset) -> None:
    """Export a trained model to ONNX (dynamic batch, height and width; needs the `onnx` extra).

    The graph takes float32 RGB in [0, 1], (n, 3, H, W) with H and W multiples of the model's
    stride, and returns the salient-class probability (n, H, W); model.json's card rides along
    as metadata.
    """
    from saliency.onnx_export import export_onnx

    info = export_onnx(model, out, opset=opset)
    click.echo(f"wrote {out} (opset {info['opset']}, inputs H and W multiples of {info['stride']}; "
               f"max |onnxruntime - torch| {info['max_abs_difference']:.2e} on a check input)")


@cli.command()
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
@click.option("--pairs", type=option_range(L.PAIRS), default=None, help="Synthetic pairs (default: embedded 10,000, biggan 100,000).")
@click.option("--unet-steps", type=option_range(L.STEPS), default=None, help="U-Net steps (default: the profile's).")
@click.option("--discover-steps", type=option_range(L.STEPS), default=None,
              help="Discovery steps (default: embedded 1,200; otherwise the generator's profile).")
@click.option("--classes", default=None, help="Stage 2: comma-separated class indices instead of the vote.")
@click.option("--classifier", default=None,
              help="Stage 2's voting classifier (default: the generator's; for BigGAN ResNet-18 when its weights "
                   "are on disk, else MobileNetV2).")
@click.option("--classifier-weights", default=None, help="Stage 2: the classifier's weights file instead of the default.")
@click.option("--min-area", type=option_range(L.FRACTION), default=None, help="Stage 2: smallest kept mask area (default 0.05).")
@click.option("--max-area", type=option_range(L.FRACTION), default=None, help="Stage 2: largest kept mask area (default 0.5).")
@click.option("--encoder", default=None, help="Stage 3: the U-Net encoder (default: the profile's).")
@click.option("--encoder-weights", type=click.Choice(["imagenet", "none"]), default=None,
              help="Stage 3: the encoder's starting weights (default: the profile's; none trains it from scratch).")
@click.option("--freeze-encoder/--train-encoder", default=None, help="Stage 3: train the decoder only, or all.")
@click.option("--bg-direction", default=None, metavar="INDEX[:MAGNITUDE]",
              help="Stage 1: use this direction as h_bg instead of the search's choice (after looking at the "
                   "charts, as the paper did); on a finished discovery, training is not repeated (h_bg, scores and charts are).")
@device_option
@precision_option
@click.option("--plan", "plan_only", is_flag=True,
              help="Measure instead of run: build every stage at its real sizes on --device, time a few steps of "
                   "each, print the projected time, memory and disk per stage and write OUT/plan.json (nothing "
                   "else; nothing is downloaded).")
def pipeline(out, data_root, profile, weights, pairs, unet_steps, discover_steps, classes, classifier,
             classifier_weights, min_area, max_area, encoder, encoder_weights, freeze_encoder, bg_direction, device,
             precision, plan_only) -> None:
    """The main job: discover, synthesize, train, evaluate; each stage skipped when already complete."""
    from pipelines.pipeline import PipelineConfig, run_pipeline

    result = run_pipeline(PipelineConfig(out=out, profile=profile, data_root=data_root, device=device,
                                         weights=weights, pairs=pairs, unet_steps=unet_steps,
                                         discover_steps=discover_steps, classes=parse_int_list(classes),
                                         classifier=classifier, classifier_weights=classifier_weights,
                                         encoder=encoder, encoder_weights=encoder_weights,
                                         freeze_encoder=freeze_encoder, bg_direction=bg_direction,
                                         min_area=min_area, max_area=max_area,
                                         precision=precision, plan=plan_only, log=click.echo))
    if plan_only:
        from pipelines.plan import PLAN_NAME, out_of_memory_line, plan_table

        click.echo("\n" + plan_table(result["plan"]))
        click.echo(f"\nwrote {Path(out) / PLAN_NAME}")
        too_big = out_of_memory_line(result["plan"])
        if too_big:
            raise UserError(too_big)
        return
    for name, table in result["tables"].items():
        click.echo(f"\n{name}:\n{table.rstrip()}")
    click.echo(f"\nwrote {Path(out) / 'pipeline.json'}")
    if result.get("report"):
        click.echo(f"wrote {result['report']} (open it in a browser)")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--generator", "generator_name", default=None,
              help="Generator of every cell (see `saliency generators`). Default: discover's (scenes).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Sweep folder: cells/ (one discover run each), table.md, table.csv, cells.csv, rca.png.")
@click.option("--vary", multiple=True, metavar="KEY=V1,V2,...",
              help="A discover option and its values, e.g. directions=16,32,64 or shift-loss-weight=0,0.25. "
                   "Give it twice for a grid.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds: one cell per seed and setting.")
@click.option("--device", default=None, help=DEVICE_HELP + " Under torchrun: each process's own GPU.")
@click.option("--plan", "plan_only", is_flag=True, help="List the cells and their state, run nothing.")
@click.pass_context
def sweep(ctx, generator_name, out, vary, seeds, device, plan_only) -> None:
    """Run discover over a grid of settings (resumable), then tabulate and chart RCA.

    Any other option is passed to every cell's discover, e.g. --steps 2000 --batch 64.
    """
    from pipelines.sweep import cell_state, plan_sweep, run_sweep

    try:
        seed_list = [int(part) for part in seeds.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise UserError(f"--seeds takes a comma-separated list of integers, got {seeds!r}") from exc
    plan = plan_sweep(out, list(vary), seed_list, list(ctx.args), generator_name, discover)
    if plan_only:
        for cell in plan.cells:
            click.echo(f"{cell_state(cell):12s} {cell.folder}")
        return
    result = run_sweep(plan, device=device, log=click.echo)
    if result["finished"]:
        click.echo(result["table"].rstrip())
        click.echo(f"wrote {Path(out) / 'table.md'}, table.csv, cells.csv, rca.png")


@cli.command("import-run")
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="New discovery run folder (directions.json, directions.safetensors) for `saliency synthesize`.")
@click.option("--bg-direction", default=None, metavar="INDEX[:MAGNITUDE]",
              help="h_bg: a direction and its shift (negative flips it; default 26, the reference code's). "
                   "Default: the direction human_annotation.txt names as background removal.")
@click.option("--generator", "generator_name", default=None,
              help="Our generator for the run (default: from its gan_type: BigGAN -> biggan-128, ...).")
@click.option("--step", type=option_range(L.NON_NEGATIVE_COUNT), default=None, help="Which models/deformator_STEP.pt (default: the last).")
@click.option("--weights", default=None, help="The generator's weights: recorded for later stages, and the latent size checked.")
@click.option("--latent-dim", type=option_range(L.LATENT_DIM), default=None, help="Latent size, for an id deformator without --weights.")
def import_run_command(source, out, bg_direction, generator_name, step, weights, latent_dim) -> None:
    """Convert a run of the paper's reference code (args.json, models/deformator_N.pt) into a discovery run."""
    from pipelines.import_run import import_run

    summary = import_run(source, out, bg_direction=bg_direction, generator=generator_name, step=step,
                         weights=weights, latent_dim=latent_dim)
    bg = summary["bg_direction"]
    click.echo(f"{summary['num_directions']} directions of {summary['generator']} ({summary['deformator']}, step "
               f"{summary['imported_from']['step']}); h_bg: direction {bg['index']}, sign {bg['sign']:+d}, "
               f"magnitude {bg['magnitude']:g} ({bg['extra']['chosen_by']})")
    click.echo(f"wrote {Path(out) / 'directions.json'}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The page to write (default: RUN_DIR/report.html).")
def report(run_dir, out) -> None:
    """One HTML page of a run folder of any stage, or of a whole pipeline folder: numbers,
    curves, pictures and a slider along every direction. Opens from the file system; nothing
    to install, no network."""
    import time

    from pipelines.report import write_report

    started = time.perf_counter()
    path = write_report(run_dir, out)
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB, {time.perf_counter() - started:.1f} s)")


@cli.command()
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default answers this machine only; 0.0.0.0 (or ::) opens the "
                   "server to the network, and the start-up line says so.")
@click.option("--port", type=option_range(L.PORT), default=7860, show_default=True, help="Port (0: any free one).")
@device_option
@precision_option
@click.option("--size", type=option_range(L.INFERENCE_SIDE), default=None, help="Shorter side at inference (default 128, as predict).")
@click.option("--threshold", type=option_range(L.OPEN_FRACTION), default=0.5, show_default=True,
              help="Where a map becomes a mask (kind=mask).")
@click.option("--max-batch", type=option_range(L.PREDICT_BATCH), default=8, show_default=True,
              help="Images one forward pass gathers from concurrent requests.")
@click.option("--max-wait-ms", type=option_range(L.WAIT_MS), default=10.0, show_default=True,
              help="How long a request waits for others to share its forward pass.")
@click.option("--max-queue", type=option_range(L.QUEUE), default=128, show_default=True,
              help="Requests in flight; one more is refused with 503 and Retry-After, unread.")
@click.option("--max-upload-mb", type=option_range(L.UPLOAD_MB), default=20, show_default=True,
              help="Largest body, in MB (413 past it; never read further).")
@click.option("--max-pixels", type=option_range(L.IMAGE_PIXELS), default=40_000_000, show_default=True,
              help="Largest image, in pixels, refused from its header (413) before decoding.")
@click.option("--timeout", "timeout_s", type=option_range(L.REQUEST_SECONDS), default=60.0, show_default=True,
              help="Seconds a request may take, upload to answer (504 past it).")
@click.option("--threads", type=option_range(L.THREADS), default=None,
              help="Threads that decode uploads and encode PNGs (default: one per core, at most 4).")
@click.option("--warm-up/--no-warm-up", default=True, show_default=True,
              help="Before serving, run a pass at each batch size of the common padded shapes (photos up to "
                   "2:1), so kernels are built at start-up, not under the first clients.")
def serve(**options) -> None:
    """Serve a trained model over HTTP: an API (POST /api/predict) and a web page at /.

    Concurrent requests share forward passes; every refusal is a JSON line with its status.
    Ctrl-C or SIGTERM answers the requests in flight, then stops. docs/serving.md has the details.
    """
    from pipelines.serve import ServeConfig, run_serve

    def announce(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    counts = run_serve(ServeConfig(**options), announce)
    click.echo(f"saliency serve: stopped after {counts['served']} answered request(s), {counts['refused']} refused, "
               f"{counts['forward_passes']} forward pass(es)")


@cli.command()
def generators() -> None:
    """List the registered generators."""
    from directions.generators import available_generators
    from directions.generators.registry import get_factory

    for name in available_generators():
        doc = (get_factory(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:18s} {doc[0] if doc else ''}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn user errors into one line and exit code 2."""
    from saliency.core.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cli.main(args=argv, prog_name="saliency", standalone_mode=False)
    except ConfigError as exc:  # named by its config field: say the flag the user typed instead
        command = next((cli.commands[arg] for arg in argv if arg in cli.commands), None)
        forwarded = cli.commands["discover"] if command is cli.commands["sweep"] else None  # a sweep's cells
        return _fail(exc.naming(flag_names(forwarded, command)), exc.exit_code)
    except UserError as exc:
        return _fail(str(exc), exc.exit_code)
    except click.exceptions.Abort:
        return _fail("aborted", 130, prefix="saliency: ")
    except KeyboardInterrupt:
        return _fail("interrupted", 130, prefix="saliency: ")
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        return _fail(f"{exc.format_message()}{hint}", exc.exit_code)
    except BrokenPipeError:
        return 1
    except ValueError as exc:  # a NUL in a path: no shell can pass one, a Python caller of main can
        if "null" not in str(exc):
            raise
        return _fail(f"a path or name holds a NUL character ({exc})", 2)
    except OSError as exc:  # a filesystem failure no check caught: still one line, never a traceback
        return _fail(_describe_os_error(exc), 1)
    return 0


def _fail(message: str, code: int, prefix: str = "saliency: error: ") -> int:
    if "tqdm" in sys.modules:  # a bar left open by the failed stage would glue itself to the message
        from saliency.core.progress import close_progress_bars

        close_progress_bars()
    click.echo(f"{prefix}{one_line(message)}", err=True)
    return code


def _describe_os_error(exc: OSError) -> str:
    from saliency.core.artifacts import DISK_FULL_ERRNOS

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in DISK_FULL_ERRNOS:
        return f"disk full{where}: {exc.strerror}"
    return f"{exc.strerror or exc}{where}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
