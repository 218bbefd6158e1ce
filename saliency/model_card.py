"""The short model card inside ``model.json``: what the model is, what it was made from, how
it scored. Written by ``saliency train-unet``; ``saliency eval`` adds its table."""

from __future__ import annotations

import json
import os
from pathlib import Path

from saliency import __version__

PAPER = "Voynov & Babenko, Unsupervised Discovery of Interpretable Directions in the GAN Latent Space, ICML 2020"


def training_card(manifest: dict, encoder: str, data_folder: str) -> dict:
    generator = manifest.get("generator") or "unknown"
    photographs = generator.startswith("biggan")
    return {
        "summary": (f"A U-Net ({encoder} encoder) that gives each pixel the probability of belonging to the "
                    f"image's salient object. Trained with no human labels: on {manifest['count']:,} "
                    f"(image, mask) pairs that the {generator} generator drew and its background direction "
                    "h_bg masked (" + PAPER + ")."),
        "task": "salient object detection (binary: background / salient)",
        "generator": generator,
        "generator_options": manifest.get("generator_options"),
        "classes": manifest.get("classes"),
        "discovery_run": manifest.get("run"),
        "h_bg_shift": manifest.get("shift"),
        "training_data": {"folder": data_folder, "pairs": manifest["count"],
                          "resolution": [manifest["height"], manifest["width"]],
                          "labels": "none: masks come from the GAN's h_bg shift"},
        "limitations": ("trained on a natural-image GAN's images; see the evaluations" if photographs else
                        f"trained on {generator} images, which are not photographs: on photographs it does "
                        "worse than a centred Gaussian (see the evaluations); the paper's result needs a "
                        "natural-image GAN such as BigGAN"),
        "made_by": f"gan-saliency {__version__} (saliency train-unet)",
        "evaluations": {},
    }


def record_evaluation(model_folder: str | os.PathLike, dataset: str, summary: dict, metrics_file: str) -> bool:
    """Add an evaluation to the model's card (the latest per dataset, with the folder it read);
    False (and nothing changed) where the folder is not ours to write (a Hub cache, a read-only
    copy) or holds no card (a model from before cards)."""
    from saliency.core.artifacts import write_json
    from saliency.unet import MODEL_META

    path = Path(model_folder) / MODEL_META
    try:
        if path.is_symlink() or not os.access(path.parent, os.W_OK):
            return False
        meta = json.loads(path.read_text(encoding="utf-8"))
        card = meta.get("card")
        if not isinstance(card, dict):
            return False
        keep = ("paper_mae", "mae", "max_f", "s_measure", "max_e", "iou", "images")
        card.setdefault("evaluations", {})[dataset] = {
            "splits": {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items() if k in keep}
                       for name, result in summary["splits"].items()},
            "references": {ref: {name: round(r["max_f"], 4) for name, r in per.items()}
                           for ref, per in summary.get("references", {}).items()},
            "protocol": summary["protocol"]["resize"] + f"; size {summary['protocol']['size']}",
            "source": summary.get("source"),  # which folder (a subset of a benchmark is named as such)
            "metrics_file": metrics_file,
        }
        write_json(path, meta)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True
