"""``saliency generators``: the registered generators."""

from __future__ import annotations

import click


@click.command("generators")
def generators_command() -> None:
    """List the registered generators."""
    from directions.generators import available_generators
    from directions.generators.registry import get_factory

    for name in available_generators():
        doc = (get_factory(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:18s} {doc[0] if doc else ''}")
