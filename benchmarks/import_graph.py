"""The project's import graph, checked against its layer rule (docs/architecture.md).

    python benchmarks/import_graph.py            # every module's imports, by layer
    python benchmarks/import_graph.py --check    # only what breaks the rule; exit 1 if anything does
    python benchmarks/import_graph.py --sizes    # the largest modules and the longest functions

Layers, bottom to top: saliency.core (infrastructure) <- directions (stage 1) <- the rest of
saliency (stages 2-4 and the public API) <- pipelines (one run per command, and the CLI) <- tools
(the maintainers' scripts that rebuild the shipped checkpoints, not installed). A
module imports only its own layer or lower ones, no two modules import each other (directly or
around a loop), and only pipelines imports click. Imports inside functions count: they run
too, only later.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("saliency", "directions", "pipelines", "tools")
LAYERS = ("saliency.core", "directions", "saliency", "pipelines", "tools")  # bottom to top
CLI_ONLY = ("click",)


def layer_of(module: str) -> int:
    if module == "saliency.core" or module.startswith("saliency.core."):
        return 0
    return LAYERS.index(module.split(".")[0])


def modules(root: Path = REPO) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph(root: Path = REPO) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project edges, third-party top-level names) per module, from the source (not imported)."""
    known = modules(root)
    edges: dict[str, set[str]] = {name: set() for name in known}
    external: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # ``from a.b import c``: the module a.b.c if there is one, else a.b
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                           for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] not in PACKAGES:
                    external[name].add(target.split(".")[0])
                    continue
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in known and target != name:
                    edges[name].add(target)
    return edges, external


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other around a loop (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def violations(root: Path = REPO) -> list[str]:
    edges, external = import_graph(root)
    problems = [f"{a} (layer {LAYERS[layer_of(a)]}) imports {b} (layer {LAYERS[layer_of(b)]}), above it"
                for a in sorted(edges) for b in sorted(edges[a]) if layer_of(b) > layer_of(a)]
    problems += [f"{name} imports {lib}, which only pipelines may" for name in sorted(external)
                 for lib in CLI_ONLY if lib in external[name] and layer_of(name) < LAYERS.index("pipelines")]
    problems += ["import cycle: " + " <-> ".join(group) for group in cycles(edges)]
    return problems


def sizes(root: Path = REPO, top: int = 5) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(lines, module) of the largest modules and (lines, module:function) of the longest functions."""
    largest, longest = [], []
    for name, path in modules(root).items():
        text = path.read_text(encoding="utf-8")
        largest.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                longest.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    return sorted(largest, reverse=True)[:top], sorted(longest, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print only what breaks the rule; exit 1 if anything")
    parser.add_argument("--sizes", action="store_true", help="print the largest modules and longest functions")
    parser.add_argument("--root", type=Path, default=REPO, help="the project folder (default: this checkout)")
    args = parser.parse_args(argv)
    if args.sizes:
        largest, longest = sizes(args.root)
        print("largest modules:", ", ".join(f"{name} ({lines})" for lines, name in largest))
        print("longest functions:", ", ".join(f"{name} ({lines})" for lines, name in longest))
        return 0
    problems = violations(args.root)
    if not args.check:
        edges, _ = import_graph(args.root)
        for layer, title in enumerate(LAYERS):
            print(f"== {title}")
            for name in sorted(n for n in edges if layer_of(n) == layer):
                print(f"  {name} -> {', '.join(sorted(edges[name])) or '-'}")
    for problem in problems:
        print(problem)
    print(f"{len(problems)} break(s) of the layer rule")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
