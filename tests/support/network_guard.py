"""The tests never reach past this machine: any connection to a non-loopback address, and any
name lookup but localhost's, is refused before a packet leaves, and written to a log that
tests/conftest.py checks after every test (so a test fails even where the code under test
handles the refusal as an ordinary network error). Installed in the test process by
conftest.py, and in every Python process the tests start by ``guard/sitecustomize.py``
(conftest puts that folder on PYTHONPATH)."""

from __future__ import annotations

import ipaddress
import os
import socket

LOG_VARIABLE = "SALIENCY_TEST_NETWORK_LOG"


class OutsideConnectionRefused(ConnectionRefusedError):
    """Raised instead of reaching an address outside the loopback range."""


def _outside(host: object) -> bool:
    if host is None or host in ("", "localhost", b"localhost", socket.gethostname()):
        return False  # this machine's own name resolves locally (/etc/hosts), as gloo's does
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        return not ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return True  # another host name: looking it up would already reach a name server


def _refuse(what: str):
    path = os.environ.get(LOG_VARIABLE)
    if path:
        import traceback

        frames = [f"{frame.filename}:{frame.lineno}" for frame in traceback.extract_stack()[-10:-2]]
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"pid {os.getpid()}: {what} (from {' <- '.join(reversed(frames))})\n")
    raise OutsideConnectionRefused(f"the tests never reach the network: {what}")


def install() -> None:
    if getattr(socket, "_saliency_guarded", False):
        return
    socket._saliency_guarded = True
    real_connect, real_connect_ex, real_sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    real_getaddrinfo, real_gethostbyname = socket.getaddrinfo, socket.gethostbyname

    def checked(sock: socket.socket, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and _outside(address[0]):
            _refuse(f"connect to {address[0]}:{address[1]}")

    def connect(self, address):
        checked(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        checked(self, address)
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        checked(self, args[-1])
        return real_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if _outside(host):
            _refuse(f"look up {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host):
        if _outside(host):
            _refuse(f"look up {host}")
        return real_gethostbyname(host)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    socket.getaddrinfo, socket.gethostbyname = getaddrinfo, gethostbyname
