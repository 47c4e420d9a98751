"""Runtime backends for exported files (ONNX Runtime, OpenVINO, TensorRT), each a `Backend` for the Predictor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from yolonas.arch.model import Preprocessing
from yolonas.deploy.export import (
    META_CLASS_NAMES,
    META_INPUT,
    META_NMS,
    META_OUTPUTS,
    META_PREPROCESSING,
    META_SPEC,
)
from yolonas.errors import InputError
from yolonas.infer.postprocess import NMSConfig


def _check_path(path: str | Path, kind: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {kind} file")
    return path


def _read_onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, read without loading its weights."""
    import onnx  # noqa: PLC0415 - only the OpenVINO path needs the onnx package

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise InputError(f"{path}: not an ONNX file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    return {p.key: p.value for p in model.metadata_props}


class _ExportedModel:
    """What every backend shares: the file's metadata, input checks and the conversion of outputs to tensors."""

    def __init__(self, path: Path, meta: dict[str, str], input_shape: list):
        if META_CLASS_NAMES not in meta or META_PREPROCESSING not in meta:
            raise InputError(f"{path}: no yolonas metadata (class names, pre-processing); export it with "
                             "`yolonas export`, or pass class names and preprocessing to the Predictor")
        self.path = path
        self.class_names: list[str] = json.loads(meta[META_CLASS_NAMES])
        self.preprocessing = Preprocessing.from_dict(json.loads(meta[META_PREPROCESSING]))
        self.spec_name = meta.get(META_SPEC, "")
        self.uint8_input = meta.get(META_INPUT, "float") == "uint8"
        self.has_nms = meta.get(META_OUTPUTS, "raw") == "nms"
        self.nms: NMSConfig | None = None
        if self.has_nms:
            # Per class over every class score: what the ONNX NonMaxSuppression in the graph does.
            self.nms = NMSConfig(**json.loads(meta[META_NMS]), multi_label=True, class_agnostic=False)
        # Static dimensions are ints; dynamic ones are names or None.
        dims = [d if isinstance(d, int) and d > 0 else None for d in input_shape]
        self.static_batch: int | None = dims[0]
        self.static_size: tuple[int, int] | None = (dims[2], dims[3]) if dims[2] and dims[3] else None

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def _forward(self, x: torch.Tensor) -> list[np.ndarray]:
        """Run the file on a [B, 3, H, W] float batch in [0, 1], in chunks of a static batch when it has one."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"{self.path}: expected a [B, 3, H, W] batch, got shape {tuple(x.shape)}")
        if self.static_size is not None and tuple(x.shape[2:]) != self.static_size:
            h, w = self.static_size
            raise InputError(f"{self.path} expects {h}x{w} (h x w) input, got {x.shape[2]}x{x.shape[3]}: letterbox "
                             f"to {h}x{w} or export with a dynamic size")
        host = x.detach().cpu()
        # Letterboxed pixels are k/255 exactly, so rounding recovers the uint8 image the graph expects.
        arr = (host * 255).round_().clamp_(0, 255).to(torch.uint8).numpy() if self.uint8_input else \
            host.float().numpy()
        arr = np.ascontiguousarray(arr)
        step = self.static_batch or len(arr)
        if len(arr) == step:
            return self._run(arr)
        chunks = []
        for start in range(0, len(arr), step):  # a static-batch file takes the batch `step` images at a time
            part = arr[start:start + step]
            n = len(part)
            if n < step:
                part = np.concatenate([part, np.zeros((step - n, *part.shape[1:]), part.dtype)])
            chunks.append([o[:n] for o in self._run(part)])
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw exports: (boxes [B, N, 4] xyxy input pixels, scores [B, N, C])."""
        if self.has_nms:
            raise InputError(f"{self.path} has NMS in its graph: use detect(), not raw boxes and scores")
        boxes, scores = self._forward(x)
        return torch.from_numpy(boxes), torch.from_numpy(scores)

    def detect(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Exports with NMS inside: per image a [n, 6] tensor (x1, y1, x2, y2, score, class) in input pixels."""
        if not self.has_nms:
            raise InputError(f"{self.path} has raw outputs: call the backend and run postprocess() on them")
        num_dets, boxes, scores, classes = self._forward(x)
        rows = np.concatenate([boxes, scores[..., None], classes[..., None].astype(np.float32)], axis=2)
        return [torch.from_numpy(r[:int(n)]) for r, n in zip(rows, num_dets.reshape(-1))]


class OnnxRuntimeBackend(_ExportedModel):
    """An exported .onnx file run by ONNX Runtime (CPU; CUDA where onnxruntime-gpu is installed)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort  # noqa: PLC0415 - optional at import time of the package

        path = _check_path(path, "ONNX")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise InputError(f"{path}: ONNX Runtime has no CUDA here (onnxruntime-gpu is not installed); "
                                 "use --device cpu or pip install onnxruntime-gpu")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for unreadable files
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"{path}: not a readable ONNX file ({first})") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        super().__init__(path, meta, inp.shape)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})


