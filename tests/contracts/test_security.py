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
from saliency.core.download import download

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
