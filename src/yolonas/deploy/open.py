"""Open what a user names as a model: a published name, a spec YAML, a checkpoint, or an exported file.

This is the one place that decides "exported file or checkpoint" (by the suffix: .onnx, .xml, .engine, .plan);
predict, val and bench run the backend that comes back, through the same Predictor or timing code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from yolonas.arch.model import YoloNAS
from yolonas.deploy.backends import load_backend
from yolonas.errors import InputError
from yolonas.infer.predictor import Backend, TorchBackend
from yolonas.weights import load

EXPORTED_SUFFIXES = (".onnx", ".xml", ".engine", ".plan")
TORCH_RUNTIMES = (None, "auto", "torch")  # what runs a checkpoint; for an exported file: pick by its suffix


def is_exported(path) -> bool:
    """True when `path` names an exported file (by its suffix) rather than a checkpoint, spec or published name."""
    return isinstance(path, (str, Path)) and Path(path).suffix.lower() in EXPORTED_SUFFIXES


def load_model(name: str | Path, imgsz: int | None = None) -> YoloNAS:
    """The YoloNAS that a published name, a spec YAML or a checkpoint names; with `imgsz`, a square input of that
    size, the image fitted inside it."""
    net = load(name)
    if imgsz is not None:
        net.preprocessing = dataclasses.replace(net.preprocessing, image_size=(imgsz, imgsz), longest_side=None)
    return net


@dataclass
class OpenedModel:
    """A model ready to run: `backend` goes to a `Predictor`, `validate` or a benchmark as it is."""

    source: str
    backend: Backend  # a TorchBackend around the fused network, or the exported file's runtime backend
    model: YoloNAS | None  # the fused network; None for an exported file
    label: str  # "torch" (+ " fp16", " compiled", " cuda-graphs"), "onnxruntime", "openvino", "tensorrt"
    random_weights: bool = False  # a published name or a spec file without a checkpoint: detections are noise

    @property
    def exported(self) -> bool:
        return self.model is None

    @property
    def preprocessing(self):
        return self.backend.preprocessing

    @property
    def class_names(self) -> list[str]:
        return self.backend.class_names


def open_model(path: str | Path, *, imgsz: int | None = None, device: str = "cpu", runtime: str | None = None,
               threads: int | None = None, half: bool = False, compile: bool = False,
               cuda_graphs: bool = False) -> OpenedModel:
    """Open `path` for running.

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
    label = "torch" + " fp16" * half + " compiled" * compile + " cuda-graphs" * cuda_graphs
    backend = TorchBackend(net, device, half, compile=compile, cuda_graphs=cuda_graphs)
    random = Path(path).suffix.lower() in (".yaml", ".yml") or not Path(path).exists()
    return OpenedModel(str(path), backend, net, label, random)


def _open_exported(path: Path, imgsz: int | None, device: str, runtime: str | None,
                   threads: int | None) -> OpenedModel:
    if imgsz is not None:
        raise InputError(f"{path}: the input size of an exported model is set at export (yolonas export "
                         "--imgsz); drop --imgsz")
    if runtime == "tensorrt" and path.suffix.lower() == ".onnx":
        raise InputError("the TensorRT backend needs an engine built from the .onnx (trtexec --onnx=... "
                         "--saveEngine=model.engine); TensorRT is not installed on this machine")
    engine = load_backend(path, device=device, threads=threads, runtime=None if runtime in TORCH_RUNTIMES else runtime)
    return OpenedModel(str(path), engine, None, type(engine).__name__.removesuffix("Backend").lower())


def open_predictor(path: str | Path, *, imgsz: int | None = None, device: str = "cpu", runtime: str = "auto",
                   threads: int | None = None, nms=None, tiles=None, batch: int = 8, half: bool = False):
    """The one call that turns a model file into a ready `Predictor`: a checkpoint, published name or spec YAML
    (PyTorch), or an exported .onnx / .xml (its runtime). `runtime`: auto (by the file), torch, onnxruntime,
    openvino, tensorrt. `nms` (an NMSConfig, default predict's) and `tiles` (a TileConfig or a tile size) are the
    Predictor's defaults; `batch` its batch size."""
    from yolonas.infer.predictor import Predictor  # noqa: PLC0415 - placeholder until the seam lands

    opened = open_model(path, imgsz=imgsz, device=device, runtime=None if runtime == "auto" else runtime,
                        threads=threads, half=half)
    return Predictor(opened.backend, nms=nms, device=device, batch_size=batch, half=half, tiles=tiles)
