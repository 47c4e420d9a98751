"""The `yolonas quantize` flow (and `yolonas export --int8`): a model or float .onnx in, an INT8 file and its report
folder out. The INT8 file is a QDQ .onnx for ONNX Runtime, or an OpenVINO IR (NNCF's quantization, or our QDQ file
converted)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from yolonas.deploy.backends import OpenVINOBackend
from yolonas.deploy.timing import warn_if_slow_int8
from yolonas.errors import InputError
from yolonas.quant.calibration import DEFAULT_PERCENTILE, calibrate, list_images, read_model_info, select_images
from yolonas.quant.openvino import QUANTIZERS, output_arrays, qdq_to_openvino, quantize_nncf
from yolonas.quant.ptq import DEFAULT_ACTIVATIONS, prepare, resolve_layers, write_qdq
from yolonas.quant.selective import select
from yolonas.quant.sensitivity import Evaluator, analyze, output_error

MODES = ("ptq", "selective")
FORMATS = ("onnx", "openvino")


def _check(mode: str, fmt: str, quantizer: str | None) -> str:
    """The quantizer for `fmt` (qdq for ONNX; OpenVINO's default: nncf), after checking the three names."""
    if mode not in MODES:
        raise InputError(f"--mode {mode}: use ptq, selective or qat")
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: use onnx (QDQ for ONNX Runtime) or openvino (IR)")
    quantizer = quantizer or ("nncf" if fmt == "openvino" else "qdq")
    if quantizer not in QUANTIZERS:
        raise InputError(f"--quantizer {quantizer}: use nncf or qdq")
    if fmt == "onnx" and quantizer != "qdq":
        raise InputError("NNCF writes OpenVINO IR: use --format openvino with --quantizer nncf")
    return quantizer


def _float_export(model, out_dir: Path) -> Path:
    """The float .onnx in the run folder: copied when given, exported from a model otherwise."""
    float_onnx = out_dir / "float.onnx"
    if isinstance(model, (str, Path)):
        if Path(model).resolve() != float_onnx.resolve():
            shutil.copyfile(model, float_onnx)
        return float_onnx
    from yolonas.deploy.export import export_onnx  # noqa: PLC0415 - torch-side export only for checkpoints

    return export_onnx(model, float_onnx, batch=1)


def _default_output(out_dir: Path, mode: str, fmt: str, quantizer: str) -> Path:
    if fmt == "onnx":
        return out_dir / f"model_int8_{mode}.onnx"
    return out_dir / f"model_int8_{mode}_{quantizer}.xml"


def quantize(model, data: str | Path, out_dir: str | Path, *, output: str | Path | None = None,
             split: str = "train", mode: str = "ptq", fmt: str = "onnx", quantizer: str | None = None,
             calib_images: int = 64, val_images: int = 16, method: str = "percentile",
             percentile: float = DEFAULT_PERCENTILE, seed: int = 0, activations: str = DEFAULT_ACTIVATIONS,
             float_layers=(), max_error: float | None = None, min_speedup: float | None = None, threads: int = 2,
             preset: str = "performance", progress=None) -> dict:
    """Quantize `model` (a YoloNAS, exported here, or a float yolonas .onnx) with images of `data` (`split`).

    `ptq`: every network conv INT8 except `float_layers`. `selective`: a leave-one-out sensitivity report on
    `val_images` images (none of them calibration images), then the float convs a budget allows. `fmt` onnx writes
    a QDQ .onnx; openvino an IR by `quantizer` (nncf, with `preset`; or qdq). Writes the float export, ranges,
    report and result.json to `out_dir`; the quantized file to `output`.
    """
    quantizer = _check(mode, fmt, quantizer)
    out_dir = Path(out_dir)
    if isinstance(model, (str, Path)):
        read_model_info(model)  # a bad file fails before any work
    files = list_images(data, split)
    warn_if_slow_int8()
    out_dir.mkdir(parents=True, exist_ok=True)
    float_onnx = _float_export(model, out_dir)
    prepared = prepare(float_onnx, out_dir / "float_prepared.onnx")
    calib_files = select_images(files, calib_images, seed)
    calib = calibrate(prepared, calib_files, out_dir / f"ranges_{method}.json", method=method,
                      percentile=percentile, seed=seed)
    output = Path(output) if output else _default_output(out_dir, mode, fmt, quantizer)
    result = {"mode": mode, "format": fmt, "quantizer": quantizer, "output": str(output), "float_onnx": str(float_onnx),
              "activations": activations if quantizer == "qdq" else preset, "calibration": calib.describe(),
              "run_dir": str(out_dir)}
    evaluator = _evaluator(calib, files, calib_files, val_images, seed, activations, threads)
    float_nodes = _float_nodes(mode, calib, evaluator, float_layers, max_error, min_speedup, out_dir, data,
                               progress, result)
    if quantizer == "nncf":
        quantize_nncf(float_onnx, calib_files, output, float_nodes=float_nodes, preset=preset, seed=seed, mode=mode)
    else:
        qdq = output if fmt == "onnx" else out_dir / f"model_int8_{mode}_qdq.onnx"
        write_qdq(calib, qdq, activations=activations, float_layers=float_nodes, mode=mode)
        if fmt == "openvino":
            qdq_to_openvino(qdq, output)
    if evaluator is not None:
        result["output_error"] = _output_error(evaluator, output, float_nodes, fmt, threads)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _evaluator(calib, files, calib_files, val_images: int, seed: int, activations: str, threads: int):
    """The sensitivity/error evaluator on images that are not calibration images, or None when there are none."""
    rest = [f for f in files if f not in set(calib_files)]
    if not rest or val_images <= 0:
        return None
    return Evaluator(calib, select_images(rest, val_images, seed + 1), activations, threads)


def _float_nodes(mode: str, calib, evaluator, float_layers, max_error, min_speedup, out_dir: Path, data,
                 progress, result: dict) -> list[str]:
    """The conv nodes kept float: those named (ptq), or those a sensitivity report and budget choose (selective)."""
    if mode == "ptq":
        return resolve_layers(float_layers, calib.model)
    if evaluator is None:
        raise InputError(f"{data}: selective quantization needs validation images besides the "
                         f"{len(calib.images)} calibration images; lower --calib-images or use a larger split")
    report = analyze(evaluator, progress=progress)
    result["report"] = {k: str(v) for k, v in report.save(out_dir).items()}
    chosen = select(report, evaluator, max_error=max_error, min_speedup_fraction=min_speedup)
    result["selection"] = chosen.to_dict()
    return chosen.float_nodes


def _output_error(evaluator, output: Path, float_nodes: list[str], fmt: str, threads: int) -> dict:
    """Output error of the written file against fp32 on the evaluator's images (the same metric as selection)."""
    if fmt == "onnx":
        e = evaluator.error(nodes=None, float_layers=float_nodes)
    else:
        e = output_error(evaluator.reference, output_arrays(OpenVINOBackend(output, threads=threads),
                                                            evaluator.batch))
    return {"score": e.score, "box": e.box, "total": e.total}
