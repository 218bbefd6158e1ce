"""Loaded at start-up by every Python process the tests start (conftest.py puts this folder on
PYTHONPATH): the same network guard as in the test process, and, when a fault-injection test
asks, a kill at a chosen file replacement."""

import os
import sys

if os.environ.get("SALIENCY_TEST_NETWORK_LOG"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import network_guard

    network_guard.install()
    sys.path.pop(0)

# SALIENCY_TEST_KILL_AT_REPLACE=N: SIGKILL this process at its N-th os.replace, just before it
# (the new file written whole but not in place: a kill mid-write); "N+": just after it (the file
# in place, whatever record follows it not yet written). Counted over the whole process, so the
# moment is the same on any machine at any load.
_KILL_AT = os.environ.pop("SALIENCY_TEST_KILL_AT_REPLACE", "")
if _KILL_AT:
    import signal

    _after = _KILL_AT.endswith("+")
    _at = int(_KILL_AT.rstrip("+"))
    _replace = os.replace
    _calls = [0]

    def _replace_then_maybe_die(src, dst, *args, **kwargs):
        _calls[0] += 1
        if _calls[0] == _at and not _after:
            os.kill(os.getpid(), signal.SIGKILL)
        _replace(src, dst, *args, **kwargs)
        if _calls[0] == _at and _after:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = _replace_then_maybe_die
