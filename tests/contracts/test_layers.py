"""The layer rule of docs/architecture.md holds: saliency.core <- directions (stage 1) <- the
rest of saliency (stages 2-4, the API) <- pipelines (the commands and the CLI); no import
cycles; click only in pipelines. The scan reads the sources, as test_security.py does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import import_graph  # noqa: E402


def test_the_project_keeps_its_layer_rule():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "import_graph.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "0 break(s) of the layer rule"


def _tree(root, files: dict[str, str]):
    for package in ("saliency", "saliency/core", "directions", "pipelines"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for name, source in files.items():
        (root / name).write_text(source)
    return root


@pytest.mark.parametrize("files, expected", [
    ({"saliency/core/errors.py": "from directions.found import x\n", "directions/found.py": ""},
     "saliency.core.errors (layer saliency.core) imports directions.found (layer directions), above it"),
    ({"directions/effects.py": "def main():\n    from pipelines.discover import load_run\n",
      "pipelines/discover.py": ""},
     "directions.effects (layer directions) imports pipelines.discover (layer pipelines), above it"),
    ({"saliency/limits.py": "import click\n"}, "saliency.limits imports click, which only pipelines may"),
    ({"saliency/a.py": "from saliency.b import f\n", "saliency/b.py": "def g():\n    import saliency.a\n"},
     "import cycle: saliency.a <-> saliency.b"),
])
def test_the_scan_finds_each_kind_of_break(tmp_path, files, expected):
    assert expected in import_graph.violations(_tree(tmp_path, files))


def test_a_clean_tree_has_no_break(tmp_path):
    root = _tree(tmp_path, {"saliency/core/errors.py": "import json\n", "directions/run.py": "from saliency.core import errors\n",
                            "saliency/shards.py": "from directions.run import x\n",
                            "pipelines/cli.py": "import click\nfrom saliency.shards import y\n"})
    assert import_graph.violations(root) == []


@pytest.mark.parametrize("module, forbidden", [
    ("directions.discovery", ("pipelines", "click", "saliency.detector", "saliency.training", "saliency.shards")),
    ("directions.run_folder", ("pipelines", "click", "directions.discovery", "directions.charts")),
    ("saliency.shards", ("pipelines", "click", "directions.discovery")),
    ("saliency", ("pipelines", "click", "torch")),
])
def test_importing_a_stage_loads_nothing_above_it(module, forbidden):
    """What the scan cannot see: a package's __init__ runs on every import below it."""
    code = (f"import sys, {module}\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r} or m in {forbidden!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
