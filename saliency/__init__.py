"""Saliency detection from a GAN's latent directions, with no pixel labels.

The four stages (see README.md and docs/stages/): ``directions`` discovers latent directions and the
background-removal direction h_bg; ``saliency`` synthesizes (image, mask) pairs, trains a
U-Net on them and evaluates it; ``pipelines`` wires the stages together. The command line
lives in :mod:`pipelines.cli`; the trained detector as a Python object is
:class:`saliency.SaliencyDetector`.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``from saliency import SaliencyDetector`` without importing torch for every CLI start."""
    if name == "SaliencyDetector":
        from saliency.detector import SaliencyDetector

        return SaliencyDetector
    raise AttributeError(f"module 'saliency' has no attribute {name!r}")


__all__ = ["SaliencyDetector", "__version__"]
