"""What `quantize` is asked to do (QuantConfig) and what it did (QuantResult): the flags of `yolonas quantize` and
`export --int8` as one dataclass, and the result they print with `--json` (and write as result.json)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from yolonas.errors import InputError
from yolonas.quant.calibration import DEFAULT_PERCENTILE
from yolonas.quant.openvino import QUANTIZERS
from yolonas.quant.ptq import DEFAULT_ACTIVATIONS
from yolonas.quant.selective import Selection

MODES = ("ptq", "selective", "qat")
FORMATS = ("onnx", "openvino")


@dataclass
class QuantConfig:
    """How to quantize: the calibration images, the run folder, the mode and file format, and their settings."""

    data: str | Path  # calibration images: a data.yaml, COCO JSON, data set folder or image folder
    out_dir: str | Path  # the run folder: float export, ranges, sensitivity report, result.json
    output: str | Path | None = None  # the INT8 file (default: in out_dir, named after mode and format)
    split: str = "train"
    mode: str = "ptq"  # ptq: every network conv INT8; selective: a budget keeps the worst float; qat: fine-tune first
    fmt: str = "onnx"  # onnx: a QDQ .onnx for ONNX Runtime; openvino: an IR
    quantizer: str | None = None  # qdq (ours) or nncf (OpenVINO's); default: nncf for openvino, qdq for onnx
    calib_images: int = 64
    val_images: int = 16  # other images the output error (and selective's report) is measured on
    method: str = "percentile"  # percentile, minmax or entropy
    percentile: float = DEFAULT_PERCENTILE
    seed: int = 0  # chooses the calibration and validation images
    activations: str = DEFAULT_ACTIVATIONS  # uint8, or int8 (symmetric, TensorRT's)
    float_layers: Sequence[str] = ()  # convs kept float (module or node names)
    max_error: float | None = None  # selective: output error budget
    min_speedup: float | None = None  # selective: the fraction (0..1) of full INT8's speed-up to keep
    threads: int = 2  # CPU threads for the measurements
    preset: str = "performance"  # NNCF's preset
    imgsz: int | None = None  # a square input size for a checkpoint (default: the model's)
    recipe: str | None = None  # qat: the training recipe (default: the checkpoint's own)
    epochs: int | None = None  # qat: epochs (default: the recipe's / 10)
    device: str = "auto"  # qat: where the fine-tuning runs

    def checked(self) -> QuantConfig:
        """This config with its quantizer resolved (qdq for onnx, nncf for openvino), after checking the names."""
        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode}: use ptq, selective or qat")
        if self.fmt not in FORMATS:
            raise InputError(f"--format {self.fmt}: use onnx (QDQ for ONNX Runtime) or openvino (IR)")
        quantizer = self.quantizer or ("nncf" if self.fmt == "openvino" else "qdq")
        if quantizer not in QUANTIZERS:
            raise InputError(f"--quantizer {quantizer}: use nncf or qdq")
        if self.fmt == "onnx" and quantizer != "qdq":
            raise InputError("NNCF writes OpenVINO IR: use --format openvino with --quantizer nncf")
        return dataclasses.replace(self, quantizer=quantizer)

    def output_path(self) -> Path:
        """The INT8 file: `output`, or model_int8_<mode>.onnx / model_int8_<mode>_<quantizer>.xml in out_dir."""
        if self.output:
            return Path(self.output)
        if self.fmt == "onnx":
            return Path(self.out_dir) / f"model_int8_{self.mode}.onnx"
        return Path(self.out_dir) / f"model_int8_{self.mode}_{self.quantizer}.xml"


@dataclass
class FineTuned:
    """What QAT's fine-tuning left: the epochs run, the fine-tuned float weights (last.pt) and its run folder."""

    epochs: int
    weights: str
    run_dir: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class QuantResult:
    """What `quantize` wrote and measured; `to_dict()` is the JSON of `yolonas quantize --json` and result.json."""

    mode: str
    format: str
    quantizer: str
    output: str  # the INT8 file
    float_onnx: str  # the float export it was made from
    activations: str  # the QDQ activation type, or NNCF's preset
    calibration: dict  # the calibration's description: images, method, ranges file
    run_dir: str
    qat: FineTuned | None = None  # mode qat: the fine-tuning
    report: dict[str, str] | None = None  # mode selective: the sensitivity report's files
    selection: Selection | None = None  # mode selective: the convs kept float and what the budget measured
    output_error: dict[str, float] | None = field(default=None)  # score, box, total; None without val images

    def to_dict(self) -> dict:
        """The result as plain JSON types; the optional parts only when present (the keys users rely on)."""
        d = {"mode": self.mode, "format": self.format, "quantizer": self.quantizer, "output": self.output,
             "float_onnx": self.float_onnx, "activations": self.activations, "calibration": self.calibration,
             "run_dir": self.run_dir}
        if self.qat is not None:
            d["qat"] = self.qat.to_dict()
        if self.report is not None:
            d["report"] = self.report
        if self.selection is not None:
            d["selection"] = self.selection.to_dict()
        if self.output_error is not None:
            d["output_error"] = self.output_error
        return d
