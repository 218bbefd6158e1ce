"""The HTTP application of ``saliency serve``: the API, its docs and the web page.

    POST /api/predict?kind=map|mask|cutout|overlay   an image in, a PNG out
    GET  /api/health                                  model, device, queue, counts
    GET  /api/docs, /api/openapi.json                 the API described (no CDN)
    GET  /                                            the web page

A request is admitted only while fewer than ``max_queue`` are in flight (503 otherwise, before
its body is read), so memory is bounded by the queue: each admitted request holds at most one
upload of ``max_upload_mb``. Its body is read up to that limit and no further (413). The image
goes through the project's one loader (saliency.datasets, the bomb check of ``predict``) on a
worker thread, is prepared exactly as ``saliency predict`` prepares a file, waits for a batched
forward pass (batcher.py), and is encoded on a worker thread with predict's PNG writer, so the
map a client gets is byte for byte the file ``predict`` writes. Every refusal is JSON,
``{"error": "one line"}``, with its status; no request names a path or a URL to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from importlib import resources

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.serve.batcher import Batcher
from pipelines.serve.config import ServeConfig, default_threads
from pipelines.serve.docs_page import render_docs
from saliency.core.errors import UserError, one_line
from saliency.core.png import encode_png
from saliency.datasets import TooManyPixels, load_image_bytes
from saliency.detector import KINDS_ON_THE_IMAGE, OUTPUT_KINDS, PreparedImage, SaliencyDetector, prepare_image, \
    render_output

Kind = Enum("Kind", {kind: kind for kind in OUTPUT_KINDS}, type=str)
Kind.__doc__ = "What the map is turned into: the 8-bit map, the binary mask, the cutout (RGBA) or the overlay."

# Nothing the page or the docs load may come from anywhere but this server.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC_TYPES = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}
PNG_RESPONSE = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
ERROR_SCHEMA = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}
PREDICT_BODY = {"requestBody": {"required": True, "description": "The image: the raw file as the body, or a "
                "multipart/form-data upload with one file part.", "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                        "file": {"type": "string", "format": "binary"}}}}}}}


class Refused(Exception):
    """A request answered with an error status and one line, the server going on."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(" ".join(message.split()))}, status_code=status, headers=headers)