class OpenVINOBackend(_ExportedModel):
    """An exported .onnx (or OpenVINO .xml converted from one of ours) run by OpenVINO on the CPU."""

    def __init__(self, path: str | Path, device: str = "CPU", threads: int | None = None):
        try:
            import openvino as ov  # noqa: PLC0415 - optional dependency
        except ImportError as e:
            raise InputError("the OpenVINO backend needs openvino: pip install openvino") from e
        path = _check_path(path, "model")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError with a long trace for bad files
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"{path}: not a model OpenVINO can read ({first})") from e
        if path.suffix.lower() == ".onnx":
            meta = _read_onnx_metadata(path)
        else:  # an IR written by export_openvino keeps our metadata in its rt_info
            meta = {k: str(model.get_rt_info(["yolonas", k]).astype(str)) for k in _META_KEYS
                    if model.has_rt_info(["yolonas", k])}
        shape = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]
        # f32 explicitly: on CPUs with bf16 units OpenVINO otherwise defaults to bf16 (0.4% box error measured).
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, str(device).upper(), config)
        self.request = self.compiled.create_infer_request()
        super().__init__(path, meta, shape)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer({0: x})
        return [np.asarray(result[out]) for out in self.compiled.outputs]


_META_KEYS = (META_CLASS_NAMES, META_PREPROCESSING, META_SPEC, META_OUTPUTS, META_INPUT, META_NMS)


def export_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert one of our ONNX exports to an OpenVINO IR (.xml + .bin), keeping its metadata."""
    try:
        import openvino as ov  # noqa: PLC0415 - optional dependency
    except ImportError as e:
        raise InputError("converting to OpenVINO needs openvino: pip install openvino") from e
    onnx_path = _check_path(onnx_path, "ONNX")
    meta = _read_onnx_metadata(onnx_path)
    model = ov.convert_model(str(onnx_path))
    for key in _META_KEYS:
        if key in meta:
            model.set_rt_info(meta[key], ["yolonas", key])
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path))
    return xml_path


class TensorRTBackend:
    """A TensorRT engine; needs the `tensorrt` package and a CUDA GPU."""

    def __init__(self, path: str | Path):
        try:
            import tensorrt  # noqa: F401, PLC0415 - optional dependency, absent on our machines
        except ImportError as e:
            raise InputError(f"{path}: the TensorRT backend needs `tensorrt` (NVIDIA TensorRT on a CUDA machine), "
                             "which does not import here; run the .onnx file with onnxruntime or openvino") from e
        raise InputError(f"{path}: running TensorRT engines is not implemented yet; run the .onnx file with "
                         "onnxruntime or openvino")


def load_backend(path: str | Path, device: str = "cpu", threads: int | None = None, runtime: str | None = None):
    """The backend for an exported file by its suffix: .onnx -> ONNX Runtime (or `runtime="openvino"`),
    .xml -> OpenVINO, .engine/.plan -> TensorRT."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if suffix in (".engine", ".plan"):
        return TensorRTBackend(path)
    if suffix == ".xml" or runtime == "openvino":
        return OpenVINOBackend(path, "CPU" if device == "cpu" else device, threads)
    if suffix == ".onnx" or runtime == "onnxruntime":
        return OnnxRuntimeBackend(path, device, threads)
    raise InputError(f"{path}: unknown exported model type {suffix!r}; use .onnx, .xml, .engine or .plan")
