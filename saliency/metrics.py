"""The field's saliency metrics, computed by PySODMetrics, plus IoU and pixel accuracy.

PySODMetrics (``py_sod_metrics``) is the reference implementation most papers use: maps are
uint8 0-255 at the ground truth's size, min-max normalised per image, ground truth binarised
at > 128. From it: MAE, max F-beta (beta^2 = 0.3), S-measure (alpha = 0.5), max E-measure.
IoU and accuracy follow the follow-up work (Voynov et al. 2021): the raw map thresholded at
0.5, per image, then averaged.

Two MAEs, because they differ: PySODMetrics' ``mae`` min-max normalises each map first
(MATLAB's ``mapminmax``), so a map that is nearly constant is stretched to 0-1; the paper's
``paper_mae`` (the reference code's ``metrics.MAE``) is the raw mean over the image's pixels of
|map - mask|, the map being the model's foreground probability at the image's size. The
paper's 0.099 compares with ``paper_mae`` only.

Two reference maps anchor the numbers: an all-zero map and a centred Gaussian prior.
"""

from __future__ import annotations

import warnings

import numpy as np

METRIC_KEYS = ("paper_mae", "mae", "max_f", "s_measure", "max_e", "iou", "accuracy")
METRIC_NAMES = {"paper_mae": "MAE (paper)", "mae": "MAE (PySOD)", "max_f": "max F", "s_measure": "S",
                "max_e": "max E", "iou": "IoU", "accuracy": "acc"}


class SaliencyMetrics:
    """Accumulates one split's scores, image by image."""

    def __init__(self) -> None:
        import py_sod_metrics as sod  # imported on first use: it pulls in OpenCV

        self.mae = sod.MAE()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "use FmeasureV2": same numbers, V1 is what papers report
            self.fm = sod.Fmeasure(beta=0.3)
        self.sm = sod.Smeasure(alpha=0.5)
        self.em = sod.Emeasure()
        self.ious: list[float] = []
        self.accuracies: list[float] = []
        self.paper_maes: list[float] = []

    def update(self, prediction: np.ndarray, truth: np.ndarray, probability: np.ndarray | None = None) -> None:
        """``prediction`` uint8 (H, W) 0-255; ``truth`` bool or uint8 0/255 (H, W);
        ``probability`` the float map in [0, 1] that ``prediction`` was rounded from, for the
        paper's MAE (without it, ``prediction / 255``)."""
        if prediction.dtype != np.uint8:
            raise TypeError(f"predictions must be uint8 maps, got {prediction.dtype}")
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in size")
        if probability is not None and probability.shape != truth.shape:
            raise ValueError(f"probability {probability.shape} and ground truth {truth.shape} differ in size")
        gt = truth.astype(np.uint8) * 255 if truth.dtype == bool else truth
        self.paper_maes.append(paper_mae(prediction / 255.0 if probability is None else probability, gt > 128))
        for metric in (self.mae, self.fm, self.sm, self.em):
            metric.step(pred=prediction, gt=gt)
        binary = prediction >= 128  # >= 0.5 of 255
        target = gt > 128
        union = np.count_nonzero(binary | target)
        self.ious.append(np.count_nonzero(binary & target) / union if union else 1.0)
        self.accuracies.append(float(np.mean(binary == target)))

    def __len__(self) -> int:
        return len(self.ious)

    # What each PySODMetrics object accumulates, image by image (pysodmetrics 1.x).
    _PER_IMAGE = {"mae": ("maes",), "fm": ("precisions", "recalls", "adaptive_fms", "changeable_fms"),
                  "sm": ("sms",), "em": ("adaptive_ems", "changeable_ems")}

    @classmethod
    def merged(cls, parts: list["SaliencyMetrics"]) -> "SaliencyMetrics":
        """The scores of the union of ``parts``' images, without scoring any image twice (the
        metrics cost more than the network in ``saliency eval``)."""
        total = cls()
        for part in parts:
            for metric, fields in cls._PER_IMAGE.items():
                for name in fields:
                    getattr(getattr(total, metric), name).extend(getattr(getattr(part, metric), name))
            total.ious.extend(part.ious)
            total.accuracies.extend(part.accuracies)
            total.paper_maes.extend(part.paper_maes)
        return total

    def results(self) -> dict:
        if not self.ious:
            raise ValueError("no images were scored")
        return {
            "paper_mae": float(np.mean(self.paper_maes)),
            "mae": float(self.mae.get_results()["mae"]),
            "max_f": float(self.fm.get_results()["fm"]["curve"].max()),
            "s_measure": float(self.sm.get_results()["sm"]),
            "max_e": float(self.em.get_results()["em"]["curve"].max()),
            "iou": float(np.mean(self.ious)),
            "accuracy": float(np.mean(self.accuracies)),
            "images": len(self.ious),
        }


def paper_mae(probability: np.ndarray, truth: np.ndarray) -> float:
    """The paper's MAE of one image: the raw mean of |probability - truth| over its pixels
    (no normalisation of the map); ``truth`` bool or 0/1."""
    return float(np.mean(np.abs(probability.astype(np.float64) - truth.astype(np.float64))))


def zero_map(height: int, width: int) -> np.ndarray:
    return np.zeros((height, width), dtype=np.uint8)


def gaussian_prior(height: int, width: int) -> np.ndarray:
    """255 exp(-q/2), q = ((y - h/2) / (h/4))^2 + ((x - w/2) / (w/4))^2, in pixel coordinates."""
    y = np.arange(height, dtype=np.float64)[:, None]
    x = np.arange(width, dtype=np.float64)[None, :]
    q = ((y - height / 2) / (0.25 * height)) ** 2 + ((x - width / 2) / (0.25 * width)) ** 2
    return np.round(255 * np.exp(-q / 2)).astype(np.uint8)


REFERENCES = {"zero map": zero_map, "Gaussian prior": gaussian_prior}


def to_uint8_map(probability: np.ndarray) -> np.ndarray:
    """A [0, 1] map to the uint8 0-255 map the metrics (and saved PNGs) use."""
    return np.clip(np.round(probability * 255), 0, 255).astype(np.uint8)


def markdown_table(rows: list[tuple[str, dict]]) -> str:
    header = "| method | images | " + " | ".join(METRIC_NAMES[k] for k in METRIC_KEYS) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(METRIC_KEYS)]
    for name, scores in rows:
        values = " | ".join(f"{scores[k]:.3f}" for k in METRIC_KEYS)
        lines.append(f"| {name} | {scores['images']} | {values} |")
    return "\n".join(lines) + "\n"
