"""Starting and stopping ``saliency serve``: the model loaded once, uvicorn on a socket we bind.

The socket is bound here, before uvicorn starts, so a port in use is one line, and port 0
(any free port) is known before the start-up line is printed. Ctrl-C or SIGTERM makes uvicorn
stop accepting, answer the requests in flight, then run the app's shutdown (the batcher
answers what it holds); the command then exits 0 instead of dying by the signal.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from typing import Callable

from pipelines.serve.config import ServeConfig
from saliency.core.errors import UserError
from saliency.core.fields import check_ranges


def _import_server_libraries():
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn", "python_multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"`saliency serve` needs FastAPI, uvicorn and python-multipart ({', '.join(missing)} "
                        "missing): pip install 'gan-saliency[serve]'")
    import uvicorn

    return uvicorn


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (IPv4 or IPv6), or one line saying why not. An address is
    used as written; only a name (localhost, the machine's own name) is looked up."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        family, address = ((socket.AF_INET6, (str(literal), port, 0, 0)) if literal.version == 6
                           else (socket.AF_INET, (str(literal), port)))
    except ValueError:
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as exc:
            raise UserError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets that say they
    # are TCP, and with it on, a kept-alive connection's answer waited for the client's delayed
    # ACK (40 ms on Linux: 80 ms a request instead of 39, measured).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


# oneDNN's kernel cache, in kernels (its default is 1,024): a server meets every padded shape of
# its images at every batch size, and a mobilenet_v2 U-Net has about 60 convolutions, so the
# default cache kept evicting and rebuilding kernels, and memory kept growing (docs/benchmarks.md).
# Read by oneDNN when it builds its first kernel, so set before the model loads; a value the
# user set wins.
KERNEL_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
KERNEL_CACHE_CAPACITY = "8192"


def build_server(config: ServeConfig, announce: Callable[[str], None] = print):
    """(the uvicorn server, its bound socket): the model loaded, nothing served yet."""
    check_ranges(config)
    os.environ.setdefault(KERNEL_CACHE, KERNEL_CACHE_CAPACITY)
    uvicorn = _import_server_libraries()
    from pipelines.serve.app import create_app
    from saliency.detector import SaliencyDetector

    detector = SaliencyDetector.load(config.model, config.device, config.precision, config.size, config.max_batch)
    sock = bind(config.host, config.port)
    reach = ("loopback only; --host 0.0.0.0 would open it to the network" if is_loopback(config.host) else
             f"listening on {config.host}: reachable from the network")
    line = (f"saliency serve: {url_of(sock)} (model {detector.source}, device {detector.device}, "
            f"precision {detector.precision}); {reach}; Ctrl-C stops it")

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                announce(line)

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()  # a clean stop exits 0, not by the signal raised again

    app = create_app(detector, config)
    settings = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                              timeout_graceful_shutdown=max(1, int(config.timeout_s) + 1),
                              timeout_keep_alive=5, server_header=False)
    return Server(settings), sock


def run_serve(config: ServeConfig, announce: Callable[[str], None] = print) -> dict:
    """Serve until Ctrl-C or SIGTERM; the counts once it has stopped."""
    server, sock = build_server(config, announce)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:  # uvicorn said why on stderr (the app failed to start)
        raise UserError("the server did not start")
    counters = server.config.app.state.counters
    batcher = server.config.app.state.batcher
    sys.stdout.flush()
    return {"served": counters.served, "refused": counters.refused, "forward_passes": batcher.forward_passes}
