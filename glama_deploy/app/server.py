"""The web server behind ``python -m glama_deploy.app``: one page, one engine, a bounded queue.

Routes: ``GET /`` the page, ``GET /static/*`` its script and style, ``GET /samples/*`` the bundled
photos, ``GET /api/status`` engine, limits and queue length, ``POST /api/inpaint`` (multipart:
``image``, ``mask``, optional ``mode`` = auto | full | tiled) -> the result as a lossless PNG at the
image's full resolution, with ``X-Glama-Mode``, ``X-Glama-Seconds`` and ``X-Glama-Size`` headers.

Bad input gets a JSON ``{"error": "..."}`` with a 4xx status (413 too big, 400 anything else);
a full queue a 503 ``busy``. The server never sends a traceback and keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..bundled import SAMPLES
from ..errors import EngineError, InputError
from ..infer import inpaint_arrays
from ..io import encode_image, read_image, read_mask
from .sniff import image_dims

log = logging.getLogger("glama_deploy.app")
STATIC = Path(__file__).resolve().parent / "static"
MODES = ("auto", "full", "tiled")
# everything the page needs comes from this server: no CDN, no analytics, nothing leaves the machine
CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'")


@dataclass
class Limits:
    """What one request may ask for."""

    max_upload_bytes: int = 64 * 2**20  # image + mask, as sent
    max_pixels: int = 50_000_000  # per image (an 8K photo is 33 MP)
    full_max_pixels: int = 4_000_000  # auto mode: whole-image above this, tiles
    max_queue: int = 4  # requests waiting behind the running one
    tile: int = 512


class HTTPProblem(Exception):
    """A request we refuse: status code and a one-line message for the page."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


class EngineQueue:
    """One engine thread; at most ``max_queue`` requests wait behind the one running.

    A request is admitted before its upload is decoded, so the queue also bounds how many decoded
    images the server holds at once (each 4000x3000 photo is ~150 MB as float32)."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.pending = 0  # admitted and not finished; only touched on the event loop's thread
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="glama-engine")

    def admit(self) -> None:
        """Count a request in, or refuse it with 503 when the queue is full."""
        if self.pending > self.max_queue:
            raise HTTPProblem(503, f"busy: {self.pending} request(s) ahead of yours and the queue is full; "
                                   "try again in a moment", ahead=self.pending)
        self.pending += 1

    def release(self) -> None:
        self.pending -= 1

    async def run(self, fn, *args):
        """Run ``fn`` on the engine thread for an admitted request; it is counted out when ``fn`` ends,
        even if the client went away while it waited."""
        loop = asyncio.get_running_loop()
        fut = self._pool.submit(fn, *args)
        fut.add_done_callback(lambda _f: loop.call_soon_threadsafe(self.release))
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class SecurityHeaders:
    """ASGI middleware: the CSP that keeps the page on this server, on every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                extra = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff")]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _problem_text(e: InputError, path: Path, what: str) -> str:
    """io's messages start with the file's path: here it is a temp file, so name the upload."""
    msg = str(e)
    return f"{what}: {msg[len(str(path)) + 2:]}" if msg.startswith(f"{path}: ") else f"{what}: {msg}"


def decode_upload(image_bytes: bytes, mask_bytes: bytes, limits: Limits):
    """Validate and decode an uploaded pair with the CLI's readers -> (LoadedImage, HxW mask)."""
    dims = image_dims(image_bytes)
    if dims and dims[0] * dims[1] > limits.max_pixels:  # before decoding: a small PNG can hold GBs
        raise HTTPProblem(413, _too_many(*dims, limits))
    with tempfile.TemporaryDirectory(prefix="glama-app-") as tmp:
        ipath, mpath = Path(tmp) / "image", Path(tmp) / "mask"
        ipath.write_bytes(image_bytes)
        try:
            loaded = read_image(ipath)
        except InputError as e:
            raise HTTPProblem(400, _problem_text(e, ipath, "image")) from None
        h, w = loaded.shape
        if h * w > limits.max_pixels:
            raise HTTPProblem(413, _too_many(w, h, limits))
        mdims = image_dims(mask_bytes)
        if mdims and mdims != (w, h):  # the common mistake, named before decoding the mask
            raise HTTPProblem(400, f"mask: mask is {mdims[0]}x{mdims[1]} but the image is {w}x{h}")
        mpath.write_bytes(mask_bytes)
        try:
            mask = read_mask(mpath, (h, w))
        except InputError as e:
            raise HTTPProblem(400, _problem_text(e, mpath, "mask")) from None
    if not mask.any():
        raise HTTPProblem(400, "mask: the mask is empty; paint over what should be removed")
    return loaded, mask


def _too_many(w: int, h: int, limits: Limits) -> str:
    return (f"image: {w}x{h} is {w * h / 1e6:.1f} MP, above this server's limit of "
            f"{limits.max_pixels / 1e6:.3g} MP")