class SecurityHeaders:
    """Adds the content-security policy and its companions to every response (plain ASGI: no
    buffering of bodies, no second task per request)."""

    HEADERS = [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
               (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Counters:
    def __init__(self) -> None:
        self.in_flight = 0
        self.served = 0
        self.refused = 0
        self.started = time.monotonic()


# ----------------------------------------------------------------------------------- uploads
async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (413 past it): refused from its declared
    length when it has one, else after the chunk that crossed the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the upload is {int(declared):,} bytes, more than the {limit:,} allowed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the upload is more than the {limit:,} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_image_bytes(request: Request, limit: int) -> tuple[bytes, str]:
    """(the image's bytes, a name for messages) from a raw body or a one-file multipart form."""
    body = await read_body(request, limit)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        if not body:
            raise Refused(400, "the body is empty: send an image (the file itself, or a multipart upload)")
        return body, "upload"

    async def replay() -> dict:  # Starlette's form parser, fed the bytes already read and bounded
        nonlocal body
        chunk, body = body, b""
        return {"type": "http.request", "body": chunk, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except (AssertionError, StarletteHTTPException, ValueError) as exc:  # what the multipart parser raises
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        raise Refused(400, f"a malformed multipart upload ({detail})") from None
    try:
        files = [value for value in form.values() if not isinstance(value, str)]
        if not files:
            raise Refused(400, "the multipart upload has no file part: send the image as the field 'file'")
        upload = files[0]
        data = await upload.read()
        name = one_line(upload.filename or "upload")[:120] or "upload"
    finally:
        await form.close()
    if not data:
        raise Refused(400, f"{name}: the file part is empty")
    return data, name


def decode(data: bytes, name: str, kind: str, detector: SaliencyDetector,
           max_pixels: int) -> tuple[PreparedImage, np.ndarray | None]:
    """The image prepared as ``saliency predict`` prepares a file: decoded whole when the output
    is drawn on it (cutout, overlay), else at the size the model needs."""
    whole = kind in KINDS_ON_THE_IMAGE
    pixels, original = load_image_bytes(data, name, None if whole else detector.size, max_pixels)
    prepared = prepare_image(pixels, detector.size, detector.stride, None if whole else original)
    return prepared, (pixels if whole else None)


def encode(kind: str, saliency_map: np.ndarray, pixels: np.ndarray | None, threshold: float) -> bytes:
    return encode_png(render_output(kind, saliency_map, pixels, threshold))


# -------------------------------------------------------------------------------- the app
def create_app(detector: SaliencyDetector, config: ServeConfig) -> FastAPI:
    batcher = Batcher(detector, config.max_batch, config.max_wait_ms / 1000)
    workers = ThreadPoolExecutor(max_workers=config.threads or default_threads(), thread_name_prefix="saliency-io")
    counters = Counters()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if config.warm_up:
            await asyncio.get_running_loop().run_in_executor(workers, batcher.warm_up)
        batcher.start()
        try:
            yield
        finally:  # after the last request in flight was answered
            batcher.stop()
            workers.shutdown(wait=True)

    app = FastAPI(title="saliency serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description="Saliency maps from a U-Net trained on GAN-synthesized pairs (Voynov & Babenko, "
                              "ICML 2020). Every error is JSON: {\"error\": \"one line\"}.")
    app.state.batcher, app.state.counters, app.state.config = batcher, counters, config

    # ------------------------------------------------------------------- refusals as JSON
    @app.exception_handler(Refused)
    async def _refused(_request: Request, exc: Refused) -> JSONResponse:
        counters.refused += 1
        return error_response(exc.status, str(exc), exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return error_response(422, f"{where}: {first.get('msg', 'invalid')}"
                                   f"{' (got ' + repr(first['input'])[:80] + ')' if 'input' in first else ''}")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:  # a bug: said, not hidden
        print(f"saliency serve: internal error: {type(exc).__name__}: {one_line(str(exc))[:300]}", file=sys.stderr)
        return error_response(500, f"internal error ({type(exc).__name__})")

    app.add_middleware(SecurityHeaders)

    # ---------------------------------------------------------------------------- the API
    async def answer(request: Request, kind: str) -> Response:
        loop = asyncio.get_running_loop()
        data, name = await read_image_bytes(request, config.max_upload_bytes)
        try:
            prepared, pixels = await loop.run_in_executor(workers, decode, data, name, kind, detector,
                                                          config.max_pixels)
        except TooManyPixels as exc:
            raise Refused(413, str(exc)) from None
        except UserError as exc:
            raise Refused(400, str(exc)) from None
        del data
        saliency_map = await batcher.predict(prepared)
        png = await loop.run_in_executor(workers, encode, kind, saliency_map, pixels, config.threshold)
        return Response(png, media_type="image/png")

    @app.post("/api/predict", response_class=Response, openapi_extra=PREDICT_BODY,
              responses={200: {"description": "The PNG of the kind asked for, at the image's own size.",
                               **PNG_RESPONSE},
                         400: {"description": "Not an image, damaged or truncated, or an empty body.", **ERROR_SCHEMA},
                         413: {"description": "Over the upload limit or the pixel limit (refused from the "
                                              "image's header, before decoding).", **ERROR_SCHEMA},
                         422: {"description": "An unknown kind.", **ERROR_SCHEMA},
                         503: {"description": "The queue is full; retry after the seconds in Retry-After.",
                               **ERROR_SCHEMA},
                         504: {"description": "No answer within the request timeout.", **ERROR_SCHEMA}})
    async def predict(request: Request, kind: Kind = Query(Kind.map, description=Kind.__doc__)) -> Response:
        """The saliency map of one image (or its mask, cutout or overlay), as ``saliency predict`` writes it."""
        if counters.in_flight >= config.max_queue:
            raise Refused(503, f"the server is busy ({config.max_queue} requests in flight); retry shortly",
                          {"Retry-After": "1"})
        counters.in_flight += 1
        try:
            response = await asyncio.wait_for(answer(request, kind.value), config.timeout_s)
        except asyncio.TimeoutError:
            raise Refused(504, f"no answer within the request timeout of {config.timeout_s:g} s") from None
        finally:
            counters.in_flight -= 1
        counters.served += 1
        return response

    @app.get("/api/health")
    async def health() -> dict:
        """What is loaded and how busy it is."""
        return {"status": "ok", "model": detector.source, "device": str(detector.device),
                "precision": detector.precision, "size": detector.size, "queue": counters.in_flight,
                "served": counters.served, "refused": counters.refused, "forward_passes": batcher.forward_passes,
                "images_predicted": batcher.images, "largest_batch": batcher.largest_batch,
                "uptime_s": round(time.monotonic() - counters.started, 1),
                "limits": {"max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms,
                           "max_queue": config.max_queue, "max_upload_mb": config.max_upload_mb,
                           "max_pixels": config.max_pixels, "timeout_s": config.timeout_s},
                "kinds": list(OUTPUT_KINDS), "threshold": config.threshold}

    # ----------------------------------------------------------------- docs and the page
    static = {name: (resources.files("pipelines.serve") / "static" / name).read_bytes()
              for name in ("index.html", *STATIC_TYPES)}

    @app.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(render_docs(app.openapi()))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(static["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in STATIC_TYPES:  # a fixed set of files, never a path from the request
            raise Refused(404, f"no such file: {name}")
        return Response(static[name], media_type=STATIC_TYPES[name], headers={"Cache-Control": "no-cache"})

    return app
