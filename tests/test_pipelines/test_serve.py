"""`saliency serve`: a real server on a loopback port, a real HTTP client.

Each refusal's status and one-line JSON body, the map byte for byte as `saliency predict`
writes it, concurrent requests sharing forward passes, bad inputs among good ones, a clean
stop with requests in flight, the page in headless Chromium, and the API fuzzed from its own
OpenAPI schema with schemathesis.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="needs the serve extra: pip install -e '.[serve]'")

from conftest import REPO  # noqa: E402
from makers import random_model, truncate  # noqa: E402
from serving import multipart, serving  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return random_model(tmp_path_factory.mktemp("serve-model") / "unet")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Images of several sizes, modes and formats."""
    folder = tmp_path_factory.mktemp("serve-photos")
    rng = np.random.default_rng(3)
    made = {}
    for name, size, mode in (("a.jpg", (90, 60), "RGB"), ("b.png", (50, 77), "L"), ("c.png", (64, 64), "RGBA"),
                             ("d.webp", (120, 40), "RGB")):
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        pixels = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(), mode=mode).save(folder / name)
        made[name] = folder / name
    return made


@pytest.fixture(scope="module")
def served(model):
    with serving(model, max_wait_ms=5) as server:
        yield server


def _assert_json_error(reply, status: int, *fragments: str) -> str:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    message = reply.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message and "\r" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, in a few dozen bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------- the API
def test_every_kind_is_byte_identical_to_what_predict_writes(model, photos, served, tmp_path):
    from pipelines.predict import KINDS, PredictConfig, run_predict

    out = tmp_path / "predicted"
    run_predict(PredictConfig(model=str(model), inputs=[str(p) for p in photos.values()], out=out, save=KINDS,
                              device="cpu", workers=0, batch_size=1, progress=False))
    for name, path in photos.items():
        written = next(out.rglob(f"{Path(name).stem}.map.png"))
        for kind in KINDS:
            expected = written.with_name(f"{Path(name).stem}.{kind}.png").read_bytes()
            reply = served.predict(path.read_bytes(), kind)
            assert reply.status == 200 and reply.headers["content-type"] == "image/png"
            assert reply.body == expected, f"{name} {kind}"
        # the default kind is the map, and a multipart upload is read as the raw body is
        body, content_type = multipart("file", name, path.read_bytes())
        reply = served.request("POST", "/api/predict", body, {"Content-Type": content_type})
        assert reply.status == 200 and reply.body == written.read_bytes()


def test_health_says_what_is_loaded_and_how_busy(served):
    health = served.health()
    assert health["model"] and health["device"] == "cpu" and health["precision"] in ("fp32", "bf16")
    assert health["queue"] == 0 and health["served"] >= 0 and health["kinds"] == ["map", "mask", "cutout", "overlay"]
    assert health["limits"]["max_queue"] == 128 and health["limits"]["max_upload_mb"] == 20


def test_the_openapi_schema_and_its_docs_page(served):
    schema = served.request("GET", "/api/openapi.json").json()
    operation = schema["paths"]["/api/predict"]["post"]
    assert [p["name"] for p in operation["parameters"]] == ["kind"]  # nothing names a path or a URL
    assert set(operation["requestBody"]["content"]) == {"application/octet-stream", "image/*", "multipart/form-data"}
    assert {"200", "400", "413", "422", "503", "504"} <= set(operation["responses"])
    docs = served.request("GET", "/api/docs")
    assert docs.status == 200 and b"POST /api/predict" in docs.body
    assert not any(marker in docs.body for marker in (b'src="http', b'href="http', b'src="//', b'href="//'))


@pytest.mark.parametrize("body, fragment", [
    (b"", "the body is empty"),
    (b"not an image at all", "unreadable image"),
    (b"/etc/passwd", "unreadable image"),  # a path is bytes like any other: never opened
    (b"http://127.0.0.1:1/photo.jpg", "unreadable image"),  # nor is a URL fetched
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image of a type accepted here"),
])
def test_what_is_not_an_image_is_400(served, body, fragment):
    _assert_json_error(served.predict(body), 400, fragment)


def test_a_truncated_image_is_400(served, photos, tmp_path):
    damaged = tmp_path / "cut.jpg"
    damaged.write_bytes(photos["a.jpg"].read_bytes())
    _assert_json_error(served.predict(truncate(damaged, 0.6).read_bytes()), 400, "upload: unreadable image")


