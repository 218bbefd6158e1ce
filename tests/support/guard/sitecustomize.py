"""Loaded at start-up by every Python process the tests start (conftest.py puts this folder on
PYTHONPATH): the same network guard as in the test process."""

import os
import sys

if os.environ.get("SALIENCY_TEST_NETWORK_LOG"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import network_guard

    network_guard.install()
    sys.path.pop(0)
