"""The `yolonas quantize` flow: a model or float .onnx in, a QDQ INT8 .onnx and its report folder out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from yolonas.errors import InputError
from yolonas.quant.calibration import DEFAULT_PERCENTILE, calibrate, list_images, read_model_info, select_images
from yolonas.quant.ptq import DEFAULT_ACTIVATIONS, prepare, write_qdq
from yolonas.quant.selective import select
from yolonas.quant.sensitivity import Evaluator, analyze

MODES = ("ptq", "selective")


def quantize(model, data: str | Path, out_dir: str | Path, *, output: str | Path | None = None,
             split: str = "train", mode: str = "ptq", calib_images: int = 64, val_images: int = 16,
             method: str = "percentile", percentile: float = DEFAULT_PERCENTILE, seed: int = 0,
             activations: str = DEFAULT_ACTIVATIONS, float_layers=(), max_error: float | None = None,
             min_speedup: float | None = None, threads: int = 2, progress=None) -> dict:
    """Quantize `model` (a YoloNAS, exported here, or a float yolonas .onnx) with images of `data` (`split`).

    `ptq`: every network conv INT8 except `float_layers`. `selective`: a leave-one-out sensitivity report on
    `val_images` images (none of them calibration images), then the float convs a budget allows. Writes the
    float export, ranges, report and result.json to `out_dir`; the quantized file to `output`.
    """
    if mode not in MODES:
        raise InputError(f"--mode {mode}: use ptq, selective or qat")
    out_dir = Path(out_dir)
    if isinstance(model, (str, Path)):
        read_model_info(model)  # a bad file fails before any work
    files = list_images(data, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, (str, Path)):
        float_onnx = out_dir / "float.onnx"
        if Path(model).resolve() != float_onnx.resolve():
            shutil.copyfile(model, float_onnx)
    else:
        from yolonas.deploy.export import export_onnx  # noqa: PLC0415 - torch-side export only for checkpoints

        float_onnx = export_onnx(model, out_dir / "float.onnx", batch=1)
    prepared = prepare(float_onnx, out_dir / "float_prepared.onnx")
    calib_files = select_images(files, calib_images, seed)
    calib = calibrate(prepared, calib_files, out_dir / f"ranges_{method}.json", method=method,
                      percentile=percentile, seed=seed)
    output = Path(output) if output else out_dir / f"model_int8_{mode}.onnx"
    result = {"mode": mode, "output": str(output), "float_onnx": str(float_onnx), "activations": activations,
              "calibration": calib.describe(), "run_dir": str(out_dir)}
    rest = [f for f in files if f not in set(calib_files)]
    evaluator = None
    if rest and val_images > 0:
        evaluator = Evaluator(calib, select_images(rest, val_images, seed + 1), activations, threads)
    if mode == "ptq":
        write_qdq(calib, output, activations=activations, float_layers=float_layers, mode="ptq")
        if evaluator is not None:
            e = evaluator.error(float_layers=float_layers)
            result["output_error"] = {"score": e.score, "box": e.box, "total": e.total}
    else:
        if evaluator is None:
            raise InputError(f"{data}: selective quantization needs validation images besides the {len(calib_files)} "
                             "calibration images; lower --calib-images or use a larger split")
        report = analyze(evaluator, progress=progress)
        result["report"] = {k: str(v) for k, v in report.save(out_dir).items()}
        chosen = select(report, evaluator, max_error=max_error, min_speedup_fraction=min_speedup)
        write_qdq(calib, output, activations=activations, float_layers=chosen.float_nodes, mode="selective")
        result["selection"] = chosen.to_dict()
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
