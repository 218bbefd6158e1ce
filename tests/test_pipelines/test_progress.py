"""Progress to the end: every phase of a stage that can last minutes advances a bar of its own
to the total it announced, and a bar into a file or pipe writes a line at least every 10 s
(benchmarks/silent_stretch.py measures the longest silence of a whole pipeline)."""

from __future__ import annotations

import io

import numpy as np
import torch
from tqdm import tqdm

from saliency.core import progress


def test_a_bar_into_a_file_redraws_at_least_every_ten_seconds():
    bar = progress.progress_bar(3, "phase")  # pytest captures stderr: not a terminal
    try:
        assert bar.mininterval == progress.FILE_INTERVAL <= 10
        assert bar.miniters == 1 and not bar.dynamic_miniters  # every update checks the clock
    finally:
        bar.close()


def test_redraw_if_due_writes_a_line_without_advancing_once_the_interval_has_passed():
    out = io.StringIO()
    with tqdm(total=10, desc="synthesize", file=out, mininterval=0.0) as bar:
        before = out.getvalue().count("\r")
        bar.set_postfix(acceptance="0.00", refresh=False)
        progress.redraw_if_due(bar)
        assert out.getvalue().count("\r") > before and "acceptance=0.00" in out.getvalue()
    quiet = io.StringIO()
    with tqdm(total=10, desc="synthesize", file=quiet, mininterval=3600.0) as bar:
        drawn = quiet.getvalue()
        progress.redraw_if_due(bar)
        assert quiet.getvalue() == drawn  # not due yet
    progress.redraw_if_due(tqdm(total=1, disable=True))  # a disabled bar: nothing, no error


def test_an_inner_phase_shows_in_the_outer_bars_postfix():
    out = io.StringIO()
    with tqdm(total=4, desc="train-unet", file=out, mininterval=0.0) as bar:
        bar.update(4)
        inner = progress.PostfixProgress(bar, 8, "held-out")
        inner.update(3)
        inner.update(5)
    assert "held-out 3/8" in out.getvalue() and "held-out 8/8" in out.getvalue()
    off = progress.PostfixProgress(tqdm(total=1, disable=True), 8, "held-out")
    off.update(8)
    assert off.n == 8


def test_held_out_scoring_advances_by_the_pairs_it_scores():
    from saliency.training import validate

    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), rng.integers(0, 2, (16, 16), dtype=np.uint8))
             for _ in range(10)]
    counted = _Counter()
    scores = validate(torch.nn.Conv2d(3, 2, 1), pairs, np.arange(3, 10), torch.device("cpu"), 1.0, batch=3, progress=counted)
    assert counted.n == 7 and counted.updates == 3 and set(scores) == {"val_loss", "val_mae", "val_iou"}


def test_every_phase_after_discoverys_training_reaches_its_bars_total(tmp_path, monkeypatch):
    """Final RCA, effects, charts, the h_bg search and its refinement: a bar each, each ending
    at the total it announced (a bar that stops short or runs over misleads about the time left)."""
    import directions.charts
    import pipelines.discover
    from pipelines.discover import DiscoverConfig, run_discover

    bars = []
    real = progress.progress_bar

    def recording(total, desc, **options):
        bar = real(total, desc, **options)
        bars.append(bar)
        return bar

    monkeypatch.setattr(pipelines.discover, "progress_bar", recording)
    monkeypatch.setattr(directions.charts, "progress_bar", recording)
    run_discover(DiscoverConfig(generator="scenes", out=tmp_path / "run", num_directions=3, steps=4, batch_size=8,
                                bg_samples=8, refine_steps=3, rca_samples=40, bg_search=True, refine_bg=True,
                                device="cpu", train_resolution=32, generator_options={"resolution": 32}))
    ended = {bar.desc: (bar.n, bar.total) for bar in bars}
    assert set(ended) == {"final RCA", "effects", "charts", "h_bg search", "h_bg refine"}
    assert all(n == total for n, total in ended.values()), ended
    assert ended["h_bg search"][1] == 3 * 2 * 9 + 2  # every direction at both signs and 9 magnitudes, then the best


class _Counter:
    def __init__(self):
        self.n = self.updates = 0

    def update(self, n=1):
        self.n += n
        self.updates += 1