def choose_mode(asked: str, h: int, w: int, limits: Limits) -> str:
    """``auto``: the whole image up to ``full_max_pixels``, mask-aware tiles above."""
    if asked not in MODES:
        raise HTTPProblem(400, f"mode: unknown mode '{asked}' (use one of {', '.join(MODES)})")
    if asked == "auto":
        return "full" if h * w <= limits.full_max_pixels else "tiled"
    if asked == "full" and h * w > limits.full_max_pixels:
        raise HTTPProblem(400, f"mode: full mode takes at most {limits.full_max_pixels / 1e6:.3g} MP "
                               f"(this image is {w * h / 1e6:.1f} MP); use auto or tiled")
    return asked


def inpaint_png(engine, loaded, mask: np.ndarray, mode: str, tile: int) -> tuple[bytes, float]:
    """Run the shared pipeline (known pixels come back exactly) and encode a lossless PNG."""
    t0 = time.perf_counter()
    result = inpaint_arrays(engine, loaded.rgb, mask, mode=mode, tile=tile)
    seconds = time.perf_counter() - t0
    return encode_image(Path("result.png"), result, loaded.alpha, loaded.bit_depth), seconds


def create_app(engine, limits: Limits | None = None) -> Starlette:
    """The ASGI app around ``engine`` (any :class:`~glama_deploy.engines.Engine`)."""
    limits = limits or Limits()
    queue = EngineQueue(limits.max_queue)
    describe = engine.describe() if hasattr(engine, "describe") else {"engine": getattr(engine, "name", "?")}

    async def page(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def status(_request: Request) -> Response:
        samples = sorted(p.name for p in SAMPLES.glob("*.jpg"))
        return JSONResponse({"engine": describe, "pending": queue.pending, "limits": asdict(limits),
                             "samples": samples})

    async def inpaint(request: Request) -> Response:
        try:
            queue.admit()  # before decoding: the queue bounds the decoded images held too
            try:
                loaded, mask, mode = await _read_request(request, limits)
            except BaseException:
                queue.release()
                raise
            png, seconds = await queue.run(inpaint_png, engine, loaded, mask, mode, limits.tile)
        except HTTPProblem as e:
            log.info("refused: %s", e.message)
            return JSONResponse({"error": e.message, **e.extra}, status_code=e.status)
        except (ValueError, EngineError) as e:  # the engine refused the values or its backend failed
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            log.warning("engine error: %s", first)
            return JSONResponse({"error": f"engine: {first}"}, status_code=500)
        except Exception:  # never a traceback to the page; the log has it
            log.exception("inpaint failed")
            return JSONResponse({"error": "internal error while inpainting (see the server's log)"},
                                status_code=500)
        h, w = loaded.shape
        log.info("%dx%d %s %.2f s", w, h, mode, seconds)
        return Response(png, media_type="image/png",
                        headers={"X-Glama-Mode": mode, "X-Glama-Seconds": f"{seconds:.3f}",
                                 "X-Glama-Size": f"{w}x{h}", "Cache-Control": "no-store"})

    routes = [
        Route("/", page),
        Route("/api/status", status),
        Route("/api/inpaint", inpaint, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Mount("/samples", StaticFiles(directory=SAMPLES), name="samples"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        queue.close()

    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)], lifespan=lifespan)
    app.state.queue = queue
    app.state.limits = limits
    return app


async def _read_request(request: Request, limits: Limits):
    """The multipart body, checked against the limits, decoded off the event loop."""
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPProblem(411, "upload: send the image with a Content-Length")
    if not length.isdigit() or int(length) > limits.max_upload_bytes:
        size = f"{int(length) / 2**20:.1f} MB" if length.isdigit() else "of unknown size"
        raise HTTPProblem(413, f"upload: {size} is above this server's limit of "
                               f"{limits.max_upload_bytes / 2**20:.3g} MB")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPProblem(400, "upload: send multipart/form-data with the fields image and mask")
    try:
        form = await request.form(max_files=2, max_fields=4)
    except Exception as e:  # malformed multipart: starlette raises its own types
        raise HTTPProblem(400, f"upload: unreadable form data ({e})") from None
    parts = {}
    for name in ("image", "mask"):
        part = form.get(name)
        if part is None or isinstance(part, str):
            raise HTTPProblem(400, f"{name}: missing (upload it as a file field named '{name}')")
        parts[name] = await part.read()
        if not parts[name]:
            raise HTTPProblem(400, f"{name}: empty file")
    mode = str(form.get("mode") or "auto")
    if mode not in MODES:
        raise HTTPProblem(400, f"mode: unknown mode '{mode}' (use one of {', '.join(MODES)})")
    await form.close()
    loaded, mask = await anyio.to_thread.run_sync(decode_upload, parts["image"], parts["mask"], limits)
    h, w = loaded.shape
    return loaded, mask, choose_mode(mode, h, w, limits)
