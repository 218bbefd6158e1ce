"""Run the real CLI many times without paying its imports each time.

A server process (this file, run with the environment every command shares) imports torch,
segmentation-models-pytorch and the project once, then forks one child per command. Each
child is a process of its own: its own exit status, its stdout and stderr on its own files
(file descriptors 1 and 2, so C-level writes are caught too), its own ``ulimit -f`` where
asked, its own process group (killed whole after a time limit, DataLoader workers included),
random generators seeded afresh as a new interpreter's would be. Only the import cost is
shared. The server runs no tensor work and starts no thread of its own (checked before every
fork), so its OpenMP pool never exists and a child starts one as a new process does.

Protocol: one JSON request a line on stdin (``id``, ``argv``, ``cwd``, ``stdout``,
``stderr``, ``file_limit``, ``timeout``); one JSON reply a line on stdout when the child ends
(``id``, ``returncode``, ``timed_out``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

PRELOAD = ("torch", "numpy", "PIL.Image", "click", "safetensors.torch", "huggingface_hub",
           "segmentation_models_pytorch", "albumentations", "pipelines.cli", "pipelines.discover",
           "pipelines.synthesize", "pipelines.train_unet", "pipelines.evaluate", "pipelines.pipeline",
           "pipelines.sweep", "pipelines.import_run")


def _child(request: dict) -> None:
    """In the forked child: become the command, then exit with its status (never return)."""
    code = 1
    try:
        os.setpgrp()  # a group of its own: a timeout kills its workers too
        import random

        import numpy as np
        import torch

        random.seed()
        np.random.seed()  # from the OS, as in a new interpreter
        torch.seed()  # a fresh process draws its seed from the OS too
        os.chdir(request["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        if request.get("file_limit"):
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_limit"], request["file_limit"]))
        sys.argv = ["saliency", *request["argv"]]
        try:
            from pipelines.cli import main  # what the `saliency` console script calls

            code = main(request["argv"])
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:  # noqa: BLE001 - a crash is the command's own: show it as Python would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - the child then meets the same error itself
            pass
    print(json.dumps({"ready": True}), flush=True)
    running: dict[int, tuple[dict, float]] = {}
    stdin_open = True
    pending = b""
    while stdin_open or running:
        if stdin_open:
            readable, _, _ = select.select([sys.stdin.buffer], [], [], 0.05)
            if readable:
                chunk = os.read(sys.stdin.fileno(), 65536)
                if not chunk:
                    stdin_open = False
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    request = json.loads(line)
                    if threading.active_count() != 1:
                        raise RuntimeError("the fork server started a thread: forking it is not safe")
                    pid = os.fork()
                    if pid == 0:
                        _child(request)
                    running[pid] = (request, time.monotonic())
        else:
            time.sleep(0.05)
        for pid, (request, started) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            timed_out = False
            if not done and time.monotonic() - started > request["timeout"]:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    os.kill(pid, signal.SIGKILL)
                done, status = os.waitpid(pid, 0)
                timed_out = True
            if done:
                del running[pid]
                reply = {"id": request["id"], "returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}
                print(json.dumps(reply), flush=True)


class ForkServer:
    """Client side: ``with ForkServer(env) as server: server.run(argv, cwd)`` ->
    ``subprocess.CompletedProcess``; ``run`` may be called from many threads at once."""

    def __init__(self, env: dict) -> None:
        self.env = env
        self._lock = threading.Lock()
        self._futures: dict[int, Future] = {}
        self._next = 0

    def __enter__(self) -> "ForkServer":
        self._folder = tempfile.TemporaryDirectory(prefix="forkserver-")
        env = {"NO_ALBUMENTATIONS_UPDATE": "1", **self.env}  # albumentations' version check would go online
        self._process = subprocess.Popen([sys.executable, os.path.abspath(__file__)], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._process.stdout.readline()
        if not ready.strip():
            raise RuntimeError("the CLI fork server did not start")
        self._reader = threading.Thread(target=self._read_replies, daemon=True)
        self._reader.start()
        return self

    def _read_replies(self) -> None:
        try:
            for line in self._process.stdout:
                reply = json.loads(line)
                with self._lock:
                    future = self._futures.pop(reply["id"])
                future.set_result(reply)
        finally:  # the server died: nobody waits for ever
            with self._lock:
                waiting, self._futures = list(self._futures.values()), {}
            for future in waiting:
                future.set_exception(RuntimeError("the CLI fork server stopped"))

    def run(self, argv: list[str], cwd: str | os.PathLike, file_limit: int | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        future: Future = Future()
        with self._lock:
            ident = self._next
            self._next += 1
            self._futures[ident] = future
            out, err = Path(self._folder.name) / f"{ident}.out", Path(self._folder.name) / f"{ident}.err"
            request = {"id": ident, "argv": list(argv), "cwd": str(cwd), "stdout": str(out), "stderr": str(err),
                       "file_limit": file_limit, "timeout": timeout}
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        reply = future.result(timeout=timeout + 60)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if reply["timed_out"]:
            stderr += f"still running after {timeout:.0f} s: the input was not refused"
        return subprocess.CompletedProcess(["saliency", *argv], reply["returncode"], stdout, stderr)

    def __exit__(self, *exc) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=300)
        self._folder.cleanup()


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [os.path.dirname(os.path.dirname(here)), here]  # the repository, then tests/support
    serve()
