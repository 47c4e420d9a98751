"""The HTTP service (`yolonas serve`): FastAPI + uvicorn around one inference worker that batches requests.

FastAPI, uvicorn, prometheus-client and python-multipart are the `serve` extra: `pip install 'yolonas[serve]'`.
"""

from __future__ import annotations

from yolonas.errors import InputError
from yolonas.serve.config import ServeConfig, is_loopback

__all__ = ["ServeConfig", "is_loopback", "serve"]


def serve(config: ServeConfig) -> None:
    """Serve `config.weights` over HTTP until interrupted: the API, the page, health checks and metrics."""
    config.check()  # a bad flag is refused before anything heavy is imported
    try:
        from yolonas.serve.server import run  # noqa: PLC0415 - FastAPI and uvicorn are the optional extra
    except ImportError as e:
        raise InputError(f"yolonas serve needs the serve extra ({e.name} is missing): "
                         "pip install 'yolonas[serve]'") from None
    run(config)
