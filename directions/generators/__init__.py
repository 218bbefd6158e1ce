"""Generators by name. Importing this package registers the built-in ones.

Add your own in one file::

    from directions.generators import Generator, register_generator

    class MyGenerator(Generator):
        latent_dim, num_classes, resolution = 128, 0, 64
        def synthesize(self, z, classes):   # z on self.device; return (n, 3, H, W) in [0, 1]
            ...

    @register_generator("my-gan")
    def build_my_gan(weights: str | None = None) -> MyGenerator:
        ...

then import that module (or pass ``--generator my_module:build_my_gan``).
"""

from directions.generators.base import Generator
from directions.generators.registry import available_generators, build_generator, register_generator
from directions.generators import biggan, biggan_pytorch, dcgan_faces, proggan, scenes, sngan, stylegan2  # noqa: F401,E501  (registers them)
from directions.generators.scenes import ScenesGenerator

__all__ = [
    "Generator",
    "ScenesGenerator",
    "available_generators",
    "build_generator",
    "register_generator",
]
