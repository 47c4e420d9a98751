"""The FastAPI app: the routes, their limits, the API key, and every refusal as a one-line JSON error.

`POST /v1/detect` reads the body (size limit), decodes it in the thread pool (pixel limit), so decoding overlaps the
worker's inference, queues the image for the batcher and waits for its answer up to the request timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from yolonas.deploy.timing import cpu_info
from yolonas.errors import InputError, YolonasError
from yolonas.infer.detections import Detections
from yolonas.infer.postprocess import PREDICT_NMS
from yolonas.infer.tiling import TileConfig
from yolonas.serve.batcher import Batcher, Done, JobExpired, ModelInfo, QueueFull, RunOptions
from yolonas.serve.config import ServeConfig
from yolonas.serve.errors import ApiError
from yolonas.serve.images import ACCEPTED, decode_image
from yolonas.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from yolonas.serve.upload import HOW, read_upload

log = logging.getLogger(__name__)

MAX_TILES = 256  # tiles one request may ask for: more would hold the worker for everyone
RETRY_AFTER_S = "1"
# The page and its files are the server's own: nothing from elsewhere runs or loads.
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@dataclass
class Server:
    """What the routes share: the settings, the batcher and its model, the metrics."""

    config: ServeConfig
    batcher: Batcher
    info: ModelInfo
    metrics: Metrics


def create_app(config: ServeConfig, batcher: Batcher, metrics: Metrics) -> FastAPI:
    """The service around a started `batcher` (its model open): API, page, health checks and metrics."""
    if batcher.info is None:
        raise InputError("create_app needs a started Batcher: call batcher.start() first")
    server = Server(config, batcher, batcher.info, metrics)
    app = FastAPI(title="yolonas", summary="Object detection with YOLO-NAS", version="1",
                  description=f"Send an image ({ACCEPTED}) to POST /v1/detect: {HOW}.", redoc_url=None)
    app.state.server = server
    _add_error_handlers(app)
    app.include_router(_health_routes(server))
    app.include_router(_api_routes(server), dependencies=[Depends(_key_check(config.api_key))])
    app.include_router(_page_routes())
    app.mount("/static", StaticFiles(packages=[("yolonas.serve", "static")]), name="static")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


# ---------------------------------------------------------------------------------------------- errors


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.headers)

    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in err['loc'] if p != 'query')}: {err['msg']}" for err in e.errors()]
        return _error(422, "; ".join(parts))

    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return _error(500, f"internal error ({type(e).__name__}); the server logged it")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


def _key_check(api_key: str | None):
    """A dependency that refuses a request without the API key (when the server has one)."""

    async def check(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            raise ApiError(401, "missing API key: send it as the X-API-Key header (or Authorization: Bearer KEY)",
                           {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "wrong API key", {"WWW-Authenticate": "Bearer"})

    return check


def _busy(message: str) -> ApiError:
    return ApiError(503, f"server busy: {message}; retry later", {"Retry-After": RETRY_AFTER_S})


# ---------------------------------------------------------------------------------------------- routes


def _health_routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz", summary="The model is loaded and the queue has room")
    async def readyz() -> JSONResponse:
        if not server.batcher.alive:
            return _error(503, "the inference worker is not running")
        if not server.batcher.has_room():
            return _error(503, f"queue full ({server.batcher.depth} images)", {"Retry-After": RETRY_AFTER_S})
        return JSONResponse({"status": "ready", "queue": server.batcher.depth})

    return router


def _page_routes() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    page = (resources.files("yolonas.serve") / "static" / "index.html").read_text(encoding="utf-8")

    @router.get("/")
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP})

    return router


def _api_routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["detection"])

    @router.post("/v1/detect", summary="Detect objects in one image", openapi_extra=UPLOAD_BODY)
    async def detect(
        request: Request,
        conf: Annotated[float, Query(ge=0, le=1, description="Score threshold.")] = PREDICT_NMS.score_threshold,
        iou: Annotated[float, Query(gt=0, le=1, description="NMS IoU threshold.")] = PREDICT_NMS.iou_threshold,
        max_det: Annotated[int, Query(ge=1, le=PREDICT_NMS.top_k, description="Detections kept (before the "
                                      "class filter).")] = PREDICT_NMS.max_detections,
        classes: Annotated[str | None, Query(description="Keep only these classes: ids or names, "
                                             "comma-separated.")] = None,
        tile: Annotated[int, Query(ge=0, le=8192, description="Tile size in original pixels (a multiple of 32); "
                                   "0 = the whole image.")] = 0,
        overlap: Annotated[float, Query(ge=0, lt=1, description="With tile: the fraction of a tile shared with "
                                        "its neighbour (rounded to 0.01).")] = 0.2,
        fmt: Annotated[Literal["json", "coco"], Query(alias="format", description="json, or coco: COCO results "
                                                      "(bbox xywh, category_id = class + 1).")] = "json",
        image_id: Annotated[int, Query(ge=0, description="With format=coco: the results' image_id.")] = 0,
    ) -> Response:
        options = _run_options(conf, iou, max_det, tile, overlap)
        wanted = _class_ids(classes, server.info.class_names)
        start = time.perf_counter()
        done = await _detect(server, request, options)
        det = _keep_classes(done.detections, wanted)
        took = {"total": (time.perf_counter() - start) * 1e3, "queue": done.queue_ms, "inference": done.inference_ms}
        timing = ", ".join(f"{k};dur={v:.2f}" for k, v in took.items())
        body = det.to_coco(image_id) if fmt == "coco" else {
            **det.to_json(), "time_ms": {k: round(v, 2) for k, v in took.items()}, "batch_size": done.batch_size}
        return JSONResponse(body, headers={"Server-Timing": timing})

    @router.get("/v1/model", summary="The model: classes, input size, precision, runtime, CPU")
    async def model() -> dict:
        return _model_description(server)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    return router


# ---------------------------------------------------------------------------------------------- detection


async def _detect(server: Server, request: Request, options: RunOptions) -> Done:
    """Read, decode and queue the request's image, then wait for the worker's answer."""
    batcher, config = server.batcher, server.config
    if not batcher.has_room():  # refused before its body is even read
        raise _busy(f"{batcher.depth} images are queued (--max-queue {batcher.max_queue})")
    data, name = await read_upload(request, config.max_bytes)
    with batcher.incoming() as ticket:
        image = await run_in_threadpool(decode_image, data, config.max_pixels)
        _check_tiles(options.tiles, image.shape[:2])
        try:
            future = batcher.submit(image, options, config.timeout_s, name, ticket)
        except QueueFull as e:
            raise _busy(str(e)) from None
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), config.timeout_s)
    except (asyncio.TimeoutError, JobExpired):
        raise ApiError(504, f"no answer within --timeout-s {config.timeout_s:g} s; retry later",
                       {"Retry-After": RETRY_AFTER_S}) from None
    except YolonasError as e:
        raise ApiError(422, str(e)) from None


def _run_options(conf: float, iou: float, max_det: int, tile: int, overlap: float) -> RunOptions:
    nms = dataclasses.replace(PREDICT_NMS, score_threshold=conf, iou_threshold=iou, max_detections=max_det)
    if not tile:
        return RunOptions(nms)
    try:
        # Rounded, so the worker's cache of tilers (one per setting) stays small whatever clients send.
        return RunOptions(nms, TileConfig(tile, round(overlap, 2)))
    except InputError as e:
        raise ApiError(422, f"tile: {e}") from None


def _check_tiles(tiles: TileConfig | None, shape: tuple[int, int]) -> None:
    if tiles is not None and len(tiles.windows(*shape)) > MAX_TILES:
        raise ApiError(422, f"tile {tiles.size} with overlap {tiles.overlap:g} cuts this {shape[1]}x{shape[0]} "
                            f"image into more than {MAX_TILES} tiles: give a larger tile")


def _class_ids(text: str | None, names: list[str]) -> np.ndarray | None:
    """The class ids that `classes` names (ids or names, comma-separated); None keeps every class."""
    if text is None or not text.strip():
        return None
    ids = []
    for item in (part.strip() for part in text.split(",")):
        if item.isdigit() and int(item) < len(names):
            ids.append(int(item))
        elif item in names:
            ids.append(names.index(item))
        else:
            raise ApiError(422, f"classes: {item[:80]!r} is neither a class id (0..{len(names) - 1}) nor a class "
                                "name of this model (GET /v1/model lists them)")
    return np.asarray(ids, dtype=np.int64)


def _keep_classes(det: Detections, wanted: np.ndarray | None) -> Detections:
    if wanted is None:
        return det
    keep = np.isin(det.class_ids, wanted)
    return dataclasses.replace(det, boxes=det.boxes[keep], scores=det.scores[keep], class_ids=det.class_ids[keep])


def _model_description(server: Server) -> dict:
    info, config = server.info, server.config
    h, w = info.image_size
    return {
        "weights": Path(config.weights).name,  # the name only: the server's folders are nobody's business
        "classes": info.class_names, "num_classes": len(info.class_names), "input_size": {"height": h, "width": w},
        "precision": info.precision, "runtime": info.runtime, "device": info.device, "nms_in_model": info.has_nms,
        "cpu": cpu_info().describe(),
        "defaults": {"conf": PREDICT_NMS.score_threshold, "iou": PREDICT_NMS.iou_threshold,
                     "max_det": PREDICT_NMS.max_detections},
        "batching": {"max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms, "max_queue": config.max_queue},
        "limits": {"max_mb": config.max_mb, "max_pixels": config.max_pixels, "timeout_s": config.timeout_s,
                   "max_tiles": MAX_TILES, "formats": ACCEPTED},
    }
