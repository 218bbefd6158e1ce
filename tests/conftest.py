"""Shared fixtures: small generators, a subprocess runner for the real CLI."""

from __future__ import annotations

import atexit
import functools
import http.server
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Tests that need the real ECSSD or third-party weights files find them where a user's clone has
# them, and skip with the reason where it does not: ECSSD in the data root the README's first
# command filled ($SALIENCY_DATA as set before the tests, else ./data), or in the offline copies
# beside the clone (../shared: CI's); the weights files only in ../shared. With
# SALIENCY_TESTS_WITHOUT_DATA=1 they find neither (.ci/run checks that every such test then skips).
WITHOUT_DATA = os.environ.get("SALIENCY_TESTS_WITHOUT_DATA") == "1"
NOWHERE = REPO / "tests" / "no-such-folder"
SHARED = NOWHERE if WITHOUT_DATA else REPO.parent / "shared"


def _find_ecssd() -> Path:
    roots = [] if WITHOUT_DATA else [Path(os.environ.get("SALIENCY_DATA") or REPO / "data"), SHARED / "datasets"]
    found = [root / "ECSSD" for root in roots if (root / "ECSSD" / "images").is_dir()
             and (root / "ECSSD" / "ground_truth_mask").is_dir()]
    return found[0] if found else NOWHERE / "ECSSD"


ECSSD = _find_ecssd()  # the real benchmark's folder; ECSSD.is_dir() is False where there is none
NEEDS_ECSSD = "needs the real ECSSD (in ./data, $SALIENCY_DATA or ../shared/datasets)"
# The names through which a test reaches that data: a test (or a fixture of its own) that uses
# one is marked real_data, and `.ci/run` checks that each of them skips without the data.
REAL_DATA_NAMES = {"ECSSD", "SHARED", "SHARED_ECSSD", "SHARED_ROOT", "SHARED_TFLITE", "TFLITE", "real_ecssd_root"}


def _names_used(function) -> set[str]:
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return set()
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def pytest_addoption(parser, pluginmanager):
    """pytest.ini asks pytest-xdist for workers; without it (a bare `pip install -e .`, or
    `-p no:xdist`) accept those options and run the tests in this process, rather than refuse."""
    if pluginmanager.has_plugin("xdist"):
        return
    group = parser.getgroup("xdist-absent", "pytest-xdist is not installed: these options are accepted and ignored")
    # pytest keeps lowercase short options for plugins; xdist registers its -n through this call too.
    group._addoption("-n", "--numprocesses", dest="numprocesses", default=None, metavar="N")
    group.addoption("--maxprocesses", dest="maxprocesses", default=None, metavar="N")
    group.addoption("--dist", dest="dist", default="no", metavar="MODE")


XDIST_ABSENT = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if not config.pluginmanager.has_plugin("xdist") and config.getoption("numprocesses", None) not in (None, "0"):
        # Say so once, and leave no trace of the options for plugins that read them (pytest-benchmark).
        config.stash[XDIST_ABSENT] = True
        config.option.numprocesses, config.option.dist = None, "no"


def pytest_report_header(config):
    if config.stash.get(XDIST_ABSENT, False):
        return "pytest-xdist is not installed: the tests run in this one process (pip install -e \".[test]\" adds it)"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        function = getattr(item, "function", None)
        if function is None:
            continue
        used = _names_used(function)
        for name in item.fixturenames:  # the test's own fixtures, not the session-wide autouse ones
            definitions = item._fixtureinfo.name2fixturedefs.get(name) or ()
            if definitions and not name.startswith("_"):
                used |= _names_used(definitions[-1].func)
        marks = [mark for mark in item.iter_markers("skipif")]
        if used & REAL_DATA_NAMES or any("shared" in str(mark.kwargs.get("reason", "")) for mark in marks):
            item.add_marker(pytest.mark.real_data)
# The tests live in folders that mirror the code; what several of them import lives in support/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
PROGRESS_LINE = re.compile(r"^[^:]+: +\d+%\|")  # a tqdm bar: "desc: 42%|###  | 5/12 ..."


# pytest.ini spreads the tests over pytest-xdist workers, one a logical core. Each gets its share of
# the cores, for torch here and, through OMP_NUM_THREADS, for every process a test starts: two
# 2-thread processes on 2 cores slow each other many times over. A test that sets its own
# OMP_NUM_THREADS for a child keeps it.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, os.cpu_count() or 1) // WORKERS)
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run on 2-core machines; keep torch from oversubscribing them.
    torch.set_num_threads(THREADS)
    yield


SHARED_TFLITE = SHARED / "weights" / "mobilenet_v2_1.0_224_quant.tflite"

# Tests never touch the network, and never the user's mirrors: every fetch a command would make
# goes to a loopback port that refuses connections (a socket bound, never listening), unless a
# test serves its own mirror. A mirror folder the environment names (CI's offline copy) is read
# once, below, for the tests' own torch hub cache.
_CLOSED = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_CLOSED.bind(("127.0.0.1", 0))
CLOSED_URL = f"http://127.0.0.1:{_CLOSED.getsockname()[1]}/"
atexit.register(_CLOSED.close)  # held for the session, closed at its end (no ResourceWarning)
_WEIGHTS_MIRROR = os.environ.pop("SALIENCY_WEIGHTS_MIRROR", None)
os.environ.pop("SALIENCY_DATA", None)
os.environ["SALIENCY_DATA_MIRROR"] = CLOSED_URL
os.environ["SALIENCY_WEIGHTS_MIRROR"] = CLOSED_URL

# And if something still tries: support/network_guard.py refuses any connection or name lookup
# past loopback, here and in every Python process a test starts, and logs it; the fixture below
# fails the test that did it.
import network_guard  # noqa: E402  (support/ is on sys.path from above)

