"""Stage 1: generators and the discovery of interpretable latent directions.

``directions.generators`` holds the generator protocol every stage uses and the registry of
generators by name (``scenes``, ``biggan-deep-128``, ``dcgan-faces``).
"""
