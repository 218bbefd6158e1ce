"""The scores against values known in closed form, not against the library that computes them.

A 10 x 20 ground truth whose left half is the object, and hand-built maps: a perfect one, one
that also marks the next quarter, and an all-zero one. F-beta uses beta^2 = 0.3:
F = 1.3 P R / (0.3 P + R).
"""

from __future__ import annotations

import numpy as np
import pytest

from saliency.metrics import SaliencyMetrics


def _f(precision: float, recall: float) -> float:
    return 1.3 * precision * recall / (0.3 * precision + recall)


def _truth() -> np.ndarray:
    truth = np.zeros((10, 20), dtype=bool)
    truth[:, :10] = True
    return truth


def _scores(prediction: np.ndarray) -> dict:
    metrics = SaliencyMetrics()
    metrics.update(prediction, _truth())
    return metrics.results()


def test_a_perfect_map_scores_perfectly():
    scores = _scores(_truth().astype(np.uint8) * 255)
    assert scores["mae"] == pytest.approx(0.0, abs=1e-9)
    assert scores["max_f"] == pytest.approx(1.0, abs=1e-6)
    assert scores["s_measure"] == pytest.approx(1.0, abs=1e-6)
    # E-measure: the enhanced alignment is 1 at every pixel; PySODMetrics divides its sum by the
    # pixel count minus one (the field's reference code does too), so a perfect map reads N / (N - 1).
    assert scores["max_e"] == pytest.approx(200 / 199, abs=1e-6)
    assert scores["iou"] == 1.0 and scores["accuracy"] == 1.0


def test_a_map_that_spills_over_scores_what_the_counts_say():
    prediction = np.zeros((10, 20), dtype=np.uint8)
    prediction[:, :15] = 200  # the object and the next quarter; normalised per image to 1
    scores = _scores(prediction)
    assert scores["mae"] == pytest.approx(5 / 20, abs=1e-9)  # 5 of 20 columns wrong by 1
    assert scores["max_f"] == pytest.approx(_f(10 / 15, 1.0), abs=1e-6)  # P 2/3, R 1
    assert scores["iou"] == pytest.approx(10 / 15) and scores["accuracy"] == pytest.approx(15 / 20)


def test_an_all_zero_map_scores_what_the_counts_say():
    scores = _scores(np.zeros((10, 20), dtype=np.uint8))
    assert scores["mae"] == pytest.approx(0.5, abs=1e-9)  # half the pixels wrong by 1
    # Its only threshold takes every pixel: P = 1/2 (the object's share), R = 1.
    assert scores["max_f"] == pytest.approx(_f(0.5, 1.0), abs=1e-6)
    assert scores["iou"] == 0.0 and scores["accuracy"] == 0.5


def test_images_are_averaged_not_pooled():
    metrics = SaliencyMetrics()
    metrics.update(_truth().astype(np.uint8) * 255, _truth())  # MAE 0, IoU 1
    metrics.update(np.zeros((10, 20), dtype=np.uint8), _truth())  # MAE 0.5, IoU 0
    scores = metrics.results()
    assert scores["mae"] == pytest.approx(0.25) and scores["iou"] == pytest.approx(0.5)
    assert scores["images"] == 2


def test_the_papers_mae_is_the_raw_mean_where_pysod_stretches_the_map():
    """On an empty 10 x 10 mask, a map of 100/255 everywhere but one pixel at 101/255:
    PySODMetrics min-max normalises it to one lit pixel (MAE 0.01); the paper's formula takes
    the map as it is (MAE about 0.39)."""
    prediction = np.full((10, 10), 100, dtype=np.uint8)
    prediction[0, 0] = 101
    metrics = SaliencyMetrics()
    metrics.update(prediction, np.zeros((10, 10), dtype=bool))
    scores = metrics.results()
    assert scores["mae"] == pytest.approx(0.01, abs=1e-9)
    assert scores["paper_mae"] == pytest.approx((99 * 100 + 101) / 255 / 100, abs=1e-12)


def test_the_papers_mae_reads_the_probability_before_rounding():
    """Given the float map, the paper's MAE is computed from it, not from its uint8 rounding;
    merged splits average it image by image."""
    truth = _truth()
    probability = np.where(truth, 0.9, 0.1001)
    metrics = SaliencyMetrics()
    metrics.update(np.round(probability * 255).astype(np.uint8), truth, probability)
    other = SaliencyMetrics()
    other.update(truth.astype(np.uint8) * 255, truth)
    assert metrics.results()["paper_mae"] == pytest.approx((0.1 + 0.1001) / 2, abs=1e-12)
    assert SaliencyMetrics.merged([metrics, other]).results()["paper_mae"] == pytest.approx((0.1 + 0.1001) / 4)
    with pytest.raises(ValueError, match="probability"):
        metrics.update(np.zeros((10, 20), np.uint8), truth, probability[:5])
