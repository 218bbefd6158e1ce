"""The settings of ``saliency serve``, each with its default and the range the CLI enforces."""

from __future__ import annotations

from dataclasses import dataclass

from saliency.core import limits
from saliency.core.fields import bounded
from saliency.core.runtime import usable_cores
from saliency.detector import DEFAULT_BATCH


def default_threads() -> int:
    """Decoding and encoding threads: one per core, at most 4 (Pillow's decoders and the PNG
    encoder release the GIL, so threads use the cores the model leaves)."""
    return min(4, usable_cores())


@dataclass
class ServeConfig:
    model: str
    host: str = "127.0.0.1"  # loopback: reachable from this machine only, until the user says otherwise
    port: int = bounded(limits.PORT, 7860)
    device: str = "auto"
    precision: str = "auto"
    size: int | None = bounded(limits.INFERENCE_SIDE)  # shorter side at inference; None: the model's 128
    threshold: float = bounded(limits.OPEN_FRACTION, 0.5)  # where a map becomes a mask
    max_batch: int = bounded(limits.PREDICT_BATCH, DEFAULT_BATCH)
    max_wait_ms: float = bounded(limits.WAIT_MS, 10.0)
    max_queue: int = bounded(limits.QUEUE, 128)  # requests in flight; one more is refused (503)
    max_upload_mb: int = bounded(limits.UPLOAD_MB, 20)
    max_pixels: int = bounded(limits.IMAGE_PIXELS, 40_000_000)
    timeout_s: float = bounded(limits.REQUEST_SECONDS, 60.0)  # a request's whole life, upload to answer
    threads: int | None = bounded(limits.THREADS)  # None: default_threads()
    warm_up: bool = True  # a pass at each batch size of the common padded shapes before serving

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1_000_000
