"""Shared fixtures: small generators, a subprocess runner for the real CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PROGRESS_LINE = re.compile(r"^[^:]+: +\d+%\|")  # a tqdm bar: "desc: 42%|###  | 5/12 ..."


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run on 2-core machines; keep torch from oversubscribing them.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


SHARED_TFLITE = REPO.parent / "shared" / "weights" / "mobilenet_v2_1.0_224_quant.tflite"


@pytest.fixture(scope="session", autouse=True)
def _torch_home(tmp_path_factory):
    """A torch hub cache of the tests' own (the CLI processes inherit it): the embedded U-Net's
    ImageNet MobileNetV2 encoder installed from the user's cache or the shared TFLite copy, and
    nothing else, so no test depends on, or writes to, the user's cache."""
    from saliency.pretrained import installed_path

    user_copy = installed_path("mobilenet-v2-imagenet")
    home = tmp_path_factory.mktemp("torch-home")
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    target = installed_path("mobilenet-v2-imagenet")
    target.parent.mkdir(parents=True, exist_ok=True)
    if user_copy.is_file():
        target.write_bytes(user_copy.read_bytes())
    elif SHARED_TFLITE.is_file():
        from saliency.pretrained import fetch_weights

        fetch_weights("mobilenet-v2-imagenet", source=SHARED_TFLITE, progress=False)
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
    that has imported torch and the project once (tests/cli_forkserver.py): start-up was most
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
    return subprocess.run([sys.executable, "-m", "saliency.cli", *args], capture_output=True, text=True,
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
