"""Loading never runs code, nothing runs through a shell, downloads land whole or not at all.

Other security tests live with the code they guard: archive extraction refusing absolute
paths, '..', links and oversized entries (test_fetch.py), decompression bombs refused by
pixel count (test_datasets.py and the matrix in test_bad_inputs.py), weights files that would
run code (test_generators.py and the matrix).
"""

from __future__ import annotations

import ast
import http.server
import threading
from pathlib import Path

import pytest

from conftest import REPO
from saliency.core.errors import UserError
from saliency.downloads.transfer import download

UNPICKLERS = {"pickle", "marshal", "dill", "shelve", "joblib", "cloudpickle"}
# Only to name the exception torch's weights-only loader raises: nothing is unpickled with it.
PICKLE_IMPORT_ALLOWED = {"saliency/core/weights.py"}
# Findings the tests make on purpose, each with its reason.
DELIBERATE = {
    ("tests/contracts/test_bad_inputs.py", "import pickle"): "crafts pickles that would run code, to show they are refused",
    ("tests/test_saliency/test_predict.py", "exec()"): "runs the README's Python snippet as written",
}
PICKLE_WRITERS = {"torch.save", "pickle.dump", "pickle.dumps", "joblib.dump", "dill.dump", "cloudpickle.dump"}


def _all_sources() -> list[Path]:
    """Every Python file of the repository: the library, the commands, benchmarks, tests, setup.py."""
    skip = {".git", "build", "dist", "__pycache__", ".eggs"}
    files = [path for path in REPO.rglob("*.py")
             if not skip & set(path.relative_to(REPO).parts) and ".egg-info" not in str(path)]
    assert len(files) > 60  # the scan really looks at the project, tests included
    return files


def _project_sources() -> list[Path]:
    """The project's own code: everything but the tests."""
    return [path for path in _all_sources() if path.relative_to(REPO).parts[0] != "tests"]


def _shell_scripts() -> list[Path]:
    scripts = [REPO / ".ci" / "run", *sorted((REPO / "benchmarks").glob("*.sh"))]
    assert all(path.is_file() for path in scripts)
    return scripts


def _call_name(node: ast.Call) -> str:
    parts, target = [], node.func
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name):
        parts.append(target.id)
    return ".".join(reversed(parts))


def _keyword(node: ast.Call, name: str):
    for keyword in node.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _findings(tree: ast.AST, allow_pickle_import: bool = False) -> list[str]:
    """Imports and calls that could run code from data, or run a shell."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNPICKLERS and not allow_pickle_import:
                    found.append(f"import {alias.name} at line {node.lineno}")
        if isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            names = {alias.name for alias in node.names}
            if module in UNPICKLERS or (module == "torch" and "load" in names) or (
                    module == "subprocess" and names & {"getoutput", "getstatusoutput"}) or (
                    module == "os" and names & {"system", "popen"}):
                found.append(f"from {node.module} import {', '.join(sorted(names))} at line {node.lineno}")
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        short = name.rsplit(".", 1)[-1]
        if name in ("eval", "exec") and not isinstance(node.func, ast.Name):
            name = f"{name} method"  # model.eval() and the like: not the builtins
        if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.load", "marshal.loads",
                    "dill.load", "dill.loads", "joblib.load", "shelve.open", "os.system", "os.popen",
                    "subprocess.getoutput", "subprocess.getstatusoutput", "asyncio.create_subprocess_shell",
                    "yaml.load", "yaml.unsafe_load", "eval", "exec") or (
                    name.startswith(("os.exec", "os.spawn"))):
            found.append(f"{name}() at line {node.lineno}")
        if short == "load" and name.split(".")[0] in ("torch",):
            flag = _keyword(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{name}() without weights_only=True at line {node.lineno}")
        if short == "load" and name.split(".")[0] in ("np", "numpy"):
            flag = _keyword(node, "allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{name}(allow_pickle=...) at line {node.lineno}")
        shell = _keyword(node, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            found.append(f"{name}(shell=...) at line {node.lineno}")
    return found


def test_the_project_writes_no_pickle():
    """Only safetensors and JSON: no pickle writer outside the tests, whose fixtures write the
    third-party formats (a hub BigGAN, the authors' .pth files) that the loaders must refuse or read."""
    writers = {}
    for path in _project_sources():
        calls = [f"{_call_name(node)}() at line {node.lineno}" for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call) and _call_name(node) in PICKLE_WRITERS]
        if calls:
            writers[str(path.relative_to(REPO))] = calls
    assert writers == {}
    for script in _shell_scripts():
        text = script.read_text(encoding="utf-8")
        assert "torch.save" not in text and "import pickle" not in text and "torch.load(" not in text, script


