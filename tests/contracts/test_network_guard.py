"""The network guard of tests/conftest.py fails a test that reaches past loopback, whether it
tries from the test process or from a process it starts, and even when the code swallows the
refusal as an ordinary network error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = "SALIENCY_NETWORK_GUARD_PROBE"
# TEST-NET-1 (RFC 5737): reserved for documentation, never routed; nothing is sent in any case.
OUTSIDE = ("192.0.2.1", 80)


@pytest.mark.skipif(os.environ.get(PROBE) != "in-process", reason="run by the test below")
def test_probe_in_process():
    try:
        socket.create_connection(OUTSIDE, timeout=1)
    except OSError:
        pass  # code that treats the refusal as "offline" and goes on


@pytest.mark.skipif(os.environ.get(PROBE) != "child", reason="run by the test below")
def test_probe_in_a_child():
    code = f"import socket\ntry:\n    socket.create_connection({OUTSIDE!r}, timeout=1)\nexcept OSError:\n    pass\n"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.skipif(os.environ.get(PROBE) != "lookup", reason="run by the test below")
def test_probe_a_name_lookup():
    try:
        socket.getaddrinfo("example.com", 443)
    except OSError:
        pass


@pytest.mark.skipif(os.environ.get(PROBE) != "loopback", reason="run by the test below")
def test_probe_loopback_is_allowed():
    server = socket.create_server(("127.0.0.1", 0))
    socket.create_connection(server.getsockname(), timeout=5).close()
    server.close()


@pytest.mark.parametrize("probe, test, fails", [
    ("in-process", "test_probe_in_process", True), ("child", "test_probe_in_a_child", True),
    ("lookup", "test_probe_a_name_lookup", True), ("loopback", "test_probe_loopback_is_allowed", False)])
def test_the_guard_fails_a_test_that_reaches_past_loopback(probe, test, fails):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                             f"tests/contracts/test_network_guard.py::{test}"],
                            cwd=REPO, env=dict(os.environ, **{PROBE: probe}), capture_output=True, text=True, timeout=300)
    if fails:
        assert result.returncode != 0 and "the test reached past loopback" in result.stdout, result.stdout
    else:
        assert result.returncode == 0, result.stdout
