"""A real ``saliency serve`` on a loopback port, in a thread of the test's process, and a small
HTTP client (the standard library's, so what it sends is exactly what the test says)."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Served:
    url: str
    host: str
    port: int
    server: object
    lines: list[str]

    @property
    def app(self):
        return self.server.config.app

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> Reply:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def predict(self, data: bytes, kind: str | None = None, **kwargs) -> Reply:
        path = "/api/predict" + (f"?{urllib.parse.urlencode({'kind': kind})}" if kind else "")
        return self.request("POST", path, data, {"Content-Type": "application/octet-stream"}, **kwargs)

    def health(self) -> dict:
        return self.request("GET", "/api/health").json()


@contextlib.contextmanager
def serving(model, **options):
    """The server of ``ServeConfig(model, **options)`` on a free loopback port until the block ends."""
    from pipelines.serve.config import ServeConfig
    from pipelines.serve.server import build_server

    lines: list[str] = []
    options.setdefault("warm_up", False)  # 1-2 s a server; the command's tests keep the default (on)
    config = ServeConfig(model=str(model), port=0, device="cpu", **options)
    server, sock = build_server(config, lines.append)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    host, port = sock.getsockname()[:2]
    try:
        yield Served(f"http://{host}:{port}/", host, port, server, lines)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def multipart(field: str, filename: str, data: bytes, content_type: str = "application/octet-stream") -> tuple[bytes, str]:
    """(body, Content-Type) of a one-file multipart/form-data upload."""
    boundary = "saliency-test-boundary-7d1f"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
