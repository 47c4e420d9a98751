"""Runtime backends for exported files (ONNX Runtime, OpenVINO, TensorRT), each a `Backend` for the Predictor."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from yolonas.deploy.export import (
    META_CLASS_NAMES,
    META_INPUT,
    META_KEYS,
    META_NMS,
    META_OUTPUTS,
    META_PRECISION,
    META_PREPROCESSING,
    META_QUANTIZATION,
    META_SPEC,
    THRESHOLD_INPUTS,
    read_onnx_metadata,
    without_threshold_defaults,
)
from yolonas.deploy.timing import openvino_compiled, openvino_core, openvino_precision, ort_session
from yolonas.errors import InputError
from yolonas.infer.postprocess import NMSConfig
from yolonas.preprocess import Preprocessing

log = logging.getLogger(__name__)


def _check_path(path: str | Path, kind: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {kind} file")
    return path


class _ExportedModel:
    """What every exported-file backend shares (the `Backend` protocol): the file's metadata, input checks, the
    thresholds fed to a graph with NMS inside, and the conversion of outputs to tensors. Runs on the host: its
    input and outputs are CPU tensors."""

    device = torch.device("cpu")
    input_dtype = torch.float32
    memory_format = torch.contiguous_format
    precision = "fp32"

    def __init__(self, path: Path, meta: dict[str, str], input_shape: list, input_names: list[str]):
        if META_CLASS_NAMES not in meta or META_PREPROCESSING not in meta:
            raise InputError(f"{path}: no yolonas metadata (class names, pre-processing); export it with "
                             "`yolonas export`, or pass class names and preprocessing to the Predictor")
        self.path = path
        self.class_names: list[str] = json.loads(meta[META_CLASS_NAMES])
        self.preprocessing = Preprocessing.from_dict(json.loads(meta[META_PREPROCESSING]))
        self.spec_name = meta.get(META_SPEC, "")
        self.uint8_input = meta.get(META_INPUT, "float") == "uint8"
        self.has_nms = meta.get(META_OUTPUTS, "raw") == "nms"
        self.export_nms: NMSConfig | None = None
        if self.has_nms:
            # Per class over every class score: what the ONNX NonMaxSuppression in the graph does.
            self.export_nms = NMSConfig(**json.loads(meta[META_NMS]), multi_label=True, class_agnostic=False)
        # A file exported before the thresholds were inputs has them fixed in its graph.
        self.threshold_inputs = all(name in input_names for name in THRESHOLD_INPUTS)
        self._said: set[str] = set()  # notices about fixed export settings, each given once
        # Static dimensions are ints; dynamic ones are names or None.
        dims = [d if isinstance(d, int) and d > 0 else None for d in input_shape]
        self.static_batch: int | None = dims[0]
        self.static_size: tuple[int, int] | None = (dims[2], dims[3]) if dims[2] and dims[3] else None

    def _run(self, x: np.ndarray, thresholds: tuple[np.ndarray, np.ndarray] | None) -> list[np.ndarray]:
        raise NotImplementedError

    def _forward(self, x: torch.Tensor, thresholds: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> list[np.ndarray]:
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
            return self._run(arr, thresholds)
        chunks = []
        for start in range(0, len(arr), step):  # a static-batch file takes the batch `step` images at a time
            part = arr[start:start + step]
            n = len(part)
            if n < step:
                part = np.concatenate([part, np.zeros((step - n, *part.shape[1:]), part.dtype)])
            chunks.append([o[:n] for o in self._run(part, thresholds)])
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw exports: (boxes [B, N, 4] xyxy input pixels, scores [B, N, C])."""
        if self.has_nms:
            raise InputError(f"{self.path} has NMS in its graph: use detect(), not raw boxes and scores")
        boxes, scores = self._forward(x)
        return torch.from_numpy(boxes), torch.from_numpy(scores)

    def detect(self, x: torch.Tensor, nms: NMSConfig) -> list[torch.Tensor]:
        """Exports with NMS inside: per image a [n, 6] tensor (x1, y1, x2, y2, score, class) in input pixels, at
        `nms`'s score and IoU thresholds; its top-k and max detections are the export's (said once if they differ)."""
        if not self.has_nms:
            raise InputError(f"{self.path} has raw outputs: call the backend and run postprocess() on them")
        num_dets, boxes, scores, classes = self._forward(x, self._thresholds(nms))
        rows = np.concatenate([boxes, scores[..., None], classes[..., None].astype(np.float32)], axis=2)
        keep = np.minimum(num_dets.reshape(-1), nms.max_detections)
        return [torch.from_numpy(r[:int(n)]) for r, n in zip(rows, keep)]

    def _thresholds(self, nms: NMSConfig) -> tuple[np.ndarray, np.ndarray] | None:
        """`nms`'s thresholds as the graph's inputs; what the graph cannot change is said once, in a warning."""
        fixed = self.export_nms
        if not (nms.multi_label and not nms.class_agnostic):
            self._say("mode", f"{self.path}: NMS in this file is per class, multi-label (as exported); "
                      "class-agnostic or best-class NMS needs a raw export")
        if nms.max_detections > fixed.max_detections:
            self._say("max_det", f"{self.path} keeps at most {fixed.max_detections} detections per image (fixed at "
                      f"export, {nms.max_detections} asked for); re-export with --max-det {nms.max_detections}")
        if nms.top_k != fixed.top_k:
            self._say("top_k", f"{self.path}: top-k {fixed.top_k} is fixed at export ({nms.top_k} asked for)")
        if not self.threshold_inputs:
            if (nms.score_threshold, nms.iou_threshold) != (fixed.score_threshold, fixed.iou_threshold):
                self._say("thresholds", f"{self.path} was exported with fixed thresholds (score "
                          f"{fixed.score_threshold:g}, IoU {fixed.iou_threshold:g}); re-export it with `yolonas "
                          "export --nms` to choose them at run time")
            return None
        return (np.array([nms.score_threshold], np.float32), np.array([nms.iou_threshold], np.float32))

    def _say(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(message)


class OnnxRuntimeBackend(_ExportedModel):
    """An exported .onnx file run by ONNX Runtime (CPU; CUDA where onnxruntime-gpu is installed)."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        path = _check_path(path, "ONNX")
        self.session = ort_session(path, threads, device=str(device), name=str(path))
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.precision = "int8" if META_QUANTIZATION in meta else "fp32"
        # Inputs with a default (the NMS thresholds) are not among get_inputs(); the graph's own list has them.
        super().__init__(path, meta, inp.shape, _onnx_input_names(path))

    def _run(self, x: np.ndarray, thresholds: tuple[np.ndarray, np.ndarray] | None) -> list[np.ndarray]:
        feed = {self.input_name: x}
        if thresholds is not None:
            feed.update(zip(THRESHOLD_INPUTS, thresholds))
        return self.session.run(None, feed)


class OpenVINOBackend(_ExportedModel):
    """An exported .onnx, or an OpenVINO .xml written by `yolonas export`, run by OpenVINO.

    `precision` is OpenVINO's inference precision for the float parts: f32 or bf16 (f32, said once, where the CPU
    lacks bf16); by default the one the file was exported for (its metadata), else f32.
    """

    runtime = "openvino"

    def __init__(self, path: str | Path, device: str = "CPU", threads: int | None = None,
                 precision: str | None = None):
        path = _check_path(path, "model")
        onnx_file = path.suffix.lower() == ".onnx"
        meta = read_onnx_metadata(path) if onnx_file else {}
        model = _read_openvino(path, meta)
        meta = meta or read_ir_metadata(model)
        shape = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]
        super().__init__(path, meta, shape, [i.get_any_name() for i in model.inputs])
        self.int8 = META_QUANTIZATION in meta
        meant = meta.get(META_PRECISION, "f32")  # an INT8 file's float parts (decode, kept layers) run in f32
        self.inference_precision = openvino_precision(precision or ("f32" if meant == "int8" else meant),
                                                      str(device))
        self.precision = "int8" if self.int8 else {"f32": "fp32"}.get(self.inference_precision,
                                                                       self.inference_precision)
        self.compiled = openvino_compiled(model, threads, precision=self.inference_precision, device=str(device),
                                          name=str(path))
        self.request = self.compiled.create_infer_request()

    def _run(self, x: np.ndarray, thresholds: tuple[np.ndarray, np.ndarray] | None) -> list[np.ndarray]:
        feed = {"images": x} if self.threshold_inputs else {0: x}
        if thresholds is not None:
            feed.update(zip(THRESHOLD_INPUTS, thresholds))
        result = self.request.infer(feed)
        return [np.asarray(result[out]) for out in self.compiled.outputs]


def _read_openvino(path: Path, onnx_meta: dict[str, str]):
    """The ov.Model of an .xml or .onnx; an NMS-inside .onnx without its threshold defaults (OpenVINO would read
    inputs that have defaults as constants)."""
    core = openvino_core()
    try:
        if onnx_meta.get(META_OUTPUTS) == "nms":
            return core.read_model(without_threshold_defaults(path), b"")
        return core.read_model(str(path))
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError with a long trace for bad files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: not a model OpenVINO can read ({first})") from e


def _onnx_input_names(path: Path) -> list[str]:
    """The graph inputs of an .onnx file, those with defaults included, read without its weights."""
    import onnx  # noqa: PLC0415 - the onnx extra

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def read_ir_metadata(model) -> dict[str, str]:
    """The yolonas metadata an OpenVINO model carries in its rt_info (written by `export_openvino`)."""
    return {k: str(model.get_rt_info(["yolonas", k]).astype(str)) for k in META_KEYS
            if model.has_rt_info(["yolonas", k])}


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


def load_backend(path: str | Path, device: str = "cpu", threads: int | None = None, runtime: str | None = None,
                 precision: str | None = None):
    """The backend for an exported file by its suffix: .onnx -> ONNX Runtime (or `runtime="openvino"`),
    .xml -> OpenVINO, .engine/.plan -> TensorRT. `precision` (f32, bf16) is OpenVINO's, for its float parts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if suffix in (".engine", ".plan"):
        return TensorRTBackend(path)
    if suffix == ".xml" or runtime == "openvino":
        return OpenVINOBackend(path, "CPU" if device == "cpu" else device, threads, precision)
    if precision not in (None, "f32", "fp32"):
        raise InputError(f"{path}: precision {precision} is an OpenVINO setting; run the file with --backend "
                         "openvino, or quantize it for INT8 on ONNX Runtime")
    if suffix == ".onnx" or runtime == "onnxruntime":
        return OnnxRuntimeBackend(path, device, threads)
    raise InputError(f"{path}: unknown exported model type {suffix!r}; use .onnx, .xml, .engine or .plan")
