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
from collections.abc import Callable
from pathlib import Path

from yolonas.data.images import select_images
from yolonas.data.splits import source_images
from yolonas.deploy.backends import OpenVINOBackend
from yolonas.deploy.open import is_exported, load_model
from yolonas.deploy.timing import warn_if_slow_int8
from yolonas.errors import InputError
from yolonas.quant.calibration import Calibration, calibrate, read_model_info
from yolonas.quant.config import FineTuned, QuantConfig, QuantResult
from yolonas.quant.openvino import output_arrays, qdq_to_openvino, quantize_nncf
from yolonas.quant.ptq import prepare, resolve_layers, write_qdq
from yolonas.quant.selective import select
from yolonas.quant.sensitivity import Evaluator, analyze, output_error

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (layer index, layers, layer name) during the sensitivity report


def fine_tune_qat(weights, cfg: QuantConfig) -> FineTuned:
    """The first step of mode `qat`: fine-tune the checkpoint `weights` with fake INT8 on `cfg.data`, in
    `cfg.out_dir`/qat, with the recipe it was trained with (or `cfg.recipe`) changed for QAT. The next steps
    quantize the fine-tuned float weights (last.pt, partially fused) as ptq does."""
    if not isinstance(weights, (str, Path)):
        raise InputError("QAT fine-tunes a checkpoint file with its training config: give the checkpoint's path")
    if is_exported(weights):
        raise InputError(f"{weights}: QAT trains a checkpoint (.pt), not an exported file")
    from yolonas.quant.qat import qat, training_config  # noqa: PLC0415 - the training machinery only for qat

    overrides = {"run.project": str(cfg.out_dir), "run.name": "qat", "run.exist_ok": True, "run.device": cfg.device}
    if cfg.imgsz is not None:
        overrides["data.image_size"] = cfg.imgsz
    train_cfg = training_config(str(weights), cfg.data, cfg.recipe, overrides)
    trained = qat(str(weights), train_cfg, calib_images=cfg.calib_images, seed=cfg.seed, activations=cfg.activations,
                  method="minmax" if cfg.method == "minmax" else "percentile", percentile=cfg.percentile,
                  float_layers=cfg.float_layers, epochs=cfg.epochs)
    log.info("quantize: QAT fine-tuned %d epochs -> %s", trained.epochs, trained.last)
    return FineTuned(trained.epochs, str(trained.last), str(trained.run_dir))


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


def quantize(model, cfg: QuantConfig, progress: Progress | None = None) -> QuantResult:
    """Quantize `model` (a YoloNAS or a checkpoint / published name, exported here; or a float yolonas .onnx) as
    `cfg` says, with images of `cfg.data` (`cfg.split`).

    `ptq`: every network conv INT8 except `float_layers`. `selective`: a leave-one-out sensitivity report on
    `val_images` images (none of them calibration images), then the float convs a budget allows. `qat`: first
    `fine_tune_qat`, then ptq of the fine-tuned weights. `fmt` onnx writes a QDQ .onnx; openvino an IR by
    `quantizer` (nncf, with `preset`; or qdq). Writes the float export, ranges, report and result.json to
    `out_dir`; the quantized file to `cfg.output_path()`.
    """
    cfg = cfg.checked()
    out_dir = Path(cfg.out_dir)
    fine_tuned = fine_tune_qat(model, cfg) if cfg.mode == "qat" else None
    model = _source(fine_tuned.weights if fine_tuned else model, cfg.imgsz)
    files = source_images(cfg.data, cfg.split)
    warn_if_slow_int8()
    out_dir.mkdir(parents=True, exist_ok=True)
    float_onnx = _float_export(model, out_dir)
    calib_files = select_images(files, cfg.calib_images, cfg.seed)
    calib = calibrate(prepare(float_onnx, out_dir / "float_prepared.onnx"), calib_files,
                      out_dir / f"ranges_{cfg.method}.json", method=cfg.method, percentile=cfg.percentile,
                      seed=cfg.seed)
    output = cfg.output_path()
    result = QuantResult(mode=cfg.mode, format=cfg.fmt, quantizer=cfg.quantizer, output=str(output),
                         float_onnx=str(float_onnx),
                         activations=cfg.activations if cfg.quantizer == "qdq" else cfg.preset,
                         calibration=calib.describe(), run_dir=str(out_dir), qat=fine_tuned)
    evaluator = _evaluator(calib, files, calib_files, cfg)
    float_nodes = _float_nodes(cfg, calib, evaluator, progress, result)
    _write(calib, float_onnx, calib_files, output, float_nodes, cfg)
    if evaluator is not None:
        result.output_error = _output_error(evaluator, output, float_nodes, cfg.fmt, cfg.threads)
    (out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _write(calib: Calibration, float_onnx: Path, calib_files: list[Path], output: Path, float_nodes: list[str],
           cfg: QuantConfig) -> None:
    """Write the INT8 file: NNCF's IR, or our QDQ .onnx (converted to an IR for openvino)."""
    if cfg.quantizer == "nncf":
        quantize_nncf(float_onnx, calib_files, output, float_nodes=float_nodes, preset=cfg.preset, seed=cfg.seed,
                      mode=cfg.mode)
        return
    qdq = output if cfg.fmt == "onnx" else Path(cfg.out_dir) / f"model_int8_{cfg.mode}_qdq.onnx"
    write_qdq(calib, qdq, activations=cfg.activations, float_layers=float_nodes, mode=cfg.mode)
    if cfg.fmt == "openvino":
        qdq_to_openvino(qdq, output)


def _evaluator(calib: Calibration, files: list[Path], calib_files: list[Path], cfg: QuantConfig) -> Evaluator | None:
    """The sensitivity/error evaluator on images that are not calibration images, or None when there are none."""
    rest = [f for f in files if f not in set(calib_files)]
    if not rest or cfg.val_images <= 0:
        return None
    return Evaluator(calib, select_images(rest, cfg.val_images, cfg.seed + 1), cfg.activations, cfg.threads)


def _float_nodes(cfg: QuantConfig, calib: Calibration, evaluator: Evaluator | None, progress: Progress | None,
                 result: QuantResult) -> list[str]:
    """The conv nodes kept float: those named (ptq, qat), or those a sensitivity report and budget choose
    (selective; its report and selection go on `result`)."""
    if cfg.mode != "selective":
        return resolve_layers(cfg.float_layers, calib.model)
    if evaluator is None:
        raise InputError(f"{cfg.data}: selective quantization needs validation images besides the "
                         f"{len(calib.images)} calibration images; lower --calib-images or use a larger split")
    report = analyze(evaluator, progress=progress)
    result.report = {k: str(v) for k, v in report.save(Path(cfg.out_dir)).items()}
    result.selection = select(report, evaluator, max_error=cfg.max_error, min_speedup_fraction=cfg.min_speedup)
    return result.selection.float_nodes


def _output_error(evaluator: Evaluator, output: Path, float_nodes: list[str], fmt: str,
                  threads: int) -> dict[str, float]:
    """Output error of the written file against fp32 on the evaluator's images (the same metric as selection)."""
    if fmt == "onnx":
        e = evaluator.error(nodes=None, float_layers=float_nodes)
    else:
        e = output_error(evaluator.reference, output_arrays(OpenVINOBackend(output, threads=threads),
                                                            evaluator.batch))
    return {"score": e.score, "box": e.box, "total": e.total}
