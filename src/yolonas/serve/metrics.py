"""The server's Prometheus metrics (prometheus-client), in a registry of its own, and the ASGI middleware that
counts every answer by route and status code.

Routes are labelled by the known paths only (anything else is "other"), so a scan of random URLs cannot grow
the number of series.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROUTES = ("/", "/v1/detect", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Requests and errors by route and code, request latency, batch sizes, inference time, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("yolonas_http_requests", "HTTP requests answered, by route and status code",
                                ["route", "code"], registry=reg)
        self.errors = Counter("yolonas_http_errors", "HTTP error answers (4xx and 5xx), by route and status code",
                              ["route", "code"], registry=reg)
        self.latency = Histogram("yolonas_http_request_duration_seconds", "Time from request to answer, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=reg)
        self.batch_size = Histogram("yolonas_batch_size", "Images per inference batch", buckets=BATCH_BUCKETS,
                                    registry=reg)
        self.inference = Histogram("yolonas_inference_duration_seconds", "Time of one batch's inference",
                                   buckets=LATENCY_BUCKETS, registry=reg)
        self.queue = Gauge("yolonas_queue_depth", "Images waiting for the inference worker", registry=reg)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth from `depth` at each scrape."""
        self.queue.set_function(depth)

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        """One answered request."""
        self.requests.labels(route, str(code)).inc()
        if code >= 400:
            self.errors.labels(route, str(code)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        """One batch run by the worker."""
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


def route_label(path: str) -> str:
    """The route label of a request path: a known route, "/static", or "other"."""
    if path in ROUTES:
        return path
    return "/static" if path.startswith("/static/") else "other"


class MetricsMiddleware:
    """ASGI middleware: times every HTTP request and counts its status code (500 when the app raised)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(route_label(scope["path"]), status[0], time.perf_counter() - start)
