"""Just enough of the Hugging Face Hub's file endpoint, on loopback, for huggingface_hub to
download files (tests never touch the network). Subclass per test with ``repo``, ``files``."""

from __future__ import annotations

import hashlib
import http.server


class HubHandler(http.server.BaseHTTPRequestHandler):
    repo = "owner/name"
    files: dict[str, bytes] = {}
    commit = "0123456789abcdef0123456789abcdef01234567"
    requests: list[str] = []

    def _answer(self, body: bool) -> None:
        type(self).requests.append(f"{self.command} {self.path}")
        prefix = f"/{self.repo}/resolve/"
        revision, _, name = self.path[len(prefix):].partition("/") if self.path.startswith(prefix) else ("", "", None)
        if revision not in ("main", self.commit) or name not in self.files:
            self.send_response(404)
            self.send_header("X-Error-Code", "RevisionNotFound" if name in self.files else "EntryNotFound")
            self.end_headers()
            return
        data = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", self.commit)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802
        self._answer(body=False)

    def do_GET(self):  # noqa: N802
        self._answer(body=True)

    def log_message(self, *args):
        pass
