"""The web app: a FastAPI server with one page and a small JSON/image API.

- ``GET /``: the page (``mrvae/web/``, every asset served from here, no CDN).
- ``POST /api/enhance``: multipart ``file`` (+ ``model``, ``strength``, ``exposure``) -> the
  enhanced image.
- ``GET /api/health``, ``GET /api/models``; OpenAPI schema at ``/openapi.json``, docs at
  ``/docs``.

Uploads are limited in bytes (413, checked from ``Content-Length`` before the body is read;
411 without one) and in pixels (413, from the image header before decoding); undecodable data
gets 422. At most
``concurrency`` enhancements run at once and ``queue_size`` more wait; beyond that requests get
503 at once. Each request has a deadline (504); a job that overruns it still holds its slot
until it ends, so the CPU load stays bounded. Images are processed in memory: the server
writes no file (Starlette may spool a large upload to a temporary file in the system temp
folder, deleted when the request ends).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from mrvae import __version__
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.exposure import MAX_EV
from mrvae.io.decode import read_image_bytes
from mrvae.io.encode import encode_image
from mrvae.io.files import is_raw_file
from mrvae.io.pixels import ImageReadError, LoadedImage
from mrvae.nn.config import DEFAULT_MODEL, PRESETS
from mrvae.nn.model import MRVAE, shipped_weights

WEB_DIR = Path(__file__).parent / "web"
MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the file in a multipart body
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class ServeConfig:
    """Limits and engine settings of the server.

    Attributes:
        backend: enhancement backend ("torch", "torch-float32" or "onnx").
        device: "cpu", "cuda" or "auto".
        max_upload_mb: largest accepted upload (413 above).
        max_megapixels: largest accepted image in megapixels (413 above).
        concurrency: enhancements running at once.
        queue_size: requests allowed to wait for a free slot (503 beyond).
        timeout_s: deadline of one request, waiting included (504 after).
    """

    backend: str = "torch"
    device: str = "cpu"
    max_upload_mb: float = 25.0
    max_megapixels: float = 24.0
    concurrency: int = 1
    queue_size: int = 4
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if min(self.max_upload_mb, self.max_megapixels, self.timeout_s) <= 0:
            raise ValueError(f"limits must be positive: {self}")
        if self.concurrency < 1 or self.queue_size < 0:
            raise ValueError(f"need concurrency >= 1 and queue_size >= 0: {self}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


class QueueFullError(RuntimeError):
    """Every running and waiting slot is taken."""


class JobQueue:
    """Runs blocking jobs on ``workers`` threads with at most ``capacity`` more waiting.

    A slot is freed when its job really ends (not when its request gives up), so a timed-out
    job cannot make room for more work than the limit.
    """

    def __init__(self, workers: int, capacity: int) -> None:
        self.limit = workers + capacity
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="mrvae-enhance")
        self._active = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        """Jobs running or waiting."""
        return self._active

    def _release(self, _: object = None) -> None:
        with self._lock:
            self._active -= 1

    async def run(self, job: Callable[[], ResultT], timeout: float) -> ResultT:
        """Run ``job`` in a worker thread.

        Raises:
            QueueFullError: no free slot.
            TimeoutError: not finished within ``timeout`` seconds (waiting included).
        """
        with self._lock:
            if self._active >= self.limit:
                raise QueueFullError(f"the server is busy ({self._active} jobs); retry shortly")
            self._active += 1
        try:
            future = self._executor.submit(job)
        except RuntimeError:  # shut down
            self._release()
            raise
        future.add_done_callback(self._release)
        # On timeout wait_for cancels the wrapper, which cancels a job still waiting.
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ModelStore:
    """The served models: the default one plus every preset whose weights are shipped.

    Engines are built on first use (the default one at start-up) and kept.
    """

    def __init__(self, default: MRVAE | str | Path, config: ServeConfig) -> None:
        self.config = config
        self.default = model_name(default)
        self.sources: dict[str, MRVAE | str | Path] = {self.default: default}
        for preset in PRESETS:
            if preset != self.default and shipped_weights(preset).exists():
                self.sources[preset] = shipped_weights(preset)
        self._engines: dict[str, Enhancer] = {}
        self._lock = threading.Lock()
        self.engine(self.default)

    def engine(self, name: str) -> Enhancer:
        """The engine of a served model (loaded once).

        Raises:
            KeyError: not a served model.
        """
        with self._lock:
            if name not in self._engines:
                self._engines[name] = Enhancer(self.sources[name], device=self.config.device,
                                               backend=self.config.backend)
            return self._engines[name]

    def describe(self) -> list[dict[str, Any]]:
        """Name, label and load state of each served model, the default first (no server
        paths: clients need none)."""
        return [{"name": name, "label": f"{name} (default)" if name == self.default else name,
                 "default": name == self.default, "loaded": name in self._engines}
                for name in self.sources]


def model_name(model: MRVAE | str | Path) -> str:
    """A preset's name, a weights file's name, or "custom" for an in-memory model."""
    if isinstance(model, MRVAE):
        return "custom"
    return str(model) if str(model) in PRESETS else Path(model).name


def safe_stem(filename: str | None) -> str:
    """A download name stem from an uploaded file name: no path, quotes or odd characters.

    Browsers percent-encode quotes and line breaks in multipart file names; they are decoded
    first so that they are dropped, not kept as ``22``.
    """
    stem = Path(unquote(filename or "").replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "image"


def output_format(source_format: str) -> str:
    """JPEG and WebP stay as they are; everything else (PNG, TIFF, BMP, HEIF, AVIF, RAW, ...)
    becomes PNG, which every browser shows."""
    return {"JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp"}.get(source_format.upper(), "png")


def header_pixels(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the image header without decoding, or None if unreadable."""
    try:
        with Image.open(BytesIO(data)) as im:
            return im.size
    except Exception:  # undecodable data is reported by the decoder in the job
        return None