NETWORK_LOG = Path(tempfile.mkdtemp(prefix="saliency-tests-network-")) / "outside.log"
NETWORK_LOG.touch()
os.environ[network_guard.LOG_VARIABLE] = str(NETWORK_LOG)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).resolve().parent / "support" / "guard")] +
    ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
network_guard.install()


@pytest.fixture(autouse=True)
def _no_outside_connection():
    start = NETWORK_LOG.stat().st_size
    yield
    with open(NETWORK_LOG, encoding="utf-8") as log:
        log.seek(start)
        attempts = log.read().strip()
    if attempts:
        pytest.fail(f"the test reached past loopback: {attempts}")


@pytest.fixture(scope="session", autouse=True)
def _torch_home(tmp_path_factory):
    """A torch hub cache of the tests' own (the CLI processes inherit it): the embedded U-Net's
    ImageNet MobileNetV2 encoder installed from the user's cache or the shared TFLite copy, and
    nothing else, so no test depends on, or writes to, the user's cache."""
    from saliency.downloads.weights import installed_path

    user_copy = installed_path("mobilenet-v2-imagenet")
    home = tmp_path_factory.mktemp("torch-home")
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    target = installed_path("mobilenet-v2-imagenet")
    target.parent.mkdir(parents=True, exist_ok=True)
    mirrored = Path(_WEIGHTS_MIRROR) / SHARED_TFLITE.name if _WEIGHTS_MIRROR else None
    if user_copy.is_file():
        target.write_bytes(user_copy.read_bytes())
    elif (mirrored and mirrored.is_file()) or SHARED_TFLITE.is_file():
        from saliency.downloads.weights import fetch_weights

        fetch_weights("mobilenet-v2-imagenet", source=mirrored if mirrored and mirrored.is_file() else SHARED_TFLITE,
                      progress=False)
    yield home
    if previous is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = previous


@pytest.fixture(scope="session", autouse=True)
def _saliency_cache(tmp_path_factory):
    """The tests' own cache folder (eval's reference rows), inherited by the CLI processes."""
    previous = os.environ.get("SALIENCY_CACHE")
    os.environ["SALIENCY_CACHE"] = str(tmp_path_factory.mktemp("saliency-cache"))
    yield Path(os.environ["SALIENCY_CACHE"])
    if previous is None:
        os.environ.pop("SALIENCY_CACHE", None)
    else:
        os.environ["SALIENCY_CACHE"] = previous


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; remembers each request as "METHOD /path" in ``self.server.requests``."""

    def send_head(self):
        self.server.requests.append(f"{self.command} {self.path}")
        return super().send_head()

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (folder, base URL). The requests it answers
    are listed in ``SERVED_REQUESTS[str(folder)]``."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RecordingHandler, directory=str(www)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    SERVED_REQUESTS[str(www)] = httpd.requests
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


SERVED_REQUESTS: dict[str, list[str]] = {}  # a served folder -> the requests its server answered


@pytest.fixture(scope="session")
def scenes64():
    from directions.generators.scenes import ScenesGenerator

    return ScenesGenerator(resolution=64).eval()


@pytest.fixture(scope="session")
def scenes128():
    from directions.generators.scenes import ScenesGenerator

    return ScenesGenerator(resolution=128).eval()


@pytest.fixture(scope="session")
def known_run(tmp_path_factory):
    """A run folder whose h_bg is the scenes generator's true whiteness direction (32 px)."""
    from makers import known_direction_run

    return known_direction_run(tmp_path_factory.mktemp("run") / "run")


# Set in the test process by pytest (per test) and by torch itself (its default, which a child
# computes alike): not differences a test made.
VOLATILE_ENVIRONMENT = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR"}
_FORK_SERVERS: dict = {}
_FORK_SERVER_LOCK = threading.Lock()  # the tests' default environment -> its ForkServer (one, started on first use)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run ``saliency ARGS`` as a user would: a separate process, its own exit code, stdout and
    stderr. In the tests' default environment (no ``env``) the process is forked from a server
    that has imported torch and the project once (tests/support/cli_forkserver.py): start-up was most
    of the time of the many short commands. The server runs no tensor work itself, so the
    child's OpenMP threads start fresh, as in a new process. Any other environment (``env``, or
    os.environ changed by a test): a new interpreter."""
    from cli_forkserver import ForkServer

    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    key = tuple(sorted((k, v) for k, v in full_env.items() if k not in VOLATILE_ENVIRONMENT))
    if not env:
        with _FORK_SERVER_LOCK:  # the bad-input matrix calls from several threads
            if not _FORK_SERVERS:
                _FORK_SERVERS[key] = ForkServer(full_env).__enter__()
            server = _FORK_SERVERS.get(key)
        if server is not None:
            return server.run([str(a) for a in args], cwd or REPO, timeout=timeout)
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


@pytest.fixture(scope="session", autouse=True)
def _stop_fork_servers():
    yield
    while _FORK_SERVERS:
        _FORK_SERVERS.popitem()[1].__exit__(None, None, None)


@pytest.fixture(scope="session")
def cli(_torch_home):
    """``cli(*args, cwd=None)``: run_cli in the tests' default environment."""
    return lambda *args, cwd=None, timeout=300: run_cli(*[str(a) for a in args], cwd=cwd, timeout=timeout)


def assert_one_line_error(result, *needles: str) -> None:
    """A bad input ends with exit code != 0 and one stderr line naming the problem."""
    assert result.returncode != 0, result.stdout
    # Progress bars of the work done before the problem showed are not part of the message.
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("saliency: error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
