"""The `yolonas quantize` flow (and `yolonas export --int8`): a model, a checkpoint or a float .onnx in, an INT8 file
and its report folder out. The INT8 file is a QDQ .onnx for ONNX Runtime, or an OpenVINO IR (NNCF's quantization, or
our QDQ file converted).

The steps: (qat only) fine-tune the checkpoint with fake INT8 -> float .onnx -> calibrate -> (selective only)
sensitivity report and the float layers a budget allows -> write the INT8 file -> its output error.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from yolonas.data.images import select_images
from yolonas.data.splits import source_images
from yolonas.deploy.backends import OpenVINOBackend
from yolonas.deploy.open import is_exported, load_model
from yolonas.deploy.timing import warn_if_slow_int8
from yolonas.errors import InputError
from yolonas.quant.calibration import DEFAULT_PERCENTILE, calibrate, read_model_info
from yolonas.quant.openvino import QUANTIZERS, output_arrays, qdq_to_openvino, quantize_nncf
from yolonas.quant.ptq import DEFAULT_ACTIVATIONS, prepare, resolve_layers, write_qdq
from yolonas.quant.selective import select
from yolonas.quant.sensitivity import Evaluator, analyze, output_error

log = logging.getLogger(__name__)

MODES = ("ptq", "selective", "qat")
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


def fine_tune_qat(weights, data, out_dir: str | Path, *, recipe: str | None = None, epochs: int | None = None,
                  imgsz: int | None = None, device: str = "auto", calib_images: int = 64, seed: int = 0,
                  activations: str = DEFAULT_ACTIVATIONS, method: str = "percentile",
                  percentile: float = DEFAULT_PERCENTILE, float_layers=()) -> dict:
    """The first step of mode `qat`: fine-tune the checkpoint `weights` with fake INT8 on `data`, in
    `out_dir`/qat, with the recipe it was trained with (or `recipe`) changed for QAT. Returns the epochs, the
    fine-tuned float weights (last.pt, partially fused) and the run folder; the next steps quantize those weights
    as ptq does."""
    if not isinstance(weights, (str, Path)):
        raise InputError("QAT fine-tunes a checkpoint file with its training config: give the checkpoint's path")
    if is_exported(weights):
        raise InputError(f"{weights}: QAT trains a checkpoint (.pt), not an exported file")
    from yolonas.quant.qat import qat, training_config  # noqa: PLC0415 - the training machinery only for qat

    overrides = {"run.project": str(out_dir), "run.name": "qat", "run.exist_ok": True, "run.device": device}
    if imgsz is not None:
        overrides["data.image_size"] = imgsz
    cfg = training_config(str(weights), data, recipe, overrides)
    trained = qat(str(weights), cfg, calib_images=calib_images, seed=seed, activations=activations,
                  method="minmax" if method == "minmax" else "percentile", percentile=percentile,
                  float_layers=float_layers, epochs=epochs)
    log.info("quantize: QAT fine-tuned %d epochs -> %s", trained.epochs, trained.last)
    return {"epochs": trained.epochs, "weights": str(trained.last), "run_dir": str(trained.run_dir)}


def _source(model, imgsz: int | None):
    """What is quantized: a float .onnx (checked now, so a bad file fails before any work), a YoloNAS, or the one
    a checkpoint or published name gives (a square input of `imgsz` when given)."""
    if not isinstance(model, (str, Path)):
        if imgsz is not None:
            raise InputError("imgsz applies to a checkpoint given by its path; set the model's preprocessing instead")
        return model
    if Path(model).suffix.lower() == ".onnx":
        if imgsz is not None:
            raise InputError(f"{model}: the input size of an exported model is set at export; drop --imgsz")
        read_model_info(model)
        return model
    if is_exported(model):
        raise InputError(f"{model}: quantize a float .onnx from `yolonas export`, or the checkpoint itself")
    return load_model(model, imgsz)


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
             preset: str = "performance", imgsz: int | None = None, recipe: str | None = None,
             epochs: int | None = None, device: str = "auto", progress=None) -> dict:
    """Quantize `model` (a YoloNAS or a checkpoint / published name, exported here; or a float yolonas .onnx) with
    images of `data` (`split`); `imgsz`: a square input size for a checkpoint.

    `ptq`: every network conv INT8 except `float_layers`. `selective`: a leave-one-out sensitivity report on
    `val_images` images (none of them calibration images), then the float convs a budget allows. `qat`: first
    `fine_tune_qat` (the checkpoint's recipe or `recipe`, `epochs`, on `device`), then ptq of the fine-tuned
    weights. `fmt` onnx writes a QDQ .onnx; openvino an IR by `quantizer` (nncf, with `preset`; or qdq). Writes
    the float export, ranges, report and result.json to `out_dir`; the quantized file to `output`.
    """
    quantizer = _check(mode, fmt, quantizer)
    out_dir = Path(out_dir)
    fine_tuned = None
    if mode == "qat":
        fine_tuned = fine_tune_qat(model, data, out_dir, recipe=recipe, epochs=epochs, imgsz=imgsz, device=device,
                                   calib_images=calib_images, seed=seed, activations=activations, method=method,
                                   percentile=percentile, float_layers=float_layers)
        model = fine_tuned["weights"]
    model = _source(model, imgsz)
    files = source_images(data, split)
    warn_if_slow_int8()
    out_dir.mkdir(parents=True, exist_ok=True)
    float_onnx = _float_export(model, out_dir)
    calib_files = select_images(files, calib_images, seed)
    calib = calibrate(prepare(float_onnx, out_dir / "float_prepared.onnx"), calib_files,
                      out_dir / f"ranges_{method}.json", method=method, percentile=percentile, seed=seed)
    output = Path(output) if output else _default_output(out_dir, mode, fmt, quantizer)
    result = {"mode": mode, "format": fmt, "quantizer": quantizer, "output": str(output), "float_onnx": str(float_onnx),
              "activations": activations if quantizer == "qdq" else preset, "calibration": calib.describe(),
              "run_dir": str(out_dir)}
    if fine_tuned is not None:
        result["qat"] = fine_tuned
    evaluator = _evaluator(calib, files, calib_files, val_images, seed, activations, threads)
    float_nodes = _float_nodes(mode, calib, evaluator, float_layers, max_error, min_speedup, out_dir, data,
                               progress, result)
    _write(calib, float_onnx, calib_files, output, float_nodes, mode=mode, fmt=fmt, quantizer=quantizer,
           activations=activations, preset=preset, seed=seed, out_dir=out_dir)
    if evaluator is not None:
        result["output_error"] = _output_error(evaluator, output, float_nodes, fmt, threads)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _write(calib, float_onnx: Path, calib_files, output: Path, float_nodes: list[str], *, mode: str, fmt: str,
           quantizer: str, activations: str, preset: str, seed: int, out_dir: Path) -> None:
    """Write the INT8 file: NNCF's IR, or our QDQ .onnx (converted to an IR for openvino)."""
    if quantizer == "nncf":
        quantize_nncf(float_onnx, calib_files, output, float_nodes=float_nodes, preset=preset, seed=seed, mode=mode)
        return
    qdq = output if fmt == "onnx" else out_dir / f"model_int8_{mode}_qdq.onnx"
    write_qdq(calib, qdq, activations=activations, float_layers=float_nodes, mode=mode)
    if fmt == "openvino":
        qdq_to_openvino(qdq, output)


def _evaluator(calib, files, calib_files, val_images: int, seed: int, activations: str, threads: int):
    """The sensitivity/error evaluator on images that are not calibration images, or None when there are none."""
    rest = [f for f in files if f not in set(calib_files)]
    if not rest or val_images <= 0:
        return None
    return Evaluator(calib, select_images(rest, val_images, seed + 1), activations, threads)


def _float_nodes(mode: str, calib, evaluator, float_layers, max_error, min_speedup, out_dir: Path, data,
                 progress, result: dict) -> list[str]:
    """The conv nodes kept float: those named (ptq, qat), or those a sensitivity report and budget choose
    (selective)."""
    if mode != "selective":
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