def test_a_multipart_upload_without_a_file_is_400(served):
    boundary = "b0undary"
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}--\r\n".encode()
    reply = served.request("POST", "/api/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    _assert_json_error(reply, 400, "no file part")


def test_an_unknown_kind_is_422(served, photos):
    _assert_json_error(served.predict(photos["a.jpg"].read_bytes(), "thumbnail"), 422, "kind", "thumbnail")


def test_unknown_routes_and_methods_are_json_too(served):
    _assert_json_error(served.request("GET", "/etc/passwd"), 404)
    _assert_json_error(served.request("GET", "/static/../serve/app.py"), 404)
    _assert_json_error(served.request("DELETE", "/api/predict"), 405)


def test_a_decompression_bomb_is_413_from_its_header(served):
    started = time.perf_counter()
    message = _assert_json_error(served.predict(_bomb_png(30_000, 30_000)), 413, "900,000,000 pixels",
                                 "decompression bomb")
    assert time.perf_counter() - started < 5, message  # refused from the header, not decoded


def test_the_pixel_limit_is_the_servers_own(model):
    big = io.BytesIO()
    Image.new("L", (1200, 1000)).save(big, format="PNG")
    with serving(model, max_pixels=1_000_000) as server:
        _assert_json_error(server.predict(big.getvalue()), 413, "1200x1000 pixels", "1,000,000 allowed")
        assert server.predict(big.getvalue()).status == 413
        small = io.BytesIO()
        Image.new("L", (100, 100)).save(small, format="PNG")
        assert server.predict(small.getvalue()).status == 200


def _read_answer(connection: socket.socket) -> bytes:
    """One HTTP response off a raw socket: its head, then the body its Content-Length declares."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += connection.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_body_over_the_limit_is_413_and_never_read_to_its_end(model, photos):
    with serving(model, max_upload_mb=1) as server:
        # declared 50 MB, only 64 KB sent: the answer comes without the rest
        with socket.create_connection((server.host, server.port), timeout=30) as connection:
            connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                               b"Content-Length: 50000000\r\n\r\n" + b"\0" * 65536)
            answer = _read_answer(connection)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"50,000,000 bytes, more than the 1,000,000 allowed" in answer
        # no declared length (chunked): refused at the chunk that crosses the limit
        with socket.create_connection((server.host, server.port), timeout=30) as connection:
            connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"\0" * 300_000
            for _ in range(4):
                connection.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            answer = _read_answer(connection)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"more than the 1,000,000 bytes allowed" in answer
        assert server.predict(photos["a.jpg"].read_bytes()).status == 200  # and it goes on serving


def test_a_full_queue_is_503_with_retry_after(model, photos):
    data = photos["a.jpg"].read_bytes()
    with serving(model, max_queue=2, max_wait_ms=1500, max_batch=8) as server, ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(server.predict, data) for _ in range(2)]
        deadline = time.monotonic() + 20
        while server.health()["queue"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        reply = server.predict(data)
        _assert_json_error(reply, 503, "busy")
        assert reply.headers["retry-after"] == "1"
        assert [future.result().status for future in waiting] == [200, 200]
        assert server.predict(data).status == 200


def test_a_request_past_its_timeout_is_504_and_the_server_goes_on(model, photos):
    data = photos["a.jpg"].read_bytes()
    with serving(model, timeout_s=0.3, max_wait_ms=2000, max_batch=8) as server:
        _assert_json_error(server.predict(data), 504, "0.3 s")
        health = server.health()
        assert health["queue"] == 0
    with serving(model, timeout_s=30, max_wait_ms=1) as server:
        assert server.predict(data).status == 200


# ----------------------------------------------------------------------------------- batching
def test_a_burst_is_served_in_fewer_forward_passes_than_requests(model, photos):
    data = photos["a.jpg"].read_bytes()
    with serving(model, max_batch=8, max_wait_ms=300) as server:
        alone = server.predict(data).body
        before = server.health()["forward_passes"]
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda _: server.predict(data), range(16)))
        health = server.health()
    assert [r.status for r in replies] == [200] * 16
    passes = health["forward_passes"] - before
    assert passes < 16 and health["largest_batch"] > 1, health
    maps = [np.asarray(Image.open(io.BytesIO(r.body)), dtype=np.int16) for r in replies]
    expected = np.asarray(Image.open(io.BytesIO(alone)), dtype=np.int16)
    assert max(int(np.abs(m - expected).max()) for m in maps) <= 1  # batched or alone, the same map


def test_bad_inputs_among_good_ones_leave_the_good_ones_answered(served, photos, tmp_path):
    damaged = tmp_path / "d.jpg"
    damaged.write_bytes(photos["a.jpg"].read_bytes())
    truncate(damaged, 0.5)
    expected = {name: served.predict(path.read_bytes()).body for name, path in photos.items()}
    bad = {"garbage": (b"\x00garbage" * 100, 400), "truncated": (damaged.read_bytes(), 400),
           "bomb": (_bomb_png(40_000, 40_000), 413), "empty": (b"", 400)}
    jobs = [("good", name, path.read_bytes()) for name, path in photos.items()] * 3
    jobs += [("bad", name, data) for name, (data, _) in bad.items()] * 3
    order = np.random.default_rng(0).permutation(len(jobs))
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: (jobs[i], served.predict(jobs[i][2])), order))
    for (quality, name, _), reply in replies:
        if quality == "good":
            assert reply.status == 200, reply.body[:200]
            got = np.asarray(Image.open(io.BytesIO(reply.body)), dtype=np.int16)
            assert int(np.abs(got - np.asarray(Image.open(io.BytesIO(expected[name])), dtype=np.int16)).max()) <= 1
        else:
            _assert_json_error(reply, bad[name][1])
    assert served.health()["status"] == "ok"


# ----------------------------------------------------------------------------- the command
def _start(model: Path, *options: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(model), "--port", "0",
                                "--device", "cpu", *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=REPO)
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(f"no start-up line: {process.stderr.read()}")
    return process, line.strip()


def test_the_command_announces_itself_and_stops_cleanly_with_requests_in_flight(model, photos):
    process, line = _start(model, "--max-wait-ms", "1500", "--max-batch", "8")
    try:
        assert line.startswith("saliency serve: http://127.0.0.1:"), line
        assert "model " in line and "device cpu" in line and "precision fp32" in line and "loopback only" in line
        url = line.split()[2]
        host, port = url[len("http://"):].rstrip("/").split(":")
        from serving import Served

        server = Served(url, host, int(port), None, [])
        data = photos["a.jpg"].read_bytes()
        with ThreadPoolExecutor(4) as pool:
            in_flight = [pool.submit(server.predict, data) for _ in range(4)]
            deadline = time.monotonic() + 20
            while server.health()["queue"] < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            statuses = [future.result().status for future in in_flight]
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert statuses == [200] * 4
    assert process.returncode == 0, err
    assert "stopped after 4 answered request(s)" in out, out
    assert "Traceback" not in err, err


def test_another_host_is_said_to_be_reachable_from_the_network(model):
    process, line = _start(model, "--host", "0.0.0.0")
    try:
        assert "reachable from the network" in line and "loopback only" not in line, line
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode == 0


def test_a_port_in_use_is_one_line(model, cli):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = cli("serve", "--model", str(model), "--port", str(taken.getsockname()[1]), "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("saliency: error: cannot listen on 127.0.0.1:") and result.stderr.count("\n") == 1


def test_the_limits_have_ceilings_shown_in_help(cli):
    result = cli("serve", "--help")
    for option, shown in (("--max-upload-mb", "1<=x<=1024"), ("--max-queue", "1<=x<=4096"),
                          ("--max-batch", "1<=x<=256"), ("--max-pixels", "1<=x<=250000000")):
        assert option in result.stdout and shown in result.stdout, option
    refused = cli("serve", "--model", "m", "--max-upload-mb", "100000")
    assert refused.returncode == 2 and "100000 is not in the range 1<=x<=1024" in refused.stderr


# -------------------------------------------------------------------------------- the page
@pytest.mark.skipif(__import__("browser").find_chromium() is None, reason="needs Chromium (apt-get install chromium)")
def test_the_page_in_a_real_browser(served, photos, tmp_path):
    from browser import Browser, find_chromium

    photo = tmp_path / "photo.png"
    Image.open(photos["a.jpg"]).save(photo)
    with Browser(find_chromium()) as browser:
        browser.open(served.url)
        described = ("(async () => { for (let i = 0; i < 300; i++) {"
                     " const text = document.querySelector('#model').textContent;"
                     " if (!text.startsWith('loading')) return text; await new Promise(r => setTimeout(r, 100)); }"
                     " return 'never described'; })()")
        assert browser.evaluate(described).startswith("model "), "the page did not read /api/health"
        document = browser.call("DOM.getDocument")
        node = browser.call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#photo")
        browser.call("DOM.setFileInputFiles", files=[str(photo)], nodeId=node["nodeId"])
        done = ("(async () => { for (let i = 0; i < 600; i++) {"
                " const imgs = Array.from(document.querySelectorAll('#results img'));"
                " if (imgs.length === 4 && imgs.every(im => im.complete && im.naturalWidth > 0)) return true;"
                " if (document.querySelector('#status.error')) return document.querySelector('#status').textContent;"
                " await new Promise(r => setTimeout(r, 100)); } return false; })()")
        assert browser.evaluate(done) is True
        sizes = browser.evaluate("Array.from(document.querySelectorAll('#results img')).map(i => [i.naturalWidth, i.naturalHeight])")
        assert sizes == [[90, 60]] * 4
        links = browser.evaluate("Array.from(document.querySelectorAll('#results a')).map(a => a.download)")
        assert links == ["photo.map.png", "photo.mask.png", "photo.cutout.png"]
        assert browser.errors() == []
        origin = served.url.rstrip("/")
        elsewhere = [u for u in browser.requests() if not u.startswith((origin, "blob:", "data:"))]
        assert elsewhere == []
        csp = served.request("GET", "/").headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp


# ------------------------------------------------------------------------- fuzzed from its schema
schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api_schema(model):
    with serving(model, max_wait_ms=1, timeout_s=30) as server:
        yield schemathesis.openapi.from_url(server.url + "api/openapi.json")


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@fuzzed.parametrize()
@__import__("hypothesis").settings(max_examples=int(os.environ.get("SALIENCY_SERVE_FUZZ_EXAMPLES", "60")),
                                   deadline=None, derandomize=True)
def test_the_api_fuzzed_from_its_own_schema(case):
    from schemathesis.checks import not_a_server_error

    response = case.call(timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert set(body) == {"error"} and "\n" not in body["error"], body


# ------------------------------------------------------------------------------- the batcher
class _RecordingDetector:
    """Stands in for the model: records each pass's shapes, answers with the image's mean."""

    def __init__(self) -> None:
        self.passes: list[list[tuple[int, int]]] = []

    def predict_prepared(self, batch):
        self.passes.append([item.shape for item in batch])
        return [np.full(item.shape, float(item.pixels.mean())) for item in batch]


def test_the_batcher_fills_each_pass_with_one_shape_oldest_first():
    import asyncio

    from pipelines.serve.batcher import Batcher
    from saliency.detector import PreparedImage

    def image(shape, value):
        return PreparedImage(np.full((*shape, 3), value, np.uint8), *shape, *shape)

    detector = _RecordingDetector()
    batcher = Batcher(detector, max_batch=4, max_wait_s=0.5)
    shapes = [(32, 64), (64, 32)] * 6  # interleaved: a pass per shape needs the batcher to sort them

    async def burst():
        return await asyncio.gather(*(batcher.predict(image(shape, i)) for i, shape in enumerate(shapes)))

    batcher.start()
    try:
        maps = asyncio.run(burst())
    finally:
        batcher.stop()
    assert [float(m.flat[0]) for m in maps] == [float(i) for i in range(12)]  # each answer is its own image's
    assert all(len(set(shapes_of_pass)) == 1 for shapes_of_pass in detector.passes)
    assert sorted(len(p) for p in detector.passes) == [2, 2, 4, 4]  # 6 of each shape: 4 + 2
    assert detector.passes[0][0] == (32, 64)  # the oldest image's shape went first


def test_a_lone_request_waits_no_longer_than_max_wait():
    import asyncio

    from pipelines.serve.batcher import Batcher
    from saliency.detector import PreparedImage

    batcher = Batcher(_RecordingDetector(), max_batch=8, max_wait_s=0.2)
    batcher.start()
    try:
        started = time.perf_counter()
        asyncio.run(batcher.predict(PreparedImage(np.zeros((32, 32, 3), np.uint8), 32, 32, 32, 32)))
        waited = time.perf_counter() - started
    finally:
        batcher.stop()
    assert 0.15 <= waited < 2.0, waited


def test_the_listening_socket_says_it_is_tcp():
    # asyncio turns Nagle's algorithm off only on sockets whose proto is TCP: with it on, a
    # kept-alive connection's answers waited 40 ms for the client's delayed ACK
    from pipelines.serve.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
