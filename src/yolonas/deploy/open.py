"""Open what a user names as a model: a published name, a spec YAML, a checkpoint, or an exported file.

This is the one place that decides "exported file or checkpoint" (by the suffix: .onnx, .xml, .engine, .plan).
`open_predictor` is the call that predict, val, bench, the server and the cluster job make: a file in, a ready
Predictor out.
"""

from __future__ import annotations

import logging
from pathlib import Path

from yolonas.deploy.backends import load_backend
from yolonas.deploy.files import has_random_weights, is_exported, load_model
from yolonas.errors import InputError
from yolonas.infer.backend import Backend, TorchBackend
from yolonas.infer.postprocess import NMSConfig
from yolonas.infer.predictor import Predictor
from yolonas.infer.tiling import TileConfig

log = logging.getLogger(__name__)

TORCH_RUNTIMES = (None, "auto", "torch")  # what runs a checkpoint; for an exported file: pick by its suffix


def open_backend(path: str | Path, *, imgsz: int | None = None, device: str = "cpu", runtime: str | None = None,
                 threads: int | None = None, half: bool = False, compile: bool = False,
                 cuda_graphs: bool = False) -> Backend:
    """The backend that runs `path`.

    An exported file runs on its runtime (`runtime` onnxruntime or openvino for a .onnx; by its suffix when None,
    "auto" or "torch"); its input size was fixed at export, so `imgsz` is refused. Anything else (a checkpoint, a
    published name, a spec YAML) becomes a fused YoloNAS in a `TorchBackend` with `half`, `compile` and
    `cuda_graphs`, and a square input of `imgsz` when given.
    """
    if is_exported(path):
        return _open_exported(Path(path), imgsz, device, runtime, threads)
    if runtime not in TORCH_RUNTIMES:
        raise InputError(f"--backend {runtime} runs exported files: export first with `yolonas export "
                         f"--weights {path}`, then pass the .onnx")
    net = load_model(path, imgsz).eval().fuse()  # a missing file fails here
    return TorchBackend(net, device, half, compile=compile, cuda_graphs=cuda_graphs)


def _open_exported(path: Path, imgsz: int | None, device: str, runtime: str | None, threads: int | None) -> Backend:
    if imgsz is not None:
        raise InputError(f"{path}: the input size of an exported model is set at export (yolonas export "
                         "--imgsz); drop --imgsz")
    if runtime == "tensorrt" and path.suffix.lower() == ".onnx":
        raise InputError("the TensorRT backend needs an engine built from the .onnx (trtexec --onnx=... "
                         "--saveEngine=model.engine); TensorRT is not installed on this machine")
    return load_backend(path, device=device, threads=threads, runtime=None if runtime in TORCH_RUNTIMES else runtime)


RUNTIMES = ("auto", "fastest", "torch", "onnxruntime", "openvino", "tensorrt")


def open_predictor(path: str | Path, *, imgsz: int | None = None, device: str = "cpu", runtime: str = "auto",
                   threads: int | None = None, nms: NMSConfig | None = None, tiles: TileConfig | int | None = None,
                   batch: int = 8, half: bool = False, compile: bool = False, cuda_graphs: bool = False
                   ) -> Predictor:
    """The one call that turns a model file into a ready `Predictor`: a checkpoint, published name or spec YAML
    (PyTorch), or an exported .onnx / .xml (its runtime).

    `runtime`: auto (PyTorch for a checkpoint, by the suffix for an exported file), torch, onnxruntime, openvino,
    tensorrt, or fastest: the fastest path this machine has for the file, measured briefly once and cached (see
    `deploy/fastest.py`; the choice and its figures are logged). `nms` (default: predict's thresholds) and `tiles`
    (a TileConfig or a tile size) are the Predictor's defaults; `batch` its batch size; `half`, `compile` and
    `cuda_graphs` are PyTorch's (see TorchBackend). A published name or spec file has random weights: said in the
    log.
    """
    if runtime not in RUNTIMES:
        raise InputError(f"--runtime {runtime}: use {', '.join(RUNTIMES)}")
    if runtime == "fastest":
        from yolonas.deploy.fastest import fastest_backend  # noqa: PLC0415 - exports and times: only when asked

        backend = fastest_backend(path, imgsz=imgsz, device=device, threads=threads)
    else:
        backend = open_backend(path, imgsz=imgsz, device=device, runtime=None if runtime == "auto" else runtime,
                               threads=threads, half=half, compile=compile, cuda_graphs=cuda_graphs)
    if has_random_weights(path):
        log.warning("%s has random weights (no checkpoint given), so its detections are noise; pass a trained "
                    "checkpoint: --weights runs/train/<name>/weights/best.pt", path)
    return Predictor(backend, nms=nms, batch_size=batch, tiles=tiles)
