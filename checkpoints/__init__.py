"""Installed as the package ``gan_saliency_checkpoints``: the small artifacts the toolkit needs at
run time (saliency/core/shipped.py). Run outputs written here are not part of it."""
