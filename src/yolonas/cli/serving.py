"""Serving: `yolonas serve`, the HTTP service."""

from __future__ import annotations

from typing import Annotated

import typer

from yolonas.cli.options import AT_LEAST_1, DeviceOpt, _choice, _imgsz, _rule, _threads
from yolonas.cli.shared import _device, _show_progress

POSITIVE = _rule(lambda v: v > 0, "must be more than 0")
PORT = _rule(lambda v: 0 < v < 65536, "must be a port number, 1 to 65535")


def serve(
    weights: Annotated[str, typer.Option("--weights", "-w", help="A checkpoint, .onnx or OpenVINO .xml.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on; a non-loopback one needs --api-key.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", callback=PORT)] = 8000,
    runtime: Annotated[str | None, typer.Option("--runtime", help="fastest (default on a CPU: measured once, "
                       "cached), auto, torch, onnxruntime, openvino or tensorrt.",
                       callback=_choice("fastest", "auto", "torch", "onnxruntime", "openvino", "tensorrt"))] = None,
    device: DeviceOpt = "auto",
    imgsz: Annotated[int | None, _imgsz("the model's; checkpoints only")] = None,
    threads: Annotated[int | None, _threads("for inference")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Images per inference batch, at most; at least 1.",
                                           callback=AT_LEAST_1)] = 8,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="How long a batch waits for images still "
                           "being decoded, 0 or more.", callback=_rule(lambda v: v >= 0, "must be 0 or more"))
                           ] = 5.0,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Images waiting at most, beyond which: 503; at "
                                           "least 1.", callback=AT_LEAST_1)] = 64,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Seconds a request waits for its answer.",
                                             callback=POSITIVE)] = 30.0,
    max_mb: Annotated[float, typer.Option("--max-mb", help="Largest request body, in MiB.", callback=POSITIVE)
                      ] = 20.0,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Largest image, in pixels (read from its header, "
                          "before decoding).", callback=AT_LEAST_1)] = 40_000_000,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="YOLONAS_API_KEY", show_default=False,
                       help="Key every request but the health checks must send (X-API-Key header).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback --host without an API key.")
                        ] = False,
) -> None:
    """Serve a model over HTTP: POST /v1/detect, GET /v1/model, /healthz, /readyz, /metrics, a web page at /."""
    from yolonas.serve import ServeConfig  # noqa: PLC0415 - keep `yolonas --help` fast
    from yolonas.serve import serve as run_server  # noqa: PLC0415

    _show_progress("yolonas.serve")
    _show_progress("yolonas.deploy.fastest")  # which runtime won, and by how much
    run_server(ServeConfig(weights=weights, host=host, port=port, runtime=runtime, device=_device(device),
                           imgsz=imgsz, threads=threads, max_batch=max_batch, max_wait_ms=max_wait_ms,
                           max_queue=max_queue, timeout_s=timeout_s, max_mb=max_mb, max_pixels=max_pixels,
                           api_key=api_key, insecure=insecure))
