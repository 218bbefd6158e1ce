"""pytest.ini asks pytest-xdist for workers; a clone installed without the test extra (no xdist)
still runs its tests, in one process, and says why, instead of refusing pytest.ini's options."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = "SALIENCY_WITHOUT_XDIST_PROBE"


@pytest.mark.skipif(os.environ.get(PROBE) != "1", reason="run by the test below")
def test_probe_runs_in_the_main_process():
    assert "PYTEST_XDIST_WORKER" not in os.environ


def test_the_suite_runs_without_pytest_xdist():
    env = {**os.environ, PROBE: "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider",
         f"{__file__}::test_probe_runs_in_the_main_process"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed" in output
    assert "pytest-xdist is not installed: the tests run in this one process" in output
    assert "unrecognized arguments" not in output
