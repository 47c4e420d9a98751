"""Start the service: the worker opens the model, then uvicorn serves the app until it is stopped."""

from __future__ import annotations

import logging

import uvicorn

from yolonas.deploy.open import open_predictor
from yolonas.infer.predictor import Predictor
from yolonas.serve.app import create_app
from yolonas.serve.batcher import Batcher
from yolonas.serve.config import ServeConfig
from yolonas.serve.metrics import Metrics

log = logging.getLogger(__name__)

SPARE_CONNECTIONS = 64  # beyond the queue: health checks, metrics, and requests still sending their bodies


def run(config: ServeConfig) -> None:
    """Serve `config.weights` on `config.host:port` until interrupted (SIGINT or SIGTERM)."""
    config.check()
    batcher, metrics = _start_worker(config)
    try:
        app = create_app(config, batcher, metrics)
        info = batcher.info
        log.info("serving %s (%s %s, input %dx%d, %d classes) on http://%s:%d; the page at /, the API at /docs%s",
                 config.weights, info.runtime, info.precision, *info.image_size, len(info.class_names),
                 config.host, config.port, "; API key required" if config.api_key else "")
        # loop and http stay "auto": uvicorn[standard]'s uvloop and httptools, when installed, cost the event loop
        # less per request, CPU time the inference worker gets back on a machine with few cores.
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                    server_header=False, limit_concurrency=config.max_queue + SPARE_CONNECTIONS,
                    timeout_graceful_shutdown=5)
    finally:
        batcher.stop()


def _start_worker(config: ServeConfig) -> tuple[Batcher, Metrics]:
    """The batcher with its model open (a load error is raised here, before the port is bound)."""

    def open_model() -> Predictor:
        return open_predictor(config.weights, imgsz=config.imgsz, device=config.device,
                              runtime=config.resolved_runtime, threads=config.threads, batch=config.max_batch)

    metrics = Metrics()
    batcher = Batcher(open_model, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                      max_queue=config.max_queue, on_batch=metrics.observe_batch)
    metrics.watch_queue(lambda: batcher.depth)
    batcher.start()
    return batcher, metrics
