"""Where each command-line option is written: how many places a new option touches.

For every option of every ``saliency`` command: 1 for its click declaration, plus each time its
parameter name appears in code between click and the library (the command function's signature
and body, and a config-building helper it calls), plus 1 for the config field that receives it.
The target is 2: the declaration and the field.

    python benchmarks/option_places.py            # one row per command
    python benchmarks/option_places.py --options  # one row per option
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import io
import pkgutil
import sys
import textwrap
import tokenize
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _body_source(function) -> str:
    """The function's source without its decorators (their strings and keywords are the declaration)."""
    source = textwrap.dedent(inspect.getsource(function))
    tree = ast.parse(source)
    node = tree.body[0]
    lines = source.splitlines()
    return "\n".join(lines[node.lineno - 1:])  # lineno is the ``def`` line, after the decorators


def _name_tokens(source: str) -> list[str]:
    """The names in ``source`` but those of its import lines (``from pipelines.plan import ...`` names
    a module, not the --plan option)."""
    import_lines = {line for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for line in range(node.lineno, node.end_lineno + 1)}
    return [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.NAME and tok.start[0] not in import_lines]


def _pipeline_functions() -> dict[str, object]:
    import pipelines

    found = {}
    for info in pkgutil.walk_packages(pipelines.__path__, "pipelines."):
        if ".serve" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                found.setdefault(name, value)
    return found


def _config_classes() -> dict[str, type]:
    functions = _pipeline_functions()
    classes = {}
    for info in pkgutil.walk_packages(importlib.import_module("pipelines").__path__, "pipelines."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and dataclasses.is_dataclass(value) and name.endswith("Config"):
                classes[name] = value
    return classes, functions


def _receiving_parameters(body: str) -> set[str]:
    """The parameters of a function the command calls with ``**options``: they receive the options
    as a config's fields would."""
    tree = ast.parse(body)
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imported[alias.asname or alias.name] = (node.module, alias.name)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported \
                and any(keyword.arg is None for keyword in node.keywords):
            module, name = imported[node.func.id]
            function = getattr(importlib.import_module(module), name)
            names |= set(inspect.signature(function).parameters)
    return names


def places(command, classes: dict[str, type], functions: dict[str, object]) -> dict[str, int]:
    body = _body_source(command.callback)
    tokens = _name_tokens(body)
    helpers = [functions[name] for name in set(tokens)
               if name in functions and functions[name] is not command.callback
               and "config" in name.lower() and not name.startswith("run_")]
    helper_tokens = [tok for helper in helpers for tok in _name_tokens(_body_source(helper))]
    configs = [classes[name] for name in set(tokens + helper_tokens) if name in classes]
    fields = {f.name for config in configs for f in dataclasses.fields(config)} | _receiving_parameters(body)
    if "generator_options" in fields:  # the generator's own options, received by that field's keys
        fields |= set(getattr(importlib.import_module("pipelines.options"), "GENERATOR_OPTIONS", ()))
    counts = {}
    for param in command.params:
        if param.name is None or param.name in {"help", "version"}:
            continue
        counts[param.name] = 1 + tokens.count(param.name) + helper_tokens.count(param.name) + (param.name in fields)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", action="store_true", help="One row per option.")
    args = parser.parse_args()
    from pipelines.cli import cli

    classes, functions = _config_classes()
    print("| command | options | places per option (mean) | most | lines of its command function |")
    print("|---|---:|---:|---:|---:|")
    total = []
    for name in sorted(cli.commands):
        command = cli.commands[name]
        counts = places(command, classes, functions)
        total += counts.values()
        lines = len(_body_source(command.callback).splitlines())
        if counts:
            print(f"| {name} | {len(counts)} | {sum(counts.values()) / len(counts):.1f} | {max(counts.values())} | {lines} |")
        if args.options:
            for option, count in counts.items():
                print(f"|   {option} | | {count} | | |")
    print(f"| all | {len(total)} | {sum(total) / len(total):.1f} | {max(total)} | |")
    cli_module = Path(sys.modules["pipelines.cli"].__file__)
    print(f"\n{cli_module.relative_to(Path(__file__).resolve().parents[1])}: {len(cli_module.read_text().splitlines())} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
