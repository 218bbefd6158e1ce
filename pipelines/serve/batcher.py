"""Requests that arrive together, answered by one forward pass.

One inference thread owns the model. It takes the first waiting image, then whatever else
arrives until ``max_batch`` images are held or the first one has waited ``max_wait`` seconds
(a lone request waits no longer than that), and runs them in one pass per padded shape (the
U-Net's input is one tensor, so only images of one padded shape can share a pass; batching
never changes an image's own shape, so its map does not depend on who it was batched with).
Images that queued up while a pass ran are taken at once, without waiting. Results go back
to the event loop that asked, through its futures.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from saliency.detector import PreparedImage, SaliencyDetector


@dataclass
class _Job:
    prepared: PreparedImage
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)


_STOP = object()


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
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="saliency-inference", daemon=True)
        self.forward_passes = 0
        self.images = 0
        self.largest_batch = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Answer what is queued, then end the thread."""
        self._jobs.put(_STOP)
        self._thread.join()

    async def predict(self, prepared: PreparedImage) -> np.ndarray:
        loop = asyncio.get_running_loop()
        job = _Job(prepared, loop.create_future(), loop)
        self._jobs.put(job)
        return await job.future

    # ------------------------------------------------------------------ the inference thread
    def _serve(self) -> None:
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = first.arrived + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    job = self._jobs.get(timeout=max(0.0, deadline - time.monotonic())) \
                        if time.monotonic() < deadline else self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
            self._run(batch)
        while True:  # what arrived before the stop is still answered
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                self._run([job])

    def _run(self, batch: list[_Job]) -> None:
        waiting = [job for job in batch if not job.future.done()]  # a timed-out request is skipped
        by_shape: dict[tuple[int, int], list[_Job]] = {}
        for job in waiting:
            by_shape.setdefault(job.prepared.shape, []).append(job)
        for group in by_shape.values():
            try:
                maps = self.detector.predict_prepared([job.prepared for job in group])
                errors: list[BaseException | None] = [None] * len(group)
            except Exception as exc:  # noqa: BLE001 - each request of the pass is told, the thread goes on
                maps, errors = [None] * len(group), [exc] * len(group)
            self.forward_passes += 1
            self.images += len(group)
            self.largest_batch = max(self.largest_batch, len(group))
            for job, saliency_map, error in zip(group, maps, errors):
                job.prepared = None  # type: ignore[assignment]  # the padded pixels are no longer needed
                try:
                    job.loop.call_soon_threadsafe(_settle, job.future, saliency_map, error)
                except RuntimeError:  # that loop has closed: the server is gone
                    pass
