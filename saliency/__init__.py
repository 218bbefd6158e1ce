"""Saliency detection from a GAN's latent directions, with no pixel labels.

The four stages (see README): ``directions`` discovers latent directions and the
background-removal direction h_bg; ``saliency`` synthesizes (image, mask) pairs, trains a
U-Net on them and evaluates it; ``pipelines`` wires the stages together. The command line
lives in :mod:`saliency.cli`.
"""

__version__ = "0.1.0"
