"""``saliency serve``: a trained model over HTTP."""

from __future__ import annotations

import sys

import click

from saliency.core import limits as L
from pipelines.options import MODEL_HELP, device_option, option_range, precision_option


@click.command("serve")
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default answers this machine only; 0.0.0.0 (or ::) opens the "
                   "server to the network, and the start-up line says so.")
@click.option("--port", type=option_range(L.PORT), default=7860, show_default=True, help="Port (0: any free one).")
@device_option
@precision_option
@click.option("--size", type=option_range(L.INFERENCE_SIDE), default=None,
              help="Shorter side at inference (default 128, as predict).")
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
def serve_command(**options) -> None:
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
