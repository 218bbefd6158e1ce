"""Generators by name, so a stage takes ``--generator NAME`` and a user adds one in one file.

Register a factory with :func:`register_generator`; build with :func:`build_generator`.
A name of the form ``package.module:factory`` imports a user's own factory without
registering it first, but only when the user gave it (the command line, Python): a name read
from a file (a run folder, a manifest, a pipeline record) goes through
:func:`generator_named_in_file` first, which lets only registered names through. A shared run
folder must not choose code to run, as a shared pickle must not.
"""

from __future__ import annotations

import importlib
import inspect
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from directions.generators.base import Generator
from saliency.core.device import resolve_device
from saliency.core.errors import ConfigError, UserError

GeneratorFactory = Callable[..., Generator]

_REGISTRY: dict[str, GeneratorFactory] = {}


def register_generator(name: str) -> Callable[[GeneratorFactory], GeneratorFactory]:
    """Decorator: make ``factory(**options) -> Generator`` buildable as ``name``."""

    def decorate(factory: GeneratorFactory) -> GeneratorFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"generator {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorate


@contextmanager
def substituted(name: str, factory: GeneratorFactory) -> Iterator[None]:
    """Inside the block, ``name`` builds through ``factory`` (the plan's random weights in the
    real architecture, when the real ones are not on disk); restored after."""
    saved = _REGISTRY[name]
    _REGISTRY[name] = factory
    try:
        yield
    finally:
        _REGISTRY[name] = saved


def available_generators() -> list[str]:
    return sorted(_REGISTRY)


def get_factory(name: str) -> GeneratorFactory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a user's module: any import failure is their input
            raise UserError(f"cannot import generator module {module_name!r}: {exc}") from exc
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise UserError(f"{module_name!r} has no generator factory {attr!r}")
        return factory
    known = ", ".join(available_generators())
    raise UserError(f"unknown generator {name!r}; known: {known} (or package.module:factory)")


def generator_named_in_file(name: object, source: object, given: str | None = None) -> str:
    """The generator a file names, if it may be built: a registered name, or exactly the
    ``package.module:factory`` the user gave (``given``, from their command line). Anything
    else is refused before any import."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{source} names no generator")
    if given is not None and given != name:
        raise UserError(f"{source} was made with generator {name!r}, not {given!r}")
    if name in _REGISTRY or name == given:
        return name
    if ":" in name:
        raise ConfigError(f"{source} names generator {name!r} by import path, and a file never chooses code to "
                        f"run: give `generator` {name} yourself if you trust it")
    raise UserError(f"{source} names unknown generator {name!r}; known: {', '.join(available_generators())}")


def build_generator(
    name: str,
    device: str | torch.device | None = None,
    **options,
) -> Generator:
    """Build generator ``name``, frozen and in eval mode, on ``device`` (default: best).

    ``options`` with value None are dropped, so CLI flags left unset fall back to each
    generator's defaults; an option the generator does not take is a :class:`UserError`.
    """
    factory = get_factory(name)
    options = {key: value for key, value in options.items() if value is not None}
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(options) - set(params)) if not takes_any else []
    if unknown:
        flags = ", ".join("--" + key.replace("_", "-") for key in unknown)
        raise UserError(f"generator {name!r} does not take {flags}")
    try:
        generator = factory(**options)
    except (ValueError, TypeError) as exc:  # a factory refusing its options
        raise UserError(f"generator {name!r}: {exc}") from exc
    if not isinstance(generator, Generator):
        raise UserError(f"generator factory {name!r} did not return a directions Generator")
    generator.eval().requires_grad_(False)
    return generator.to(resolve_device(device))
