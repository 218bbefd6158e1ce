"""`saliency serve` under load, against `saliency predict` on the same images in the same run.

    python benchmarks/serve_load.py [--model UNET_DIR] [--clients 1,8,32,128] [--out serve-load.json]

Starts the server on loopback (a process of its own, as a user starts it), then drives it with
a bounded number of concurrent clients at a time, each a thread with one kept-alive connection
sending the ECSSD test images (500) as raw bodies in turn; the server answers each with its map.
Per level: images per second over the level's wall time, p50 and p95 latency, errors (any
answer but 200). The baseline is `saliency predict` on the same files, run first (its own
images/s, from the moment its model is loaded). The server's resident memory is read after
1,000 requests and again after 5,000 (a soak at 32 clients fills the gap). The levels run the
heaviest first, so the first reading already holds the working set of 128 requests in flight
(the process keeps its peak heap: saliency/core/runtime.py) and the difference is what serving
more requests adds; the reading after each level is printed too. Without --model, an
untrained U-Net of the embedded profile's shape (mobilenet_v2) stands in: speed does not depend
on the weights' values. Stops the server and exits by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kb / 1024


def test_images(data_root: Path | None) -> list[Path]:
    from saliency.datasets import open_dataset

    return [sample.image_path for sample in open_dataset("ecssd", data_root, "test").samples]


def baseline(model: Path, files: list[Path], device: str) -> float:
    """`saliency predict`'s images/s on the files (its own clock: after the model has loaded)."""
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", "--model", str(model), "--out", out,
                                 "--device", device, *map(str, files)], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"predict failed: {result.stderr.strip()[-500:]}")
    return float(re.search(r"\(([\d.]+) images/s\)", result.stdout).group(1))


class Connection(http.client.HTTPConnection):
    """A kept-alive connection with Nagle's algorithm off, as curl, browsers and requests (urllib3)
    set it: with it on, an upload's last partial segment waits for the server's delayed ACK
    (40 ms on Linux), which would be measured as the server's latency."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Client(threading.Thread):
    """One connection, kept alive; takes the next image index from the shared counter."""

    def __init__(self, host: str, port: int, bodies: list[bytes], counter, total: int, results: list) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.bodies, self.counter, self.total, self.results = host, port, bodies, counter, total, results

    def run(self) -> None:
        connection = Connection(self.host, self.port, timeout=300)
        while True:
            index = next(self.counter)
            if index >= self.total:
                break
            started = time.perf_counter()
            try:
                connection.request("POST", "/api/predict", body=self.bodies[index % len(self.bodies)],
                                   headers={"Content-Type": "application/octet-stream"})
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200 and body.startswith(b"\x89PNG")
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                ok, status = False, type(exc).__name__
                connection.close()
                connection = Connection(self.host, self.port, timeout=300)
            self.results.append((time.perf_counter() - started, ok, status))
        connection.close()


def drive(host: str, port: int, bodies: list[bytes], clients: int, total: int) -> dict:
    import itertools

    counter, results = itertools.count(), []
    threads = [Client(host, port, bodies, counter, total, results) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    latencies = sorted(latency for latency, _, _ in results)
    errors = [status for _, ok, status in results if not ok]
    return {"clients": clients, "requests": len(results), "seconds": round(seconds, 2),
            "images_per_second": round(len(results) / seconds, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p95_ms": round(1000 * latencies[max(0, int(0.95 * len(latencies)) - 1)], 1),
            "errors": len(errors), "error_statuses": sorted(set(map(str, errors)))}


def main() -> None:
    from predict_speed import untrained_embedded_unet  # benchmarks/ is the script's folder
    from saliency.core.runtime import cpu_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: an untrained mobilenet_v2 U-Net)")
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding ECSSD (default $SALIENCY_DATA, else ./data)")
    parser.add_argument("--clients", default="128,32,8,1",
                        help="levels, in the order run (the heaviest first: the first memory reading then "
                             "holds the working set of the most requests in flight)")
    parser.add_argument("--requests", type=int, default=500, help="requests per level (default: the 500 test images once)")
    parser.add_argument("--first-reading", type=int, default=1000, help="requests before the first memory reading")
    parser.add_argument("--soak-to", type=int, default=5000, help="total requests before the last memory reading")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()

    files = test_images(args.data_root)
    bodies = [path.read_bytes() for path in files]
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or untrained_embedded_unet(Path(tmp) / "untrained")
        print(f"saliency predict on {len(files)} images ...", flush=True)
        predict_rate = baseline(model, files, args.device)
        server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(model), "--port", "0",
                                   "--device", args.device, "--max-queue", str(max(128, max(levels)))],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            line = server.stdout.readline().strip()
            if not line:
                raise SystemExit(f"the server did not start: {server.stderr.read()[-500:]}")
            print(line, flush=True)
            host, port = re.search(r"http://([\d.]+):(\d+)/", line).groups()
            drive(host, int(port), bodies, 4, 16)  # warm-up, not counted
            rows, served, memory = [], 0, {}
            for clients in levels:
                row = drive(host, int(port), bodies, clients, args.requests)
                row["vs_predict"] = round(row["images_per_second"] / predict_rate, 3)
                rows.append(row)
                served += row["requests"]
                row["rss_mb_after"] = round(rss_mb(server.pid), 1)
                print(json.dumps(row), flush=True)
                if served >= args.first_reading and "first" not in memory:
                    memory["first"] = (served, round(rss_mb(server.pid), 1))
            if served < args.soak_to:
                soak = drive(host, int(port), bodies, 32, args.soak_to - served)
                served += soak["requests"]
                rows_errors = soak["errors"]
            else:
                rows_errors = 0
            memory.setdefault("first", (served, round(rss_mb(server.pid), 1)))
            memory["last"] = (served, round(rss_mb(server.pid), 1))
            health = json.loads(_get(host, int(port), "/api/health"))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                out, err = server.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                server.kill()
                out, err = server.communicate()
    result = {"cpu": cpu_name(), "device": args.device, "images": len(files), "predict_images_per_second": predict_rate,
              "levels": rows, "soak_errors": rows_errors, "memory_mb": memory,
              "forward_passes": health["forward_passes"], "images_predicted": health["images_predicted"],
              "largest_batch": health["largest_batch"], "server_exit": server.returncode, "server_said": out.strip()[-300:]}
    print(f"\n{cpu_name()}, device {args.device}; saliency predict on the same {len(files)} images: "
          f"{predict_rate:.1f} images/s")
    print("| clients | images/s | vs predict | p50 ms | p95 ms | errors | RSS after, MB |\n"
          "|---:|---:|---:|---:|---:|---:|---:|")
    for row in sorted(rows, key=lambda r: r["clients"]):
        print(f"| {row['clients']} | {row['images_per_second']:.1f} | {row['vs_predict']:.2f} | {row['p50_ms']:.0f} | "
              f"{row['p95_ms']:.0f} | {row['errors']} | {row['rss_mb_after']:.0f} |")
    (n1, m1), (n2, m2) = memory["first"], memory["last"]
    print(f"resident memory: {m1:.1f} MB after {n1:,} requests, {m2:.1f} MB after {n2:,} ({m2 - m1:+.1f} MB); "
          f"{health['images_predicted']:,} images in {health['forward_passes']:,} forward passes "
          f"(largest batch {health['largest_batch']}); errors in the soak: {rows_errors}; server exit {server.returncode}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def _get(host: str, port: int, path: str) -> str:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
