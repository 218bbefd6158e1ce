"""``saliency export``: a trained model as an ONNX graph."""

from __future__ import annotations

from pathlib import Path

import click

from saliency.core import limits as L
from pipelines.options import MODEL_HELP, option_range


@click.command("export")
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .onnx file to write.")
@click.option("--opset", type=option_range(L.OPSET), default=18, show_default=True, help="ONNX opset version.")
def export_command(**options) -> None:
    """Export a trained model to ONNX (dynamic batch, height and width; needs the `onnx` extra).

    The graph takes float32 RGB in [0, 1], (n, 3, H, W) with H and W multiples of the model's
    stride, and returns the salient-class probability (n, H, W); model.json's card rides along
    as metadata.
    """
    from saliency.onnx_export import export_onnx

    info = export_onnx(**options)
    click.echo(f"wrote {options['out']} (opset {info['opset']}, inputs H and W multiples of {info['stride']}; "
               f"max |onnxruntime - torch| {info['max_abs_difference']:.2e} on a check input)")