def blend(original: np.ndarray, enhanced: np.ndarray, strength: float) -> np.ndarray:
    """``strength`` 0 keeps the original, 1 is the full enhancement."""
    if strength >= 1.0:
        return enhanced
    return np.clip(original + strength * (enhanced - original), 0.0, 1.0).astype(np.float32)


def enhance_upload(engine: Enhancer, data: bytes, name: str, strength: float,
                   max_pixels: int) -> tuple[bytes, str]:
    """Decode, enhance, blend and encode one upload -> (image bytes, format); ``engine`` carries
    the exposure (:meth:`mrvae.engine.enhancer.Enhancer.with_exposure`).

    ``strength`` 0 skips the model: the photo as the server decodes it (the page's preview of
    formats a browser cannot show: TIFF, HEIC, RAW).

    Raises:
        mrvae.io.pixels.ImageReadError: the data is not a readable image.
    """
    image: LoadedImage = read_image_bytes(data, name, max_pixels)
    enhanced = image.pixels if strength <= 0 else blend(
        image.pixels, engine.enhance_pixels(image.pixels), strength)
    fmt = output_format(image.format)
    encoded = encode_image(enhanced, image.alpha, image.bit_depth, fmt, 95, image.exif,
                           image.icc_profile)
    return encoded, fmt


def error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers)


def too_large_message(size: int | None, config: ServeConfig) -> str:
    got = f" ({size / 1024 / 1024:.1f} MB)" if size is not None else ""
    return f"upload too large{got}; this server accepts at most {config.max_upload_mb:g} MB"


