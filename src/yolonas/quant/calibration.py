"""Calibration: letterbox the chosen images like inference, and compute activation ranges once."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from yolonas.data.images import read_image
from yolonas.deploy.export import META_CLASS_NAMES, META_INPUT, META_OUTPUTS, META_PREPROCESSING, META_QUANTIZATION
from yolonas.errors import DataError, InputError
from yolonas.infer.letterbox import letterbox_batch
from yolonas.preprocess import Preprocessing

METHODS = ("minmax", "percentile", "entropy")
DEFAULT_PERCENTILE = 99.99

# The op types that run in INT8: convolutions and the relus, adds, concats and pools between them, so the backbone,
# neck and head convs stay INT8 end to end. Ranges are computed for their tensors only.
QUANT_OP_TYPES = ("Conv", "ConvTranspose", "Relu", "Add", "Concat", "MaxPool")
CONV_OP_TYPES = ("Conv", "ConvTranspose")

# Node-name prefixes of the network proper in our exports (`ExportWrapper.model`); the head's Reshape/Concat
# glue, the DFL decode, sigmoid and any NMS come after and stay float.
NETWORK_PREFIXES = ("/model/backbone/", "/model/neck/", "/model/heads/head")


@dataclass(frozen=True)
class ModelInfo:
    """What a quantizer needs to know about one of our float ONNX exports."""

    path: Path
    preprocessing: Preprocessing
    uint8_input: bool
    metadata: dict[str, str]


def read_model_info(path: str | Path) -> ModelInfo:
    """The metadata of a raw-output yolonas .onnx; InputError for anything else."""
    import onnx  # noqa: PLC0415 - the onnx extra

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise InputError(f"{path}: not an ONNX file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from e
    meta = {p.key: p.value for p in model.metadata_props}
    if META_CLASS_NAMES not in meta or META_PREPROCESSING not in meta:
        raise InputError(f"{path}: not a yolonas export (no yolonas metadata); quantize a checkpoint, or a file "
                         "written by `yolonas export`")
    if meta.get(META_OUTPUTS, "raw") != "raw":
        raise InputError(f"{path}: has NMS in its graph; quantize a raw-output export (yolonas export without --nms)")
    if META_QUANTIZATION in meta:
        raise InputError(f"{path}: is already quantized; quantize the float export")
    pre = Preprocessing.from_dict(json.loads(meta[META_PREPROCESSING]))
    return ModelInfo(path, pre, meta.get(META_INPUT, "float") == "uint8", meta)


def load_batch(files: list[Path], pre: Preprocessing, uint8: bool = False) -> np.ndarray:
    """Read and letterbox images exactly as the Predictor does: [N, 3, H, W] float32 in [0, 1] (or uint8)."""
    x, _ = letterbox_batch([read_image(f) for f in files], pre)
    if uint8:  # letterboxed pixels are k/255 exactly; rounding gives back the uint8 image
        return (x * 255).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return np.ascontiguousarray(x.numpy())


class _ArrayReader:
    """An onnxruntime CalibrationDataReader over a [N, 3, H, W] array, one image per call."""

    def __init__(self, input_name: str, batch: np.ndarray):
        self.input_name = input_name
        self.batch = batch
        self.i = 0

    def get_next(self) -> dict | None:
        if self.i >= len(self.batch):
            return None
        self.i += 1
        return {self.input_name: self.batch[self.i - 1:self.i]}


@dataclass
class Calibration:
    """Activation ranges of one float model, computed once and reused by every quantized variant of it."""

    model: Path  # the (pre-processed) float model the ranges belong to; quantize this file
    ranges: Path  # onnxruntime's calibration cache (JSON), read by quantize_static(calibration_cache_path=)
    method: str
    percentile: float | None
    seed: int
    images: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        d = asdict(self)
        d["model"], d["ranges"] = str(self.model), str(self.ranges)
        return d


def ort_method(method: str):
    """The onnxruntime CalibrationMethod for our method name."""
    from onnxruntime.quantization import CalibrationMethod  # noqa: PLC0415

    names = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}
    if method not in names:
        raise InputError(f"calibration method {method!r}: use one of {', '.join(METHODS)}")
    return names[method]


def calibrate(model: str | Path, files: list[Path], ranges: str | Path, *, method: str = "percentile",
              percentile: float = DEFAULT_PERCENTILE, seed: int = 0, chunk: int = 4) -> Calibration:
    """Run `model` (a float yolonas .onnx) on `files`, letterboxed like inference, and save the activation
    ranges of every INT8-candidate tensor to `ranges` (onnxruntime's calibration-cache JSON)."""
    from onnxruntime.quantization import create_calibrator, save_tensors_data  # noqa: PLC0415

    info = read_model_info(model)
    ort_cal = ort_method(method)
    if not files:
        raise DataError("no calibration images")
    if method == "percentile" and not 50 < percentile <= 100:
        raise InputError(f"percentile {percentile}: give a value in (50, 100], e.g. 99.99")
    # Raw (asymmetric) ranges for every method: a uint8 activation needs [lo, hi]; the int8 quantizer
    # makes them symmetric itself. onnxruntime's percentile default would be symmetric (|x| histogram).
    options = {"symmetric": False}
    if method == "percentile":
        options["percentile"] = percentile
    with tempfile.TemporaryDirectory(prefix="yolonas-calib-") as tmp:
        calibrator = create_calibrator(info.path, list(QUANT_OP_TYPES),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=ort_cal, extra_options=options)
        input_name = calibrator.infer_session.get_inputs()[0].name
        # onnxruntime's histogram calibrators print progress to stdout; keep stdout clean for `--json -`.
        with contextlib.redirect_stdout(io.StringIO()):
            for start in range(0, len(files), chunk):  # a few images at a time: every activation is held
                batch = load_batch(files[start:start + chunk], info.preprocessing, info.uint8_input)
                calibrator.collect_data(_ArrayReader(input_name, batch))
            tensors = calibrator.compute_data()
        del calibrator
    ranges = Path(ranges)
    save_tensors_data(tensors, ranges)
    return Calibration(info.path, ranges, method, percentile if method == "percentile" else None, seed,
                       [str(f) for f in files])