def test_the_scan_catches_what_it_looks_for():
    bad = ast.parse("import pickle, torch, subprocess, numpy as np\n"
                    "pickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
                    "subprocess.run('ls', shell=True)\nnp.load(p, allow_pickle=True)\neval('1')\n")
    assert len(_findings(bad)) == 7  # the import of pickle counts too
    aliased = ast.parse("from pickle import loads as l\nfrom torch import load\nimport subprocess\n"
                        "subprocess.getoutput('ls')\nimport os\nos.execv('/bin/sh', [])\n")
    assert len(_findings(aliased)) == 4
    good = ast.parse("import torch, subprocess\ntorch.load(p, map_location='cpu', weights_only=True)\n"
                     "subprocess.run(['ls'])\n")
    assert _findings(good) == []


def test_no_code_runs_from_data_files_and_no_shell_anywhere_in_the_project():
    problems = {}
    for path in _all_sources():
        relative = str(path.relative_to(REPO))
        found = _findings(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)),
                          allow_pickle_import=relative in PICKLE_IMPORT_ALLOWED)
        found = [f for f in found if not any(key == (relative, f.split(" at line")[0]) for key in DELIBERATE)]
        if found:
            problems[relative] = found
    assert problems == {}
    for relative in PICKLE_IMPORT_ALLOWED:  # pickle there names an exception, nothing more
        tree = ast.parse((REPO / relative).read_text(encoding="utf-8"))
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pickle"}
        assert used == {"UnpicklingError"}
    # The one torch.load of the project: third-party weights, weights only.
    loads = [path for path in _project_sources() if "torch.load(" in path.read_text(encoding="utf-8")]
    assert [str(p.relative_to(REPO)) for p in loads] == ["saliency/core/weights.py"]


# Every place the project imports a module or reads an attribute by a name it computes, and
# where that name comes from. A new site fails the scan until it is listed here with its source.
DYNAMIC_SITES = {
    ("directions/generators/registry.py", "get_factory", "importlib.import_module"):
        "a --generator package.module:factory the user typed, or a name read from a file that "
        "generator_named_in_file let through (registered, or the very spec the user typed)",
    ("directions/generators/registry.py", "get_factory", "getattr"): "the factory part of that same spec",
    **{("benchmarks/option_places.py", function, "importlib.import_module"):
       "a module of the project's own pipelines package (pkgutil's walk, or an import line of a command's source)"
       for function in ("_pipeline_functions", "_config_classes", "_receiving_parameters", "places")},
}
DYNAMIC_CALLS = {"importlib.import_module", "import_module", "__import__", "importlib.__import__",
                 "importlib.util.spec_from_file_location", "spec_from_file_location", "runpy.run_path",
                 "runpy.run_module"}


def _dynamic_sites(tree: ast.AST, relative: str) -> set[tuple[str, str, str]]:
    """(file, enclosing function, call) of every dynamic import, and of every getattr on a module
    (a name bound by an import, or the result of an import call) with a name that is not a literal."""
    sites, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                _call_name(node.value) in DYNAMIC_CALLS:
            modules |= {target.id for target in node.targets if isinstance(target, ast.Name)}

    def visit(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call):
                name = _call_name(child)
                if name in DYNAMIC_CALLS:
                    sites.add((relative, owner, name))
                elif (name == "getattr" and len(child.args) >= 2 and not isinstance(child.args[1], ast.Constant)
                      and isinstance(child.args[0], ast.Name) and child.args[0].id in modules):
                    sites.add((relative, owner, "getattr"))
            visit(child, owner)

    visit(tree, "<module>")
    return sites


