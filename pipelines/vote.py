"""``saliency vote``: stage 2's class vote on its own, written to a classes.json.

A long synthesis draws only the classes a real dataset's images vote for; this runs that vote
alone, so it can be looked at (or reused with ``synthesize --classes``) before the long run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from saliency.core import limits
from saliency.core.errors import ConfigError, UserError
from saliency.core.fields import bounded, check_ranges


@dataclass
class VoteConfig:
    classifier: str
    out: Path
    dataset: str = "ecssd"
    split: str = "train"
    classifier_weights: str | None = None
    data_root: Path | None = None
    top_k: int = bounded(limits.TOP_K, 5)
    class_fraction: float = bounded(limits.FRACTION, 0.25)
    device: str = "auto"


def run_vote(config: VoteConfig, log: Callable[[str], None] = print) -> dict:
    """Check the options, fetch what is missing, vote, write ``config.out``; the record written."""
    from saliency import voting
    from saliency.classifiers import CLASSIFIERS, build_classifier
    from saliency.core.artifacts import ensure_writable_dir, refuse_output_in_inputs, write_json
    from saliency.core.device import resolve_device
    from saliency.datasets import get_spec, open_dataset, resolve_data_root
    from saliency.downloads.prefetch import classifier_weights as weights_of, dataset_need, ensure, weights_need

    check_ranges(config)
    if Path(config.out).is_dir():
        raise ConfigError(f"`out` {config.out} is a folder; give a file name (classes.json)")
    if config.classifier not in CLASSIFIERS:  # the options first, then what is missing
        raise UserError(f"unknown classifier {config.classifier!r}; known: {', '.join(sorted(CLASSIFIERS))}")
    refuse_output_in_inputs(config.out, {
        "--data-root": resolve_data_root(config.data_root) / get_spec(config.dataset).folder,
        "--classifier-weights": config.classifier_weights})
    ensure([weights_need(weights_of(config.classifier, generator="") if config.classifier_weights is None else None),
            dataset_need(config.dataset, config.data_root)], log=log)  # fetched once if missing
    ensure_writable_dir(Path(config.out).parent)  # before the vote: a folder that cannot be made loses no work
    model = build_classifier(config.classifier, config.classifier_weights)
    folder = open_dataset(config.dataset, config.data_root, config.split)
    record = voting.run_vote(model, folder, config.top_k, config.class_fraction, resolve_device(config.device))
    record = {"settings": {"classifier": config.classifier, "dataset": config.dataset, "split": config.split,
                           "top_k": config.top_k, "fraction": config.class_fraction}, **record}
    write_json(config.out, record)
    return record
