"""``saliency train-unet``: stage 3, a U-Net trained on the synthetic pairs."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core import limits as L
from pipelines.options import config_from, device_option, option_range, precision_option


@click.command("train-unet")
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
@click.option("--lr-step", type=option_range(L.COUNT), default=None,
              help="Multiply the rate by --lr-gamma every this many steps.")
@click.option("--lr-gamma", type=option_range(L.POSITIVE_FRACTION), default=None,
              help="Learning-rate factor (paper: 0.2).")
@click.option("--temperature", type=option_range(L.POSITIVE), default=None,
              help="Logits are divided by this in the loss (paper: 10).")
@click.option("--val-count", type=option_range(L.VAL_COUNT), default=None,
              help="Pairs held out for validation (the last ones).")
@click.option("--val-every", type=option_range(L.COUNT), default=None, help="Steps between validations.")
@click.option("--checkpoint-every", type=option_range(L.COUNT), default=None, help="Steps between checkpoints.")
@click.option("--workers", type=option_range(L.WORKERS), default=None, help="DataLoader worker processes.")
@click.option("--hflip", type=option_range(L.FRACTION), default=None, help="Horizontal flip probability (default 0.5).")
@click.option("--scale-min", type=option_range(L.POSITIVE_FRACTION), default=None,
              help="Random resized crop: smallest kept area (1 = off).")
@click.option("--color-jitter", type=option_range(L.FRACTION), default=None,
              help="Colour jitter probability (0 = off).")
@click.option("--seed", type=option_range(L.SEED), default=0, show_default=True)
@device_option
@click.option("--resume", is_flag=True, help="Continue the training in --out from its last checkpoint.")
@precision_option
@click.option("--compile", is_flag=True, help="torch.compile the U-Net (worth it on long GPU runs).")
@click.option("--stream", is_flag=True,
              help="Train on fresh pairs drawn from the generator at every step, with --data's synthesis settings (the "
                   "paper's way: 15,000 x 128 distinct pairs); --data's stored pairs then only score the model.")
def train_unet_command(**options) -> None:
    """Stage 3: train a U-Net on the synthetic (image, mask) pairs."""
    from pipelines.train_unet import TrainUNetConfig, run_train_unet

    summary = run_train_unet(config_from(TrainUNetConfig, options))
    if summary.get("part"):  # a torchrun worker other than rank 0
        return
    val = summary["validation"]
    click.echo(f"{summary['steps']} steps in {summary['seconds']:.0f} s; held-out MAE "
               f"{val.get('val_mae', float('nan')):.4f}, "
               f"IoU {val.get('val_iou', float('nan')):.3f}")
    click.echo(f"wrote {Path(options['out']) / 'model.json'}")
