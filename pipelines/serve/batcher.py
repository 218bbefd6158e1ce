"""Requests that arrive together, answered by one forward pass.

One inference thread owns the model. The U-Net's input is one tensor, so only images of one
padded shape can share a pass (batching never changes an image's own shape, so its map does
not depend on who it was batched with). The thread serves the shape of the oldest waiting
image: it waits until ``max_batch`` images of that shape are there or that image has waited
``max_wait`` seconds (a lone request waits no longer than that), then runs those images in one
pass; the others keep their place. Images that queued up while a pass ran are taken at once.
oneDNN builds its kernels per input size: ``warm_up`` builds those of the common shapes at
every batch size before the first request (server.py sizes oneDNN's cache to hold them).
Results go back to the event loop that asked, through its futures.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from saliency.detector import PreparedImage, SaliencyDetector


@dataclass
class _Job:
    prepared: PreparedImage
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)



def _settle(future: asyncio.Future, result: np.ndarray | None, error: BaseException | None) -> None:
    if future.done():  # the request gave up (its timeout): nobody is waiting for this map
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """Gathers prepared images into batched forward passes on one thread."""

    def __init__(self, detector: SaliencyDetector, max_batch: int, max_wait_s: float) -> None:
        self.detector, self.max_batch, self.max_wait_s = detector, max_batch, max_wait_s
        self._waiting: deque[_Job] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="saliency-inference", daemon=True)
        self.forward_passes = 0
        self.images = 0
        self.largest_batch = 0

    def start(self) -> None:
        self._thread.start()

    def warm_up(self, longest_ratio: float = 2.0) -> int:
        """One pass at every batch size of every padded shape a photo of aspect ratio up to
        ``longest_ratio`` takes, before the first request: kernels are built (and memory reaches
        its working size) at start-up, not under the first clients; a server that built them as
        requests came kept growing (docs/benchmarks.md). Returns the passes run."""
        size, stride = self.detector.size, self.detector.stride
        short = size + (-size % stride)
        sides = range(short, int(longest_ratio * size) + stride, stride)
        shapes = {(short, side) for side in sides} | {(side, short) for side in sides}
        for shape in sorted(shapes):
            image = PreparedImage(np.full((*shape, 3), 127, np.uint8), *shape, *shape)
            for batch in range(1, self.max_batch + 1):
                self.detector.predict_prepared([image] * batch)
        return len(shapes) * self.max_batch

    def stop(self) -> None:
        """Answer what is waiting, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join()

    async def predict(self, prepared: PreparedImage) -> np.ndarray:
        loop = asyncio.get_running_loop()
        job = _Job(prepared, loop.create_future(), loop)
        with self._changed:
            self._waiting.append(job)
            self._changed.notify()
        return await job.future

    # ------------------------------------------------------------------ the inference thread
    def _serve(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._stopping:
                    self._changed.wait()
                if not self._waiting:  # stopping, and nothing left to answer
                    return
                first = self._waiting[0]
                deadline = first.arrived + self.max_wait_s
                while not self._stopping and self._count(first.prepared.shape) < self.max_batch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                batch = self._take(first.prepared.shape)
            self._run(batch)

    def _count(self, shape: tuple[int, int]) -> int:
        return sum(1 for job in self._waiting if job.prepared.shape == shape)

    def _take(self, shape: tuple[int, int]) -> list[_Job]:
        """Up to max_batch waiting images of ``shape``, oldest first; the rest keep their order."""
        batch, rest = [], deque()
        for job in self._waiting:
            (batch if job.prepared.shape == shape and len(batch) < self.max_batch else rest).append(job)
        self._waiting = rest
        return batch

    def _run(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]  # a timed-out request is skipped
        if not batch:
            return
        try:
            maps = self.detector.predict_prepared([job.prepared for job in batch])
            errors: list[BaseException | None] = [None] * len(batch)
        except Exception as exc:  # noqa: BLE001 - each request of the pass is told, the thread goes on
            maps, errors = [None] * len(batch), [exc] * len(batch)
        self.forward_passes += 1
        self.images += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for job, saliency_map, error in zip(batch, maps, errors):
            job.prepared = None  # type: ignore[assignment]  # the padded pixels are no longer needed
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, saliency_map, error)
            except RuntimeError:  # that loop has closed: the server is gone
                pass