def create_app(model: MRVAE | str | Path = DEFAULT_MODEL,
               config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``model`` (preset name, weights path or a loaded model).

    Raises:
        mrvae.nn.model.WeightsError: the default model cannot be loaded.
        ValueError: a bad device or backend.
    """
    config = config or ServeConfig()
    models = ModelStore(model, config)
    jobs = JobQueue(config.concurrency, config.queue_size)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.shutdown()

    app = FastAPI(title="mrvae", version=__version__, lifespan=lifespan,
                  description="Low-light image enhancement with MR-VAE.")
    app.state.models, app.state.jobs, app.state.config = models, jobs, config
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.middleware("http")
    async def refuse_large_bodies(request: Request,
                                  call_next: Callable[[Request], Awaitable[Response]]
                                  ) -> Response:
        # Refuse before the body is read or spooled to disk. Without a Content-Length (a
        # chunked body) the size would only be known after spooling all of it.
        if request.url.path != "/api/enhance" or request.method != "POST":
            return await call_next(request)
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            return JSONResponse({"detail": "send the upload with a Content-Length header "
                                           "(chunked uploads are not accepted)"}, 411,
                                headers={"Connection": "close"})
        if int(length) > config.max_upload_bytes + MULTIPART_SLACK:
            return JSONResponse({"detail": too_large_message(int(length), config)}, 413,
                                headers={"Connection": "close"})
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/api/health", summary="Server status and limits")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "model": models.default,
                "backend": config.backend,
                "jobs": {"active": jobs.active, "limit": jobs.limit},
                "limits": {"max_upload_mb": config.max_upload_mb,
                           "max_megapixels": config.max_megapixels,
                           "timeout_s": config.timeout_s}}

    @app.get("/api/models", summary="Models that can be chosen")
    async def list_models() -> dict[str, Any]:
        return {"default": models.default, "models": models.describe()}

    @app.post("/api/enhance", summary="Enhance one photo",
              response_class=Response,
              responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()},
                               "description": "The enhanced image (JPEG and WebP stay, "
                                              "other formats come back as PNG)."},
                         413: {"description": "Upload too large (bytes or pixels)"},
                         422: {"description": "Not a readable image, or a bad option "
                                              "(strength, exposure, model)"},
                         503: {"description": "Queue full; retry later"},
                         504: {"description": "Timed out"}})
    async def enhance(file: Annotated[UploadFile, File(description="The photo.")],
                      model: Annotated[str | None, Form(
                          description="Model name from /api/models (default: the server's).")
                      ] = None,
                      strength: Annotated[float, Form(
                          ge=0.0, le=1.0, description="0 = original, 1 = fully enhanced.")
                      ] = 1.0,
                      exposure: Annotated[float, Form(
                          ge=-MAX_EV, le=MAX_EV, allow_inf_nan=False,
                          description="EV stops relative to the model's exposure (0 = auto).")
                      ] = 0.0) -> Response:
        name = model or models.default
        if name not in models.sources:
            raise error(422, f"unknown model {name!r}; choose from {', '.join(models.sources)}")
        data = await file.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise error(413, too_large_message(None, config))
        # a RAW's TIFF header may describe its preview, not the photo: the decoder checks it
        size = None if is_raw_file(file.filename or "") else header_pixels(data)
        if size is not None and size[0] * size[1] > config.max_pixels:
            raise error(413, f"{file.filename}: {size[0]}x{size[1]} = "
                             f"{size[0] * size[1] / 1e6:.3g} megapixels; this server accepts "
                             f"at most {config.max_megapixels:g} megapixels")
        label = file.filename or "upload"

        def job() -> tuple[bytes, str]:
            engine = models.engine(name).with_exposure(exposure)
            return enhance_upload(engine, data, label, strength, config.max_pixels)

        started = time.perf_counter()
        try:
            encoded, fmt = await jobs.run(job, config.timeout_s)
        except QueueFullError as exc:
            raise error(503, str(exc), {"Retry-After": "5"}) from None
        except (TimeoutError, asyncio.TimeoutError):  # distinct types before Python 3.11
            raise error(504, f"{label}: not finished within {config.timeout_s:g} s") from None
        except ImageReadError as exc:
            raise error(422, str(exc)) from None
        except Exception as exc:  # the server must answer, whatever the model does
            raise error(500, f"{label}: enhancement failed ({type(exc).__name__}: {exc})"
                        ) from None
        elapsed = time.perf_counter() - started
        filename = f"{safe_stem(file.filename)}_enhanced.{'jpg' if fmt == 'jpeg' else fmt}"
        return Response(encoded, media_type=MEDIA_TYPES[fmt],
                        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                 "X-Enhance-Seconds": f"{elapsed:.3f}"})

    return app


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