def test_every_dynamic_import_site_is_listed_with_where_its_name_comes_from():
    found = set()
    for path in _project_sources():
        found |= _dynamic_sites(ast.parse(path.read_text(encoding="utf-8")), str(path.relative_to(REPO)))
    assert found == set(DYNAMIC_SITES)
    made_up = "import importlib, torch\ndef f(n, m):\n    x = importlib.import_module(n)\n" \
              "    return getattr(x, m), getattr(torch, m), getattr(n, m), getattr(torch, 'nn')\n"
    assert _dynamic_sites(ast.parse(made_up), "x.py") == {("x.py", "f", "importlib.import_module"),
                                                        ("x.py", "f", "getattr")}


def test_a_run_folder_naming_code_runs_nothing(tmp_path):
    """A shared run folder that names `os:system` with a shell command as its option: synthesize,
    the effects tool and the pipeline refuse it in one line, and the command never runs."""
    import subprocess
    import sys

    import torch

    from conftest import assert_one_line_error, run_cli
    from directions.run_folder import write_known_direction_run

    run = write_known_direction_run(tmp_path / "run", "os:system", torch.ones(8), 6.0,
                                    generator_options={"command": "touch PWNED"})
    result = run_cli("synthesize", "--run", str(run), "--n", "4", "--out", str(tmp_path / "pairs"),
                     "--classes", "0", "--device", "cpu", cwd=tmp_path)
    assert_one_line_error(result, "by import path", "os:system")
    effects = subprocess.run([sys.executable, "-m", "directions.effects", str(run)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert effects.returncode != 0 and "by import path" in effects.stderr and "Traceback" not in effects.stderr
    pipeline_out = tmp_path / "out"
    write_known_direction_run(pipeline_out / "discover", "os:system", torch.ones(8), 6.0,
                              generator_options={"command": "touch PWNED"})
    pipeline = run_cli("pipeline", "--out", str(pipeline_out), "--device", "cpu", cwd=tmp_path)
    assert_one_line_error(pipeline, "generator scenes (it has os:system)")
    assert not (tmp_path / "PWNED").exists() and not (REPO / "PWNED").exists()


def test_a_file_may_name_only_registered_generators_or_the_spec_the_user_gave():
    from directions.generators.registry import generator_named_in_file

    assert generator_named_in_file("scenes", "f.json") == "scenes"
    assert generator_named_in_file("toy_generators:build_toy", "f.json", "toy_generators:build_toy") == \
        "toy_generators:build_toy"
    for name, given, needle in [("os:system", None, "by import path"), ("toy_generators:build_toy", None, "by import path"),
                                ("os:system", "toy_generators:build_toy", "not 'toy_generators:build_toy'"),
                                (["scenes"], None, "names no generator"), ("no-such", None, "unknown generator")]:
        with pytest.raises(UserError, match=needle):
            generator_named_in_file(name, "f.json", given)


class _CutShortHandler(http.server.BaseHTTPRequestHandler):
    """Promises 100 kB and hangs up after 40 kB: a connection that drops mid-download."""

    def do_GET(self):  # noqa: N802 (the http.server API)
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 40_000)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def cut_short_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutShortHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_download_cut_short_leaves_neither_the_file_nor_a_temporary(cut_short_server, tmp_path):
    dest = tmp_path / "dl" / "images.zip"
    with pytest.raises(UserError, match="images.zip"):
        download(cut_short_server + "images.zip", dest, progress=False)
    assert list((tmp_path / "dl").iterdir()) == []  # written under a temporary name, removed on failure
